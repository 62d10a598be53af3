"""Frame sampling shared by the video extractors (PyAV).

Frames are picked by presentation time, so a variable-frame-rate file gives the frame nearest to each point of
a regular grid (t0, t0 + 1/fps, ...). Frames come out upright (display-matrix rotation applied), as RGB uint8,
with times in seconds from the start of the file. `item_frames` adds what the work item says: segment bounds and
the video augmentation variant.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from features.augment_video import frame_augmenter
from pipelines.extractor import ClipError
from pipelines.media import open_container
from pipelines.probe import ffmpeg_problem

Sample = tuple[float, np.ndarray]


def sample_frames(path: str | Path, fps: float | str = 5.0, start: float | None = None, end: float | None = None,
                  max_side: int | None = None, threads: int = 0) -> Iterator[Sample]:
    """Yield (time_s, RGB uint8 frame) at `fps` frames per second ("all": every decoded frame).

    `max_side` downscales frames whose long side is larger (swscale does it with the RGB conversion, far cheaper
    than resizing afterwards). `threads` = decoder threads (0: FFmpeg chooses).
    """
    if fps != "all" and not (isinstance(fps, (int, float)) and fps > 0):
        raise ValueError(f"fps must be a positive number or 'all', got {fps!r}")
    container = open_container(path)
    with container:
        if not container.streams.video:
            raise ClipError("no_video_stream", f"{Path(path).name} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        native_fps = float(stream.average_rate or stream.guessed_rate or 0)
        if fps != "all" and native_fps >= 2 * fps:
            # Frames nobody references (most B-frames) need not be decoded when we keep 1 frame in 2 or fewer:
            # the picked frame moves by at most one frame period, and its true timestamp is reported.
            stream.codec_context.skip_frame = "NONREF"
        origin = (container.start_time or 0) / av.time_base
        if start:
            container.seek(int((start + origin) / stream.time_base), stream=stream, backward=True)
        decoded = _timed_frames(container, stream, origin, native_fps, start, end, path)
        picked = decoded if fps == "all" else _nearest_to_grid(decoded, 1.0 / fps, start, end)
        count = 0
        for t, frame in picked:
            count += 1
            yield t, _to_rgb(frame, max_side)
        if count == 0:
            raise ClipError("undecodable", f"no decodable video frame in {Path(path).name}"
                                           f" between {start or 0:.2f}s and {end if end is not None else 'end'}")


def item_frames(item: dict, fps: float | str = 5.0, max_side: int | None = None, threads: int = 0
                ) -> Iterator[Sample]:
    """Frames of a work item: its file and segment, with its video variant applied (audio variants: unchanged).
    An item carrying `media` (a live window) gives its frames, already sampled at the extractor's `fps`."""
    augment = frame_augmenter(item.get("variant", "clean"), item["clip_id"], item.get("augment") or {})
    start, end = _bound(item.get("start")), _bound(item.get("end"))
    media = item.get("media")
    if media is not None and not media.frames:
        raise ClipError("undecodable" if media.has_video else "no_video_stream",
                        f"no video frame in {item['path']} between {start:.2f}s and {end:.2f}s")
    frames = media.frames if media is not None else sample_frames(item["abspath"], fps, start, end, max_side, threads)
    for t, frame in frames:
        yield t, augment(frame)


def _bound(value) -> float | None:
    """Segment bound from a manifest row: null, or NaN once it went through pandas, means the whole file."""
    return None if value is None or math.isnan(value) else float(value)


def _timed_frames(container, stream, origin: float, native_fps: float, start: float | None, end: float | None,
                  path) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decoded frames inside [start, end) with their time (s from file start), strictly increasing."""
    last_t = -np.inf
    try:
        for frame in container.decode(stream):
            if frame.time is not None:
                t = frame.time - origin
            else:  # no timestamp at all (rare, broken muxers): continue the sequence at the nominal rate
                t = last_t + 1.0 / (native_fps or 25.0) if np.isfinite(last_t) else 0.0
            if t <= last_t or (start is not None and t < start - 1e-6):
                continue
            if end is not None and t >= end:
                return
            last_t = t
            yield t, frame
    except av.FFmpegError as e:
        raise ClipError("undecodable", f"decoding {Path(path).name} failed after {max(last_t, 0):.2f}s: "
                                       f"{ffmpeg_problem(e)}") from e


def _nearest_to_grid(frames: Iterator[tuple[float, av.VideoFrame]], period: float, start: float | None,
                     end: float | None) -> Iterator[tuple[float, av.VideoFrame]]:
    """For each grid time t0 + k*period, the frame whose timestamp is nearest; a frame is given at most once."""
    prev = None
    grid_t = None
    emitted_t = None
    for t, frame in frames:
        if grid_t is None:
            grid_t = start if start is not None else t
        while grid_t <= t:
            chosen = prev if prev is not None and grid_t - prev[0] < t - grid_t else (t, frame)
            if chosen[0] != emitted_t:
                emitted_t = chosen[0]
                yield chosen
            grid_t += period
        prev = (t, frame)
    # The last frame also serves the next grid point if that point is still on screen (inside the clip).
    if prev is not None and prev[0] != emitted_t:
        shown_until = prev[0] + (float(prev[1].duration * prev[1].time_base) if prev[1].duration else period)
        if grid_t < shown_until and (end is None or grid_t < end):
            yield prev


def _to_rgb(frame: av.VideoFrame, max_side: int | None) -> np.ndarray:
    w, h = frame.width, frame.height
    if max_side and max(w, h) > max_side:
        scale = max_side / max(w, h)
        rgb = frame.to_ndarray(width=max(1, round(w * scale)), height=max(1, round(h * scale)), format="rgb24",
                               interpolation="AREA")
    else:
        rgb = frame.to_ndarray(format="rgb24")
    return _upright(rgb, frame)


def _upright(image: np.ndarray, frame: av.VideoFrame) -> np.ndarray:
    """`image` (decoded from `frame`) turned as the frame's display matrix says (counter-clockwise degrees)."""
    quarter_turns = round((frame.rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image
