"""Reading the store: only the columns and rows asked for.

Every read is a `pyarrow.dataset` over the live files of one feature set x corpus, with the column projection and
a row filter pushed down to the Parquet reader (a column not asked for is never read from disk; row groups whose
statistics exclude the filter are skipped). The files are those of one commit (pipelines/store/commits.py), so
every key is read once: the latest, or an older version the store is pinned to (pipelines/store/versions.py). A
vacuum may delete files of the latest version once a newer commit replaced them; the read is then done again on the
newer one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from pipelines.extractor import modality_of, variant_modality
from pipelines.manifest import LEDGER_SCHEMA, read_manifest
from pipelines.store.commits import VersionUnavailable

if TYPE_CHECKING:
    from pipelines.store.table import FeatureStore

KEY = ["clip_id", "variant"]
LABEL_COLUMNS = ["clip_id", "corpus", "speaker", "emotion", "emotion_orig", "split",
                 "valence", "arousal", "dominance", "has_audio", "has_video", "duration"]
LISTING_ATTEMPTS = 50


def _live(store: "FeatureStore", feature_set: str, corpus: str, kind: str, version: int | None = None) -> list:
    return [s for s in store.shards(feature_set, corpus, version) if s.kind == kind]


def read(store: "FeatureStore", feature_set: str, corpus: str, kind: str = "part", columns: list[str] | None = None,
         filter: pc.Expression | None = None, version: int | None = None) -> pa.Table:
    """The rows of the live files at `version` (default: the store's pinned one, else the latest). A compaction
    then a vacuum during a read of the latest version may delete files it reads: the read then starts again from
    the newer commit (each retry means a newer commit, so a finite number of them suffices)."""
    version = store.versions.get((feature_set, corpus)) if version is None else version
    for _ in range(LISTING_ATTEMPTS):
        try:
            shards = _live(store, feature_set, corpus, kind, version)
            if not shards:
                return (LEDGER_SCHEMA if kind == "ledger" else pa.schema([])).empty_table()
            schema = pa.unify_schemas([s.schema for s in shards], promote_options="permissive")
            wanted = None if columns is None else [c for c in columns if c in schema.names]  # absent: missing modality
            data = ds.dataset(store.files.names(s.path for s in shards), schema=schema, format="parquet",
                              filesystem=store.files.fs)
            return data.to_table(columns=wanted, filter=filter)
        except FileNotFoundError:       # replaced and vacuumed since the snapshot
            if version is not None:
                raise VersionUnavailable(f"{feature_set}/{corpus}: version {version} was vacuumed during the read")
    raise RuntimeError(f"{feature_set}/{corpus}: the store kept changing under {LISTING_ATTEMPTS} reads")


def _with_clean_fallback(feats: pd.DataFrame, variants: tuple[str, ...], modality: str | None) -> pd.DataFrame:
    """Rows of the requested variants. A variant perturbing another modality (noisy audio, for a face feature set)
    is represented by the clean row; a variant of this feature set's own modality that was not extracted stays
    missing, so robustness results never silently reuse clean features."""
    have = set(zip(feats["clip_id"], feats["variant"]))
    clean = feats[feats["variant"] == "clean"]
    filled = [feats[feats["variant"].isin(variants)]]
    for v in variants:
        if v != "clean" and variant_modality(v) != modality:
            lacking = [(c, v) not in have for c in clean["clip_id"]]
            filled.append(clean[lacking].assign(variant=v))
    return pd.concat(filled, ignore_index=True)


def _modality(store: "FeatureStore", feature_set: str, corpus: str) -> str | None:
    kind = next((s.meta.get("kind") for s in store.shards(feature_set, corpus) if s.kind == "part"), None)
    return modality_of(kind)     # None: unknown origin


def load(store: "FeatureStore", feature_sets: list[str], corpora: list[str], variants: tuple[str, ...] = ("clean",),
         columns: dict[str, list[str]] | None = None, speakers: list[str] | None = None) -> pd.DataFrame:
    """Feature sets joined on (clip_id, variant) with the manifest's label columns.

    One row per (clip, requested variant) of the manifests (of the given `speakers` only, when given). A variant of
    the other modality contributes this feature set's clean row (a noisy-audio variant keeps clean video); a clip
    or variant missing from a feature set gets nulls there (missing modality). `columns` restricts a feature set
    to some columns: only those are read from disk, and only the rows of the requested variants and clips.
    """
    frames = []
    for corpus in corpora:
        labels = read_manifest(store.manifest_dir, corpus).select(LABEL_COLUMNS)
        if speakers is not None:
            labels = labels.filter(pc.field("speaker").isin(list(speakers)))
        labels = labels.to_pandas()
        base = pd.concat([labels.assign(variant=v) for v in variants], ignore_index=True)
        rows = pc.field("variant").isin(sorted(set(variants) | {"clean"}))
        if speakers is not None:
            rows &= pc.field("clip_id").isin(labels["clip_id"].tolist())
        for fs in feature_sets:
            cols = None if not columns or fs not in columns else sorted(set(columns[fs]) | set(KEY))
            feats = read(store, fs, corpus, columns=cols, filter=rows).to_pandas()
            if feats.empty:
                continue
            feats = _with_clean_fallback(feats.drop(columns="content_hash", errors="ignore"), variants,
                                         _modality(store, fs, corpus))
            feats = feats.rename(columns={c: f"{fs}.{c}" for c in feats.columns if c not in KEY})
            base = base.merge(feats, on=KEY, how="left")
        frames.append(base)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class RowsByKey:
    """A worker's reads of upstream rows by key. Each upstream set's live files are listed once, with the clip_id
    range of each (from its footer's statistics); a batch then reads only the files whose range meets the batch's
    keys, with the key filter pushed down. Listed again if a file was vacuumed after a newer commit or a key is missing."""

    def __init__(self, store: "FeatureStore"):
        self.store, self.indexes = store, {}

    def _index(self, feature_set: str, corpus: str, fresh: bool) -> tuple[pa.Schema | None, list]:
        if fresh or (feature_set, corpus) not in self.indexes:
            shards = _live(self.store, feature_set, corpus, "part")
            schema = pa.unify_schemas([s.schema for s in shards], promote_options="permissive") if shards else None
            self.indexes[(feature_set, corpus)] = schema, [(*self._clip_range(s.path), s.path) for s in shards]
        return self.indexes[(feature_set, corpus)]

    def _clip_range(self, path) -> tuple[str | None, str | None]:
        """The smallest and largest clip_id of a file (None, None: unknown, always read)."""
        meta = self.store.files.metadata(path)
        column = meta.schema.to_arrow_schema().get_field_index("clip_id")
        stats = [meta.row_group(i).column(column).statistics for i in range(meta.num_row_groups)]
        if column < 0 or not stats or not all(st is not None and st.has_min_max for st in stats):
            return None, None
        return min(st.min for st in stats), max(st.max for st in stats)

    def get(self, feature_set: str, corpus: str, keys: set[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        """(clip_id, variant) -> row, for the keys the store holds."""
        ids, variants = sorted({c for c, _ in keys}), sorted({v for _, v in keys})
        wanted = pc.field("clip_id").isin(ids) & pc.field("variant").isin(variants)
        rows: dict[tuple[str, str], dict] = {}
        for fresh in (False, True):
            schema, files = self._index(feature_set, corpus, fresh)
            paths = [path for lo, hi, path in files if lo is None or (lo <= ids[-1] and hi >= ids[0])]
            try:
                table = ds.dataset(self.store.files.names(paths), schema=schema, format="parquet",
                                   filesystem=self.store.files.fs).to_table(filter=wanted) if paths else None
            except FileNotFoundError:       # replaced and vacuumed since the listing
                continue
            if table is not None:
                rows = {k: r for r in table.to_pylist()
                        if (k := (r["clip_id"], r["variant"])) in keys}
            if len(rows) == len(keys):
                break
        return rows
