"""Link per-frame face detections into tracks and pick the clip's main face.

Matching (per detected frame, Hungarian assignment with scipy): a track predicts its box at the new frame by
constant velocity from its last two detections; the cost of pairing it with a detection is
`(1 - IoU) + centre distance / track box size + |log(area ratio)|/2`, and pairs are allowed only if IoU >= `iou_min`
or the centre distance is below `max_centre_dist` track box sizes, and the areas differ by less than `max_area_ratio`.
Velocity lets two faces that cross keep their identities. A track not seen for more than `max_gap` sampled frames
is closed, so a face that leaves and comes back later gets a new id.

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

    def add(self, frame: int, detection: np.ndarray) -> None:
        self.frames.append(frame)
        self.detections.append(np.asarray(detection, dtype=np.float32))

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
                 max_gap: int = 5):
        self.iou_min, self.max_centre_dist = iou_min, max_centre_dist
        self.max_log_area = float(np.log(max_area_ratio))
        self.max_gap = max_gap
        self.tracks: list[Track] = []
        self.n_detected_frames = 0

    def update(self, frame: int, detections: np.ndarray) -> list[int]:
        """Assign each detection (rows [x1, y1, x2, y2, score, ...]) to a track; returns the track id of each row."""
        self.n_detected_frames += 1
        active = [t for t in self.tracks if frame - t.frames[-1] <= self.max_gap]
        ids = [-1] * len(detections)
        if active and len(detections):
            predicted = np.stack([t.predicted_box(frame) for t in active])
            cost = self._costs(predicted, detections[:, :4])
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if cost[r, c] < UNMATCHED:
                    active[r].add(frame, detections[c])
                    ids[c] = active[r].track_id
        for c, det in enumerate(detections):
            if ids[c] == -1:
                track = Track(len(self.tracks))
                track.add(frame, det)
                self.tracks.append(track)
                ids[c] = track.track_id
        return ids

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


def confirmed(tracks: list[Track], min_hits: int = 2) -> list[Track]:
    """Tracks seen in at least `min_hits` detected frames (one-frame false positives drop out); all tracks if none
    qualify, so a one-frame clip or a face seen once still has a main track."""
    kept = [t for t in tracks if len(t.frames) >= min_hits]
    return kept or list(tracks)


def pick_main(tracks: list[Track], n_detected_frames: int, width: int, height: int) -> Track | None:
    if not tracks:
        return None
    return max(tracks, key=lambda t: main_track_score(t, n_detected_frames, width, height))


def interpolate(track: Track, frames: list[int], max_span: int) -> dict[int, np.ndarray]:
    """Detector rows (box, score, landmarks) linearly interpolated at those `frames` that lie strictly between two
    detections of the track at most `max_span` frames apart (no guessing across longer dropouts)."""
    known = np.asarray(track.frames)
    rows = np.stack(track.detections)
    out = {}
    for f in frames:
        k = int(np.searchsorted(known, f))
        if 0 < k < len(known) and known[k] != f and known[k] - known[k - 1] <= max_span:
            w = (f - known[k - 1]) / (known[k] - known[k - 1])
            out[f] = ((1 - w) * rows[k - 1] + w * rows[k]).astype(np.float32)
    return out


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
