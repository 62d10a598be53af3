"""The `faces` extractor's frame-by-frame pass: detection on a schedule, causal tracking in between, identity
descriptors, aligned crops and 68-point geometry (the steps are described in features/faces.py).

A `FaceScan` is the state of that pass over one clip, or over one live stream (features.face_stream, which keeps it
from one window to the next): `step(frame)` takes the next sampled frame, in order, and gives its faces.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from features.alignment import align_face, encode_image
from features.face_tracking import FaceFollower
from features.identity_schedule import IdentitySchedule, describe_due
from features.landmarks import measures
from features.tracking import Tracker

MIN_DETECT_SIDE = 160   # never shrink the detector input's long side below this


@dataclass
class Face:
    row: np.ndarray             # detector row: box, score, 5 landmarks (full-resolution pixels)
    detected: bool              # False: tracked from the previous frame by its landmarks (features.face_tracking)
    crop: bytes
    landmarks68: np.ndarray | None
    geometry: np.ndarray | None     # landmarks.MEASURES


class FaceScan:
    """`detector`, `shapes`, `describer`: the extractor's models (shapes / describer may be None); `params`: its
    params. The detector's input size is chosen on the first frame and kept (see `_detect_size`)."""

    def __init__(self, detector, shapes, describer, params: dict):
        self.detector, self.shapes, self.describer, self.params = detector, shapes, describer, params
        self.every = int(params["detect_every"])
        self.tracker = Tracker(max_gap=max(5, 2 * self.every), max_identity_dist=float(params["identity_threshold"]))
        self.schedule = IdentitySchedule(int(params["identity_every"]))
        self.follower = FaceFollower(shapes, self.every)
        self.index = 0                  # sampled frames taken so far
        self.size = self.detect_size = None       # (width, height) of the first frame and of the detector input
        self._probe = None

    def retune(self, every: int) -> None:
        """Detect every `every`-th frame from now on (aver live sheds detections when it falls behind)."""
        if every != self.every:
            self.every = self.follower.every = every
            self.tracker.max_gap = max(5, 2 * every)

    def step(self, frame: np.ndarray) -> dict[int, Face]:
        """Track id -> face on the next sampled frame (RGB)."""
        index, self.index = self.index, self.index + 1
        if self.detect_size is None:
            self.size = frame.shape[1::-1]
            self.detect_size, self._probe = self._detect_size(frame)
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        due, cut = self.follower.due(frame)
        followed = None if due else self.follower.follow(gray)
        if followed is not None:
            return {track_id: self._describe(frame, row, points, detected=False)
                    for track_id, (row, points) in followed.items()}
        probe, self._probe = self._probe, None
        if probe is None:
            probe = self.detector.detect([_resized(frame, self.detect_size)])[0]
        detections = _to_frame_pixels(probe, frame.shape[1::-1], self.detect_size)
        return self._detected(index, frame, gray, detections, cut)

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

    def _detected(self, index: int, frame: np.ndarray, gray: np.ndarray, detections: np.ndarray,
                  cut: bool) -> dict[int, Face]:
        """Track a detected frame's faces, describe them (dlib descriptors on the identity schedule) and anchor
        them for the frames that follow (features.face_tracking)."""
        points = [self.shapes(gray, row[:4]) for row in detections] if self.shapes else [None] * len(detections)
        descriptors = None
        if self.describer is not None:
            due = self.schedule.due(self.tracker, index, detections, cut)
            descriptors = describe_due(self.describer, frame, detections, points, due)
        ids = self.tracker.update(index, detections, descriptors)
        self.follower.detected(gray, ids, detections, points)
        return {track_id: self._describe(frame, row, face_points, detected=True)
                for track_id, row, face_points in zip(ids, detections, points)}

    def _describe(self, frame: np.ndarray, row: np.ndarray, points: np.ndarray | None, detected: bool) -> Face:
        size = int(self.params["crop_size"])
        crop, _ = align_face(frame, row[5:15].reshape(5, 2), size)
        values = measures(points, frame.shape[1::-1]) if self.params["landmarks68"] else None
        return Face(row, detected, encode_image(crop, self.params["crop_format"]), points, values)


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
