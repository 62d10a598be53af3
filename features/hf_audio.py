"""Hugging Face `transformers` speech encoders for `ssl_speech`: find the model's files, record what they are, load
the encoder, and run it on 16 kHz segments, whatever the family.

Files: `model` is a local folder (a `save_pretrained` output: the offline path) or a Hub id with a `revision`. A Hub
model is resolved through huggingface_hub's own cache (`HF_HOME`) with `snapshot_download`, offline
(`local_files_only`) when `AVER_OFFLINE=1` or `HF_HUB_OFFLINE=1`. Only `config.json`, `preprocessor_config.json`
and `*.safetensors` are fetched and loaded: safetensors holds tensors only, so loading a model folder someone sent
never unpickles anything, and no model code is ever taken from the Hub (`trust_remote_code` stays off).

Families: the wav2vec2 family (wav2vec2, HuBERT, WavLM, data2vec-audio) reads the (normalised) wave and gives one
frame every 320 samples; Whisper's encoder reads a 30 s log-mel and gives one frame every 20 ms, so its
segments are at most 30 s and are each padded to 30 s by its feature extractor.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import torch

from pipelines.weights import sha256_of

MODEL_FILES = ["config.json", "preprocessor_config.json", "*.safetensors", "model.safetensors.index.json"]
WAV2VEC2_FAMILY = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
FAMILIES = (*WAV2VEC2_FAMILY, "whisper")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def offline() -> bool:
    return os.environ.get("AVER_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"


def model_folder(model: str, revision: str | None) -> Path:
    """The local folder holding the model's files: `model` itself, or its snapshot in the Hugging Face cache."""
    if Path(model).expanduser().is_dir():
        return Path(model).expanduser().resolve()
    if not revision:
        raise ValueError(f"ssl_speech: model {model!r} is not a local folder, so it is a Hub id and needs a pinned "
                         "`revision` (a commit hash) for the features to be reproducible")
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(model, revision=revision, allow_patterns=MODEL_FILES,
                                      local_files_only=offline()))
    except Exception as e:  # noqa: BLE001 - network, auth or cache problems: one clear message for all
        where = "offline: the Hugging Face cache ($HF_HOME) lacks it" if offline() else "cannot download it"
        raise RuntimeError(f"ssl_speech: model {model!r} at revision {revision!r} is unavailable ({where}): "
                           f"{type(e).__name__}: {e}") from e


def provenance(model: str, revision: str | None, folder: Path) -> dict:
    """Model id, the revision asked for and the commit it resolved to (a Hub snapshot folder is named after its
    commit), and the sha256 of every file that defines the model."""
    files = sorted(p for pattern in MODEL_FILES for p in folder.glob(pattern))
    if not any(p.suffix == ".safetensors" for p in files):
        raise ValueError(f"ssl_speech: {folder} has no *.safetensors weights (pickled .bin weights are not loaded: "
                         "convert them with `save_pretrained(..., safe_serialization=True)`, or pick a Hub "
                         "revision that has safetensors)")
    commit = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None
    return {"model": model, "revision": revision, "commit": commit,
            "files": {p.name: sha256_of(p) for p in files}}


class SpeechEncoder:
    """A loaded encoder: `frames(n)` valid output frames for n input samples, `times(n)` their centres in seconds,
    and `hidden_states(segments)` -> per segment [layers + 1, frames, dim] float32."""

    def __init__(self, folder: Path, device: str, dtype: str):
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
        self.config = AutoConfig.from_pretrained(folder)
        self.family = self.config.model_type
        if self.family not in FAMILIES:
            raise ValueError(f"ssl_speech: model type {self.family!r} is not supported; supported: {FAMILIES}")
        self.processor = AutoFeatureExtractor.from_pretrained(folder)
        self.sample_rate = int(self.processor.sampling_rate)
        model = AutoModel.from_pretrained(folder, use_safetensors=True, dtype=DTYPES[dtype])
        self.model = (model.get_encoder() if self.family == "whisper" else model).to(device).eval()
        self.device, self.dtype = device, DTYPES[dtype]
        if self.family == "whisper":
            self.stride = 2 * int(self.processor.hop_length)      # the encoder's second conv halves the mel rate
            self.offset = 0                                       # frame i is centred on mel frame 2i
            self.max_samples = int(self.processor.n_samples)
        else:
            self.stride = math.prod(self.config.conv_stride)
            field, jump = 1, 1
            for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride):
                field, jump = field + (kernel - 1) * jump, jump * stride
            self.offset = field / 2                               # a frame's centre: half its receptive field
            self.max_samples = None
        self.min_samples = self.stride if self.family == "whisper" else int(2 * self.offset)

    @property
    def num_layers(self) -> int:
        """hidden_states per segment: the input of the first transformer layer, then each layer's output."""
        return int(self.config.encoder_layers if self.family == "whisper" else self.config.num_hidden_layers) + 1

    @property
    def pads_safely(self) -> bool:
        """Whether padding a segment in a batch leaves its frames as they are alone. It does not when the conv
        front end normalises over time (group norm: wav2vec2-base, HuBERT-base), nor in data2vec-audio, whose
        stacked positional convs carry padded frames back into the clip's last frames; those are batched only
        with segments of the same length."""
        if self.family == "whisper":
            return True                                           # every segment is padded to 30 s alone anyway
        return self.family != "data2vec-audio" and self.config.feat_extract_norm == "layer"

    def frames(self, n: int) -> int:
        if self.family == "whisper":      # a 30 s input has one mel frame more than the encoder has positions
            return min(math.ceil((n // int(self.processor.hop_length) + 1) / 2), self.config.max_source_positions)
        return int(self.model._get_feat_extract_output_lengths(torch.tensor(n)))

    def times(self, n: int) -> np.ndarray:
        return (np.arange(self.frames(n)) * self.stride + self.offset) / self.sample_rate

    def normalise(self, wave: np.ndarray) -> np.ndarray:
        """The whole clip as the encoder reads it (wav2vec2 family: zero mean, unit variance when the model's
        feature extractor says so); done once per clip so that its chunks share one normalisation."""
        if self.family == "whisper":
            return wave
        return self.processor(wave, sampling_rate=self.sample_rate, return_tensors="np").input_values[0]

    @torch.inference_mode()
    def hidden_states(self, segments: list[np.ndarray]) -> list[np.ndarray]:
        if self.family == "whisper":
            inputs = self.processor(segments, sampling_rate=self.sample_rate, return_tensors="pt")
            batch = {"input_features": inputs.input_features.to(self.device, self.dtype)}
        else:
            longest = max(len(s) for s in segments)
            values = np.full((len(segments), longest), self.processor.padding_value, np.float32)
            mask = np.zeros((len(segments), longest), np.int64)
            for i, s in enumerate(segments):
                values[i, :len(s)], mask[i, :len(s)] = s, 1
            batch = {"input_values": torch.from_numpy(values).to(self.device, self.dtype)}
            if not mask.all():
                batch["attention_mask"] = torch.from_numpy(mask).to(self.device)
        states = torch.stack(self.model(**batch, output_hidden_states=True).hidden_states, dim=1)   # [B, L+1, T, D]
        states = states.float().cpu().numpy()
        return [states[i, :, :self.frames(len(s))] for i, s in enumerate(segments)]
