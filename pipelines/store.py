"""The Parquet feature store.

Layout: `<root>/<feature_set>/<corpus>/part-<id>.parquet` (feature rows) and `ledger-<id>.parquet` (failed
items). Every file is written atomically (temporary name + rename), so a killed run leaves only complete files;
the next run plans the keys not yet present in any file and every row ends up exactly once.
Each file's schema metadata records the extractor kind, version, params, config fingerprint and creation time.
"""
from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.extractor import extractor_class, modality_of, variant_modality
from pipelines.manifest import LEDGER_SCHEMA, now, read_manifest, to_table, write_atomic
from pipelines.rowcheck import garbage_rows

KEY = ["clip_id", "variant"]
LABEL_COLUMNS = ["clip_id", "corpus", "speaker", "emotion", "emotion_orig", "split",
                 "valence", "arousal", "dominance", "has_audio", "has_video", "duration"]


@dataclass
class Shard:
    path: Path
    kind: str      # "part" or "ledger"
    meta: dict

    @property
    def fingerprint(self) -> str:
        return self.meta.get("fingerprint", "")


@dataclass
class VerifyReport:
    feature_set: str
    corpus: str
    rows: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


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


def _meta_of(path: Path) -> dict:
    raw = pq.read_schema(path).metadata or {}
    return json.loads(raw.get(b"aver", b"{}"))


class FeatureStore:
    def __init__(self, root: str | Path, manifest_dir: str | Path):
        self.root = Path(root)
        self.manifest_dir = Path(manifest_dir)

    # ---- layout -------------------------------------------------------------------------------------------
    def dir(self, feature_set: str, corpus: str) -> Path:
        return self.root / feature_set / corpus

    def shards(self, feature_set: str, corpus: str) -> list[Shard]:
        d = self.dir(feature_set, corpus)
        if not d.exists():
            return []
        return [Shard(p, p.name.split("-", 1)[0], _meta_of(p))
                for p in sorted(d.glob("*.parquet")) if p.name.startswith(("part-", "ledger-"))]

    def feature_sets(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.exists() else []

    def corpora(self, feature_set: str) -> list[str]:
        d = self.root / feature_set
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.exists() else []

    # ---- writing ------------------------------------------------------------------------------------------
    def write_part(self, feature_set: str, corpus: str, table: pa.Table, meta: dict) -> Path | None:
        return self._write("part", feature_set, corpus, table, meta)

    def write_ledger(self, feature_set: str, corpus: str, rows: list[dict], meta: dict) -> Path | None:
        return self._write("ledger", feature_set, corpus, to_table(rows, LEDGER_SCHEMA), meta)

    def _write(self, kind: str, feature_set: str, corpus: str, table: pa.Table, meta: dict) -> Path | None:
        if table.num_rows == 0:
            return None
        info = {**meta, "feature_set": feature_set, "corpus": corpus, "created_at": now()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"aver": json.dumps(info, sort_keys=True).encode()})
        path = self.dir(feature_set, corpus) / f"{kind}-{uuid.uuid4().hex[:12]}.parquet"
        write_atomic(table, path)
        return path

    # ---- incremental bookkeeping -------------------------------------------------------------------------
    def done_keys(self, feature_set: str, corpus: str, fingerprint: str) -> dict[tuple[str, str], str]:
        """(clip_id, variant) -> content_hash of every row (feature or ledger) made with this fingerprint."""
        done: dict[tuple[str, str], str] = {}
        for s in self.shards(feature_set, corpus):
            if s.fingerprint != fingerprint:
                continue
            t = pq.read_table(s.path, columns=["clip_id", "variant", "content_hash"])
            for c, v, h in zip(*(t.column(n).to_pylist() for n in ("clip_id", "variant", "content_hash"))):
                done[(c, v)] = h
        return done

    def prune(self, feature_set: str, corpus: str, fingerprint: str, valid: dict[tuple[str, str], str],
              retry_reasons: tuple[str, ...] = ()) -> int:
        """Drop files of another fingerprint and rows whose key is no longer planned or whose media changed.

        `valid` maps every planned key to its current content hash; ledger rows whose reason starts with one of
        `retry_reasons` are dropped too, so the next run tries them again. Files are rewritten atomically.
        Returns the number of rows removed.
        """
        removed = 0
        for s in self.shards(feature_set, corpus):
            t = pq.read_table(s.path)
            if s.fingerprint != fingerprint:
                removed += t.num_rows
                s.path.unlink()
                continue
            keep = [valid.get((c, v)) == h for c, v, h in zip(
                *(t.column(n).to_pylist() for n in ("clip_id", "variant", "content_hash")))]
            if s.kind == "ledger" and retry_reasons:
                keep = [k and not r.startswith(retry_reasons) for k, r in zip(keep, t.column("reason").to_pylist())]
            if all(keep):
                continue
            removed += keep.count(False)
            kept = t.filter(pa.array(keep))
            if kept.num_rows:
                write_atomic(kept, s.path)
            else:
                s.path.unlink()
        return removed

    def clean_temporaries(self, feature_set: str, corpus: str) -> None:
        """Remove leftovers of killed writers (temporary files and Beam's temp dirs)."""
        d = self.dir(feature_set, corpus)
        if not d.exists():
            return
        for p in d.glob(".*.tmp"):
            p.unlink(missing_ok=True)
        for p in d.glob("beam-temp-*"):
            shutil.rmtree(p, ignore_errors=True)

    # ---- reading ------------------------------------------------------------------------------------------
    def read(self, feature_set: str, corpus: str, kind: str = "part", columns: list[str] | None = None) -> pa.Table:
        shards = [s for s in self.shards(feature_set, corpus) if s.kind == kind]
        if not shards:
            return (LEDGER_SCHEMA if kind == "ledger" else pa.schema([])).empty_table()
        tables = [pq.read_table(s.path, columns=columns) for s in shards]
        return pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="permissive")

    def ledger(self, feature_set: str, corpus: str) -> pd.DataFrame:
        return self.read(feature_set, corpus, "ledger").to_pandas()

    def info(self, feature_set: str, corpus: str) -> dict:
        shards = self.shards(feature_set, corpus)
        parts = [s for s in shards if s.kind == "part"]
        meta = parts[-1].meta if parts else (shards[-1].meta if shards else {})
        return {"feature_set": feature_set, "corpus": corpus, "files": len(shards),
                "rows": sum(pq.read_metadata(s.path).num_rows for s in parts),
                "failed": sum(pq.read_metadata(s.path).num_rows for s in shards if s.kind == "ledger"),
                "kind": meta.get("kind"), "version": meta.get("version"),
                "fingerprint": meta.get("fingerprint"), "params": meta.get("params"),
                "provenance": meta.get("provenance"),
                "columns": pq.read_schema(parts[0].path).names if parts else []}

    def load(self, feature_sets: list[str], corpora: list[str], variants: tuple[str, ...] = ("clean",),
             columns: dict[str, list[str]] | None = None) -> pd.DataFrame:
        """Feature sets joined on (clip_id, variant) with the manifest's label columns.

        One row per (clip, requested variant) of the manifests. A variant of the other modality contributes this
        feature set's clean row (a noisy-audio variant keeps clean video); a clip or variant missing from a feature
        set gets nulls there (missing modality). `columns` optionally restricts each feature set to some columns.
        """
        frames = []
        for corpus in corpora:
            labels = read_manifest(self.manifest_dir, corpus).select(LABEL_COLUMNS).to_pandas()
            base = pd.concat([labels.assign(variant=v) for v in variants], ignore_index=True)
            for fs in feature_sets:
                cols = None if not columns or fs not in columns else sorted(set(columns[fs]) | set(KEY))
                feats = self.read(fs, corpus, columns=cols).to_pandas()
                if feats.empty:
                    continue
                kind = self.info(fs, corpus)["kind"]
                modality = modality_of(kind)   # None: unknown origin
                feats = _with_clean_fallback(feats.drop(columns="content_hash", errors="ignore"), variants, modality)
                feats = feats.rename(columns={c: f"{fs}.{c}" for c in feats.columns if c not in KEY})
                base = base.merge(feats, on=KEY, how="left")
            frames.append(base)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # ---- checks -------------------------------------------------------------------------------------------
    def verify(self, feature_set: str, corpus: str, planned: dict[tuple[str, str], str] | None = None) -> VerifyReport:
        """Re-check schemas, fingerprints, duplicate keys, non-finite features (pipelines/rowcheck.py) and (given the
        plan) missing or stale rows."""
        rep = VerifyReport(feature_set, corpus)
        shards = self.shards(feature_set, corpus)
        parts = [s for s in shards if s.kind == "part"]
        if len({s.fingerprint for s in shards}) > 1:
            rep.problems.append(f"mixed fingerprints: {sorted({s.fingerprint for s in shards})}")
        schemas = {pq.read_schema(s.path).remove_metadata().to_string() for s in parts}
        if len(schemas) > 1:
            rep.problems.append(f"{len(schemas)} different part schemas")
        seen: dict[tuple[str, str], str] = {}
        for s in shards:
            t = pq.read_table(s.path, columns=["clip_id", "variant", "content_hash"])
            for c, v, h in zip(*(t.column(n).to_pylist() for n in ("clip_id", "variant", "content_hash"))):
                if (c, v) in seen:
                    rep.problems.append(f"duplicate row {c} [{v}] in {s.path.name}")
                seen[(c, v)] = h
            if s.kind == "part":
                rep.rows += t.num_rows
                kind = s.meta.get("kind")
                nan_columns = getattr(extractor_class(kind), "nan_columns", ()) if modality_of(kind) else ()
                rep.problems += [f"{s.path.name}: {p}" for p in garbage_rows(pq.read_table(s.path), nan_columns)]
            else:
                rep.failed += t.num_rows
        if planned is not None:
            missing = [k for k in planned if k not in seen]
            stale = [k for k, h in seen.items() if planned.get(k) != h]
            if missing:
                rep.problems.append(f"{len(missing)} planned rows missing, e.g. {missing[:3]}")
            if stale:
                rep.problems.append(f"{len(stale)} rows not in the manifest or with changed media, e.g. {stale[:3]}")
        return rep
