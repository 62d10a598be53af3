"""The store's files: layout, atomic writes, which files are live, incremental bookkeeping and checks.

Layout: `<root>/<feature_set>/<corpus>/part-<id>.parquet` (feature rows) and `ledger-<id>.parquet` (failed
items), and the commit log `_commits/` naming the live ones (pipelines/store/commits.py); the root is a folder or an
object store URI (pipelines/store/files.py). A file is written whole under a unique name (`stage`), then committed:
a killed run leaves only files no commit names, never read; the next run plans the keys not yet live and every row
ends up exactly once. Each file's schema metadata (`aver`) records the extractor kind, version, params, fingerprint
and creation time. A store object may be pinned to versions of the commit log (`versions`, pipelines/store/versions.py):
its reads then see those versions, as a training run of an older git commit must.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow as pa

from pipelines.extractor import RETRIED_REASONS, RETRYABLE, extractor_class, modality_of
from pipelines.keyset import KeySet
from pipelines.manifest import LEDGER_SCHEMA, now, to_table
from pipelines.rowcheck import garbage_rows
from pipelines.store import reader
from pipelines.store.commits import CommitLog, Conflict, Staged, VersionUnavailable, new_name
from pipelines.store.files import Files, is_uri
from pipelines.store.file_cache import KEY_COLUMNS, read_keys, read_schema

KEY = ["clip_id", "variant"]
VACUUM_AFTER_S = 6 * 3600      # a file no commit names is deleted once this old: no writer still means to commit it


@dataclass
class Shard:
    path: Path | PurePosixPath
    kind: str      # "part" or "ledger"
    meta: dict
    schema: pa.Schema
    size: int      # bytes

    @property
    def fingerprint(self) -> str:
        return self.meta.get("fingerprint", "")


@dataclass
class VerifyReport:
    feature_set: str
    corpus: str
    rows: int = 0
    failed: int = 0
    stale: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class FeatureStore:
    def __init__(self, root: str | Path, manifest_dir: str | Path, versions: dict[tuple[str, str], int] | None = None):
        """`versions`: (feature set, corpus) -> the commit log version its reads see (others: the latest)."""
        self.files = Files(root)
        self._logs: dict[tuple[str, str], CommitLog] = {}
        self.root = self.files.root
        self.manifest_dir = manifest_dir if is_uri(manifest_dir) else Path(manifest_dir)
        self.versions = dict(versions or {})

    # ---- layout -------------------------------------------------------------------------------------------
    def dir(self, feature_set: str, corpus: str) -> Path | PurePosixPath:
        return self.root / feature_set / corpus

    def _meta(self, path) -> dict:
        return json.loads((self.files.read_schema(path).metadata or {}).get(b"aver", b"{}"))

    def log(self, feature_set: str, corpus: str) -> CommitLog:
        """This feature set x corpus's commit log (one per store object: it caches the live keys it has read)."""
        return self._logs.setdefault((feature_set, corpus), CommitLog(self, feature_set, corpus))

    def shards(self, feature_set: str, corpus: str, version: int | None = None) -> list[Shard]:
        """The live files at `version` (default: the pinned one, else the latest). A file of the latest version may
        vanish between the snapshot and the read of its footer (a vacuum deleted it after a newer commit): take a
        fresh snapshot then."""
        d = self.dir(feature_set, corpus)
        version = self.versions.get((feature_set, corpus)) if version is None else version
        for _ in range(reader.LISTING_ATTEMPTS):
            shards = []
            try:
                for name, entry in sorted(self.log(feature_set, corpus).snapshot(version).files.items()):
                    schema = read_schema(self.files, d / name)
                    meta = json.loads((schema.metadata or {}).get(b"aver", b"{}"))
                    shards.append(Shard(d / name, name.split("-", 1)[0], meta, schema.remove_metadata(),
                                        entry["bytes"]))
                return shards
            except FileNotFoundError:
                if version is not None:
                    raise VersionUnavailable(f"{feature_set}/{corpus}: version {version} was vacuumed (its files "
                                             "are deleted; `aver store vacuum --keep FILE` keeps a version)") from None
        raise RuntimeError(f"{feature_set}/{corpus}: the store kept changing under {reader.LISTING_ATTEMPTS} reads")

    def feature_sets(self) -> list[str]:
        return [name for name in self.files.subfolders(self.root) if not name.startswith(".")]   # .plan: run spools

    def corpora(self, feature_set: str) -> list[str]:
        return self.files.subfolders(self.root / feature_set)

    # ---- writing ------------------------------------------------------------------------------------------
    def write_part(self, feature_set: str, corpus: str, table: pa.Table, meta: dict) -> list[str]:
        """Store feature rows (stage + commit); rows whose key is already live are not stored again."""
        return self.commit(feature_set, corpus, [self.stage("part", feature_set, corpus, table, meta)])

    def write_ledger(self, feature_set: str, corpus: str, rows: list[dict], meta: dict) -> list[str]:
        return self.commit(feature_set, corpus,
                           [self.stage("ledger", feature_set, corpus, to_table(rows, LEDGER_SCHEMA), meta)])

    def stage(self, kind: str, feature_set: str, corpus: str, table: pa.Table, meta: dict) -> Staged | None:
        """Write a data file under a unique name, not yet read by anyone (None for no rows): what a worker does;
        the driver commits it."""
        if table.num_rows == 0:
            return None
        info = {**meta, "feature_set": feature_set, "corpus": corpus, "created_at": now()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"aver": json.dumps(info, sort_keys=True).encode()})
        return self.stage_table(kind, self.dir(feature_set, corpus), table)

    def stage_table(self, kind: str, folder, table: pa.Table) -> Staged:
        path = folder / new_name(kind)
        self.files.write_table(table, path)
        keys = list(zip(table.column("clip_id").to_pylist(), table.column("variant").to_pylist()))
        return Staged(path.name, table.num_rows, self.files.size(path), keys)

    def commit(self, feature_set: str, corpus: str, add: list[Staged | None], remove: list[str] = (),
               op: str = "append", forget: list[str] = ()) -> list[str]:
        if self.versions:
            raise RuntimeError("a store pinned to versions is read-only")
        return self.log(feature_set, corpus).commit([s for s in add if s is not None], remove, op, forget)

    # ---- incremental bookkeeping -------------------------------------------------------------------------
    def done_keys(self, feature_set: str, corpus: str, fingerprint: str,
                  include_retried: bool = False) -> dict[tuple[str, str], str]:
        """(clip_id, variant) -> content_hash of every row (feature or ledger) made with this fingerprint. Ledger
        rows the next run retries (a retryable error, a missing input) are not done unless `include_retried`."""
        done: dict[tuple[str, str], str] = {}
        for c, v, h in self.key_batches(feature_set, corpus, fingerprint, include_retried):
            done.update(zip(zip(c, v), h))
        return done

    def key_batches(self, feature_set: str, corpus: str, fingerprint: str | None = None,
                    include_retried: bool = False, kind: str | None = None):
        """(clip_ids, variants, content_hashes) per live file (only its key columns are read), of the files made
        with `fingerprint` (any, if None) and of one `kind` (both, if None); ledger rows the next run retries are
        left out unless `include_retried`. What the planner streams instead of holding every key."""
        for s in self.shards(feature_set, corpus):
            if (fingerprint is not None and s.fingerprint != fingerprint) or kind not in (None, s.kind):
                continue
            try:
                t = read_keys(self.files, s.path, s.kind)
            except FileNotFoundError:       # merged and vacuumed since the listing: the merged file has them
                yield from self.key_batches(feature_set, corpus, fingerprint, include_retried, kind)
                return
            if s.kind == "ledger" and not include_retried:
                t = t.filter(pa.array([not r.startswith(RETRIED_REASONS) for r in t.column("reason").to_pylist()]))
            yield tuple(t.column(n).to_pylist() for n in KEY_COLUMNS)

    def key_set(self, feature_set: str, corpus: str, fingerprint: str | None = None, include_retried: bool = False,
                kind: str | None = None) -> KeySet:
        """The distinct (clip_id, variant) keys of `key_batches`, 16 bytes each."""
        return KeySet.of((c, v) for c, v, _ in self.key_batches(feature_set, corpus, fingerprint, include_retried,
                                                                 kind))

    def prune(self, feature_set: str, corpus: str, fingerprint: str, valid: KeySet,
              retry_reasons: tuple[str, ...] = ()) -> int:
        """Drop files of another fingerprint and rows whose key is no longer planned or whose media changed.

        `valid` holds every planned (clip_id, variant, content_hash); ledger rows whose reason starts with one of
        `retry_reasons` are dropped too, so the next run tries them again. The rewritten files replace the old
        ones in one commit (they stay until a vacuum: older versions read them). Returns the number of rows
        removed.
        """
        for _ in range(reader.LISTING_ATTEMPTS):
            removed, add, remove = 0, [], []
            for s in self.shards(feature_set, corpus):
                if s.fingerprint != fingerprint:
                    removed += self.files.num_rows(s.path)
                    remove.append(s.path.name)
                    continue
                t = read_keys(self.files, s.path, s.kind)
                keep = valid.contains(*(t.column(n).to_pylist() for n in KEY_COLUMNS)).tolist()
                if s.kind == "ledger" and retry_reasons:
                    keep = [k and not r.startswith(retry_reasons) for k, r in zip(keep, t.column("reason").to_pylist())]
                if all(keep):
                    continue
                removed += keep.count(False)
                remove.append(s.path.name)
                if any(keep):           # only a file that changes is read whole
                    whole = self.files.read_table(s.path)
                    add.append(self.stage_table(s.kind, s.path.parent, whole.filter(pa.array(keep))))
            try:
                self.commit(feature_set, corpus, add, remove, op="prune")
            except Conflict:        # a compaction replaced some of these files meanwhile: prune its result
                for staged in add:
                    self.files.delete(self.dir(feature_set, corpus) / staged.name)
                continue
            return removed
        raise RuntimeError(f"{feature_set}/{corpus}: could not prune, the store kept changing")

    def clean_temporaries(self, feature_set: str, corpus: str, older_than_s: float = VACUUM_AFTER_S) -> None:
        """Remove leftovers of killed writers: temporary files and data files no commit names (a crashed run's, a
        resubmitted batch's, a killed vacuum's) once `older_than_s` old. Files an older version reads are kept."""
        d = self.dir(feature_set, corpus)
        snap = self.log(feature_set, corpus).snapshot()
        live = set(snap.files) | set(snap.removed)
        for info in self.files.entries(d):
            if info.base_name.startswith(".") and info.base_name.endswith(".tmp"):
                self.files.delete(d / info.base_name)
            elif (info.base_name.startswith(("part-", "ledger-")) and info.base_name not in live
                  and info.mtime is not None and time.time() - info.mtime.timestamp() > older_than_s):
                self.files.delete(d / info.base_name)

    # ---- reading (pipelines/store/reader.py) ----------------------------------------------------------------
    def read(self, feature_set: str, corpus: str, kind: str = "part", columns: list[str] | None = None,
             filter=None, version: int | None = None) -> pa.Table:
        """The live rows of one kind (at `version`, default: the pinned one, else the latest), only `columns` and
        the rows matching `filter` (a pyarrow.compute expression, pushed down to the Parquet reader)."""
        return reader.read(self, feature_set, corpus, kind, columns, filter, version)

    def ledger(self, feature_set: str, corpus: str):
        return self.read(feature_set, corpus, "ledger").to_pandas()

    def load(self, feature_sets: list[str], corpora: list[str], variants: tuple[str, ...] = ("clean",),
             columns: dict[str, list[str]] | None = None, speakers: list[str] | None = None, versions=None):
        """`reader.load`; `versions` (a version file or folder of them, or {(feature set, corpus): version}) reads
        those versions instead of this store's."""
        if versions is not None:
            from pipelines.store.versions import pinned
            return reader.load(pinned(self, versions), feature_sets, corpora, variants, columns, speakers)
        return reader.load(self, feature_sets, corpora, variants, columns, speakers)

    def info(self, feature_set: str, corpus: str) -> dict:
        shards = self.shards(feature_set, corpus)
        parts = [s for s in shards if s.kind == "part"]
        meta = parts[-1].meta if parts else (shards[-1].meta if shards else {})
        return {"feature_set": feature_set, "corpus": corpus, "files": len(shards),
                "rows": sum(self.files.num_rows(s.path) for s in parts),
                "failed": sum(self.files.num_rows(s.path) for s in shards if s.kind == "ledger"),
                "kind": meta.get("kind"), "version": meta.get("version"),
                "fingerprint": meta.get("fingerprint"), "params": meta.get("params"),
                "provenance": meta.get("provenance"),
                "columns": parts[0].schema.names if parts else []}

    # ---- checks -------------------------------------------------------------------------------------------
    def verify(self, feature_set: str, corpus: str, planned: dict[tuple[str, str], str] | None = None,
               fingerprint: str | None = None) -> VerifyReport:
        """Re-check schemas, fingerprints, duplicate keys, non-finite features (pipelines/rowcheck.py) and (given the
        plan) missing or stale rows; given the current `fingerprint`, rows made by other code or configuration are
        reported stale."""
        rep = VerifyReport(feature_set, corpus)
        shards = self.shards(feature_set, corpus)
        parts = [s for s in shards if s.kind == "part"]
        if len({s.fingerprint for s in shards}) > 1:
            rep.problems.append(f"mixed fingerprints: {sorted({s.fingerprint for s in shards})}")
        if len({s.schema.to_string() for s in parts}) > 1:
            rep.problems.append(f"{len({s.schema.to_string() for s in parts})} different part schemas")
        seen: dict[tuple[str, str], str] = {}
        stale: list[tuple[str, str]] = []
        retryable = []
        for s in shards:
            t = read_keys(self.files, s.path, s.kind)
            for c, v, h, *reason in zip(*(t.column(n).to_pylist() for n in t.column_names)):
                if (c, v) in seen:
                    rep.problems.append(f"duplicate row {c} [{v}] in {s.path.name}")
                seen[(c, v)] = h
                if fingerprint is not None and s.fingerprint != fingerprint:
                    stale.append((c, v))
                if reason and reason[0].startswith(RETRYABLE):
                    retryable.append((c, v))
                rep.rows += s.kind == "part"
                rep.failed += s.kind == "ledger"
            if s.kind == "part":
                kind = s.meta.get("kind")
                nan_columns = getattr(extractor_class(kind), "nan_columns", ()) if modality_of(kind) else ()
                table = self.files.read_table(s.path)
                rep.problems += [f"{s.path.name}: {p}" for p in garbage_rows(table, nan_columns)]
        if retryable:
            rep.problems.append(f"{len(retryable)} items failed for reasons not their own, e.g. {retryable[:3]}: "
                                "`aver extract` retries them")
        if stale:
            rep.stale = len(stale)
            rep.problems.append(f"{len(stale)} rows made by other code or configuration (fingerprint is not "
                                f"{fingerprint}), e.g. {stale[:3]}: `aver extract` re-extracts them")
        if planned is not None:
            missing = [k for k in planned if k not in seen]
            changed = [k for k, h in seen.items() if planned.get(k) != h]
            if missing:
                rep.problems.append(f"{len(missing)} planned rows missing, e.g. {missing[:3]}")
            if changed:
                rep.problems.append(f"{len(changed)} rows not in the manifest or with changed media, "
                                    f"e.g. {changed[:3]}")
        return rep
