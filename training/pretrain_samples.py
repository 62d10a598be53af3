"""The pre-training samples of the emotion CNNs (training/pretrain.py) from the store: one row per face frame or
log-mel window of the declared speakers' clips, the speaker split, and the face augmentation."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.emotion_cnn import face_array, logmel_windows
from pipelines.errors import BadParams
from pipelines.store import FeatureStore
from training.splits import resolve_labels, select_labels

log = logging.getLogger("aver.pretrain")

UPSTREAM_COLUMNS = {"face": ["crops", "face_found"], "speech": ["logmel", "logmel_shape"]}


@dataclass
class Samples:
    """Network inputs of the pre-training clips: one row per face frame or log-mel window."""
    x: np.ndarray               # [N, C, S, S] faces or [N, n_mels, window] log-mel windows
    lengths: np.ndarray | None  # valid frames of each window (speech only)
    y: np.ndarray               # class index
    speakers: np.ndarray

    def take(self, idx: np.ndarray) -> "Samples":
        return Samples(self.x[idx], None if self.lengths is None else self.lengths[idx], self.y[idx],
                       self.speakers[idx])


def face_samples(df: pd.DataFrame, column: str, cfg: dict, y: np.ndarray) -> Samples:
    """Up to `frames_per_clip` evenly spaced face crops per clip."""
    xs, ys, speakers = [], [], []
    for crops, label, speaker, clip_id in zip(df[f"{column}.crops"], y, df["speaker"], df["clip_id"]):
        present = [i for i, c in enumerate(crops) if c is not None and len(c)]
        picks = np.unique(np.linspace(0, len(present) - 1, min(len(present), cfg["frames_per_clip"])).round()
                          .astype(int)) if present else []
        for i in picks:
            face = face_array(bytes(crops[present[i]]), cfg["input_size"], cfg["grayscale"])
            if face is None:
                log.warning("%s: face crop %d does not decode; skipped", clip_id, present[i])
                continue
            xs.append(face), ys.append(label), speakers.append(speaker)
    if not xs:
        raise BadParams("pretrain face: no decodable face crop in the pre-training clips")
    return Samples(np.stack(xs), None, np.array(ys), np.array(speakers))


def speech_samples(df: pd.DataFrame, column: str, cfg: dict, y: np.ndarray) -> Samples:
    """Every log-mel window (`window` frames every `hop`) of every clip."""
    xs, lengths, ys, speakers = [], [], [], []
    for values, shape, label, speaker, clip_id in zip(df[f"{column}.logmel"], df[f"{column}.logmel_shape"], y,
                                                      df["speaker"], df["clip_id"]):
        logmel = np.asarray(values, np.float32).reshape([int(s) for s in shape])
        if not np.isfinite(logmel).all():
            log.warning("%s: log-mel has non-finite values; skipped", clip_id)
            continue
        windows, valid, _ = logmel_windows(logmel, cfg["window"], cfg["hop"])
        xs.append(windows), lengths.append(valid)
        ys += [label] * len(windows)
        speakers += [speaker] * len(windows)
    return Samples(np.concatenate(xs), np.concatenate(lengths), np.array(ys), np.array(speakers))


def load_clips(store: FeatureStore, cfg: dict, which: str, speakers: list[str],
               label_sets: dict) -> tuple[pd.DataFrame, list[str]]:
    """Clean upstream rows of the declared speakers with a label in the pre-training label set, and the classes."""
    fs = cfg["feature_set"]
    df = store.load([fs], list(cfg["corpora"]), ("clean",), columns={fs: UPSTREAM_COLUMNS[which]})
    main = f"{fs}.{UPSTREAM_COLUMNS[which][0]}"
    if main not in df:
        raise BadParams(f"pretrain {which}: the store has no {fs} rows for {cfg['corpora']}: "
                         f"run `aver extract {fs}` first")
    df = df[df["speaker"].isin(speakers) & df[main].notna()]
    classes = resolve_labels(cfg["labels"], df["emotion"], label_sets)
    df = select_labels(df, classes)
    unused = sorted(set(speakers) - set(df["speaker"]))
    if cfg["speakers"] is not None and unused:
        raise BadParams(f"pretrain {which}: declared speakers without labelled {fs} rows: {unused}")
    if df["emotion"].nunique() < 2:
        raise BadParams(f"pretrain {which}: need at least two classes, have {sorted(set(df['emotion']))}")
    return df, classes


def split_speakers(speakers: list[str], n_valid: int, seed: int) -> tuple[list[str], list[str]]:
    """(training speakers, validation speakers): `n_valid` whole speakers drawn with the seed."""
    if n_valid and len(speakers) <= n_valid:
        raise BadParams(f"pretrain: {len(speakers)} speaker(s) {speakers} cannot leave {n_valid} for validation "
                         "and still train; declare more speakers or set valid_speakers: 0")
    valid = sorted(np.random.default_rng(seed).choice(speakers, n_valid, replace=False).tolist()) if n_valid else []
    return [s for s in speakers if s not in valid], valid


def logmel_statistics(samples: Samples) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-bin mean and std over the valid frames of the training windows."""
    valid = np.arange(samples.x.shape[2])[None, :] < samples.lengths[:, None]
    frames = samples.x.transpose(0, 2, 1)[valid]
    return frames.mean(axis=0), frames.std(axis=0)


def augment_faces(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random shifts (up to 1/16 of the crop) and horizontal flips: the expression, not its pixels, is the label."""
    n, _, size, _ = x.shape
    pad = max(1, size // 16)
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
    dx, dy = rng.integers(0, 2 * pad + 1, (2, n))
    out = np.stack([padded[i, :, dy[i]:dy[i] + size, dx[i]:dx[i] + size] for i in range(n)])
    flip = rng.random(n) < 0.5
    out[flip] = out[flip][..., ::-1]
    return out
