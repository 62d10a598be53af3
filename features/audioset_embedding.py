"""`audioset_embedding`: EfficientAT mn04 AudioSet embeddings per window, pooled per clip, plus the clip's top classes.

The clip (its audio variant applied by `features.audio_io.load_audio`) is resampled to 32 kHz, turned into one
log-mel, and run through the network twice: once whole (the original EfficientAT inference recipe: `clip_emb` and
the top-k AudioSet classes) and once as a batch of `window_s` windows every `hop_s` seconds cut from that mel
(`emb`, pooled into `emb_mean` / `emb_max`). Windows are whole: a tail shorter than a hop is only in `clip_emb`;
a clip shorter than one window gives one window of its full length.

Resampler (`resampler`, see features.audio_io.RESAMPLERS): "kaiser_best" (default) resamples the clean clip from its
native rate with resampy's kaiser_best filter, as EfficientAT did through librosa 0.9; it reproduces the reference
32 kHz waves bit for bit. "soxr_hq" resamples with soxr HQ instead (40x faster, no resampy), which moves the
embedding by up to 0.04 (cosine >= 0.999) and the probabilities by up to 0.017 on the reference clips: the log-mel
amplifies differences in the resampler's stop band, where the source has no content. Either way the clean 32 kHz
clip is resampled once and the noise of an audio variant is mixed at 32 kHz, as every audio feature set mixes it
at its own rate.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
import torch

from features.audio_io import RESAMPLERS, load_audio
from features.efficientat import EMBED_DIM, HOP, SAMPLE_RATE, MelFrontEnd, MobileNetAudioSet, load_model
from features.onnx_runtime import OnnxNet, check_runtime, exported, uses_onnx
from pipelines.extractor import BaseExtractor, ClipError
from pipelines.weights import fetch, sha256_of

WEIGHTS = "efficientat_mn04_as"
FRAMES_PER_S = SAMPLE_RATE // HOP
MIN_SAMPLES = 1024        # one FFT frame: the STFT's reflect padding needs more than half a frame of signal
F32 = pa.list_(pa.float32())


class AudioSetEmbedding(BaseExtractor):
    kind: ClassVar[str] = "audioset_embedding"
    version: ClassVar[str] = "2"     # 2: audio variants mixed at 32 kHz, after resampling
    modality: ClassVar[str] = "audio"
    defaults: ClassVar[dict] = {"window_s": 1.0, "hop_s": 0.5, "top_k": 5, "resampler": "kaiser_best",
                                "device": "cpu", "max_batch": 64, "runtime": "auto"}

    model: MobileNetAudioSet | None = None

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["resampler"] not in RESAMPLERS:
            raise ValueError(f"{self.kind}: resampler must be one of {sorted(RESAMPLERS)}, not {self.params['resampler']!r}")
        check_runtime(self.kind, self.params["runtime"])
        self.window = max(1, round(self.params["window_s"] * FRAMES_PER_S))
        self.hop = max(1, round(self.params["hop_s"] * FRAMES_PER_S))

    def schema(self) -> pa.Schema:
        return pa.schema([
            ("emb", F32), ("emb_shape", pa.list_(pa.int32())), ("emb_times", F32),
            ("emb_mean", F32), ("emb_max", F32), ("clip_emb", F32),
            ("top_ids", pa.list_(pa.int32())), ("top_probs", F32),
        ])

    def setup(self) -> None:
        device = self.params["device"]
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"{self.kind}: device {device!r} requested but CUDA is not available")
        self.model = self.forward = load_model(fetch(WEIGHTS), device)
        self.front_end = MelFrontEnd().to(device)
        if uses_onnx(self.params["runtime"], device):
            axes = {"mel": {0: "batch", 3: "frames"}, "logits": {0: "batch"}, "embedding": {0: "batch"}}
            path = exported("efficientat_mn04_as", sha256_of(fetch(WEIGHTS)), self.model,
                            (torch.zeros(1, 1, 128, FRAMES_PER_S),), ["mel"], ["logits", "embedding"], axes)
            self.forward = OnnxNet(path, self.resources.num_cpus, self.kind, device)

    def wave32k(self, item: dict) -> np.ndarray:
        return load_audio(item, SAMPLE_RATE, self.params["resampler"])[0]

    @torch.inference_mode()
    def embed(self, wave: np.ndarray) -> dict:
        """32 kHz mono wave -> feature columns (see the module docstring)."""
        device = self.front_end.window.device
        mel = self.front_end(torch.from_numpy(np.array(wave, dtype=np.float32))[None].to(device))   # a copy: the cached clip is read-only
        logits, clip_emb = self.forward(mel[:, None])
        probs = torch.sigmoid(logits[0]).float().cpu()
        top = torch.topk(probs, self.params["top_k"])

        frames = mel.shape[-1]
        size = min(self.window, frames)
        windows = mel[0].unfold(-1, size, self.hop).permute(1, 0, 2)[:, None]    # [W, 1, 128, size]
        emb = torch.cat([self.forward(windows[i:i + self.params["max_batch"]])[1]
                         for i in range(0, len(windows), self.params["max_batch"])]).float().cpu().numpy()
        centres = (np.arange(len(emb)) * self.hop + size / 2) / FRAMES_PER_S
        return {
            "emb": emb.ravel().tolist(), "emb_shape": [len(emb), EMBED_DIM], "emb_times": centres.tolist(),
            "emb_mean": emb.mean(axis=0).tolist(), "emb_max": emb.max(axis=0).tolist(),
            "clip_emb": clip_emb[0].float().cpu().tolist(),
            "top_ids": top.indices.tolist(), "top_probs": top.values.tolist(),
        }

    def extract(self, item: dict) -> dict:
        if self.model is None:
            self.setup()
        wave = self.wave32k(item)
        if len(wave) < MIN_SAMPLES:
            raise ClipError("too_short", f"{len(wave) / SAMPLE_RATE * 1000:.1f} ms of audio, "
                                         f"need {MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms")
        return self.embed(wave)
