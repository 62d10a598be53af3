"""Inputs of the torch fusion models (fbp, temporal, vavl) from the store: per-modality sequences, padded into
batches with masks.

Param `features` names, per modality, the store columns forming its sequence, in the train stage's style
(modality -> feature set -> column globs): `{"audio": {"logmel": ["logmel"]}, "video": {"fer_embedding": ["emb"]}}`.
Each column holds per clip a flattened 2-D array with a `<column>_shape` companion (its time axis given per feature
set by `time_axis`, e.g. `{"logmel": 1}`: log-mel is stored [n_mels, frames]), or a 1-D per-frame series (one
feature). Several columns are stacked along features (resampled to the first one's length). A null cell is a
missing modality.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipelines.errors import BadParams
from training.data import Frame


def _is_sequence_column(series: pd.Series) -> bool:
    first = next((v for v in series if isinstance(v, (list, np.ndarray))), None)
    return first is not None and np.asarray(first).dtype.kind in "fiub"


def resolve_columns(df: pd.DataFrame, features: dict[str, list[str]]) -> list[str]:
    """The store columns of {feature set: globs}: per-frame sequence columns only (no `_shape`/`_times`, scalars)."""
    cols: list[str] = []
    for feature_set, globs in features.items():
        names = [c for c in df.columns if c.startswith(feature_set + ".")]
        hits = [c for c in names if any(fnmatch.fnmatchcase(c[len(feature_set) + 1:], g) for g in globs)
                and not c.endswith(("_shape", "_times")) and _is_sequence_column(df[c])]
        if not hits:
            raise BadParams(f"no per-frame sequence column of {feature_set!r} matches {globs}; "
                             f"its columns: {[c[len(feature_set) + 1:] for c in names][:30]}")
        cols += [c for c in hits if c not in cols]
    return cols


def _resample(x: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation in time so series sampled at different rates line up."""
    src = np.linspace(0.0, 1.0, len(x))
    dst = np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(dst, src, x[:, j]) for j in range(x.shape[1])], axis=1).astype(np.float32)


def shorten(x: np.ndarray, max_frames: int) -> np.ndarray:
    """Average-pool frames in windows so that at most `max_frames` remain (NaN-aware)."""
    if len(x) <= max_frames:
        return x
    starts = np.arange(0, len(x), math.ceil(len(x) / max_frames))
    finite = np.isfinite(x)
    total = np.add.reduceat(np.where(finite, x, 0.0), starts, axis=0)
    count = np.add.reduceat(finite, starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count).astype(np.float32)


def load_sequences(frame: Frame, modality: str, columns: list[str], time_axis: dict[str, int],
                   max_frames: int) -> list[np.ndarray | None]:
    """Per row, the modality's [T, D] sequence; None where the store has no data for it (or lacks the column)."""
    per_column = []
    for c in columns:
        if c not in frame.df.columns:     # e.g. a corpus without this feature set: the modality is missing
            per_column.append([None] * len(frame))
            continue
        feature_set, column = c.split(".", 1)
        seqs = frame.sequence(modality, feature_set, column, int(time_axis.get(feature_set, 0)))
        per_column.append([s if len(s) else None for s in seqs])
    out: list[np.ndarray | None] = []
    for parts in zip(*per_column):
        if any(p is None for p in parts):
            out.append(None)
            continue
        length = len(parts[0])
        x = np.concatenate([p if len(p) == length else _resample(p, length) for p in parts], axis=1)
        x = x[~np.isnan(x).all(axis=1)]      # frames with no value at all (e.g. no face) carry nothing
        out.append(shorten(x, max_frames) if len(x) else None)
    return out


def feature_dim(seqs: list[np.ndarray | None], modality: str) -> int:
    dims = {s.shape[1] for s in seqs if s is not None}
    if not dims:
        raise BadParams(f"no training row has {modality} data: check the {modality} columns in the model params")
    if len(dims) > 1:
        raise BadParams(f"{modality} sequences have different feature sizes {sorted(dims)}")
    return dims.pop()


# ---- batches ------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    x: dict[str, torch.Tensor]         # modality -> [B, T, D], zero padded (NaN kept for InputNorm)
    mask: dict[str, torch.Tensor]      # modality -> [B, T] bool, True on real frames
    present: dict[str, torch.Tensor]   # modality -> [B] bool, the clip has this modality
    y: torch.Tensor | None = None


def collate(seqs: dict[str, list[np.ndarray | None]], idx: np.ndarray, dims: dict[str, int],
            use: tuple[str, ...], y: np.ndarray | None, device: str) -> Batch:
    """Pad the rows `idx` into a Batch; modalities outside `use` are passed as missing."""
    x, mask, present = {}, {}, {}
    for m, rows in seqs.items():
        items = [rows[i] if m in use else None for i in idx]
        lengths = [0 if s is None else len(s) for s in items]
        pad = np.zeros((len(idx), max(1, max(lengths)), dims[m]), dtype=np.float32)
        for j, s in enumerate(items):
            if s is not None:
                pad[j, :len(s)] = s
        x[m] = torch.from_numpy(pad).to(device)
        mask[m] = (torch.arange(pad.shape[1])[None, :] < torch.tensor(lengths)[:, None]).to(device)
        present[m] = mask[m].any(dim=1)
    target = None if y is None else torch.as_tensor(y[idx]).to(device)
    return Batch(x, mask, present, target)
