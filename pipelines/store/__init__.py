"""The Parquet feature store: `table` (files, writes, bookkeeping, checks), `reader` (projected, filtered reads
and the joined `load`), `compaction` (small files merged, published without readers seeing a half state)."""
from pipelines.store.reader import KEY, LABEL_COLUMNS
from pipelines.store.table import FeatureStore, Shard, VerifyReport

__all__ = ["FeatureStore", "Shard", "VerifyReport", "KEY", "LABEL_COLUMNS"]
