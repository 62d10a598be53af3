"""Emotion-specialised CNNs trained inside the pipeline (training/pretrain.py) and used as embedders (features/).

Two small networks, each returning (logits, embedding):
  - `FaceEmotionCNN`: a VGG-style CNN on aligned face crops (after Schoneveld et al. 2021, who train a dedicated
    facial-expression network and use its penultimate layer as the visual feature extractor): three blocks of two
    3x3 conv-BN-ReLU + max-pool, global average pooling, a ReLU embedding layer, a linear classifier.
  - `SpeechAttentionCNN`: the attention-based fully convolutional network of Zhang et al. 2018 on log-mel: conv
    blocks keep a time-frequency map, an attention layer weighs its cells (e_i = u^T tanh(W h_i + b),
    a = softmax(e)) and sums them into one vector, then the embedding layer and classifier. Padded frames are
    masked, so windows of any length work.
The preprocessing that training and extraction must share (crop -> tensor, log-mel -> windows) lives here too, and
the checkpoint format: `<dir>/weights.pt` (state_dict) + `<dir>/checkpoint.json` (architecture, classes, speakers,
params, `fingerprint` = sha256 of weights.pt, checked on every load), and `CheckpointEmbedding`, the part of
the two embedding extractors (features/face_emotion_embedding.py, features/speech_emotion_embedding.py) they share.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from features.alignment import decode_image
from features.onnx_runtime import OnnxNet, check_runtime, exported, uses_onnx
from pipelines.errors import MissingFile
from pipelines.extractor import BaseExtractor, ClipError
from pipelines.weights import sha256_of

WEIGHTS_FILE = "weights.pt"
INFO_FILE = "checkpoint.json"
NETS = ("face", "speech")
POOLS = 3                   # SpeechAttentionCNN halves frequency and time this many times
MIN_FRAMES = 2 ** POOLS     # shortest log-mel input (frames) SpeechAttentionCNN accepts


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FaceEmotionCNN(nn.Module):
    """[B, C, S, S] standardised crops (`face_array`) -> (logits [B, n_classes], embedding [B, embed_dim])."""

    def __init__(self, n_classes: int, embed_dim: int = 128, width: int = 16, in_channels: int = 1,
                 dropout: float = 0.3):
        super().__init__()
        layers, cin = [], in_channels
        for cout in (width, 2 * width, 4 * width):
            layers += _conv_bn(cin, cout) + _conv_bn(cout, cout) + [nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, embed_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, n_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embed(self.features(x).mean(dim=(2, 3)))
        return self.classifier(emb), emb


class SpeechAttentionCNN(nn.Module):
    """[B, n_mels, T] log-mel + [B, T] bool mask -> (logits, embedding).

    The log-mel is standardised per mel bin with training statistics kept as buffers (`mean`, `std`), so the
    checkpoint carries its own normalisation.
    """

    def __init__(self, n_classes: int, n_mels: int, embed_dim: int = 128, width: int = 16, dropout: float = 0.3):
        super().__init__()
        if n_mels < 2 ** POOLS:
            raise ValueError(f"SpeechAttentionCNN needs n_mels >= {2 ** POOLS}, got {n_mels}")
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        layers, cin = [], 1
        for cout in (width, 2 * width, 4 * width):
            layers += _conv_bn(cin, cout) + [nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers, *_conv_bn(cin, cin))
        self.attention = nn.Sequential(nn.Linear(cin, cin), nn.Tanh(), nn.Linear(cin, 1, bias=False))
        self.embed = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, embed_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, n_classes))

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(np.where(std > 1e-6, std, 1.0), dtype=torch.float32))

    def pooled_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Frame mask -> mask of the final map's time steps (a step is valid if any of its frames is)."""
        m = mask.float()[:, None]
        for _ in range(POOLS):
            m = F.max_pool1d(m, 2)
        return m[:, 0] > 0

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] < MIN_FRAMES:
            raise ValueError(f"need at least {MIN_FRAMES} frames, got {x.shape[-1]}")
        z = (x - self.mean[:, None]) / self.std[:, None]
        z = torch.where(mask[:, None, :], z, torch.zeros_like(z))
        h = self.features(z[:, None])                                  # [B, C, F', T']
        cells = h.flatten(2).transpose(1, 2)                            # [B, F'*T', C], frequency-major
        valid = self.pooled_mask(mask)[:, None, :].expand(-1, h.shape[2], -1).flatten(1)
        scores = self.attention(cells).squeeze(-1).masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        emb = self.embed((weights.unsqueeze(-1) * cells).sum(dim=1))
        return self.classifier(emb), emb


def build_net(arch: dict) -> nn.Module:
    """A network from the `arch` block of a checkpoint (see `face_arch` / `speech_arch` in training/pretrain.py)."""
    common = {"n_classes": arch["n_classes"], "embed_dim": arch["embed_dim"], "width": arch["width"],
              "dropout": arch["dropout"]}
    if arch["net"] == "face":
        return FaceEmotionCNN(in_channels=1 if arch["grayscale"] else 3, **common)
    if arch["net"] == "speech":
        return SpeechAttentionCNN(n_mels=arch["n_mels"], **common)
    raise ValueError(f"unknown network {arch['net']!r}; known: {NETS}")


# ---- shared preprocessing -----------------------------------------------------------------------------------
def face_array(crop: bytes, size: int, grayscale: bool) -> np.ndarray | None:
    """PNG/JPEG crop bytes -> [C, size, size] float32, standardised per crop; None when the bytes do not decode.

    Per-crop standardisation (zero mean, unit variance) removes the lighting, skin tone and camera gain that
    differ between speakers, so the network cannot lean on them.
    """
    try:
        rgb = decode_image(crop)
    except ValueError:
        return None
    image = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None] if grayscale else image
    x = image.transpose(2, 0, 1).astype(np.float32)
    return (x - x.mean()) / max(float(x.std()), 1.0)


def logmel_windows(logmel: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[n_mels, T] -> (windows [W, n_mels, window] zero padded, valid lengths [W], start frames [W]).

    Windows start every `hop` frames; the last one is moved back to end at the last frame, so every frame is
    covered. A clip shorter than `window` gives one padded window.
    """
    frames = logmel.shape[1]
    if frames <= window:
        starts = np.array([0])
    else:
        starts = np.unique(np.r_[np.arange(0, frames - window + 1, hop), frames - window])
    out = np.zeros((len(starts), logmel.shape[0], window), np.float32)
    lengths = np.minimum(window, frames - starts)
    for i, (s, n) in enumerate(zip(starts, lengths)):
        out[i, :, :n] = logmel[:, s:s + n]
    return out, lengths, starts


def window_mask(lengths: np.ndarray, window: int) -> torch.Tensor:
    return torch.arange(window)[None, :] < torch.as_tensor(lengths)[:, None]


# ---- checkpoints --------------------------------------------------------------------------------------------
def save_checkpoint(out_dir: Path, net: nn.Module, info: dict) -> Path:
    """Write weights.pt + checkpoint.json into `out_dir`, replacing it whole (a killed run leaves the old one)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    torch.save(net.state_dict(), tmp / WEIGHTS_FILE)
    info = {**info, "fingerprint": sha256_of(tmp / WEIGHTS_FILE)}
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
    os.chmod(tmp, 0o755)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.replace(out_dir)
    return out_dir


def read_checkpoint_info(directory: Path, net: str | None = None) -> dict:
    """The checkpoint's JSON, after checking that weights.pt is the file it describes (and its network kind)."""
    directory = Path(directory)
    info_path, weights = directory / INFO_FILE, directory / WEIGHTS_FILE
    if not info_path.exists() or not weights.exists():
        raise MissingFile(f"no checkpoint at {directory} (needs {INFO_FILE} and {WEIGHTS_FILE}): "
                                f"run `aver pretrain {net or 'face|speech'}` first")
    info = json.loads(info_path.read_text())
    if sha256_of(weights) != info.get("fingerprint"):
        raise ValueError(f"{weights} does not match the fingerprint in {info_path}: the checkpoint is "
                         "incomplete or was modified; re-run the pre-training")
    if net is not None and info["arch"]["net"] != net:
        raise ValueError(f"{directory} holds a {info['arch']['net']} network, not a {net} one")
    return info


def load_checkpoint(directory: Path, net: str | None = None, device: str = "cpu") -> tuple[nn.Module, dict]:
    """(network in eval mode on `device`, checkpoint info)."""
    info = read_checkpoint_info(directory, net)
    model = build_net(info["arch"])
    state = torch.load(Path(directory) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), info


# ---- the embedding extractors' shared part ------------------------------------------------------------------
F32 = pa.list_(pa.float32())
I32 = pa.list_(pa.int32())


class CheckpointEmbedding(BaseExtractor):
    """An extractor embedding a clip's units (face frames, log-mel windows) with a pre-trained checkpoint.

    Subclasses give the network kind (`net`) and `units(item) -> (inputs, times)`: a tuple of arrays batched along
    their first axis, and the time (s) of each unit. Output: per-unit embeddings and class probabilities, their
    clip mean/max, and the clip-mean probability of every checkpoint class (`p_<class>`).
    The instance's `version` is "<class version>+<checkpoint fingerprint>", so the feature set's configuration
    fingerprint changes with the weights even when the `checkpoint` path does not.
    `runtime` (features.onnx_runtime): on CPU by default the network runs through ONNX Runtime, exported once per
    checkpoint fingerprint; subclasses name the network's inputs and give `example_inputs()` for the export trace.
    """
    version: ClassVar[str] = "1"
    net: ClassVar[str] = ""
    input_names: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict] = {"checkpoint": "", "device": "cpu", "max_batch": 256, "skip_pretrain_speakers": True,
                                "runtime": "auto"}

    def __init__(self, **params):
        check_runtime(self.kind, params.get("runtime", "auto"))     # before the checkpoint is looked for
        super().__init__(**params)
        if not self.params["checkpoint"]:
            raise ValueError(f"{self.kind}: set `checkpoint` to the directory written by `aver pretrain {self.net}`")
        self.info = read_checkpoint_info(Path(self.params["checkpoint"]), self.net)
        # The weights are part of the output's identity: the planner fingerprints (kind, version, params), so a
        # checkpoint retrained at the same path must change the version to make the store re-extract.
        self.version = f"{type(self).version}+{self.info['fingerprint'][:12]}"
        self.classes = list(self.info["classes"])
        self.model: nn.Module | None = None
        self.onnx: OnnxNet | None = None

    def schema(self) -> pa.Schema:
        return pa.schema([("emb", F32), ("emb_shape", I32), ("emb_times", F32),
                          ("probs", F32), ("probs_shape", I32), ("emb_mean", F32), ("emb_max", F32),
                          *((f"p_{c}", pa.float32()) for c in self.classes)])

    def setup(self) -> None:
        device = self.params["device"]
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"{self.kind}: device {device!r} requested but CUDA is not available")
        self.model, self.info = load_checkpoint(Path(self.params["checkpoint"]), self.net, device)
        if uses_onnx(self.params["runtime"], device):
            axes = {name: {0: "batch"} for name in (*self.input_names, "logits", "embedding")}
            path = exported(f"{self.net}_emotion_cnn", self.info["fingerprint"], self.model, self.example_inputs(),
                            list(self.input_names), ["logits", "embedding"], axes)
            self.onnx = OnnxNet(path, self.resources.num_cpus, self.kind, device)

    def units(self, item: dict) -> tuple[tuple[np.ndarray, ...], list[float]]:
        raise NotImplementedError

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Network inputs of batch size 1, for the ONNX export's trace."""
        raise NotImplementedError

    def run_model(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, embedding) of the network (through ONNX Runtime when it is on)."""
        return self.onnx(*inputs) if self.onnx is not None else self.model(*inputs)

    @torch.inference_mode()
    def embed(self, inputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings [N, D], probabilities [N, classes]) of N units, in chunks of `max_batch`."""
        device, step = next(self.model.parameters()).device, int(self.params["max_batch"])
        embs, probs = [], []
        for start in range(0, len(inputs[0]), step):
            logits, emb = self.run_model(*(torch.from_numpy(a[start:start + step]).to(device) for a in inputs))
            embs.append(emb.float().cpu())
            probs.append(torch.softmax(logits.float(), dim=1).cpu())
        return torch.cat(embs).numpy(), torch.cat(probs).numpy()

    def extract(self, item: dict) -> dict:
        if self.model is None:
            self.setup()
        if self.params["skip_pretrain_speakers"] and item.get("speaker") in self.info["pretrain_speakers"]:
            raise ClipError("pretrain_speaker", f"speaker {item.get('speaker')} was used to pre-train the "
                                                f"{self.net} CNN: its embeddings would be in-sample")
        inputs, times = self.units(item)
        emb, probs = self.embed(inputs)
        mean_probs = probs.mean(axis=0)
        return {"emb": emb.ravel().tolist(), "emb_shape": list(emb.shape), "emb_times": times,
                "probs": probs.ravel().tolist(), "probs_shape": list(probs.shape),
                "emb_mean": emb.mean(axis=0).tolist(), "emb_max": emb.max(axis=0).tolist(),
                **{f"p_{c}": float(p) for c, p in zip(self.classes, mean_probs)}}
