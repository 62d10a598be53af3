"""Compaction: many small files of one feature set x corpus merged into files of about a target size, same rows.

Publishing is two steps, each safe for a reader at any moment:
  1. write the merged file atomically (temporary name + rename); its metadata lists the files it `replaces`.
     From then on a listing drops the replaced files (FeatureStore.shards), so a reader sees every row once:
     before the rename it reads the small files, after it the merged one.
  2. delete the replaced files. A reader that listed before step 1 and opens a deleted file lists again
     (pipelines/store/reader.py). A compaction killed between 1 and 2 leaves replaced files that no reader uses;
     the next compaction or extraction deletes them (`clean_temporaries`).
Only files of the same kind and fingerprint are merged; rows are sorted by key, so the result is deterministic;
copies of a key (two writers at once) are merged into one.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pipelines.store.reader import first_of_each_key
from pipelines.store.table import KEY, FeatureStore, Shard

TARGET_BYTES = 128 * 2**20


@dataclass
class CompactionReport:
    feature_set: str
    corpus: str
    files_before: int = 0
    files_after: int = 0
    rows: int = 0


def plan_groups(shards: list[Shard], target_bytes: int) -> list[list[Shard]]:
    """Files below half the target, packed in order into groups of at most the target size (2 files or more)."""
    groups: list[list[Shard]] = []
    by_kind: dict[tuple[str, str], list[Shard]] = {}
    for s in shards:
        if s.size < target_bytes // 2:
            by_kind.setdefault((s.kind, s.fingerprint), []).append(s)
    for small in by_kind.values():
        group, size = [], 0
        for s in small:
            if group and size + s.size > target_bytes:
                groups.append(group)
                group, size = [], 0
            group.append(s)
            size += s.size
        groups.append(group)
    return [g for g in groups if len(g) > 1]


def publish(store: FeatureStore, feature_set: str, corpus: str, group: list[Shard]) -> pa.Table:
    """Step 1: the merged file, naming the files it replaces. Returns its rows."""
    table = pa.concat_tables([store.files.read_table(s.path).replace_schema_metadata(None) for s in group],
                             promote_options="permissive")
    table = first_of_each_key(table).sort_by([(k, "ascending") for k in KEY])
    meta = {k: v for k, v in group[-1].meta.items() if k not in ("feature_set", "corpus", "created_at")}
    meta["replaces"] = sorted(s.path.name for s in group)
    store._write(group[0].kind, feature_set, corpus, table, meta)
    return table


def retire(store: FeatureStore, group: list[Shard]) -> None:
    """Step 2: delete the replaced files."""
    for s in group:
        store.files.delete(s.path)


def compact(store: FeatureStore, feature_set: str, corpus: str, target_bytes: int = TARGET_BYTES) -> CompactionReport:
    store.clean_temporaries(feature_set, corpus)
    shards = store.shards(feature_set, corpus)
    report = CompactionReport(feature_set, corpus, files_before=len(shards))
    for group in plan_groups(shards, target_bytes):
        report.rows += publish(store, feature_set, corpus, group).num_rows
        retire(store, group)
    report.files_after = len(store.shards(feature_set, corpus))
    return report
