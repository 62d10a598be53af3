"""`faces`: the visual front end. One row per (clip, variant): the main face in every sampled frame.

decode (features.video_io, variant applied) -> RetinaFace on a downscaled copy of every `detect_every`-th frame
(through ONNX Runtime on CPU, features.onnx_runtime) -> tracks (features.tracking); in between, each face is
followed causally from the previous frame by its 68 landmarks (features.face_tracking: a shot cut or a degraded
fit makes the detector run on the current frame) -> for every face: aligned crop from the full-resolution frame
(features.alignment), dlib's 68 points and geometry (features.landmarks) -> main track's per-frame columns + clip
statistics. Frames are handled one at a time, in order, using only past frames (features.face_scan), so memory
stays bounded by one frame and `aver live` windows need nothing after their last frame; a live window's media may
carry its stream's `face_stream` (features.face_stream), and then only its frames not seen by an earlier window are
scanned.
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
from typing import ClassVar

import numpy as np
import pyarrow as pa

from features import active_speaker, mouth_motion
from features.face_identity import FaceDescriber
from features.face_scan import Face, FaceScan
from features.identity_schedule import IdentitySchedule
from features.onnx_runtime import check_runtime
from features.landmarks import MEASURES, STATISTICS, ShapePredictor68, clip_statistics
from features.tracking import Track, confirmed, merge_by_identity, pick_main
from features.video_io import item_frames
from pipelines.extractor import BaseExtractor, ClipError


class FacesExtractor(BaseExtractor):
    kind: ClassVar[str] = "faces"
    # 2: openness ratios and solvePnP head pose; 3: main track = the speaking one; 4: speaker from mouth motion;
    # 5: faces between detections tracked causally by their landmarks (were interpolated), detect_every 5
    version: ClassVar[str] = "5"
    modality: ClassVar[str] = "video"
    # NaN marks frames without the main face (and landmark statistics of a clip where dlib found none)
    nan_columns: ClassVar[tuple[str, ...]] = ("boxes", "scores", "landmarks5", "landmarks68", *MEASURES, "stat_*",
                                              "identity_spread")
    defaults: ClassVar[dict] = {
        "fps": 5.0, "model": "mnet025", "max_side": 640, "face_px": 160, "score_threshold": 0.5,
        "crop_size": 112, "crop_format": "png", "detect_every": 5, "device": "cpu", "landmarks68": True,
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
        # Frames reach the detector already shrunk (see features.face_scan), hence no max_side of its own; one at a
        # time, since whether a frame is detected depends on tracking the previous one.
        self.detector = RetinaFaceDetector(model=p["model"], device=p["device"], score_threshold=p["score_threshold"],
                                           max_side=None, batch_size=1, runtime=p["runtime"],
                                           num_threads=max(1, int(self.resources.num_cpus)))
        # dlib aligns the face for its descriptor from the 68 points, and tracking between detections follows
        # them: both need them even when they are not stored.
        tracking = int(p["detect_every"]) > 1
        self.shapes = ShapePredictor68() if p["landmarks68"] or p["identity"] or tracking else None
        self.describer = FaceDescriber() if p["identity"] else None

    def extract(self, item: dict) -> dict:
        if self.detector is None:
            self.setup()
        frames = item_frames(item, self.params["fps"], threads=max(1, math.ceil(self.resources.num_cpus)))
        stream = getattr(item.get("media"), "face_stream", None)
        if stream is not None:      # a live window: the frames the stream already scanned are not scanned again
            times, faces, tracks, scan = stream.window(frames, self._scan, float(self.params["fps"]),
                                                       int(self.params["detect_every"]))
            return self._row(item, times, faces, tracks, len(times), scan)
        scan = self._scan()
        faces: dict[tuple[int, int], Face] = {}     # (track id, frame index) -> face
        times: list[float] = []
        for index, (t, frame) in enumerate(frames):
            times.append(t)
            faces.update({(track_id, index): face for track_id, face in scan.step(frame).items()})
        return self._row(item, times, faces, scan.tracker.tracks, scan.tracker.n_detected_frames, scan)

    def _scan(self) -> FaceScan:
        return FaceScan(self.detector, self.shapes, self.describer, self.params)

    def _row(self, item: dict, times: list[float], faces: dict, tracks: list[Track], n_detected: int,
             scan: FaceScan) -> dict:
        size, detect_size = scan.size, scan.detect_size
        if self.describer is not None:
            tracks, new_id = merge_by_identity(tracks, float(self.params["identity_threshold"]))
            faces = {(new_id[track_id], index): face for (track_id, index), face in faces.items()}
        tracks = confirmed(tracks)
        width, height = size if size is not None else (0, 0)
        main = pick_main(tracks, n_detected, width, height)
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
