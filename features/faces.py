"""`faces`: the visual front end. One row per (clip, variant): the main face in every sampled frame.

decode (features.video_io, variant applied) -> RetinaFace on a downscaled copy, batched over the clip's frames
(through ONNX Runtime on CPU, features.onnx_runtime)
-> tracks (features.tracking) -> for every tracked face: aligned crop from the full-resolution frame
(features.alignment), dlib's 68 points and geometry (features.landmarks) -> main track's per-frame columns
+ clip statistics. Faces are described while streaming, so memory stays bounded by one detector batch of frames.
With `identity` (default), detected faces also get dlib's face descriptor (features.face_identity; on the schedule of
features.identity_schedule: new tracks, every `identity_every`-th detection of a track, shot cuts): tracks
are linked by identity as well as position, tracks of one person split by a gap or a shot cut are merged, and the
main track's mean descriptor is the clip's `identity`.

Detection scale: frames are shrunk so their long side is at most `max_side`; if the largest face of the first frame
is still taller than `face_px` there, the whole clip is detected at a smaller scale that brings it to `face_px`
(RetinaFace's largest anchor is 256 px: bigger faces come out as fragments, and smaller inputs are faster).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import islice
from typing import ClassVar

import cv2
import numpy as np
import pyarrow as pa

from features import active_speaker, mouth_motion
from features.alignment import align_face, encode_image
from features.face_identity import FaceDescriber
from features.identity_schedule import IdentitySchedule, describe_due
from features.onnx_runtime import check_runtime
from features.landmarks import MEASURES, STATISTICS, ShapePredictor68, clip_statistics, measures
from features.tracking import Tracker, Track, confirmed, interpolate, merge_by_identity, pick_main
from features.video_io import item_frames
from pipelines.extractor import BaseExtractor, ClipError

DETECT_BATCH = 8        # keyframes per detector forward pass (most of the batching gain, bounded memory)
MIN_DETECT_SIDE = 160   # never shrink the detector input's long side below this


@dataclass
class Face:
    row: np.ndarray             # detector row: box, score, 5 landmarks (full-resolution pixels)
    detected: bool              # False: interpolated between two detections (detect_every > 1)
    crop: bytes
    landmarks68: np.ndarray | None
    geometry: np.ndarray | None     # landmarks.MEASURES


class FacesExtractor(BaseExtractor):
    kind: ClassVar[str] = "faces"
    # 2: openness ratios and solvePnP head pose; 3: main track = the speaking one; 4: speaker from mouth motion
    version: ClassVar[str] = "4"
    modality: ClassVar[str] = "video"
    # NaN marks frames without the main face (and landmark statistics of a clip where dlib found none)
    nan_columns: ClassVar[tuple[str, ...]] = ("boxes", "scores", "landmarks5", "landmarks68", *MEASURES, "stat_*",
                                              "identity_spread")
    defaults: ClassVar[dict] = {
        "fps": 5.0, "model": "mnet025", "max_side": 640, "face_px": 160, "score_threshold": 0.5,
        "crop_size": 112, "crop_format": "png", "detect_every": 2, "device": "cpu", "landmarks68": True,
        "identity": True, "identity_threshold": 0.6, "identity_every": 5, "active_speaker": True,
        "runtime": "auto",
    }

    def __init__(self, **params):
        super().__init__(**params)
        if int(self.params["detect_every"]) < 1:
            raise ValueError(f"faces: detect_every must be >= 1, got {self.params['detect_every']}")
        if self.params["crop_format"] not in ("png", "jpeg"):
            raise ValueError(f"faces: crop_format must be 'png' or 'jpeg', got {self.params['crop_format']!r}")
        check_runtime(self.kind, self.params["runtime"])
        IdentitySchedule(int(self.params["identity_every"]))     # rejects a bad value now, not per clip
        self.detector = self.shapes = self.describer = None

    def schema(self) -> pa.Schema:
        f32, i32 = pa.list_(pa.float32()), pa.list_(pa.int32())
        fields = [
            ("frame_times", f32), ("face_found", pa.list_(pa.bool_())), ("detected", pa.list_(pa.bool_())),
            ("track_ids", i32), ("n_tracks", pa.int32()), ("frame_width", pa.int32()), ("frame_height", pa.int32()),
            ("detect_scale", pa.float32()),
            ("boxes", f32), ("boxes_shape", i32), ("scores", f32), ("landmarks5", f32), ("landmarks5_shape", i32),
            ("crops", pa.list_(pa.binary())), ("other_tracks", pa.string()), ("face_fraction", pa.float32()),
        ]
        if self.params["landmarks68"]:
            fields += [("landmarks68", f32), ("landmarks68_shape", i32)]
            fields += [(name, f32) for name in MEASURES]
            fields += [(f"stat_{name}_{stat}", pa.float32()) for name in MEASURES for stat in STATISTICS]
        if self.params["identity"]:
            fields += [("identity", f32), ("identity_faces", pa.int32()), ("identity_spread", pa.float32())]
        if self._asd:
            fields += [("speaking_track", pa.int32()), ("speaking_track_ids", i32), ("speaking_tracks", pa.string())]
        return pa.schema(fields)

    @property
    def _asd(self) -> bool:
        """Active speaker detection needs the mouth opening, measured from the 68 landmarks."""
        return bool(self.params["active_speaker"] and self.params["landmarks68"])

    def setup(self) -> None:
        from features.retinaface import RetinaFaceDetector   # torch import only where the extractor runs
        p = self.params
        # Frames reach the detector already shrunk (see _detect_size), hence no max_side of its own.
        self.detector = RetinaFaceDetector(model=p["model"], device=p["device"], score_threshold=p["score_threshold"],
                                           max_side=None, batch_size=DETECT_BATCH, runtime=p["runtime"],
                                           num_threads=max(1, int(self.resources.num_cpus)))
        # dlib aligns the face for its descriptor from the 68 points: identity needs them even when not stored.
        self.shapes = ShapePredictor68() if p["landmarks68"] or p["identity"] else None
        self.describer = FaceDescriber() if p["identity"] else None

    def extract(self, item: dict) -> dict:
        if self.detector is None:
            self.setup()
        every = int(self.params["detect_every"])
        tracker = Tracker(max_gap=max(5, 2 * every), max_identity_dist=float(self.params["identity_threshold"]))
        schedule = IdentitySchedule(int(self.params["identity_every"]))
        faces: dict[tuple[int, int], Face] = {}     # (track id, frame index) -> face
        times: list[float] = []
        detect_size, first_detections, size = None, None, None
        frames = item_frames(item, self.params["fps"], threads=max(1, math.ceil(self.resources.num_cpus)))
        for runs in _batched(_runs(frames, every), DETECT_BATCH):
            if detect_size is None:
                first = runs[0][-1][2]
                size = first.shape[1::-1]
                detect_size, first_detections = self._detect_size(first)
            keyframes = [run[-1] for run in runs]
            todo = keyframes[1:] if first_detections is not None else keyframes
            found = self.detector.detect([_resized(frame, detect_size) for _, _, frame in todo])
            if first_detections is not None:
                found, first_detections = [first_detections] + found, None
            for run, detections in zip(runs, found):
                times += [t for _, t, _ in run]
                full = _to_frame_pixels(detections, run[-1][2].shape[1::-1], detect_size)
                self._track_run(run, full, tracker, schedule, faces, every)
        return self._row(item, times, faces, tracker, size, detect_size)

    def _detect_size(self, frame: np.ndarray) -> tuple[tuple[int, int], np.ndarray | None]:
        """Clip-wide (width, height) of the detector input, and the probe frame's detections when they were made
        at that size (so they need not be recomputed)."""
        height, width = frame.shape[:2]
        long_side = max(width, height)
        base = min(1.0, self.params["max_side"] / long_side) if self.params["max_side"] else 1.0
        probe = self.detector.detect([_resized(frame, _scaled(width, height, base))])[0]
        face_px = self.params["face_px"]
        if not face_px or not len(probe):
            return _scaled(width, height, base), probe
        tallest = float((probe[:, 3] - probe[:, 1]).max())
        scale = min(base, max(base * face_px / tallest, MIN_DETECT_SIDE / long_side))
        return (_scaled(width, height, base), probe) if scale == base else (_scaled(width, height, scale), None)

    def _track_run(self, run, detections: np.ndarray, tracker: Tracker, schedule: IdentitySchedule, faces: dict,
                   every: int) -> None:
        """Track the run's keyframe (its last frame) and describe its faces (dlib descriptors on `schedule`); faces
        tracked across the run's earlier frames (only when detect_every > 1) are interpolated and described too."""
        key_index, _, key_frame = run[-1]
        points = self._points(key_frame, detections)
        descriptors = None
        if self.describer is not None:
            due = schedule.due(tracker, key_index, key_frame, detections)
            descriptors = describe_due(self.describer, key_frame, detections, points, due)
        ids = tracker.update(key_index, detections, descriptors)
        for track_id, row, face_points in zip(ids, detections, points):
            faces[track_id, key_index] = self._describe(key_frame, row, face_points, detected=True)
        between = {index: frame for index, _, frame in run[:-1]}
        for track_id in ids:
            for index, row in interpolate(tracker.tracks[track_id], list(between), every).items():
                frame = between[index]
                faces[track_id, index] = self._describe(frame, row, self._points(frame, row[None])[0],
                                                        detected=False)

    def _points(self, frame: np.ndarray, detections: np.ndarray) -> list[np.ndarray | None]:
        """dlib's 68 points of each detected face (None each without landmarks68)."""
        if self.shapes is None or not len(detections):
            return [None] * len(detections)
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        return [self.shapes(gray, row[:4]) for row in detections]

    def _describe(self, frame: np.ndarray, row: np.ndarray, points: np.ndarray | None, detected: bool) -> Face:
        size = int(self.params["crop_size"])
        crop, _ = align_face(frame, row[5:15].reshape(5, 2), size)
        values = measures(points, frame.shape[1::-1]) if self.params["landmarks68"] else None
        return Face(row, detected, encode_image(crop, self.params["crop_format"]), points, values)

    def _row(self, item: dict, times: list[float], faces: dict, tracker: Tracker, size, detect_size) -> dict:
        tracks = tracker.tracks
        if self.describer is not None:
            tracks, new_id = merge_by_identity(tracks, float(self.params["identity_threshold"]))
            faces = {(new_id[track_id], index): face for (track_id, index), face in faces.items()}
        tracks = confirmed(tracks)
        width, height = size if size is not None else (0, 0)
        main = pick_main(tracks, tracker.n_detected_frames, width, height)
        speaker = self._speaker(item, times, faces, tracks) if self._asd else None
        if speaker is not None and speaker.track is not None:
            main = next(t for t in tracks if t.track_id == speaker.track)   # embedders describe who speaks
        if main is None:
            raise ClipError("no_face", f"no face with score >= {self.params['score_threshold']} "
                                       f"in {len(times)} sampled frames")
        n = len(times)
        per_frame = [faces.get((main.track_id, i)) for i in range(n)]
        found = [f is not None for f in per_frame]
        rows = np.stack([f.row if f is not None else np.full(15, np.nan, np.float32) for f in per_frame])
        out = {
            "frame_times": np.asarray(times, np.float32).tolist(),
            "face_found": found,
            "detected": [f is not None and f.detected for f in per_frame],
            "track_ids": [main.track_id if ok else -1 for ok in found],
            "n_tracks": len(tracks),
            "frame_width": int(width), "frame_height": int(height),
            "detect_scale": float(max(detect_size) / max(width, height)),
            "boxes": _flat(rows[:, :4]), "boxes_shape": [n, 4],
            "scores": _flat(rows[:, 4]),
            "landmarks5": _flat(rows[:, 5:15]), "landmarks5_shape": [n, 10],
            "crops": [f.crop if f is not None else b"" for f in per_frame],
            "other_tracks": json.dumps([_track_summary(t) for t in tracks if t is not main]),
            "face_fraction": float(np.mean(found)),
        }
        if self.params["landmarks68"]:
            points = np.stack([f.landmarks68 if f is not None else np.full((68, 2), np.nan) for f in per_frame])
            values = np.stack([f.geometry if f is not None else np.full(len(MEASURES), np.nan)
                               for f in per_frame]).astype(np.float32)
            out.update({"landmarks68": _flat(points), "landmarks68_shape": [n, 136]})
            out.update({name: values[:, j].tolist() for j, name in enumerate(MEASURES)})
            out.update({k: float(v) for k, v in clip_statistics(values, MEASURES).items()})
        if self.describer is not None:
            out.update(_identity_columns(main))
        if self._asd:
            out.update(speaker.columns())
        return out

    def _speaker(self, item: dict, times: list[float], faces: dict, tracks: list[Track]) -> active_speaker.Speaker:
        """Active speaker over the clip's confirmed tracks (features.active_speaker), from their mouth motion at the
        video's frame rate (features.mouth_motion: every frame decoded again, so only when there is a choice to
        make, or a live window's frames are at hand); `speaker_hint` (the live speaker's box) keeps the same person
        speaking across windows."""
        n = len(times)
        points = {t.track_id: [faces[t.track_id, i].landmarks68 if (t.track_id, i) in faces else None
                               for i in range(n)] for t in tracks}
        mouths = {t.track_id: np.array([faces[t.track_id, i].geometry[0] if (t.track_id, i) in faces else np.nan
                                        for i in range(n)], np.float64) for t in tracks}
        motion = None
        if len(tracks) > 1 or item.get("media") is not None:
            try:
                motion = mouth_motion.track_motion(item, times, points, float(self.params["fps"]),
                                                   threads=max(1, math.ceil(self.resources.num_cpus)))
            except ClipError:       # the frames the detector saw decoded; a later one did not: left undecided
                motion = None
        boxes = {t.track_id: t.boxes for t in tracks}
        previous = active_speaker.hinted_track(boxes, item.get("speaker_hint"))
        return active_speaker.decide(item, times, mouths, boxes, motion, previous)


def _runs(frames, every: int):
    """Sampled frames as runs [(index, time, frame), ...], each ending with a frame the detector sees: frames
    0, k, 2k, ... and always the clip's last frame (so interpolation never extrapolates)."""
    run = []
    for index, (t, frame) in enumerate(frames):
        run.append((index, t, frame))
        if index % every == 0:
            yield run
            run = []
    if run:
        yield run


def _batched(iterable, n: int):
    iterator = iter(iterable)
    while batch := list(islice(iterator, n)):
        yield batch


def _scaled(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resized(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Detector input of `size` (w, h). Gaussian-pyramid halving while the frame is over twice too big, then
    bilinear: anti-aliased like INTER_AREA at a quarter of its cost for non-integer ratios (1080p: 2 ms vs 9 ms)."""
    if frame.shape[1::-1] == tuple(size):
        return frame
    while frame.shape[1] >= 2 * size[0] and frame.shape[0] >= 2 * size[1]:
        frame = cv2.pyrDown(frame)
    return cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)


def _to_frame_pixels(detections: np.ndarray, frame_size, detect_size) -> np.ndarray:
    """Detector rows from detector-input pixels to full-resolution frame pixels."""
    fx, fy = frame_size[0] / detect_size[0], frame_size[1] / detect_size[1]
    out = detections.astype(np.float32, copy=True)
    out[:, [0, 2, 5, 7, 9, 11, 13]] *= fx
    out[:, [1, 3, 6, 8, 10, 12, 14]] *= fy
    return out


def _flat(values: np.ndarray) -> list[float]:
    return np.asarray(values, np.float32).reshape(-1).tolist()


def _identity_columns(track: Track) -> dict:
    """The track's mean descriptor, how many detections it averages and their mean distance to it."""
    if not track.descriptors:     # the clip's other columns still hold: identity is missing, not garbage
        return {"identity": None, "identity_faces": 0, "identity_spread": None}
    mean = track.identity
    return {"identity": mean.tolist(), "identity_faces": len(track.descriptors),
            "identity_spread": float(np.linalg.norm(np.stack(track.descriptors) - mean, axis=1).mean())}


def _track_summary(track: Track) -> dict:
    return {"track_id": track.track_id, "frames": [int(f) for f in track.frames],
            "boxes": np.round(track.boxes, 1).tolist(),
            "scores": [round(float(d[4]), 4) for d in track.detections]}
