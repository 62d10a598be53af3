"""What the torch fusion models (fbp, temporal, vavl) share: sequence inputs from the store, padded batches with
masks, attention pooling, the training loop with early stopping, and save/load.

Param `features` names, per modality, the store columns forming its sequence, in the train stage's style
(modality -> feature set -> column globs): `{"audio": {"logmel": ["logmel"]}, "video": {"fer_embedding": ["emb"]}}`.
Each column holds per clip a flattened 2-D array with a `<column>_shape` companion (its time axis given per feature
set by `time_axis`, e.g. `{"logmel": 1}`: log-mel is stored [n_mels, frames]), or a 1-D per-frame series (one
feature). Several columns are stacked along features (resampled to the first one's length). A null cell is a
missing modality.
"""
from __future__ import annotations

import contextlib
import copy
import fnmatch
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import GroupShuffleSplit
from torch import nn

from pipelines.errors import BadParams
from training.data import Frame
from training.models import MODALITIES

COMMON_DEFAULTS: dict = {
    "features": {},                 # modality -> {feature set: column globs}; each model has its own default
    "time_axis": {"logmel": 1},     # feature set -> time axis of its 2-D columns (default 0: [frames, dims])
    "target": "emotion",            # "emotion" (classes) or "dims" (regression of `dims` with a CCC loss)
    "dims": ["valence", "arousal"],
    "hidden": 64,
    "dropout": 0.2,
    "epochs": 60,
    "batch_size": 16,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "patience": 8,                  # epochs without a better inner-validation loss before stopping
    "valid_fraction": 0.15,         # inner validation split (by speaker) when fit() gets no valid frame
    "class_weight": "balanced",     # or null
    "max_frames": 128,              # longer sequences are average-pooled in time down to this length
    "seed": 0,
    "device": "cpu",
    "threads": 1,                   # torch CPU threads while fitting/predicting: these nets are too small to gain
}


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with n torch CPU threads, then restore: tiny ops lose more to thread overhead than they gain."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- inputs from the store ---------------------------------------------------------------------------------
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


# ---- building blocks -----------------------------------------------------------------------------------------
class InputNorm(nn.Module):
    """Standardise features with training statistics (kept in the state dict); NaN and padding become 0."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, seqs: list[np.ndarray | None]) -> None:
        frames = np.concatenate([s for s in seqs if s is not None])
        with np.errstate(invalid="ignore"):
            mean, std = np.nanmean(frames, axis=0), np.nanstd(frames, axis=0)
        self.mean.copy_(torch.from_numpy(np.nan_to_num(mean)))
        self.std.copy_(torch.from_numpy(np.where(np.nan_to_num(std) > 1e-6, std, 1.0)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std
        return torch.where(mask[..., None] & torch.isfinite(z), z, torch.zeros_like(z))


class AttentionPool(nn.Module):
    """Additive attention over the valid cells: sum_i softmax(w^T tanh(W h_i + b))_i h_i; zeros when none."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        e = self.score(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        e = e.masked_fill(~mask.any(dim=1, keepdim=True), 0.0)   # all-masked rows: avoid NaN, zeroed next
        w = torch.softmax(e, dim=1) * mask
        return (w.unsqueeze(-1) * h).sum(dim=1)


class FusionNet(nn.Module):
    """Base of the three networks: per-modality input normalisation and a default training loss."""

    def __init__(self, dims: dict[str, int], n_out: int):
        super().__init__()
        self.norm = nn.ModuleDict({m: InputNorm(d) for m, d in dims.items()})
        # the output for a row with none of the requested modalities: training class prior / mean dimensions
        self.register_buffer("fallback", torch.zeros(n_out))

    def inputs(self, batch: Batch, m: str) -> torch.Tensor:
        return self.norm[m](batch.x[m], batch.mask[m])

    def loss(self, batch: Batch, criterion) -> torch.Tensor:
        return criterion(self(batch), batch.y)


def ccc(pred: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Concordance correlation coefficient per column."""
    pm, gm = pred.mean(0), gold.mean(0)
    cov = ((pred - pm) * (gold - gm)).mean(0)
    return 2 * cov / (pred.var(0, unbiased=False) + gold.var(0, unbiased=False) + (pm - gm) ** 2 + 1e-8)


def ccc_loss(pred: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    return 1.0 - ccc(pred, gold).mean()


# ---- training -----------------------------------------------------------------------------------------------
def inner_split(df: pd.DataFrame, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation row positions, grouped by speaker (by clip when speakers are unknown)."""
    groups = df["speaker"].fillna(df["clip_id"]) if "speaker" in df.columns else df["clip_id"]
    if groups.nunique() < 3 or fraction <= 0:
        return np.arange(len(df)), np.arange(0)
    split = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    train, valid = next(split.split(np.zeros(len(df)), groups=groups.to_numpy()))
    return train, valid


def _batches(n: int, size: int, rng: np.random.Generator | None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, size):
        yield order[start:start + size]


class TorchModel:
    """Estimator wrapper shared by fbp/temporal/vavl: store frames in, probabilities (or dimensions) out."""
    name: str = ""
    defaults: ClassVar[dict] = {}
    default_features: ClassVar[dict] = {}
    required: ClassVar[tuple[str, ...]] = MODALITIES    # modalities the network cannot do without

    def __init__(self, params: dict, classes: list[str]):
        params = dict(params or {})
        known = {**COMMON_DEFAULTS, **self.defaults}
        unknown = set(params) - set(known)
        if unknown:
            raise BadParams(f"{type(self).__name__}: unknown params {sorted(unknown)}; known: {sorted(known)}")
        self.params = {**known, **params}
        if self.params["target"] not in ("emotion", "dims"):
            raise BadParams(f"target must be 'emotion' or 'dims', not {self.params['target']!r}")
        self.classes = list(classes)
        self.targets = list(self.params["dims"]) if self.regression else []
        self.params["features"] = self.params["features"] or self.default_features
        self.modalities = tuple(m for m in MODALITIES if m in self.params["features"])
        if not set(self.required) <= set(self.modalities) or not self.modalities:
            raise BadParams(f"{type(self).__name__} needs `features` for {list(self.required) or 'a modality'}, "
                             f"got {sorted(self.params['features'])}")
        self.columns: dict[str, list[str]] = {}
        self.dims: dict[str, int] = {}
        self.net: FusionNet | None = None

    @property
    def regression(self) -> bool:
        return self.params["target"] == "dims"

    def build(self, dims: dict[str, int], n_out: int) -> FusionNet:
        raise NotImplementedError

    # -- data
    def _sequences(self, frame: Frame) -> dict[str, list[np.ndarray | None]]:
        if not self.columns:        # resolved once, on the training frame, so test frames read the same columns
            self.columns = {m: resolve_columns(frame.df, self.params["features"][m]) for m in self.modalities}
        return {m: load_sequences(frame, m, self.columns[m], self.params["time_axis"],
                                  int(self.params["max_frames"])) for m in self.modalities}

    def _labels(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Targets and the rows that have them (labels outside `classes` or missing dimensions are skipped)."""
        if self.regression:
            y = df[self.targets].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
            return y, np.isfinite(y).all(axis=1)
        index = {c: i for i, c in enumerate(self.classes)}
        codes = np.array([index.get(e, -1) for e in df["emotion"]], dtype=np.int64)
        return codes, codes >= 0

    def _criterion(self, y: np.ndarray):
        if self.regression:
            return ccc_loss
        weight = None
        if self.params["class_weight"] == "balanced":
            counts = np.bincount(y, minlength=len(self.classes)).astype(np.float32)
            weight = np.where(counts > 0, counts.sum() / (max(1, (counts > 0).sum()) * np.maximum(counts, 1)), 0.0)
            weight = torch.tensor(weight, dtype=torch.float32, device=self.params["device"])
        return nn.CrossEntropyLoss(weight=weight)

    # -- fit / predict
    def _rows(self, frame: Frame) -> tuple[pd.DataFrame, dict[str, list], np.ndarray]:
        """Labelled rows with data for at least one modality: (table, sequences, targets)."""
        df = frame.df
        y, keep = self._labels(df)
        seqs = self._sequences(frame)
        keep &= np.array([any(s[i] is not None for s in seqs.values()) for i in range(len(df))], dtype=bool)
        idx = np.flatnonzero(keep)
        return df.iloc[idx].reset_index(drop=True), {m: [s[i] for i in idx] for m, s in seqs.items()}, y[idx]

    def fit(self, train: Frame, valid: Frame | None = None) -> None:
        self.columns = {}
        df, seqs, y = self._rows(train)
        if len(y) == 0:
            raise BadParams(f"{self.name or type(self).__name__}: no labelled training rows with features")
        if valid is None:
            tr, va = inner_split(df, float(self.params["valid_fraction"]), int(self.params["seed"]))
            vseqs, vy = {m: [s[i] for i in va] for m, s in seqs.items()}, y[va]
            seqs, y = {m: [s[i] for i in tr] for m, s in seqs.items()}, y[tr]
        else:
            _, vseqs, vy = self._rows(valid)
        self.dims = {m: feature_dim(s, m) for m, s in seqs.items()}
        with torch.random.fork_rng(devices=[]), torch_threads(self.params["threads"]):
            torch.manual_seed(int(self.params["seed"]))
            n_out = len(self.targets) if self.regression else len(self.classes)
            self.net = self.build(self.dims, n_out).to(self.params["device"])
            for m, s in seqs.items():
                self.net.norm[m].fit(s)
            self._set_fallback(y)
            self._train(seqs, y, vseqs, vy, self._criterion(y))

    def _set_fallback(self, y: np.ndarray) -> None:
        fallback = y.mean(axis=0) if self.regression else np.bincount(y, minlength=len(self.classes)) / len(y)
        self.net.fallback.copy_(torch.tensor(fallback, dtype=torch.float32))

    def _train(self, seqs, y, vseqs, vy, criterion) -> None:
        p, net = self.params, self.net
        opt = torch.optim.AdamW(net.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))
        rng = np.random.default_rng(int(p["seed"]))
        best, best_state, stale = math.inf, None, 0
        for _ in range(int(p["epochs"])):
            net.train()
            for idx in _batches(len(y), int(p["batch_size"]), rng):
                if len(idx) < 2:        # batch statistics (CCC, variance) need two rows
                    continue
                loss = net.loss(collate(seqs, idx, self.dims, self.modalities, y, p["device"]), criterion)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 5.0)
                opt.step()
            if len(vy) < 2:
                continue
            score = self._valid_loss(vseqs, vy, criterion)
            if score < best - 1e-4:
                best, best_state, stale = score, copy.deepcopy(net.state_dict()), 0
            else:
                stale += 1
                if stale >= int(p["patience"]):
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()

    @torch.no_grad()
    def _valid_loss(self, seqs, y, criterion) -> float:
        self.net.eval()
        out = self._forward(seqs, len(y), self.modalities)
        return float(criterion(out, torch.as_tensor(y).to(out.device)))

    @torch.no_grad()
    def _forward(self, seqs, n: int, use: tuple[str, ...]) -> torch.Tensor:
        outs = [self.net(collate(seqs, idx, self.dims, use, None, self.params["device"]))
                for idx in _batches(n, 64, None)]
        return torch.cat(outs) if outs else torch.zeros(0, len(self.net.fallback))

    @torch.no_grad()
    def _outputs(self, test: Frame, modalities: tuple[str, ...]) -> np.ndarray:
        if self.net is None:
            raise RuntimeError(f"{self.name or type(self).__name__} is not fitted")
        self.net.eval()
        use = tuple(m for m in self.modalities if m in modalities)
        seqs = self._sequences(test)
        n = len(test)
        with torch_threads(self.params["threads"]):
            out = self._forward(seqs, n, use)
        out = out if self.regression else torch.softmax(out, dim=1)
        none = np.array([all(seqs[m][i] is None for m in use) for i in range(n)], dtype=bool)
        out[torch.from_numpy(none)] = self.net.fallback
        return out.cpu().numpy().astype(np.float64)

    def predict_proba(self, test: Frame, modalities: tuple[str, ...] = MODALITIES) -> np.ndarray:
        """[n, len(classes)] class probabilities; modalities outside `modalities` are treated as missing."""
        if self.regression:
            raise TypeError(f"{self.name or type(self).__name__} regresses {self.targets}: use predict()")
        return self._outputs(test, modalities)

    def predict(self, test: Frame, modalities: tuple[str, ...] = MODALITIES) -> np.ndarray:
        """[n, len(targets)] predictions of a `target: dims` model."""
        if not self.regression:
            raise TypeError(f"{self.name or type(self).__name__} is a classifier: use predict_proba()")
        return self._outputs(test, modalities)

    # -- persistence (model.json belongs to training.models.save_model)
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), directory / "net.pt")
        info = {"name": self.name, "params": self.params, "classes": self.classes, "columns": self.columns,
                "dims": self.dims}
        (directory / "net.json").write_text(json.dumps(info, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> "TorchModel":
        directory = Path(directory)
        info = json.loads((directory / "net.json").read_text())
        model = cls(info["params"], info["classes"])
        model.name, model.columns, model.dims = info["name"], info["columns"], info["dims"]
        state = torch.load(directory / "net.pt", map_location=model.params["device"], weights_only=True)
        n_out = len(model.targets) if model.regression else len(model.classes)
        model.net = model.build(model.dims, n_out)
        model.net.load_state_dict(state)
        model.net.to(model.params["device"]).eval()
        return model
