"""Model inputs from the feature store: a `Frame` is the store's DataFrame plus labels and feature selection.

`FeatureStore.load` gives one row per (clip_id, variant) with manifest columns and `<feature_set>.<column>`
feature columns. A modality (audio, video) is a selection of those columns, from params:
    {"egemaps_functionals": ["*"], "faces": ["stat_*", "face_fraction"], "fer_embedding": ["emb_mean"]}
(feature set -> column globs). Globs select scalar (numeric) columns, one input each; a fixed-length list column
(`emb_mean`) is an input per element when named exactly. Frame series and 2-D arrays are read with
`Frame.sequence`. Missing values (a clip missing from a feature set) stay NaN. `columns_to_read` is the store
projection of a training config: images (face crops) are left on disk unless a model names them.
"""
from __future__ import annotations

import fnmatch
import json
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.utils.class_weight import compute_sample_weight

from pipelines.errors import BadParams, UnknownName

Features = dict[str, list[str]]                 # feature set -> column globs
Layout = tuple[tuple[str, int], ...]            # (store column, width): the columns of a matrix, in order


@dataclass
class Frame:
    """Rows of the store (one per clip and variant), the label set, and per-modality feature selections.

    `classes` orders the integer labels `y` (-1 for a label outside the set). `features` maps a modality to its
    default selection; models may pass their own selection to `layout`/`matrix`.
    """
    df: pd.DataFrame
    classes: list[str]
    features: dict[str, Features]
    class_weight: str | None = "balanced"
    _root: pd.DataFrame | None = field(default=None, repr=False)
    _layouts: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.df = self.df.reset_index(drop=True)
        if self._root is None:
            self._root = self.df

    def __len__(self) -> int:
        return len(self.df)

    def subset(self, rows) -> "Frame":
        """Rows by boolean mask or positions; feature layouts stay those of the full frame."""
        rows = np.asarray(rows)
        part = self.df[rows] if rows.dtype == bool else self.df.iloc[rows]
        return Frame(part, self.classes, self.features, self.class_weight, self._root, self._layouts)

    # ---- labels -----------------------------------------------------------------------------------------------
    @property
    def y(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index.get(e, -1) for e in self.df["emotion"]], dtype=np.int64)

    @property
    def weights(self) -> np.ndarray:
        """Per-row sample weights: inverse class frequency ("balanced") or all ones."""
        if self.class_weight == "balanced" and len(self):
            return compute_sample_weight("balanced", self.y).astype(np.float64)
        return np.ones(len(self))

    @property
    def speakers(self) -> np.ndarray:
        return self.df["speaker"].astype(str).to_numpy()

    @property
    def clip_ids(self) -> np.ndarray:
        return self.df["clip_id"].to_numpy()

    @property
    def variants(self) -> np.ndarray:
        return self.df["variant"].astype(str).to_numpy()

    def target(self, name: str) -> np.ndarray:
        """A continuous label (valence, arousal, dominance) as float64, NaN where the corpus has none."""
        return pd.to_numeric(self.df[name], errors="coerce").to_numpy(np.float64)

    # ---- scalar inputs ----------------------------------------------------------------------------------------
    def layout(self, modality: str, features: Features | None = None) -> Layout:
        """The store columns (and widths) making up a modality's matrix, resolved once on the full frame."""
        features = self.features.get(modality) if features is None else features
        if not features:
            raise BadParams(f"no features configured for modality {modality!r}")
        key = json.dumps(features, sort_keys=True)
        if key not in self._layouts:
            self._layouts[key] = _resolve(self._root, features)
        if not self._layouts[key]:
            raise BadParams(f"no store columns match {modality} features {features}: are the feature sets "
                             f"extracted for these corpora? (columns start with: {_prefixes(self._root)})")
        return self._layouts[key]

    def matrix(self, modality: str, features: Features | None = None) -> np.ndarray:
        """[n, d] float32 scalar inputs of a modality; NaN where a value is missing."""
        return self.take(self.layout(modality, features))

    def take(self, layout: Layout) -> np.ndarray:
        """[n, d] float32 of the given columns; a column absent from this frame gives NaN (missing modality)."""
        blocks = []
        for column, width in layout:
            if column not in self.df:
                blocks.append(np.full((len(self), width), np.nan, np.float32))
            elif width == 1 and not _is_list_column(self.df[column]):
                blocks.append(pd.to_numeric(self.df[column], errors="coerce").to_numpy(np.float32)[:, None])
            else:
                blocks.append(_stack_lists(self.df[column], width))
        return np.hstack(blocks) if blocks else np.zeros((len(self), 0), np.float32)

    def feature_names(self, modality: str, features: Features | None = None) -> list[str]:
        return names_of(self.layout(modality, features))

    def available(self, layout: Layout) -> np.ndarray:
        """Boolean per row: does the row have any non-missing value in these columns?"""
        return ~np.all(np.isnan(self.take(layout)), axis=1)

    # ---- sequences --------------------------------------------------------------------------------------------
    def sequence(self, modality: str, feature_set: str, column: str, time_axis: int = 0) -> list[np.ndarray]:
        """Per row a [T_i, D] float32 array of a frame series or 2-D feature (rows missing it: [0, D]).

        A column with a `<column>_shape` companion is reshaped to that shape, then `time_axis` is moved first
        (e.g. `logmel` is stored [n_mels, frames]: pass time_axis=1). A 1-D series becomes [T, 1].
        `modality` only documents intent: sequences are read whatever the frame's modality selection.
        """
        name = f"{feature_set}.{column}"
        if name not in self.df:
            raise UnknownName(f"{modality}: column {name!r} not in the store data (have: {_prefixes(self.df)})")
        shapes = self.df[f"{name}_shape"] if f"{name}_shape" in self.df else None
        out: list[np.ndarray | None] = []
        for i, value in enumerate(self.df[name]):
            if not _is_present(value):
                out.append(None)
                continue
            arr = np.asarray(value, dtype=np.float32)
            if shapes is not None and _is_present(shapes.iloc[i]):
                arr = np.moveaxis(arr.reshape([int(s) for s in shapes.iloc[i]]), time_axis, 0)
            out.append(arr.reshape(len(arr), -1))
        width = next((a.shape[1] for a in out if a is not None), 0)
        return [a if a is not None else np.zeros((0, width), np.float32) for a in out]


def columns_to_read(store, feature_sets: list[str], corpora: list[str], cfg: dict) -> dict[str, list[str]]:
    """The store columns training reads: every column of the feature sets except images (binary columns such as
    face crops, the bulk of a faces store), which are read only when the config names them."""
    named = set(_strings(cfg))
    out: dict[str, list[str]] = {}
    for fs in feature_sets:
        parts = [s for c in corpora for s in store.shards(fs, c) if s.kind == "part"]
        fields = {f.name: f.type for s in parts for f in s.schema}
        if fields:
            out[fs] = [n for n, t in fields.items() if not _is_image(t) or n in named]
    return out


def _is_image(t: pa.DataType) -> bool:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        t = t.value_type
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _strings(v)


def names_of(layout: Layout) -> list[str]:
    return [c if w == 1 else f"{c}[{i}]" for c, w in layout for i in (range(w) if w > 1 else [0])]


def speaker_zscore(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Standardise each feature within each group (speaker, variant): removes speaker-specific offsets.

    Uses only the group's own unlabeled inputs, so it applies to a test speaker without its labels.
    """
    out = np.empty_like(x, dtype=np.float32)
    for g in np.unique(groups):
        rows = groups == g
        block = x[rows]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN columns: a missing modality
            mean, std = np.nanmean(block, axis=0), np.nanstd(block, axis=0)
        std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
        out[rows] = (block - np.nan_to_num(mean)) / std
    return out


def normalisation_groups(frame: Frame) -> np.ndarray:
    return np.char.add(np.char.add(frame.speakers.astype(str), "|"), frame.variants.astype(str))


def _resolve(df: pd.DataFrame, features: Features) -> Layout:
    layout: list[tuple[str, int]] = []
    for feature_set, globs in features.items():
        globs = globs or ["*"]
        prefix = f"{feature_set}."
        for col in (c[len(prefix):] for c in df.columns if c.startswith(prefix)):
            named = col in globs
            if not named and not any(fnmatch.fnmatchcase(col, g) for g in globs):
                continue
            series = df[prefix + col]
            if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
                layout.append((prefix + col, 1))
            elif named:                                   # a list column asked for by name: one input per element
                layout.append((prefix + col, _fixed_length(series, prefix + col)))
    return tuple(layout)


def _fixed_length(series: pd.Series, name: str) -> int:
    lengths = {len(v) for v in series if _is_present(v)}
    if len(lengths) != 1:
        raise BadParams(f"{name} is not a fixed-length vector (lengths {sorted(lengths)[:5]}): frame series are "
                         "read with Frame.sequence, not as scalar inputs")
    return lengths.pop()


def _is_list_column(series: pd.Series) -> bool:
    return series.dtype == object


def _is_present(value) -> bool:
    if value is None:
        return False
    if isinstance(value, float):
        return not np.isnan(value)
    return True


def _stack_lists(series: pd.Series, width: int) -> np.ndarray:
    out = np.full((len(series), width), np.nan, np.float32)
    for i, v in enumerate(series):
        if _is_present(v) and len(v) == width:
            out[i] = np.asarray(v, dtype=np.float32)
    return out


def _prefixes(df: pd.DataFrame) -> list[str]:
    return sorted({c.split(".", 1)[0] for c in df.columns if "." in c})
