"""What the store's commit log costs (pipelines/store/commits.py): commits per second and the time to read the live
files, on a local folder and on an S3 server.

    python benchmarks/commits.py --commits 300 [--s3 "s3://bucket/prefix?endpoint_override=host:port&scheme=http"]

Each commit is one `write_part` of a 32-row part (stage + commit: the first one reads the live keys); then a fresh
`FeatureStore` takes a snapshot (latest checkpoint + the records after it) and lists the live files' footers.
"""
from __future__ import annotations

import _setup  # noqa: F401  (repository on sys.path)

import argparse
import tempfile
import time

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=300)
    ap.add_argument("--s3", help="an empty S3 store URI")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("local folder", measure(tmp, args.commits))
    if args.s3:
        print("s3", measure(args.s3, args.commits))


if __name__ == "__main__":
    main()
