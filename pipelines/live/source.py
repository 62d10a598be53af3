"""Reading a live source continuously: open it with FFmpeg (through PyAV), decode its audio and video as they arrive,
keep the last seconds in a `MediaBuffer`, and hand out each window's media as soon as the stream has passed its end.

Sources: `/dev/videoN` (FFmpeg's v4l2 input), any URL PyAV's FFmpeg reads (rtsp://, rtmp://, http(s)://, udp://,
tcp://; its wheels have no srt:// or rist://, which an ffmpeg that has them can pipe in), `-` (a stream piped on
stdin) or a file. Times are seconds of media from the container's start, as
`aver predict` counts them, so a file gives the same windows live and in batch.
"""
from __future__ import annotations

import errno
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from features.audio_io import Decoded, _to_float
from features.mouth_motion import gray
from features.video_io import _to_rgb

NETWORK = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
IDLE_TIMEOUT_S = 10.0            # a network source that sends nothing for this long has ended (UDP has no end mark)


class SourceError(Exception):
    """The source cannot be opened or read (one line for the user)."""


@dataclass
class WindowMedia:
    """A window's decoded media, read by features.audio_io / features.video_io instead of a file."""
    audio: Decoded | None                   # native rate, trimmed to the window
    frames: list[tuple[float, np.ndarray]]  # (media time, RGB) sampled at the video extractor's fps
    has_video: bool
    native: list[tuple[float, np.ndarray]] = field(default_factory=list)  # every frame, grey (features.mouth_motion)
    face_stream: object | None = None      # the stream's features.face_stream.FaceStream (set by the live run)


def describe(source: str) -> str:
    if source == "-":
        return "pipe"
    if source.startswith("/dev/video"):
        return "camera"
    return "network" if NETWORK.match(source) else "file"


def open_source(source: str, idle_timeout: float = IDLE_TIMEOUT_S) -> av.container.InputContainer:
    """The source opened by FFmpeg; a network source that sends nothing for `idle_timeout` s fails to open, or
    ends (the Reader tells that end from an error)."""
    kind = describe(source)
    try:
        if kind == "pipe":
            return av.open("pipe:0")
        if kind == "camera":
            return av.open(source, format="v4l2")
        if kind == "network":
            micros = str(round(idle_timeout * 1e6))
            # FFmpeg's own timeouts end a silent read; PyAV's read timeout would count from the first read, not the
            # last packet, and cut a long stream
            return av.open(source, options={"rw_timeout": micros, "timeout": micros}, timeout=(idle_timeout, None))
        if not Path(source).is_file():
            raise SourceError(f"cannot open {source}: no such file, camera or URL")
        return av.open(source)
    except av.error.ProtocolNotFoundError:
        scheme = source.split("://", 1)[0]
        raise SourceError(f"cannot open {source}: the FFmpeg inside PyAV {av.__version__} cannot read {scheme}:// "
                          f"(its wheels are built without it); pipe it through an ffmpeg that can: ffmpeg -i "
                          f"{source} -c copy -f mpegts - | aver live -") from None
    except av.FFmpegError as e:
        raise SourceError(f"cannot open {source}: {e}") from None


@dataclass
class MediaBuffer:
    """The last seconds of decoded media; `reached` = media time up to which every stream read so far is complete."""
    fps: float | None                       # video sampling rate (None: video not read)
    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)   # (start time, (channels, samples))
    rate: int = 0
    channels: tuple[str, ...] = ()
    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)
    native: list[tuple[float, np.ndarray]] = field(default_factory=list)
    audio_end: float | None = None
    video_end: float | None = None
    _grid: float | None = None               # next video sampling time
    _previous: tuple[float, av.VideoFrame] | None = None

    def add_audio(self, t: float, frame: av.AudioFrame) -> None:
        samples = _to_float(frame)
        self.rate, self.channels = frame.sample_rate, tuple(c.name for c in frame.layout.channels)
        self.audio.append((t, samples))
        self.audio_end = t + samples.shape[1] / self.rate

    def add_video(self, t: float, frame: av.VideoFrame) -> None:
        """Keep, for each point of the fps grid, the decoded frame nearest to it (as features.video_io samples)."""
        if self._grid is None:
            self._grid = t
        while self._grid <= t:
            prev = self._previous
            chosen = prev if prev is not None and self._grid - prev[0] < t - self._grid else (t, frame)
            if not self.frames or self.frames[-1][0] != chosen[0]:
                self.frames.append((chosen[0], _to_rgb(chosen[1], None)))
            self._grid += 1.0 / self.fps
        self._previous = (t, frame)
        self.native.append((t, gray(frame)))
        self.video_end = t

    def reached(self, streams: tuple[str, ...]) -> float:
        ends = [self.audio_end if s == "audio" else self.video_end for s in streams]
        return min(-np.inf if e is None else e for e in ends) if ends else -np.inf

    def window(self, start: float, end: float, has_video: bool) -> WindowMedia:
        audio = None
        if self.audio:
            samples = np.concatenate([s for _, s in self.audio], axis=1)
            first = self.audio[0][0]
            i0, i1 = max(0, round((start - first) * self.rate)), max(0, round((end - first) * self.rate))
            audio = Decoded(samples[:, i0:i1], self.rate, self.channels)
        frames, native = ([(t, f) for t, f in kept if start - 1e-6 <= t < end] for kept in (self.frames, self.native))
        return WindowMedia(audio, frames, has_video, native)

    def forget_before(self, t: float) -> None:
        """Drop media that no later window needs (bounded memory on an endless stream)."""
        self.frames = [(ft, f) for ft, f in self.frames if ft >= t - 1e-6]
        self.native = [(ft, f) for ft, f in self.native if ft >= t - 1e-6]
        while len(self.audio) > 1 and self.audio[1][0] <= t:
            self.audio.pop(0)


class Reader(threading.Thread):
    """Demuxes and decodes the source into the buffer; `on_media(reached)` is called after each packet.
    `realtime`: a file is read no faster than 1x (as a camera or a stream would arrive). `idle_timeout` (network
    sources, opened with it): FFmpeg's read timeout is the end of a stream that has no end mark (UDP), not an error.
    `ended_by` says which end came ("end_of_file", "idle_timeout", "stopped", or None after an error)."""

    def __init__(self, container, streams: tuple[str, ...], fps: float | None, realtime: bool, on_media, on_end,
                 idle_timeout: float | None = None):
        super().__init__(daemon=True, name="aver-live-reader")
        self.container, self.streams, self.realtime = container, streams, realtime
        self.buffer = MediaBuffer(fps if "video" in streams else None)
        self.lock = threading.Lock()
        self.on_media, self.on_end = on_media, on_end
        self.stop_requested = threading.Event()
        self.idle_timeout = idle_timeout
        self.error: str | None = None
        self.ended_by: str | None = None

    def run(self) -> None:
        c = self.container
        origin = (c.start_time or 0) / av.time_base
        selected = [c.streams.audio[0]] if "audio" in self.streams else []
        selected += [c.streams.video[0]] if "video" in self.streams else []
        started = None
        try:
            for packet in c.demux(*selected):
                if self.stop_requested.is_set():
                    self.ended_by = "stopped"
                    break
                for frame in _decoded(packet):
                    if frame.time is None:
                        continue
                    t = frame.time - origin
                    if self.realtime:
                        started = started if started is not None else time.monotonic() - t
                        time.sleep(max(0.0, started + t - time.monotonic()))
                    with self.lock:
                        (self.buffer.add_audio if packet.stream.type == "audio" else self.buffer.add_video)(t, frame)
                        reached = self.buffer.reached(self.streams)
                    self.on_media(reached)
            else:
                self.ended_by = "end_of_file"
        except av.FFmpegError as e:
            # what FFmpeg's network protocols return when no data came within their timeout
            if self.idle_timeout is not None and e.errno in (errno.EIO, errno.ETIMEDOUT):
                self.ended_by = "idle_timeout"
            else:
                self.error = f"reading stopped: {e}"
        finally:
            self.on_end()


def _decoded(packet):
    try:
        return packet.decode()
    except av.FFmpegError:          # a corrupt packet: skipped, as the ffmpeg CLI does
        return []
