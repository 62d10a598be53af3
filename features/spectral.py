"""Classic librosa speech-emotion features (MFCC, chroma, zero-crossing rate, RMS): the Keropyan 2021 set.

MFCC and chroma share one STFT; ZCR and RMS use the same centred frames on the waveform, so every series has the
same frames and `frame_times`.
Frame series are stored for sequence models (`mfcc`/`chroma` flattened [coefficients, frames] with `*_shape`);
per-coefficient mean/std/min/max over frames are scalar columns for the LightGBM baselines.
"""
from __future__ import annotations

import librosa
import numpy as np
import pyarrow as pa

from features.audio_io import load_clip, require_samples
from pipelines.extractor import BaseExtractor

STATS = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max}
N_CHROMA = 12       # pitch classes, 0 = C ... 11 = B


def summary(prefix: str, series: np.ndarray) -> dict[str, float]:
    """{prefix}{i}_{stat} for each row i of a [coefficients, frames] array ({prefix}_{stat} for a single row)."""
    out = {}
    for name, fn in STATS.items():
        values = fn(series, axis=1)
        if len(values) == 1:
            out[f"{prefix}_{name}"] = values[0]
        else:
            out.update({f"{prefix}{i}_{name}": v for i, v in enumerate(values)})
    return out


class SpectralExtractor(BaseExtractor):
    kind = "spectral"
    version = "1"
    modality = "audio"
    defaults = {"sample_rate": 16000, "n_mfcc": 40, "n_mels": 64, "n_fft": 512, "hop_length": 160,
                "fmin": 0.0, "fmax": 8000.0}

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        if not 0 <= p["fmin"] < p["fmax"] <= p["sample_rate"] / 2:
            raise ValueError(f"spectral: need 0 <= fmin < fmax <= sample_rate/2, got {p['fmin']}, {p['fmax']}")
        if p["n_mfcc"] > p["n_mels"]:
            raise ValueError(f"spectral: n_mfcc ({p['n_mfcc']}) cannot exceed n_mels ({p['n_mels']})")
        self.mel_basis = self.chroma_basis = None

    def stat_names(self) -> list[str]:
        rows = {"mfcc": self.params["n_mfcc"], "chroma": N_CHROMA, "zcr": 1, "rms": 1}
        return [name for prefix, n in rows.items() for name in summary(prefix, np.zeros((n, 1)))]

    def schema(self) -> pa.Schema:
        series, shape = pa.list_(pa.float32()), pa.list_(pa.int32())
        return pa.schema([("clipped_fraction", pa.float32()), ("frame_times", series),
                          ("mfcc", series), ("mfcc_shape", shape), ("chroma", series), ("chroma_shape", shape),
                          ("zcr", series), ("rms", series)] + [(n, pa.float32()) for n in self.stat_names()])

    def setup(self) -> None:
        p = self.params
        self.mel_basis = librosa.filters.mel(sr=p["sample_rate"], n_fft=p["n_fft"], n_mels=p["n_mels"],
                                             fmin=p["fmin"], fmax=p["fmax"])
        # tuning 0: speech has no concert-pitch reference, and estimating one costs a pitch track per clip
        self.chroma_basis = librosa.filters.chroma(sr=p["sample_rate"], n_fft=p["n_fft"], n_chroma=N_CHROMA,
                                                   tuning=0.0)

    def extract(self, item: dict) -> dict:
        if self.mel_basis is None:
            self.setup()
        p = self.params
        clip = load_clip(item, p["sample_rate"])
        require_samples(clip, p["n_fft"], f"one STFT frame (n_fft={p['n_fft']})")
        y = clip.signal
        power = np.abs(librosa.stft(y, n_fft=p["n_fft"], hop_length=p["hop_length"])) ** 2
        mfcc = librosa.feature.mfcc(S=librosa.power_to_db(self.mel_basis @ power), n_mfcc=p["n_mfcc"])
        chroma = librosa.util.normalize(self.chroma_basis @ power, norm=np.inf, axis=0)
        zcr = librosa.feature.zero_crossing_rate(y, frame_length=p["n_fft"], hop_length=p["hop_length"])
        rms = librosa.feature.rms(y=y, frame_length=p["n_fft"], hop_length=p["hop_length"])
        frames = power.shape[1]
        series = {"mfcc": mfcc, "chroma": chroma, "zcr": zcr, "rms": rms}
        row = {"clipped_fraction": clip.clipped_fraction,
               "frame_times": (np.arange(frames) * p["hop_length"] / p["sample_rate"]).astype(np.float32),
               "mfcc": mfcc.astype(np.float32).ravel(), "mfcc_shape": np.array(mfcc.shape, dtype=np.int32),
               "chroma": chroma.astype(np.float32).ravel(), "chroma_shape": np.array(chroma.shape, dtype=np.int32),
               "zcr": zcr[0].astype(np.float32), "rms": rms[0].astype(np.float32)}
        for name, values in series.items():
            row.update(summary(name, values.astype(np.float64)))
        return row
