"""What the store's commit log costs (pipelines/store/commits.py): commits per second and the time to read the live
files, on a local folder and on an S3 server.

    python benchmarks/commits.py --commits 300 [--s3 "s3://bucket/prefix?endpoint_override=host:port&scheme=http"]
    python benchmarks/commits.py --keys 500000     # the memory of the committer's live-key view

Each commit is one `write_part` of a 32-row part (stage + commit: the first one reads the live keys); then a fresh
`FeatureStore` takes a snapshot (latest checkpoint + the records after it) and lists the live files' footers.
`--keys N`: a store of N keys in 5 files, then a fresh store's first append commit; the memory it keeps (tracemalloc).
"""
from __future__ import annotations

import _setup  # noqa: F401  (repository on sys.path)

import argparse
import gc
import tempfile
import time
import tracemalloc
from pathlib import Path

import pyarrow as pa

from pipelines.store import FeatureStore


def measure(root: str, commits: int) -> dict:
    store = FeatureStore(root, "")
    t0 = time.perf_counter()
    for i in range(commits):
        ids = [f"c/{i}-{k}" for k in range(32)]
        store.write_part("f", "c", pa.table({"clip_id": ids, "variant": ["clean"] * 32, "content_hash": ["h"] * 32,
                                             "x": [float(k) for k in range(32)]}), {"kind": "bench"})
    per_commit = (time.perf_counter() - t0) / commits
    fresh = FeatureStore(root, "")
    t0 = time.perf_counter()
    snap = fresh.log("f", "c").snapshot()
    snapshot_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = fresh.read("f", "c", columns=["clip_id"]).num_rows
    read_s = time.perf_counter() - t0
    assert snap.version == commits - 1 and rows == 32 * commits
    return {"ms/commit": round(1000 * per_commit, 1), "snapshot s": round(snapshot_s, 3),
            "read one column s": round(read_s, 2)}


def key_view_bytes(root: Path, keys: int) -> int:
    """Bytes the committer keeps after its first append to a store of `keys` keys (its view of the live keys)."""
    store, per = FeatureStore(root, ""), keys // 5
    for f in range(5):
        ids = [f"corpus/clip_{f}_{i:07d}" for i in range(per)]
        store.write_part("f", "c", pa.table({"clip_id": ids, "variant": ["clean"] * per, "content_hash": ["h"] * per,
                                             "x": [0.0] * per}), {"kind": "bench"})
    fresh = FeatureStore(root, "")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    fresh.write_part("f", "c", pa.table({"clip_id": ["new"], "variant": ["clean"], "content_hash": ["h"], "x": [1.0]}),
                     {"kind": "bench"})
    gc.collect()
    kept = sum(d.size_diff for d in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    return kept


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=300)
    ap.add_argument("--s3", help="an empty S3 store URI")
    ap.add_argument("--keys", type=int, help="measure the committer's key view for this many keys instead")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.keys:
            kept = key_view_bytes(Path(tmp), args.keys)
            print(f"{args.keys} keys: {kept / 2**20:.1f} MiB kept by the committer, {kept / args.keys:.0f} B/key")
            return
        print("local folder", measure(tmp, args.commits))
    if args.s3:
        print("s3", measure(args.s3, args.commits))


if __name__ == "__main__":
    main()
