"""CPU seconds per media second of each feature set, from a cProfile of one in-process extraction pass.

    python benchmarks/feature_cpu.py                        # params.yaml, one replica of each benchmark source
    python benchmarks/feature_cpu.py --params my.yaml --without face_affect --top 25

Every `features:` entry of the params (with its variants) runs once over one replica of each source of
benchmarks/pipeline.py, with the local engine in this process, torch on one thread (a Ray worker's share on the
2-vCPU VM). The profiler's clock is the process CPU time (all threads), so the figures hold on a shared machine. Per
feature set: CPU s per media s spent in its extractor's `process` or `extract` (model loading, which they may
trigger on the first clip, is left out and shown apart; two sets of one extractor class share one figure); then
the parts of `faces` per video second, and the `--top` functions of the whole pass by own CPU time.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from _setup import ROOT, SHARED  # noqa: E402  (first: sys.path and the model registry)

from pipeline import bench_params, replicate, sources  # noqa: E402

FACES_PARTS = {     # part of the `faces` extractor -> the functions (file suffix, name) whose cumulative time it is
    "decode (PyAV, RGB frames)": [("features/video_io.py", "sample_frames")],
    "RetinaFace (network, pre- and post-processing)": [("features/retinaface.py", "detect")],
    "dlib descriptors": [("features/face_identity.py", "__call__")],
    "dlib 68 points": [("features/landmarks.py", "__call__")],
    "crops (align + PNG)": [("features/alignment.py", "align_face"), ("features/alignment.py", "encode_image")],
    "geometry + head pose": [("features/landmarks.py", "measures")],
    "whole extractor": [("features/faces.py", "extract")],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--without", action="append", default=[], metavar="SET")
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from pipelines.extractor import extractor_class
    from pipelines.ingest import ingest
    from pipelines.manifest import read_manifest
    from pipelines.plan import run_extractions, upstream_first

    base = yaml.safe_load(args.params.read_text())
    base["features"] = {k: v for k, v in base["features"].items() if k not in args.without}
    work = Path(tempfile.mkdtemp(prefix="aver-cpu-"))
    try:
        srcs = sources(SHARED)
        replicate(srcs, work / "corpus", len(srcs))
        params = bench_params(base, work, work / "corpus")
        order = upstream_first(params, list(params["features"]))
        ingest("bench", params["corpora"]["bench"], work / "manifests", progress=False)
        rows = read_manifest(work / "manifests", "bench").to_pylist()
        media_s = sum(r["duration"] for r in rows)
        profile = cProfile.Profile(time.process_time)
        load0, cpu0 = os.getloadavg()[0], time.process_time()
        profile.runcall(run_extractions, params, order, "bench", engine="local", progress=False)
        cpu = time.process_time() - cpu0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stats = pstats.Stats(profile)
    print(f"{len(srcs)} clips, {media_s:.1f} media s; load average {load0:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at the end; whole pass {cpu:.2f} CPU s ({cpu / media_s:.4f} per media s)\n")
    print("| feature set | extractor | CPU s in extract | per media s | model loading inside extract (s) |")
    print("|---|---|---|---|---|")
    for name in order:
        cls = extractor_class(params["features"][name]["extractor"])
        spent, loading = _extract_time(stats, _entry(cls))
        print(f"| {name} | {cls.kind} | {spent - loading:.2f} | {(spent - loading) / media_s:.4f} | {loading:.2f} |")
    if "faces" in order:
        media_video = sum(r["duration"] for r in rows if r["has_video"])
        print(f"\nInside `faces` (cumulative CPU s of each part, per video s: {media_video:.1f} s of video):\n")
        print("| part | CPU s | per video s |\n|---|---|---|")
        for part, functions in FACES_PARTS.items():
            spent = sum(v[3] for (path, _, name), v in stats.stats.items()
                        if any(path.endswith(f) and name == n for f, n in functions))
            print(f"| {part} | {spent:.2f} | {spent / media_video:.4f} |")
    print(f"\nTop {args.top} functions by own CPU time:\n")
    stats.sort_stats("tottime").print_stats(args.top)


def _entry(cls) -> tuple[str, int, str]:
    """cProfile's key of the method the engine calls per batch: the class's own `process`, else its `extract`."""
    from pipelines.extractor import BaseExtractor
    method = cls.process if cls.process is not BaseExtractor.process else cls.extract
    code = method.__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def _extract_time(stats: pstats.Stats, entry: tuple[str, int, str]) -> tuple[float, float]:
    """(cumulative CPU s of `entry`, the part of it spent in `setup` methods it called: model loading)."""
    spent = stats.stats[entry][3] if entry in stats.stats else 0.0
    loading = sum(c[3] for (_, _, function), (*_, callers) in stats.stats.items() if function == "setup"
                  for caller, c in callers.items() if caller == entry)
    return spent, loading


if __name__ == "__main__":
    main()
