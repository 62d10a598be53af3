"""Log-mel spectrogram: the input of CNN/transformer audio models, stored as a flattened [n_mels, frames] array.

Frames are centred (librosa `center=True`): frame t covers [t*hop - n_fft/2, t*hop + n_fft/2) samples, so a clip of
n samples gives 1 + n // hop frames and `frame_times[t] = t * hop / sample_rate`.
"""
from __future__ import annotations

import librosa
import numpy as np
import pyarrow as pa

from features.audio_io import load_clip, require_samples
from pipelines.extractor import BaseExtractor


class LogMelExtractor(BaseExtractor):
    kind = "logmel"
    version = "1"
    modality = "audio"
    defaults = {"sample_rate": 16000, "n_mels": 64, "n_fft": 400, "hop_length": 160,
                "fmin": 50.0, "fmax": 8000.0, "log_offset": 1e-6}

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        if not 0 <= p["fmin"] < p["fmax"] <= p["sample_rate"] / 2:
            raise ValueError(f"logmel: need 0 <= fmin < fmax <= sample_rate/2, got {p['fmin']}, {p['fmax']}")
        self.mel_basis = None

    def schema(self) -> pa.Schema:
        return pa.schema([("clipped_fraction", pa.float32()), ("logmel", pa.list_(pa.float32())),
                          ("logmel_shape", pa.list_(pa.int32())), ("frame_times", pa.list_(pa.float32()))])

    def setup(self) -> None:
        p = self.params
        self.mel_basis = librosa.filters.mel(sr=p["sample_rate"], n_fft=p["n_fft"], n_mels=p["n_mels"],
                                             fmin=p["fmin"], fmax=p["fmax"]).astype(np.float32)

    def extract(self, item: dict) -> dict:
        if self.mel_basis is None:
            self.setup()
        p = self.params
        clip = load_clip(item, p["sample_rate"])
        require_samples(clip, p["n_fft"], f"one STFT frame (n_fft={p['n_fft']})")
        power = np.abs(librosa.stft(clip.signal, n_fft=p["n_fft"], hop_length=p["hop_length"])) ** 2
        logmel = np.log(self.mel_basis @ power + p["log_offset"]).astype(np.float32)
        frames = logmel.shape[1]
        return {"clipped_fraction": clip.clipped_fraction, "logmel": logmel.ravel(),
                "logmel_shape": np.array(logmel.shape, dtype=np.int32),
                "frame_times": (np.arange(frames) * p["hop_length"] / p["sample_rate"]).astype(np.float32)}
