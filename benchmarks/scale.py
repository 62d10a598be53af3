"""How the driver and the store scale with the number of clips (no media: the extractor computes nothing).

    python benchmarks/scale.py --clips 1000 5000 20000

For each corpus size, in a fresh process: a manifest of N synthetic clips is written directly, then one local-engine
extraction of a synthetic feature set (88 float32 scalars like eGeMAPS + a 400-frame float32 series per clip, made
from the clip id, no decoding) into a fresh store, `engine.chunk_size` rows per file, then a second run of a
downstream set that reads each clip's upstream row (with its series) from the store, as `fer_embedding` reads
`faces`. Reported: the driver's peak RSS over both runs (planning, units, upstream rows, sink: the local engine's
worker is the driver process; with the peak after imports, for reference), rows/s of the first run (planning +
writing) and of the downstream run, the number of files before and after compaction (target 128 MiB),
and `FeatureStore.load` of one scalar column vs the whole table (seconds and bytes read through read syscalls,
/proc/self/io).
"""
from __future__ import annotations

import _setup  # noqa: F401  (repository on sys.path)

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.extractor import LOCAL_KINDS, BaseExtractor
from pipelines.manifest import MANIFEST_SCHEMA, to_table

FRAMES = 400


class Synthetic(BaseExtractor):
    """88 scalars and a frame series derived from the clip id: the store's work without any media work."""
    kind = "synthetic"

    def schema(self) -> pa.Schema:
        return pa.schema([(f"f{i}", pa.float32()) for i in range(88)] + [("series", pa.list_(pa.float32()))])

    def extract(self, item: dict) -> dict:
        rng = np.random.default_rng(int(hashlib.sha256(item["clip_id"].encode()).hexdigest()[:8], 16))
        values = rng.standard_normal(88 + FRAMES).astype(np.float32)
        return {**{f"f{i}": float(values[i]) for i in range(88)}, "series": values[88:].tolist()}


class SyntheticDownstream(BaseExtractor):
    """A downstream set: one statistic of its upstream row's series (the worker reads that row from the store)."""
    kind = "synthetic_downstream"
    requires = ("syn",)

    def schema(self) -> pa.Schema:
        return pa.schema([("series_mean", pa.float32())])

    def extract(self, item: dict) -> dict:
        return {"series_mean": float(np.mean(item["inputs"]["syn"]["series"]))}


def _manifest(folder: Path, n: int) -> None:
    """N synthetic clips, written 1 000 at a time (the benchmark's own set-up must not raise the driver's peak)."""
    folder.mkdir(parents=True)
    schema = MANIFEST_SCHEMA.with_metadata({b"aver.root": str(folder).encode()})
    with pq.ParquetWriter(folder / "syn.parquet", schema) as writer:
        for start in range(0, n, 1000):
            rows = [{"clip_id": f"syn/{i:07d}", "corpus": "syn", "path": f"{i:07d}.wav", "speaker": f"syn/s{i % 50}",
                     "emotion": "neutral", "has_audio": True, "has_video": False, "duration": 2.0,
                     "content_hash": hashlib.sha256(str(i).encode()).hexdigest()}
                    for i in range(start, min(n, start + 1000))]
            writer.write_table(to_table(rows, schema))


def _bytes_read() -> int:
    return int(next(line.split()[1] for line in open("/proc/self/io") if line.startswith("rchar")))


def one_size(n: int, chunk: int) -> dict:
    from pipelines.plan import run_extraction
    from pipelines.store import FeatureStore
    from pipelines.store.compaction import compact
    import torch  # noqa: F401  (the local engine's thread pinning imports it: part of the baseline, not of the run)
    LOCAL_KINDS["synthetic"] = "scale:Synthetic"
    LOCAL_KINDS["synthetic_downstream"] = "scale:SyntheticDownstream"
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tmp = Path(tempfile.mkdtemp(prefix="aver-scale-"))
    _manifest(tmp / "manifests", n)
    params = {"paths": {"manifests": str(tmp / "manifests"), "store": str(tmp / "store")},
              "engine": {"name": "local", "chunk_size": chunk},
              "features": {"syn": {"extractor": "synthetic", "params": {}},
                           "down": {"extractor": "synthetic_downstream", "params": {}}}}
    t0 = time.perf_counter()
    summary = run_extraction(params, "syn", "syn", progress=False)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    down = run_extraction(params, "down", "syn", progress=False)
    down_seconds = time.perf_counter() - t0
    assert (summary.extracted, down.extracted) == (n, n), (summary, down)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    store = FeatureStore(tmp / "store", tmp / "manifests")
    files_before = len(store.shards("syn", "syn"))
    report = compact(store, "syn", "syn")
    out = {"clips": n, "rows": summary.extracted, "seconds": round(seconds, 1), "rows_per_s": round(n / seconds),
           "downstream_rows_per_s": round(n / down_seconds),
           "driver_peak_rss_mb": round(rss_mb), "rss_after_imports_mb": round(baseline_mb),
           "files_before": files_before, "files_after": report.files_after}
    for label, columns in (("one_column", {"syn": ["f0"]}), ("whole_table", None)):
        start, t0 = _bytes_read(), time.perf_counter()
        df = store.load(["syn"], ["syn"], columns=columns)
        out[f"load_{label}_s"] = round(time.perf_counter() - t0, 2)
        out[f"load_{label}_mb"] = round((_bytes_read() - start) / 2**20, 1)
        assert len(df) == n
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--chunk-size", type=int, default=32, help="rows per file written by a run (params default)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)      # internal: measure one size in this process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.chunk_size)))
        return
    for n in args.clips:
        done = subprocess.run([sys.executable, __file__, "--one", str(n), "--chunk-size", str(args.chunk_size)],
                              capture_output=True, text=True, check=True)
        print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
