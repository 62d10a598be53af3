"""How the driver and the store scale with the number of clips (no media: the extractor computes nothing), and how
rows/s change with the number of Ray workers and with the store on local disk or on an S3 server.

    python benchmarks/scale.py --clips 1000 5000 20000
    python benchmarks/scale.py --clips 1000 --workers 1 2 --stores disk s3

For each corpus size, engine and store, in a fresh process: a manifest of N synthetic clips is written directly, then
one extraction of a synthetic feature set (88 float32 scalars like eGeMAPS + a 400-frame float32 series per clip,
made from the clip id, no decoding) into a fresh store, `engine.chunk_size` rows per file, then a second run of a
downstream set that reads each clip's upstream row (with its series) from the store, as `fer_embedding` reads
`faces`. Engine: local (the default), or Ray with each number of actors given to `--workers` (a local Ray session
started before the timed runs; actors start inside them). Store: a local folder, or (`s3`) a SeaweedFS S3 server on
loopback started once for the benchmark the way the tests start it (tests/s3_server.py). Reported: the driver's peak
RSS over both runs (planning, units, upstream rows, sink: the local engine's worker is the driver process; with the
peak after imports, for reference), rows/s of the first run (planning + writing) and of the downstream run, the
number of files before and after compaction (target 128 MiB), and `FeatureStore.load` of one scalar column vs the
whole table (seconds and bytes read through read syscalls, /proc/self/io: a local store's reads only).
"""
from __future__ import annotations

import _setup  # noqa: F401  (repository on sys.path)

import argparse
import contextlib
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.extractor import LOCAL_KINDS, BaseExtractor
from pipelines.manifest import MANIFEST_SCHEMA, to_table

FRAMES = 400
BENCHMARKS = Path(__file__).resolve().parent
KINDS = {"synthetic": "scale:Synthetic", "synthetic_downstream": "scale:SyntheticDownstream"}


def register() -> None:
    """Make the synthetic kinds known to this process (a Ray worker runs it as its setup hook)."""
    LOCAL_KINDS.update(KINDS)


class Synthetic(BaseExtractor):
    """88 scalars and a frame series derived from the clip id: the store's work without any media work."""
    kind = "synthetic"
    defaults = {"cpu_ms": 0.0}      # CPU work per clip (thread time), as a real extractor spends it

    def schema(self) -> pa.Schema:
        return pa.schema([(f"f{i}", pa.float32()) for i in range(88)] + [("series", pa.list_(pa.float32()))])

    def extract(self, item: dict) -> dict:
        rng = np.random.default_rng(int(hashlib.sha256(item["clip_id"].encode()).hexdigest()[:8], 16))
        values = rng.standard_normal(88 + FRAMES).astype(np.float32)
        busy_until = time.thread_time() + self.params["cpu_ms"] / 1000
        while time.thread_time() < busy_until:
            np.sort(rng.standard_normal(4096))
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


def _start_ray() -> None:
    import ray
    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": f"{BENCHMARKS}:{BENCHMARKS.parent}"},
                          "worker_process_setup_hook": "scale.register"})


def one_size(n: int, chunk: int, workers: int = 0, store_uri: str = "", cpu_ms: float = 0.0) -> dict:
    """One corpus size: the local engine, or Ray with `workers` actors; the store in a temporary folder or at
    `store_uri`."""
    from pipelines.plan import run_extraction
    from pipelines.store import FeatureStore
    from pipelines.store.compaction import compact
    import torch  # noqa: F401  (the local engine's thread pinning imports it: part of the baseline, not of the run)
    register()
    if workers:
        _start_ray()
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tmp = Path(tempfile.mkdtemp(prefix="aver-scale-"))
    _manifest(tmp / "manifests", n)
    engine = {"name": "ray", "chunk_size": chunk, "ray": {"workers": workers}} if workers else {
        "name": "local", "chunk_size": chunk}
    params = {"paths": {"manifests": str(tmp / "manifests"), "store": store_uri or str(tmp / "store")},
              "engine": engine,
              "features": {"syn": {"extractor": "synthetic", "params": {"cpu_ms": cpu_ms}},
                           "down": {"extractor": "synthetic_downstream", "params": {}}}}
    t0 = time.perf_counter()
    summary = run_extraction(params, "syn", "syn", progress=False)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    down = run_extraction(params, "down", "syn", progress=False)
    down_seconds = time.perf_counter() - t0
    assert (summary.extracted, down.extracted) == (n, n), (summary, down)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    store = FeatureStore(params["paths"]["store"], tmp / "manifests")
    files_before = len(store.shards("syn", "syn"))
    report = compact(store, "syn", "syn")
    out = {"clips": n, "cpu_ms": cpu_ms, "engine": f"ray, {workers} workers" if workers else "local",
           "store": "s3" if store_uri else "disk", "rows": summary.extracted, "seconds": round(seconds, 1),
           "rows_per_s": round(n / seconds),
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
    if workers:
        import ray
        ray.shutdown()
    return out


def _measure(n: int, chunk: int, workers: int, store_uri: str, cpu_ms: float) -> None:
    cmd = [sys.executable, __file__, "--one", str(n), "--chunk-size", str(chunk), "--one-workers", str(workers),
           "--one-store", store_uri, "--cpu-ms", str(cpu_ms)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    print(done.stdout.strip().splitlines()[-1], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--chunk-size", type=int, default=32, help="rows per file written by a run (params default)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0],
                    help="Ray actors, one measurement each (0: the local engine, the default)")
    ap.add_argument("--stores", nargs="+", choices=["disk", "s3"], default=["disk"],
                    help="where the store is: a local folder, a SeaweedFS S3 server on loopback, or both")
    ap.add_argument("--cpu-ms", type=float, default=0.0,
                    help="CPU milliseconds the synthetic extractor spends per clip (0: the store's work only)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)      # internal: measure one size in this process
    ap.add_argument("--one-workers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--one-store", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.chunk_size, args.one_workers, args.one_store, args.cpu_ms)))
        return
    with contextlib.ExitStack() as stack:
        s3 = None
        if "s3" in args.stores:         # one server for all the measurements; its AWS_* variables reach the children
            sys.path.insert(0, str(BENCHMARKS.parent / "tests"))
            from s3_server import seaweed
            s3 = stack.enter_context(seaweed(Path(stack.enter_context(tempfile.TemporaryDirectory()))))
        for n in args.clips:
            for store in args.stores:
                for workers in args.workers:
                    uri = s3.uri(f"scale-{uuid.uuid4().hex}") if store == "s3" else ""
                    _measure(n, args.chunk_size, workers, uri, args.cpu_ms)


if __name__ == "__main__":
    main()
