"""Mouth motion at the video's own frame rate, the visual half of active speaker detection.

The `faces` extractor looks at 5 frames a second: too few for the syllable rhythm of speech (3-8 Hz), which such a
sampling aliases. Here every decoded frame of the clip (or of a live window) is read, in grey levels: each face
track's mouth region is placed from the track's 68 landmarks at the sampled frames (mouth centre and inter-ocular
distance, interpolated in time: heads move slowly), and the mouth's motion energy at a frame is the mean absolute
grey-level change of that region since the previous frame, on a fixed MOUTH_PATCH grid so faces of any size compare.
Unlike the landmarks' lip gap (whole pixels: a mostly closed mouth reads 0 most of the time), it sees lips that
move without parting, and a face that does not move at all (a still picture, a frozen stream) reads ~0.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import av
import cv2
import numpy as np

from features.augment_video import VIDEO_VARIANTS, frame_augmenter
from features.landmarks import LEFT_EYE, RIGHT_EYE
from features.video_io import _bound, _timed_frames, _upright
from pipelines.media import open_container

MOUTH_POINTS = slice(48, 68)
MOUTH_PATCH = (32, 24)                  # (w, h) grid the mouth region is resampled to
HALF_WIDTH, HALF_HEIGHT = 0.6, 0.45     # mouth region half-sizes in inter-ocular distances (lips and chin top)


def anchors(times: list[float], points: list[np.ndarray | None]) -> np.ndarray:
    """(n, 4) per sampled frame: the mouth centre (x, y) and the inter-ocular distance from the 68 points, and the
    frame's time; rows without points are dropped."""
    rows = [(*p[MOUTH_POINTS].mean(0), np.linalg.norm(p[LEFT_EYE].mean(0) - p[RIGHT_EYE].mean(0)), t)
            for t, p in zip(times, points) if p is not None]
    return np.array(rows, np.float64).reshape(-1, 4)


def track_motion(item: dict, times: list[float], points: dict[int, list[np.ndarray | None]], fps: float,
                 threads: int = 0) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """`motion` of each track of a clip, from its 68 points at the sampled `times` (None where it is absent)."""
    tracks = {k: anchors(times, p) for k, p in points.items()}
    return motion(gray_frames(item, threads), tracks, hold=1.0 / fps)


def gray_frames(item: dict, threads: int = 0) -> Iterator[tuple[float, np.ndarray]]:
    """Every decoded frame of the work item's segment (a live window's `media.native`, else its file), upright,
    in grey levels, with the item's video variant applied."""
    media = item.get("media")
    if media is not None:
        yield from media.native
        return
    augment = frame_augmenter(item.get("variant", "clean"), item["clip_id"], item.get("augment") or {})
    start, end = _bound(item.get("start")), _bound(item.get("end"))
    with open_container(item["abspath"]) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        origin = (container.start_time or 0) / av.time_base
        if start:
            container.seek(int((start + origin) / stream.time_base), stream=stream, backward=True)
        native_fps = float(stream.average_rate or stream.guessed_rate or 0)
        for t, frame in _timed_frames(container, stream, origin, native_fps, start, end, item["abspath"]):
            if item.get("variant", "clean") not in VIDEO_VARIANTS:
                yield t, gray(frame)
            else:
                yield t, cv2.cvtColor(augment(_upright(frame.to_ndarray(format="rgb24"), frame)), cv2.COLOR_RGB2GRAY)


def gray(frame) -> np.ndarray:
    """An upright grey-level copy of a PyAV video frame."""
    return _upright(frame.to_ndarray(format="gray"), frame)


def motion(frames: Iterable[tuple[float, np.ndarray]], tracks: dict[int, np.ndarray], hold: float
           ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Frame times and, per track, the mouth motion energy at each frame (grey levels; NaN at the first frame, and
    where the track is not within `hold` seconds of one of its sampled frames). `tracks`: track -> `anchors`."""
    times, energy, previous = [], {k: [] for k in tracks}, None
    for t, frame in frames:
        times.append(t)
        for k, a in tracks.items():
            energy[k].append(_energy(previous, frame, _region(a, t, hold, frame.shape)))
        previous = frame
    return np.array(times, np.float64), {k: np.array(v, np.float64) for k, v in energy.items()}


def _region(a: np.ndarray, t: float, hold: float, shape) -> tuple[int, int, int, int] | None:
    """The mouth region (x0, y0, x1, y1, clipped to the frame) at time t, None where the track is not."""
    if not len(a) or t < a[0, 3] - hold or t > a[-1, 3] + hold:
        return None
    x, y, iod = (np.interp(t, a[:, 3], a[:, j]) for j in range(3))
    x0, x1 = max(0, math.floor(x - HALF_WIDTH * iod)), min(shape[1], math.ceil(x + HALF_WIDTH * iod))
    y0, y1 = max(0, math.floor(y - HALF_HEIGHT * iod)), min(shape[0], math.ceil(y + HALF_HEIGHT * iod))
    return (x0, y0, x1, y1) if x1 - x0 >= 4 and y1 - y0 >= 4 else None


def _energy(previous: np.ndarray | None, frame: np.ndarray, region) -> float:
    if previous is None or region is None or previous.shape != frame.shape:
        return np.nan
    x0, y0, x1, y1 = region
    a, b = (cv2.resize(f[y0:y1, x0:x1].astype(np.float32), MOUTH_PATCH, interpolation=cv2.INTER_AREA)
            for f in (previous, frame))
    return float(np.mean(np.abs(a - b), dtype=np.float64))
