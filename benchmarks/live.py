"""`aver live` benchmark: latency of a 60-s stream at 1x, and active-speaker accuracy on generated two-face clips.

    python benchmarks/live.py                  # both parts
    python benchmarks/live.py --only asd       # accuracy only (no model needed)
    python benchmarks/live.py --only window-cpu --seconds 20   # CPU per window, incremental faces vs alone

Latency: a miniature model is trained as tests/test_predict.py does (demo corpus, vavl), with the `faces` params of
params.yaml (landmarks on: active speaker detection); a 60-s two-face clip (MEAD M030 | RAVDESS actor 1, looped,
the sound of the left face) is streamed as MPEG-TS over loopback TCP at 1x and read by `run_live` (1-s windows,
0.5-s hop, torch and BLAS pinned to `--cores` threads). Reported: latency p50/p95 (window complete -> its line
written), dropped windows, and the time from the end of the stream to the last output.

Accuracy: every pair of four real talking faces of tests/two_faces.SOURCES side by side (`--pairs tuning`, on
which the method's constants were chosen) or 15 pairs never used to choose anything (`--pairs heldout`: five other
CREMA-D utterances, each next to the MEAD, RAVDESS and MELD faces), each face in turn being the one heard, or 16
clips where one of the four faces is heard next to a real talking face that has no sound (`--pairs mute`: MEAD
W009, W011 and M030 style clips, RAVDESS actor 19; the listener talks but is never heard), or 45 clips defined
after the method was frozen and run once (`--pairs fresh`: 25 other soundless talking faces of MEAD, each next to one
of the nine faces with sound, and the held-out CREMA-D utterances two by two: one actor, one sentence). Each clip
is read by `run_live` as `aver live FILE` reads it, with the miniature model (1-s windows every 0.5 s, the stream's
incremental faces and SpeakerMemory, not paced: no window dropped); a window counts as right when its speaking
face's box is on the heard face's half. Windows where no face is declared speaking count as wrong. Also the batch
decision per whole clip, and per clip its windows (+ right, - wrong face, ? none).
"""
from __future__ import annotations

import _setup  # noqa: F401  (repository on sys.path, offline models)

import argparse
import io
import itertools
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(_setup.ROOT / "tests"))
from two_faces import SIDE, SILENT_TALKERS, SOURCES, compose, serve_mpegts  # noqa: E402

from features.faces import FacesExtractor  # noqa: E402
from pipelines.config import feature_config, load_params  # noqa: E402
from pipelines.probe import probe  # noqa: E402

FACES = ("mead_m030", "ravdess_01", "crema_1001_ang", "meld_dia1")
HELD_OUT_UTTERANCES = ("crema_1001_hap", "crema_1001_sad", "crema_1001_dis", "crema_1001_fea", "crema_1001_neu")
FRESH_LISTENERS = {   # talking faces without sound never composed before 2026-11-30 (the `fresh` pairs)
    **{f"mead_{who.lower()}_{emotion}_mute": f"mead_sample/dreamtalk_style_clips/{who}_front_{emotion}_level3_001.mp4"
       for who in ("M030", "W009", "W011") for emotion in ("angry", "contempt", "disgusted", "fear", "happy", "sad",
                                                          "surprised")
       if f"mead_sample/dreamtalk_style_clips/{who}_front_{emotion}_level3_001.mp4" not in SILENT_TALKERS.values()},
    **{f"mead_driving_{emotion}_mute": f"mead_sample/eamm/driving_crops/{emotion}.mp4"
       for emotion in ("contempt", "disgusted", "fear", "happy", "sad", "surprised")},
}
HEARD = FACES + HELD_OUT_UTTERANCES
PAIRS = {   # (left, right, heard side): tuning: the pairs the method's constants were chosen on, each face heard in
    # turn. heldout: CREMA-D actor 1001's five other utterances, each next to the three other faces, each heard in
    # turn. mute: a face of FACES heard next to a real talking face without sound (SILENT_TALKERS), on either side.
    # heldout and mute never chose a constant (BENCHMARKS.md lists each evaluation made on them and what it decided).
    "tuning": tuple((a, b, heard) for a, b in itertools.combinations(FACES, 2) for heard in (0, 1)),
    "heldout": tuple((u, f, heard) for u in HELD_OUT_UTTERANCES for f in ("mead_m030", "ravdess_01", "meld_dia1")
                     for heard in (0, 1)),
    "mute": tuple((f, m, 0) if i % 2 == 0 else (m, f, 1)
                  for i, (f, m) in enumerate(itertools.product(FACES, SILENT_TALKERS))),
    # fresh (defined, then run once, with the method frozen, 2026-11-30): each never-composed listener of
    # FRESH_LISTENERS next to one of the nine talkers with sound (in turn), sides alternating; and every pair of the
    # held-out CREMA-D utterances (the same actor saying the same sentence: the listener's mouth makes the heard
    # syllables, at other instants), each heard in turn.
    "fresh": (*((HEARD[i % len(HEARD)], m, 0) if i % 2 == 0 else (m, HEARD[i % len(HEARD)], 1)
                for i, m in enumerate(FRESH_LISTENERS)),
              *((a, b, heard) for a, b in itertools.combinations(HELD_OUT_UTTERANCES, 2) for heard in (0, 1))),
}


def asd_accuracy(work: Path, params: dict, window: float, hop: float, repeat: int, pairs) -> dict:
    """Each two-face clip read by `run_live` as `aver live FILE` reads it (windows of `window` s every `hop`, the
    stream's incremental faces and SpeakerMemory, not paced: no window dropped); a window counts as right when its
    `speaking_face` box is on the heard face's side. Also the batch `faces` decision on the whole clip."""
    from pipelines.live import run_live
    extractor = FacesExtractor(**feature_config(params, "faces")["params"])
    extractor.setup()
    right = total = silent = clip_right = 0
    per_clip = {}
    for a, b, heard in pairs:
        sources = [_setup.SHARED / "data" / {**SOURCES, **SILENT_TALKERS, **FRESH_LISTENERS}[name] for name in (a, b)]
        path = compose(work / f"{a}-{b}-{heard}.mp4", sources, heard, repeat=repeat)
        item = {"clip_id": path.stem, "corpus": "bench", "path": path.name, "abspath": str(path),
                "variant": "clean", "content_hash": path.stem}
        whole = extractor.extract(item)
        speaking = json.loads(whole["speaking_tracks"]).get(str(whole["speaking_track"]), {})
        clip_right += _on_side(speaking.get("box"), heard)
        out = io.StringIO()
        run_live(str(path), None, params, window=window, hop=hop, out=out)
        faces = [line.get("speaking_face") for line in map(json.loads, out.getvalue().splitlines())
                 if line["event"] == "window"]
        marks = "".join("?" if f is None else "+" if _on_side(f["box"], heard) else "-" for f in faces)
        total, right, silent = total + len(marks), right + marks.count("+"), silent + marks.count("?")
        per_clip[path.stem] = marks
    return {"windows": total, "right": right, "accuracy": right / total, "no_speaker": silent,
            "clips": len(pairs), "clips_right": clip_right, "per_clip": per_clip}


def _on_side(box, heard: int) -> bool:
    return box is not None and ((box[0] + box[2]) / 2 >= SIDE) == (heard == 1)


def miniature_model(work: Path, faces_params: dict) -> dict:
    """Params of a run holding a vavl model trained on a small demo corpus, as tests/test_predict.py trains one."""
    from pipelines.demo import generate
    from pipelines.ingest import ingest
    from pipelines.plan import run_extractions
    from test_predict import EMOTIONS, FEATURES, TRAIN
    from training.stages import train_stage
    generate(work / "demo", speakers=3, emotions=EMOTIONS, takes=1, duration=1.5, workers=1)
    features = {**FEATURES, "faces": {"extractor": "faces", "params": faces_params}}
    params = {"paths": {k: str(work / k) for k in ("manifests", "store", "runs")},
              "corpora": {"demo": {"adapter": "demo", "root": str(work / "demo")}}, "features": features,
              "train": {**TRAIN, "models": {"vavl": TRAIN["models"]["vavl"]}}}
    ingest("demo", params["corpora"]["demo"], work / "manifests", progress=False)
    run_extractions(params, list(features), "demo", progress=False)
    train_stage(params)
    return params


def latency(work: Path, params: dict, seconds: float, window: float, hop: float) -> dict:
    from pipelines.live import run_live
    data = _setup.SHARED / "data"
    loop = probe(data / SOURCES["mead_m030"])["duration"]
    path = compose(work / "stream.mp4", [data / SOURCES["mead_m030"], data / SOURCES["ravdess_01"]], 0,
                   repeat=int(np.ceil(seconds / loop)), seconds=loop)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = serve_mpegts(path, f"tcp://127.0.0.1:{port}")
    out = io.StringIO()
    summary = run_live(f"tcp://127.0.0.1:{port}?listen=1", None, params, window=window, hop=hop, out=out)
    sender.join(10)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    spoke = [w["speaking_face"] for w in lines if w["event"] == "window"]
    summary["stream_s"] = float(probe(path)["duration"])
    summary["speaker_on_heard_side"] = float(np.mean([f is not None and _on_side(f["box"], 0) for f in spoke]))
    summary["shed_events"] = sum(x["event"] == "shed" for x in lines)
    return summary


def window_cpu(work: Path, params: dict, seconds: float, window: float, hop: float) -> dict:
    """CPU time of the scoring thread per window (ms, mean and p95: all feature sets + model, and each feature set)
    of the two-face clip read live from a file (not paced: no drops, no shedding), with the stream's incremental
    faces and with every window's faces computed alone (the live run before features.face_stream)."""
    import pipelines.live.run as live_run
    import pipelines.predict as predict
    from features.face_stream import FaceStream
    data = _setup.SHARED / "data"
    loop = probe(data / SOURCES["mead_m030"])["duration"]
    path = compose(work / "cpu.mp4", [data / SOURCES["mead_m030"], data / SOURCES["ravdess_01"]], 0,
                   repeat=int(np.ceil(seconds / loop)), seconds=loop)
    score, extract, result = predict.WindowScorer.score, predict.extract, {}
    for mode, stream in (("alone", lambda: None), ("incremental", FaceStream)):
        cpu = {"window": []}

        def timed_extract(plan, items):
            for feature_set, extractor in plan.items():
                if "process" not in vars(extractor):      # each extractor of the scorer timed once
                    extractor.process = _thread_timed(type(extractor).process, cpu.setdefault(feature_set, []),
                                                      extractor)
            return extract(plan, items)
        predict.WindowScorer.score, predict.extract = _thread_timed(score, cpu["window"]), timed_extract
        live_run.FaceStream = stream
        try:
            live_run.run_live(str(path), None, params, window=window, hop=hop, out=io.StringIO())
        finally:
            predict.WindowScorer.score, predict.extract, live_run.FaceStream = score, extract, FaceStream
        result[mode] = {k: {"mean_ms": round(1000 * float(np.mean(v)), 1),
                            "p95_ms": round(1000 * float(np.percentile(v, 95)), 1), "windows": len(v)}
                        for k, v in cpu.items()}
    return result


def _thread_timed(method, times: list, bound=None):
    """`method` timed in CPU seconds of the calling thread into `times` (bound to `bound` when given)."""
    def timed(*args):
        started = time.thread_time()
        try:
            return method(*((bound,) if bound is not None else ()), *args)
        finally:
            times.append(time.thread_time() - started)
    return timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["asd", "latency", "window-cpu"])
    ap.add_argument("--repeat", type=int, default=3, help="loops of each two-face clip for the accuracy part")
    ap.add_argument("--pairs", choices=sorted(PAIRS), default="tuning", help="two-face pairs of the accuracy part")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    params = load_params(_setup.ROOT / "params.yaml")
    faces_params = dict(feature_config(params, "faces")["params"])
    from pipelines.extractor import Resources, limit_threads
    limit_threads(Resources(num_cpus=args.cores))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        load = os.getloadavg()
        started = time.time()
        params = miniature_model(work / "run", faces_params)
        print(f"miniature model trained in {time.time() - started:.0f} s", file=sys.stderr)
        if args.only in (None, "asd"):
            result = asd_accuracy(work, params, 1.0, 0.5, args.repeat, PAIRS[args.pairs])
            print(json.dumps({"active_speaker": {"pairs": args.pairs, **result}}), flush=True)
        if args.only == "window-cpu":
            result = window_cpu(work, params, args.seconds, 1.0, 0.5)
            print(json.dumps({"window_cpu": result, "load_before": load, "load_after": os.getloadavg()}))
        elif args.only in (None, "latency"):
            load = os.getloadavg()
            result = latency(work, params, args.seconds, 1.0, 0.5)
            print(json.dumps({"latency": result, "load_before": load, "load_after": os.getloadavg()}), flush=True)

if __name__ == "__main__":
    main()
