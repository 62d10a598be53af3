"""Which detections the `faces` extractor describes with dlib's face descriptor (features.face_identity).

The descriptor is the costliest step of the visual path (a ResNet on a 150x150 chip, ~25 ms a face on one core:
60 % of `faces` when every detection was described), and a track's identity barely changes from one keyframe to
the next. A detection is described when
  * its position matches no active track (it would start one),
  * its track has had `identity_every` - 1 detections in a row without a descriptor (`identity_every: 1` describes
    every detection, as before),
  * or its frame is a shot cut (features.face_tracking.ShotCuts, which also makes the detector run on it): the
    identity gate of the tracker needs the descriptor at the cut to split two people framed alike.
A cut the thumbnails miss (two near-identical shots) is caught at the track's next scheduled description, so up
to `identity_every` - 1 detections may stay linked to the previous person's track.
"""
from __future__ import annotations

import numpy as np

from features.tracking import Tracker


class IdentitySchedule:
    """One per clip: call `due` on each detected frame, in order, before `Tracker.update`."""

    def __init__(self, every: int):
        if every < 1:
            raise ValueError(f"identity_every must be >= 1, got {every}")
        self.every = every

    def due(self, tracker: Tracker, frame_index: int, detections: np.ndarray, cut: bool) -> list[bool]:
        """Per detection of the frame: whether to describe it."""
        if self.every == 1 or cut:
            return [True] * len(detections)
        return [track is None or track.undescribed + 1 >= self.every
                for track in tracker.matched_tracks(frame_index, detections)]


def describe_due(describer, frame: np.ndarray, detections: np.ndarray, points: list, due: list[bool]) -> list:
    """Descriptors of the due detections, None for the others."""
    rows = [i for i, flag in enumerate(due) if flag]
    out: list = [None] * len(detections)
    if rows:
        for i, vector in zip(rows, describer(frame, detections[rows], [points[i] for i in rows])):
            out[i] = vector
    return out
