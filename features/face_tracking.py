"""Causal face tracking between detections: each face follows its own 68 landmarks from one frame to the next.

The `faces` extractor runs RetinaFace on a schedule (every `detect_every`-th sampled frame) and, in between, moves
each face found in the previous frame with dlib's 68-point predictor (features.landmarks): the points are fitted in
the previous frame's box on the new frame, and the detector-style row (box, score, 5 landmarks) comes from them
through the face's *anchor*: where the detector's box and 5 points sat relative to the 68 points at its last
detection (so a tracked box keeps the detector's framing, not dlib's). A face that moved (IoU < `REFIT_BELOW_IOU`
with its previous box) is fitted again in its new box, as it is in a detector box after a detection. Only past and
current frames are used, so a live window needs no later detection.

The detector runs on the current frame instead (re-detection) when
  * a detection is due (`detect_every` frames since the last one),
  * the frame looks like a shot cut (`ShotCuts`: 32x32 grayscale thumbnails of consecutive frames differ by more
    than `CUT_DIFF` grey levels on average),
  * or a face's fit degrades: the first fit's box overlaps the previous box by IoU < `MIN_STEP_IOU` (a jump the
    landmarks should not make in one frame), the box centre leaves the frame, or the face no longer looks like it
    did at its detection (normalised cross-correlation of 24x24 grayscale box thumbnails < `MIN_SIMILARITY`:
    occlusion, the face turning away or leaving). If that detection finds fewer faces than were followed, the
    detector runs on the next frames too, until they are found again or the next scheduled detection.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CUT_DIFF = 20.0         # grey levels (0-255); one shot's consecutive frames measured 1-13, a cut 63 (docs/visual.md)
CUT_THUMB = 32
MIN_STEP_IOU = 0.5      # measured >= 0.71 on the real clips at 5 fps (docs/face_detection.md "Causal tracking")
MIN_SIMILARITY = 0.6    # 89 of 93 fits on those clips measured more; a face covered in grey 0.08
FACE_THUMB = 24
REFIT_BELOW_IOU = 0.9   # a face that moved less is not fitted a second time (half the landmark CPU)


class ShotCuts:
    """Call on every frame, in order: whether it differs from the previous one like a shot cut."""

    def __init__(self):
        self._previous: np.ndarray | None = None

    def __call__(self, frame: np.ndarray) -> bool:
        step = max(1, min(frame.shape[:2]) // (4 * CUT_THUMB))     # subsample first: the thumbnail costs ~0.1 ms
        gray = cv2.cvtColor(np.ascontiguousarray(frame[::step, ::step]), cv2.COLOR_RGB2GRAY)
        thumb = cv2.resize(gray, (CUT_THUMB, CUT_THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
        previous, self._previous = self._previous, thumb
        return previous is not None and float(np.abs(thumb - previous).mean()) > CUT_DIFF


@dataclass
class Anchor:
    """A face's detector row relative to its 68 points at its last detection: offsets from the points' centroid in
    units of their spread (RMS distance to the centroid). Only position and one scale follow the points, so the
    box keeps the detector's aspect ratio (fitting dlib in a box it then stretched fed back into a growing box)."""
    offsets: np.ndarray     # (7, 2): box corners and the 5 landmarks, (point - centroid) / spread
    score: float            # the detection's score, carried by the tracked rows
    look: np.ndarray        # normalised grayscale thumbnail of the detector box

    @classmethod
    def of(cls, gray: np.ndarray, row: np.ndarray, points: np.ndarray) -> Anchor:
        centroid, spread = _frame_of(points)
        return cls((row[[0, 1, 2, 3, *range(5, 15)]].reshape(7, 2) - centroid) / spread, float(row[4]),
                   _look(gray, row[:4]))

    def row(self, points: np.ndarray) -> np.ndarray:
        """Detector-style (15,) row for 68 points fitted on another frame."""
        centroid, spread = _frame_of(points)
        placed = (centroid + self.offsets * spread).reshape(-1)
        return np.concatenate([placed[:4], [self.score], placed[4:]]).astype(np.float32)


class FaceFollower:
    """One per clip. Per sampled frame, in order: `due(frame)`; then either the detector runs and `detected(...)`
    records its faces, or `follow(gray)` moves the faces of the previous frame (None: re-detect this frame)."""

    def __init__(self, shapes, every: int):
        self.shapes, self.every = shapes, every
        self.cuts = ShotCuts()
        self.faces: dict[int, tuple[Anchor, np.ndarray]] = {}     # track id -> (anchor, row in the previous frame)
        self.since = None         # frames since the last detection
        self.wanted = 0           # > 0: searching for faces lost by a degraded fit (how many were followed)
        self.search_left = 0      # detections left to that search

    def due(self, frame: np.ndarray) -> tuple[bool, bool]:
        """(whether to detect on this frame: schedule, cut or search; whether it is a cut)."""
        cut = self.cuts(frame)
        return cut or self.since is None or self.since + 1 >= self.every or self.wanted > 0, cut

    def detected(self, gray: np.ndarray, ids: list[int], rows: np.ndarray, points: list) -> None:
        self.since = 0
        self.faces = {track_id: (Anchor.of(gray, row, p), row)
                      for track_id, row, p in zip(ids, rows, points) if p is not None}
        if self.wanted:         # a lost face is searched for on the next frames, up to the next scheduled detection
            self.search_left -= 1
            self.wanted = 0 if len(self.faces) >= self.wanted or self.search_left <= 0 else self.wanted

    def follow(self, gray: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]] | None:
        """Track id -> (row, 68 points) on this frame for every face of the previous one; None if a fit degraded."""
        moved = {}
        for track_id, (anchor, previous) in self.faces.items():
            fitted = self._fit(gray, anchor, previous)
            if fitted is None:
                self.wanted, self.search_left = len(self.faces), self.every - 1
                return None
            moved[track_id] = fitted
        self.since += 1
        self.faces = {track_id: (self.faces[track_id][0], row) for track_id, (row, _) in moved.items()}
        return moved

    def _fit(self, gray: np.ndarray, anchor: Anchor, previous: np.ndarray):
        points = self.shapes(gray, previous[:4])
        row = anchor.row(points)
        step = box_iou(row[:4], previous[:4])
        if step < MIN_STEP_IOU:
            return None
        if step < REFIT_BELOW_IOU:      # moved: fitted again in its new box, as after a detection
            points = self.shapes(gray, row[:4])
            row = anchor.row(points)
        x, y = (row[0] + row[2]) / 2, (row[1] + row[3]) / 2
        height, width = gray.shape
        if not (0 <= x < width and 0 <= y < height) or _similarity(_look(gray, row[:4]), anchor.look) < MIN_SIMILARITY:
            return None
        return row, points


def box_iou(a, b) -> float:
    """Intersection over union of two boxes [x1, y1, x2, y2] (arrays or lists; 0 when the union is empty)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(width, 0.0) * max(height, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _frame_of(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centroid of the points and their RMS distance to it (at least 1 px)."""
    points = points.astype(np.float64)
    centroid = points.mean(0)
    return centroid, max(float(np.sqrt(((points - centroid) ** 2).sum(1).mean())), 1.0)


def _look(gray: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """Zero-mean, unit-norm FACE_THUMB^2 thumbnail of the box's pixels inside the frame (None: none inside)."""
    height, width = gray.shape
    x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
    x2, y2 = min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    thumb = cv2.resize(gray[y1:y2, x1:x2], (FACE_THUMB, FACE_THUMB), interpolation=cv2.INTER_AREA)
    thumb = thumb.astype(np.float32).reshape(-1)
    thumb -= thumb.mean()
    norm = float(np.linalg.norm(thumb))
    return thumb / norm if norm > 0 else None


def _similarity(a: np.ndarray | None, b: np.ndarray | None) -> float:
    return float(a @ b) if a is not None and b is not None else 0.0
