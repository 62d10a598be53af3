"""Facts of store files read once per process: their schema (with aver's metadata) and their key columns. A store
file never changes once written (a unique name, written whole; compaction, prune and the committer write new files
instead), so the passes a run makes over the store (listing the live files, done keys, upstream keys, counts, prune,
the committer's live keys) can share one read of each file: without this, a run read every file's footer about ten
times and its keys five, and adding one clip to a store of 900 small files took 9.5 s. Bounded
(`AVER_KEY_CACHE_ROWS` key rows, default 1,000,000, and 100,000 schemas, least recently used first out; identical
schemas are held once), so the driver's memory stays flat on any corpus."""
from __future__ import annotations

import os
import threading
from collections import OrderedDict

import pyarrow as pa

KEY_COLUMNS = ["clip_id", "variant", "content_hash"]
MAX_SCHEMAS = 100_000
_cache: OrderedDict[tuple[str, tuple[str, ...]], pa.Table] = OrderedDict()
_rows = 0
_schemas: OrderedDict[str, pa.Schema] = OrderedDict()
_distinct: dict[bytes, pa.Schema] = {}
_lock = threading.Lock()


def max_rows() -> int:
    return int(os.environ.get("AVER_KEY_CACHE_ROWS", 1_000_000))


def read_columns(files, path, columns: list[str]) -> pa.Table:
    """`columns` of the store file at `path` (a `Files` location), from the cache when this process read them."""
    global _rows
    key = (files.location(path), tuple(columns))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    table = files.read_table(path, columns=list(columns))
    with _lock:
        if key not in _cache and table.num_rows <= max_rows():
            _cache[key] = table
            _rows += table.num_rows
            while _rows > max_rows():
                _rows -= _cache.popitem(last=False)[1].num_rows
    return table


def read_keys(files, path, kind: str) -> pa.Table:
    """A store file's key columns, with `reason` for a ledger file: the one read every pass over the keys shares."""
    return read_columns(files, path, KEY_COLUMNS + (["reason"] if kind == "ledger" else []))


def read_schema(files, path) -> pa.Schema:
    """The schema of the store file at `path`, metadata included, from the cache when this process read it."""
    key = files.location(path)
    with _lock:
        if key in _schemas:
            _schemas.move_to_end(key)
            return _schemas[key]
    schema = files.read_schema(path)
    with _lock:
        schema = _distinct.setdefault(schema.serialize().to_pybytes(), schema)
        _schemas[key] = schema
        while len(_schemas) > MAX_SCHEMAS:
            _schemas.popitem(last=False)
    return schema
