"""Link per-frame face detections into tracks and pick the clip's main face.

Matching (per detected frame, Hungarian assignment with scipy): a track predicts its box at the new frame by
constant velocity from its last two detections; the cost of pairing it with a detection is
`(1 - IoU) + centre distance / track box size + |log(area ratio)|/2`, and pairs are allowed only if IoU >= `iou_min`
or the centre distance is below `max_centre_dist` track box sizes, and the areas differ by less than `max_area_ratio`.
Velocity lets two faces that cross keep their identities. A track not seen for more than `max_gap` sampled frames
is closed, so a face that leaves and comes back later gets a new id.

Identity (when detections come with dlib face descriptors, features.face_identity): a pairing is also forbidden when
the detection's descriptor is farther than `max_identity_dist` from the track's mean descriptor, so a shot cut
between two people framed alike starts a new track (a detection without a descriptor, see
features.identity_schedule, is paired by position alone); after the clip, `merge_by_identity` joins tracks that never
overlap in time and whose mean descriptors are that close (the same person re-detected after a gap or a cut).

Main track score (documented in docs/visual.md): `coverage * relative size * (0.5 + 0.5 * centrality) * mean score`,
coverage = share of detected frames where the track has a box, relative size = median sqrt(box area / frame area),
centrality = 1 - mean distance of the box centre to the frame centre / half the frame diagonal.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

UNMATCHED = 1e6     # cost of a forbidden pairing


@dataclass
class Track:
    track_id: int
    frames: list[int] = field(default_factory=list)          # sampled-frame indices where it was detected
    detections: list[np.ndarray] = field(default_factory=list)   # matching (15,) detector rows
    descriptors: list[np.ndarray] = field(default_factory=list)  # face descriptors of the detections that have one
    undescribed: int = 0        # detections since the last one with a descriptor

    def add(self, frame: int, detection: np.ndarray, descriptor: np.ndarray | None = None) -> None:
        self.frames.append(frame)
        self.detections.append(np.asarray(detection, dtype=np.float32))
        self.undescribed = 0 if descriptor is not None else self.undescribed + 1
        if descriptor is not None:
            self.descriptors.append(np.asarray(descriptor, dtype=np.float32))

    @property
    def identity(self) -> np.ndarray | None:
        """Mean face descriptor of the track (None without descriptors)."""
        return np.mean(self.descriptors, axis=0) if self.descriptors else None

    def predicted_box(self, frame: int) -> np.ndarray:
        """Box at `frame` extrapolated at constant velocity from the last two detections."""
        last = self.detections[-1][:4]
        if len(self.frames) < 2:
            return last
        velocity = (last - self.detections[-2][:4]) / (self.frames[-1] - self.frames[-2])
        return last + velocity * (frame - self.frames[-1])

    @property
    def boxes(self) -> np.ndarray:
        return np.stack([d[:4] for d in self.detections])


class Tracker:
    """Online linker: call `update(frame, detections)` for each detected frame, in order."""

    def __init__(self, iou_min: float = 0.2, max_centre_dist: float = 0.5, max_area_ratio: float = 2.5,
                 max_gap: int = 5, max_identity_dist: float = 0.6):
        self.iou_min, self.max_centre_dist, self.max_identity_dist = iou_min, max_centre_dist, max_identity_dist
        self.max_log_area = float(np.log(max_area_ratio))
        self.max_gap = max_gap
        self.tracks: list[Track] = []
        self.n_detected_frames = 0
        self.next_id = 0        # ids stay unique when a live stream forgets closed tracks (features.face_stream)

    def update(self, frame: int, detections: np.ndarray, descriptors=None) -> list[int]:
        """Assign each detection (rows [x1, y1, x2, y2, score, ...]) to a track; returns the track id of each row.
        `descriptors`: optional face descriptor per detection (None rows allowed: not described this frame), which
        gates the pairing by identity."""
        self.n_detected_frames += 1
        described = [None] * len(detections) if descriptors is None else list(descriptors)
        active, pairs = self._pairs(frame, detections, described)
        ids = [-1] * len(detections)
        for r, c in pairs:
            active[r].add(frame, detections[c], described[c])
            ids[c] = active[r].track_id
        for c, det in enumerate(detections):
            if ids[c] == -1:
                track, self.next_id = Track(self.next_id), self.next_id + 1
                track.add(frame, det, described[c])
                self.tracks.append(track)
                ids[c] = track.track_id
        return ids

    def matched_tracks(self, frame: int, detections: np.ndarray) -> list[Track | None]:
        """The track each detection would join by position alone (None: it would start a track); changes nothing."""
        active, pairs = self._pairs(frame, detections, [None] * len(detections))
        matched = [None] * len(detections)
        for r, c in pairs:
            matched[c] = active[r]
        return matched

    def _pairs(self, frame: int, detections: np.ndarray, described: list) -> tuple[list[Track], list[tuple[int, int]]]:
        """Active tracks and the allowed (track row, detection column) pairs of the cheapest assignment."""
        active = [t for t in self.tracks if frame - t.frames[-1] <= self.max_gap]
        if not active or not len(detections):
            return active, []
        predicted = np.stack([t.predicted_box(frame) for t in active])
        cost = self._costs(predicted, detections[:, :4])
        cost = np.where(self._identity_far(active, described), UNMATCHED, cost)
        rows, cols = linear_sum_assignment(cost)
        return active, [(r, c) for r, c in zip(rows, cols) if cost[r, c] < UNMATCHED]

    def _identity_far(self, tracks: list[Track], described: list) -> np.ndarray:
        """[tracks, detections] True where a track's mean descriptor is too far from a detection's (False where
        either has none)."""
        far = np.zeros((len(tracks), len(described)), bool)
        columns = [c for c, d in enumerate(described) if d is not None]
        if not columns:
            return far
        vectors = np.stack([np.asarray(described[c], np.float32) for c in columns])
        for r, track in enumerate(tracks):
            if track.identity is not None:
                far[r, columns] = np.linalg.norm(vectors - track.identity, axis=1) > self.max_identity_dist
        return far

    def _costs(self, predicted: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        iou = box_iou(torch.from_numpy(predicted).float(), torch.from_numpy(boxes).float()).numpy()
        centre_p, centre_d = _centres(predicted), _centres(boxes)
        size = np.sqrt(np.maximum(_areas(predicted), 1.0))
        dist = np.linalg.norm(centre_p[:, None] - centre_d[None], axis=2) / size[:, None]
        log_area = np.abs(np.log(np.maximum(_areas(boxes), 1.0)[None] / np.maximum(_areas(predicted), 1.0)[:, None]))
        cost = (1.0 - iou) + dist + log_area / 2
        allowed = ((iou >= self.iou_min) | (dist <= self.max_centre_dist)) & (log_area <= self.max_log_area)
        return np.where(allowed, cost, UNMATCHED)


def main_track_score(track: Track, n_detected_frames: int, width: int, height: int) -> float:
    boxes = track.boxes
    coverage = len(track.frames) / max(n_detected_frames, 1)
    rel_size = float(np.median(np.sqrt(np.maximum(_areas(boxes), 0.0) / (width * height))))
    offset = np.linalg.norm(_centres(boxes) - np.array([width / 2, height / 2]), axis=1).mean()
    centrality = 1.0 - min(1.0, offset / (np.hypot(width, height) / 2))
    mean_score = float(np.mean([d[4] for d in track.detections]))
    return coverage * rel_size * (0.5 + 0.5 * centrality) * mean_score


def merge_by_identity(tracks: list[Track], max_identity_dist: float) -> tuple[list[Track], dict[int, int]]:
    """Join tracks whose frame spans do not overlap and whose mean descriptors are within `max_identity_dist`
    (closest pair first, repeatedly). Returns the merged tracks (each keeps its lowest id) and old id -> new id."""
    merged = {t.track_id: Track(t.track_id, list(t.frames), list(t.detections), list(t.descriptors)) for t in tracks}
    mapping = {t.track_id: t.track_id for t in tracks}
    while True:
        pairs = [(float(np.linalg.norm(a.identity - b.identity)), a.track_id, b.track_id)
                 for a in merged.values() for b in merged.values()
                 if a.track_id < b.track_id and a.identity is not None and b.identity is not None
                 and (a.frames[-1] < b.frames[0] or b.frames[-1] < a.frames[0])]
        close = [p for p in pairs if p[0] <= max_identity_dist]
        if not close:
            return sorted(merged.values(), key=lambda t: t.track_id), mapping
        _, keep, drop = min(close)
        a, b = merged[keep], merged.pop(drop)
        order = np.argsort(a.frames + b.frames, kind="stable")
        a.frames = [(a.frames + b.frames)[i] for i in order]
        a.detections = [(a.detections + b.detections)[i] for i in order]
        a.descriptors += b.descriptors
        mapping = {old: keep if new == drop else new for old, new in mapping.items()}


def confirmed(tracks: list[Track], min_hits: int = 2) -> list[Track]:
    """Tracks seen in at least `min_hits` detected frames (one-frame false positives drop out); all tracks if none
    qualify, so a one-frame clip or a face seen once still has a main track."""
    kept = [t for t in tracks if len(t.frames) >= min_hits]
    return kept or list(tracks)


def pick_main(tracks: list[Track], n_detected_frames: int, width: int, height: int) -> Track | None:
    if not tracks:
        return None
    return max(tracks, key=lambda t: main_track_score(t, n_detected_frames, width, height))


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
