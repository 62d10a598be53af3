"""`aver predict FILE`: emotion over time in one video or audio file, with a model saved by the train stage.

The file is cut into windows (`window` s long, one every `hop` s). Each window is a work item (a manifest-like row
with `start`/`end`) that goes through the SAME extractors as the corpus pipeline, built from the params.yaml
`features:` entries of the feature sets the model reads (plus their upstream sets, e.g. `faces` for
`fer_embedding`), in-process. The rows are laid out like `FeatureStore.load` (`<feature set>.<column>`) and the
model gives class probabilities per window from the modalities the file has. A window where an extractor fails
(no face, silence) keeps its other modality and lists the failure with its ledger reason.

Outputs in `out_dir`: `<stem>.timeline.csv`, `<stem>.timeline.json` and, with `plot`, `<stem>.timeline.png`
(pipelines/timeline.py).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.config import feature_config, paths
from pipelines.extractor import Extractor, build, failure, full_schema
from pipelines.probe import ProbeError, probe, segment_hash
from pipelines.saved_models import (MODALITIES, PredictError, SavedModel, choose_model, model_summary,
                                   usable_modalities)
from pipelines.store import KEY, LABEL_COLUMNS
from pipelines.timeline import write_outputs
from training.data import Frame
from training.models import ModelLoadError, load_model
from training.run import needed_feature_sets

CORPUS = "predict"

# ---- which features ---------------------------------------------------------------------------------------------
def feature_plan(saved: SavedModel, params: dict, available: tuple[str, ...]) -> dict[str, Extractor]:
    """Feature set -> built extractor, upstream sets first, for the model's modalities that the file has.

    The sets are those the train stage loads for the model (`needed_feature_sets`): its modalities' entries of
    `train.modalities` and every feature set named in its params."""
    info = saved.info
    used = set(saved.modalities) & set(available)
    cfg = {"modalities": {m: spec for m, spec in (info.get("modalities") or {}).items() if m in used},
           "models": {saved.name: info.get("params") or {}}, "feature_sets": [], "regression": None}
    plan: dict[str, Extractor] = {}

    def add(feature_set: str, wanted_by: str) -> None:
        if feature_set in plan:
            return
        try:
            fcfg = feature_config(params, feature_set)
        except KeyError:
            raise PredictError(f"{wanted_by} reads feature set {feature_set!r}, which params.yaml does not declare "
                               "under features:") from None
        extractor = build(fcfg["extractor"], dict(fcfg["params"]))
        if extractor.modality not in used:
            return
        now = {"kind": extractor.kind, "version": extractor.version, "params": fcfg["params"]}
        if hasattr(extractor, "provenance"):          # the weights behind the features (pipelines/plan.py)
            now["provenance"] = extractor.provenance()
        _check_same_features(saved, feature_set, now)
        for upstream in extractor.requires:
            add(upstream, f"feature set {feature_set!r}")
        plan[feature_set] = extractor

    for feature_set in sorted(needed_feature_sets(cfg)):
        add(feature_set, f"model {saved.name!r}")
    if not plan:
        raise PredictError(f"model {saved.name!r} reads no feature set of the file's modalities "
                           f"({', '.join(available)})")
    return plan


def _check_same_features(saved: SavedModel, feature_set: str, now: dict) -> None:
    """The model must see features made the way its training features were (models saved before this record
    existed carry none, and are not checked)."""
    then = (saved.info.get("feature_configs") or {}).get(feature_set)
    if then is None or json.dumps(then, sort_keys=True, default=str) == json.dumps(now, sort_keys=True, default=str):
        return
    changed = [k for k in ("kind", "version", "params", "provenance") if then.get(k) != now.get(k)]
    raise PredictError(f"model {saved.name!r} was trained on feature set {feature_set!r} made with "
                       f"{ {k: then.get(k) for k in changed} }, but params.yaml (and the code) now make it with "
                       f"{ {k: now.get(k) for k in changed} }: restore those params or re-train (`dvc repro`)")


# ---- windows ------------------------------------------------------------------------------------------------------
def windows(duration: float, window: float, hop: float) -> list[tuple[float, float]]:
    """[start, end) spans every `hop` s covering the file; the last one ends at the end of the file."""
    if not (window > 0 and hop > 0):
        raise PredictError(f"window and hop must be positive seconds (got {window}, {hop})")
    n = max(1, math.ceil(round((duration - window) / hop, 9)) + 1)
    return [(round(k * hop, 6), round(min(k * hop + window, duration), 6)) for k in range(n)]


def window_items(path: Path, facts: dict, spans: list[tuple[float, float]]) -> list[dict]:
    """One work item per window, shaped like the planner's (a manifest row + abspath, variant, inputs)."""
    items = []
    for start, end in spans:
        items.append({
            **{k: v for k, v in facts.items() if k != "notes"},
            "clip_id": f"{CORPUS}/{path.stem}@{start:.3f}", "corpus": CORPUS, "path": path.name,
            "speaker": f"{CORPUS}/{path.stem}", "emotion": None, "emotion_orig": None, "split": None,
            "valence": None, "arousal": None, "dominance": None, "start": start, "end": end,
            "duration": end - start, "content_hash": segment_hash(facts["content_hash"], start, end),
            "abspath": str(path), "variant": "clean", "augment": {}, "peers": [], "inputs": {},
        })
    return items


def extract(plan: dict[str, Extractor], items: list[dict]) -> tuple[dict[str, list[dict]], list[dict]]:
    """Run each extractor on the windows it can take: (feature set -> rows, ledger rows of failed windows)."""
    rows: dict[str, list[dict]] = {}
    failures: list[dict] = []
    for feature_set, extractor in plan.items():
        upstream = {fs: {r["clip_id"]: r for r in rows[fs]} for fs in extractor.requires}
        ready = []
        for item in items:
            missing = [fs for fs, by_clip in upstream.items() if item["clip_id"] not in by_clip]
            if missing:
                failures.append(failure(item, feature_set, f"missing_input:{missing[0]}",
                                        f"no {missing[0]} row for this window"))
            else:
                ready.append({**item, "inputs": {fs: by_clip[item["clip_id"]] for fs, by_clip in upstream.items()}})
        result = extractor.process(ready) if ready else None
        rows[feature_set] = result.rows if result else []
        failures += [{**f, "stage": feature_set} for f in (result.failures if result else [])]
    return rows, failures


def store_layout(items: list[dict], plan: dict[str, Extractor], rows: dict[str, list[dict]]) -> pd.DataFrame:
    """The windows as `FeatureStore.load` lays out clips: label columns + `<feature set>.<column>` (nulls where a
    window has no row)."""
    base = pd.DataFrame([{c: item.get(c) for c in LABEL_COLUMNS} | {"variant": "clean"} for item in items])
    for feature_set, extractor in plan.items():
        if not rows[feature_set]:
            continue
        feats = pa.Table.from_pylist(rows[feature_set], schema=full_schema(extractor)).to_pandas()
        feats = feats.drop(columns="content_hash")
        feats = feats.rename(columns={c: f"{feature_set}.{c}" for c in feats.columns if c not in KEY})
        base = base.merge(feats, on=KEY, how="left")
    return base


# ---- the timeline -------------------------------------------------------------------------------------------------
def face_box(row: dict | None) -> tuple[list[float] | None, float | None]:
    """Median box [x1, y1, x2, y2] (frame pixels) of the window's main face, and the share of frames it is in."""
    if row is None:
        return None, 0.0
    boxes = np.asarray(row["boxes"], np.float32).reshape(-1, 4)
    found = np.asarray(row["face_found"], bool)
    if not found.any():
        return None, 0.0
    return [round(float(v), 1) for v in np.median(boxes[found], axis=0)], float(found.mean())


def speaking_face(row: dict | None) -> dict | None:
    """The window's speaking face (active speaker detection in `faces`): its box, track, synchrony and the number
    of faces; None when the faces set did not decide (no landmarks, no audio) or no mouth follows the voice."""
    if row is None or row.get("speaking_track") is None or int(row["speaking_track"]) < 0:
        return None
    track = str(int(row["speaking_track"]))
    tracks = json.loads(row["speaking_tracks"])
    return {"box": tracks[track]["box"], "track": int(track), "sync": tracks[track]["sync"],
            "n_faces": len(tracks)}


def affect_dimensions(rows: dict[str, list[dict]], plan: dict[str, Extractor], clip_id: str) -> dict:
    """The window's valence and arousal where the model reads them: the mean over its frames of a `face_affect`
    set's own valence / arousal heads (HSEmotion `*_va_mtl` models, on the speaking face's crops); null otherwise
    (the models `aver predict` trains are classifiers)."""
    for feature_set, extractor in plan.items():
        row = next((r for r in rows[feature_set] if r["clip_id"] == clip_id), None) \
            if extractor.kind == "face_affect" else None
        if row is not None and row.get("valence_mean") is not None:
            return {"valence": round(float(row["valence_mean"]), 4), "arousal": round(float(row["arousal_mean"]), 4)}
    return {"valence": None, "arousal": None}


class WindowScorer:
    """The model and its extractors, loaded once: `score(items)` turns window work items into timeline entries
    (`aver predict` scores a file's windows in one call, `aver live` each window as it completes)."""

    def __init__(self, saved: SavedModel, params: dict, used: tuple[str, ...]):
        self.saved, self.used = saved, used
        try:    # before any extractor loads: a folder aver did not write is refused (its files are never executed)
            self.model = load_model(saved.directory)
        except ModelLoadError as e:
            raise PredictError(str(e)) from None
        self.plan = feature_plan(saved, params, used)
        for extractor in self.plan.values():
            extractor.setup()
        self.classes = list(saved.info["classes"])
        self.by_modality = {m: [fs for fs, ex in self.plan.items() if ex.modality == m] for m in used}
        self.last_faces: dict[str, dict] = {}

    def score(self, items: list[dict]) -> list[dict]:
        rows, failures = extract(self.plan, items)
        have = {fs: {r["clip_id"] for r in rows[fs]} for fs in self.plan}
        window_modalities = [[m for m in self.used if all(item["clip_id"] in have[fs] for fs in self.by_modality[m])]
                             for item in items]
        if not any(window_modalities):
            reasons = sorted({f"{f['stage']}: {f['reason']}" for f in failures})
            raise PredictError(f"no features could be computed ({'; '.join(reasons)})")
        frame = Frame(store_layout(items, self.plan, rows), self.classes, self.saved.info.get("modalities") or {}, None)
        proba = np.asarray(self.model.predict_proba(frame, modalities=self.used), np.float64)
        faces = {r["clip_id"]: r for r in rows.get("faces", [])}
        self.last_faces = faces             # the live run follows the speaking face from window to window
        timeline = []
        for item, p, mods in zip(items, proba, window_modalities):
            row = faces.get(item["clip_id"])
            box, fraction = face_box(row) if "faces" in self.plan else (None, None)
            timeline.append({
                "start": item["start"], "end": item["end"], "label": self.classes[int(p.argmax())],
                "confidence": float(p.max()), "probs": dict(zip(self.classes, map(float, p))), "modalities": mods,
                **affect_dimensions(rows, self.plan, item["clip_id"]),
                "face_box": box, "face_fraction": fraction, "speaking_face": speaking_face(row),
                "failures": [{"feature_set": f["stage"], "reason": f["reason"], "detail": f["detail"].splitlines()[0]}
                             for f in failures if f["clip_id"] == item["clip_id"]],
            })
        return timeline


def predict_file(path: str | Path, model_dir: str | Path | None = None, params: dict | None = None,
                 window: float = 2.0, hop: float = 1.0, out_dir: str | Path | None = None,
                 plot: bool = False) -> dict:
    """Timeline of class probabilities of one media file; writes CSV + JSON (+ PNG) and returns the JSON content.

    `model_dir`: a saved model folder, a run folder, a model name, or None (see `choose_model`). Raises
    `PredictError` (one line) for unreadable files, missing models or feature sets.
    """
    params = params or {}
    path = Path(path)
    try:
        facts = probe(path)
    except ProbeError as e:
        detail = f" ({e.detail.splitlines()[0]})" if e.detail else ""
        raise PredictError(f"cannot use {path}: {e.reason}{detail}") from None
    available = tuple(m for m in MODALITIES if facts[f"has_{m}"])
    if not facts["duration"]:
        raise PredictError(f"cannot use {path}: its duration is unknown")
    saved = choose_model(model_dir, paths(params)["runs"], available)
    used = usable_modalities(saved, available, path.name)
    items = window_items(path.resolve(), facts, windows(float(facts["duration"]), window, hop))
    scorer = WindowScorer(saved, params, used)
    try:
        timeline = scorer.score(items)
    except PredictError as e:
        raise PredictError(f"{path.name}: {e}") from None
    classes = scorer.classes
    proba = np.array([[t["probs"][c] for c in classes] for t in timeline])
    lengths = np.array([t["end"] - t["start"] for t in timeline])
    overall = (proba * lengths[:, None]).sum(0) / lengths.sum()
    result = {
        "file": str(path.resolve()), "duration": float(facts["duration"]), "file_modalities": list(available),
        "modalities_used": list(used), "model": model_summary(saved),
        "feature_sets": {fs: ex.kind for fs, ex in scorer.plan.items()}, "window": window, "hop": hop,
        "overall": {"label": classes[int(overall.argmax())], "probs": dict(zip(classes, map(float, overall)))},
        "windows": timeline,
    }
    out_dir = Path(out_dir) if out_dir is not None else paths(params)["runs"] / "predict" / path.stem
    result["outputs"] = write_outputs(result, out_dir, path.stem, plot)
    return result
