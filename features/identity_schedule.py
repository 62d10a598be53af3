"""Which detections the `faces` extractor describes with dlib's face descriptor (features.face_identity).

The descriptor is the costliest step of the visual path (a ResNet on a 150x150 chip, ~25 ms a face on one core:
60 % of `faces` when every detection was described), and a track's identity barely changes from one keyframe to
the next. A detection is described when
  * its position matches no active track (it would start one),
  * its track has had `identity_every` - 1 detections in a row without a descriptor (`identity_every: 1` describes
    every detection, as before),
  * or its keyframe looks like a shot cut: the mean absolute difference between 32x32 grayscale thumbnails of this
    keyframe and the previous one exceeds `CUT_DIFF` grey levels. The identity gate of the tracker needs the
    descriptor at the cut to split two people framed alike.
A cut the thumbnails miss (two near-identical shots) is caught at the track's next scheduled description, so up
to `identity_every` - 1 keyframes may stay linked to the previous person's track.
"""
from __future__ import annotations

import cv2
import numpy as np

from features.tracking import Tracker

CUT_DIFF = 20.0     # grey levels (0-255); consecutive keyframes of one shot measured 1-13, a cut 63 (docs/visual.md)
THUMB = 32


class IdentitySchedule:
    """One per clip: call `due` on each keyframe, in order, before `Tracker.update`."""

    def __init__(self, every: int):
        if every < 1:
            raise ValueError(f"identity_every must be >= 1, got {every}")
        self.every = every
        self._previous: np.ndarray | None = None

    def due(self, tracker: Tracker, frame_index: int, frame: np.ndarray, detections: np.ndarray) -> list[bool]:
        """Per detection of the keyframe: whether to describe it."""
        cut = self._cut(frame)
        if self.every == 1 or cut:
            return [True] * len(detections)
        return [track is None or track.undescribed + 1 >= self.every
                for track in tracker.matched_tracks(frame_index, detections)]

    def _cut(self, frame: np.ndarray) -> bool:
        step = max(1, min(frame.shape[:2]) // (4 * THUMB))     # subsample first: the thumbnail costs ~0.1 ms
        gray = cv2.cvtColor(np.ascontiguousarray(frame[::step, ::step]), cv2.COLOR_RGB2GRAY)
        thumb = cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
        previous, self._previous = self._previous, thumb
        return previous is not None and float(np.abs(thumb - previous).mean()) > CUT_DIFF


def describe_due(describer, frame: np.ndarray, detections: np.ndarray, points: list, due: list[bool]) -> list:
    """Descriptors of the due detections, None for the others."""
    rows = [i for i, flag in enumerate(due) if flag]
    out: list = [None] * len(detections)
    if rows:
        for i, vector in zip(rows, describer(frame, detections[rows], [points[i] for i in rows])):
            out[i] = vector
    return out
