"""What the torch fusion models (fbp, temporal, vavl) share: attention pooling, input normalisation, the CCC loss
and the estimator wrapper (fit with the shared training loop of training/trainer.py, predict, save/restore).
Their inputs come from the store through training/models/torch_inputs.py (see there for the `features` param).
"""
from __future__ import annotations

import json
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
from training.models.torch_inputs import Batch, collate, feature_dim, load_sequences, resolve_columns
from training.trainer import class_weights, torch_threads, train_loop

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


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


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
        balanced = self.params["class_weight"] == "balanced"
        weight = class_weights(y, len(self.classes)).to(self.params["device"]) if balanced else None
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
            criterion, device = self._criterion(y), self.params["device"]

            def batch_loss(idx: np.ndarray, _rng) -> torch.Tensor:
                return self.net.loss(collate(seqs, idx, self.dims, self.modalities, y, device), criterion)

            validate = (lambda: {"valid_loss": self._valid_loss(vseqs, vy, criterion)}) if len(vy) >= 2 else None
            train_loop(self.net, len(y), batch_loss, self.params, validate, clip_grad=5.0)

    def _set_fallback(self, y: np.ndarray) -> None:
        fallback = y.mean(axis=0) if self.regression else np.bincount(y, minlength=len(self.classes)) / len(y)
        self.net.fallback.copy_(torch.tensor(fallback, dtype=torch.float32))

    @torch.no_grad()
    def _valid_loss(self, seqs, y, criterion) -> float:
        self.net.eval()
        out = self._forward(seqs, len(y), self.modalities)
        return float(criterion(out, torch.as_tensor(y).to(out.device)))

    @torch.no_grad()
    def _forward(self, seqs, n: int, use: tuple[str, ...]) -> torch.Tensor:
        outs = [self.net(collate(seqs, idx, self.dims, use, None, self.params["device"]))
                for idx in _chunks(n, 64)]
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

    # -- persistence: the state dict (read with weights_only, which refuses pickled objects) and plain JSON
    def save(self, directory: Path) -> None:
        torch.save(self.net.state_dict(), Path(directory) / "net.pt")
        (Path(directory) / "net.json").write_text(json.dumps({"columns": self.columns, "dims": self.dims},
                                                            indent=2, sort_keys=True))

    def restore(self, directory: Path) -> None:
        """The fitted network saved in `directory` into this instance (built from the same params)."""
        info = json.loads((Path(directory) / "net.json").read_text())
        self.columns = {m: [str(c) for c in cols] for m, cols in info["columns"].items()}
        self.dims = {m: int(d) for m, d in info["dims"].items()}
        state = torch.load(Path(directory) / "net.pt", map_location=self.params["device"], weights_only=True)
        n_out = len(self.targets) if self.regression else len(self.classes)
        self.net = self.build(self.dims, n_out)
        self.net.load_state_dict(state)
        self.net.to(self.params["device"]).eval()
