"""Compaction: many small files of one feature set x corpus merged into files of about a target size, same rows.

Each group of small files becomes one merged file, published by one commit that adds it and removes them
(pipelines/store/commits.py): a reader sees the small files or the merged one, never both nor neither. The
replaced files stay, for readers of older versions, until `aver store vacuum` deletes those no wanted version
reads (pipelines/store/versions.py). If another
commit (a prune, another compaction) replaced one of the group's files first, the commit fails and the group is left
to the next compaction, so a compaction never brings back rows a prune removed. Only files of the same kind and
fingerprint are merged; rows are sorted by key, so the result is deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pipelines.store.commits import Conflict
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


def publish(store: FeatureStore, feature_set: str, corpus: str, group: list[Shard]) -> pa.Table | None:
    """Merge a group and commit the merged file in place of its files; None if another commit replaced one of them
    first. Returns the merged rows."""
    try:
        tables = [store.files.read_table(s.path).replace_schema_metadata(None) for s in group]
    except FileNotFoundError:       # replaced by another commit and vacuumed since the snapshot
        return None
    table = pa.concat_tables(tables, promote_options="permissive").sort_by([(k, "ascending") for k in KEY])
    meta = {k: v for k, v in group[-1].meta.items() if k not in ("feature_set", "corpus", "created_at")}
    merged = store.stage(group[0].kind, feature_set, corpus, table, meta)
    try:
        store.commit(feature_set, corpus, [merged], [s.path.name for s in group], op="compact")
    except Conflict:
        store.files.delete(store.dir(feature_set, corpus) / merged.name)
        return None
    return table


def compact(store: FeatureStore, feature_set: str, corpus: str, target_bytes: int = TARGET_BYTES) -> CompactionReport:
    store.clean_temporaries(feature_set, corpus)
    shards = store.shards(feature_set, corpus)
    report = CompactionReport(feature_set, corpus, files_before=len(shards))
    for group in plan_groups(shards, target_bytes):
        merged = publish(store, feature_set, corpus, group)
        if merged is not None:
            report.rows += merged.num_rows
    report.files_after = len(store.shards(feature_set, corpus))
    return report
