"""Media facts for the manifest, read with PyAV, and the reasons a file cannot be used.

`probe(path, start, end)` opens the file, decodes the first frame of its first audio and first video stream
(a readable header does not prove the data decodes: truncated and mislabelled files fail here), and returns
duration, fps, size, rotation, audio rate/channels, codecs, which streams are usable, and `content_hash`.
Failures raise `ProbeError(reason, detail)` with the ledger reasons `unreadable`, `empty_file`, `undecodable`,
`no_media_stream`, `bad_segment`. An audio stream of digital silence is usable here; audio extractors flag it.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from fractions import Fraction
from pathlib import Path

import av

from pipelines.extractor import ClipError
from pipelines.weights import sha256_of

MAX_PACKETS = 600         # demuxed while looking for each stream's first frame (interleaving, decoder delay)


class ProbeError(ClipError):
    """A media file that cannot be used; `reason` is the ledger code."""


def probe(path: str | Path, start: float | None = None, end: float | None = None) -> dict:
    """Facts about a media file, or about the segment [start, end) seconds of it when given."""
    facts = probe_file(path)
    return facts if start is None and end is None else restrict(facts, start, end)


def probe_file(path: str | Path) -> dict:
    path = Path(path)
    _check_readable(path)
    try:
        digest = sha256_of(path)
        with av.open(str(path), metadata_errors="ignore") as container:
            facts = _inspect(container)
            if facts["duration"] is None:
                facts["duration"] = _duration_from_packets(container)
    except PermissionError as e:
        raise ProbeError("unreadable", f"permission denied: {e}") from None
    except av.FFmpegError as e:
        raise ProbeError("undecodable", ffmpeg_problem(e)) from None
    except OSError as e:
        raise ProbeError("unreadable", f"cannot read the file: {e}") from None
    return {**facts, "content_hash": digest}


def restrict(facts: dict, start: float | None, end: float | None) -> dict:
    """The facts of a segment: duration of [start, end) (end clipped to the file) and a segment content hash."""
    start = float(start or 0.0)
    total = facts["duration"]
    end = float(end) if end is not None else total
    if end is None or end <= start:
        raise ProbeError("bad_segment", f"segment [{start}, {end}) is empty")
    if total is not None and start >= total:
        raise ProbeError("bad_segment", f"segment starts at {start:.3f} s but the file lasts {total:.3f} s")
    duration = (min(end, total) if total is not None else end) - start
    return {**facts, "duration": duration, "content_hash": segment_hash(facts["content_hash"], start, end)}


def segment_hash(file_hash: str, start: float | None, end: float | None) -> str:
    """Identity of a segment: the file's sha256 plus the bounds (changes when either changes)."""
    return hashlib.sha256(f"{file_hash}|{start}|{end}".encode()).hexdigest()


FILE_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket",
              stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def ffmpeg_problem(e: av.FFmpegError) -> str:
    """What an FFmpeg error says about the file, in plain words (PyAV's message starts with FFmpeg's internal
    error number, meaningless to a reader)."""
    said = e.strerror or str(e)
    if isinstance(e, av.error.InvalidDataError):
        return f"the file is corrupt or not a media file FFmpeg can decode (FFmpeg: {said})"
    if isinstance(e, av.error.MemoryError):     # ENOMEM while parsing: a corrupt size field asked for a huge buffer
        return f"the file's data is corrupt: FFmpeg gave up on sizes that make no sense (FFmpeg: {said})"
    if isinstance(e, av.error.EOFError):
        return f"the file ends before its data does: it is truncated (FFmpeg: {said})"
    return f"FFmpeg cannot decode the file (FFmpeg: {said})"


def _check_readable(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        try:
            path.stat()
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ProbeError("unreadable", "a symbolic link loop: the links point at each other") from None
        raise ProbeError("unreadable", f"a broken symbolic link: its target {os.readlink(path)} does not exist")
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ProbeError("unreadable", f"{path} does not exist") from None
    except OSError as e:
        raise ProbeError("unreadable", f"cannot read the file's details: {e.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
        raise ProbeError("unreadable", f"{path.name} is {kind}, not a regular file")
    if info.st_size == 0:
        raise ProbeError("empty_file", "the file has 0 bytes")
    if not os.access(path, os.R_OK):
        raise ProbeError("unreadable", f"no read permission on {path}")


def _inspect(container: av.container.InputContainer) -> dict:
    audio = next(iter(container.streams.audio), None)
    # cover art in audio files is a one-picture "video" stream: not video
    video = next((s for s in container.streams.video
                  if not s.disposition & av.stream.Disposition.attached_pic), None)
    streams = [s for s in (audio, video) if s is not None]
    if not streams:
        raise ProbeError("no_media_stream", f"no audio or video stream in the {container.format.name} container")
    frames, errors = _first_frames(container, streams)
    if not frames:
        raise ProbeError("undecodable", "no stream decodes: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
    a, v = frames.get(audio.index) if audio else None, frames.get(video.index) if video else None
    facts = {
        "has_audio": a is not None, "has_video": v is not None,
        "duration": float(container.duration / av.time_base) if container.duration else _stream_duration(streams),
        "fps": _fps(video) if v is not None else None,
        "width": v.width if v is not None else None, "height": v.height if v is not None else None,
        "rotation": _rotation(v, video) if v is not None else None,
        "audio_rate": a.sample_rate if a is not None else None,
        "channels": a.layout.nb_channels if a is not None else None,
        "video_codec": video.codec_context.codec.canonical_name if v is not None else None,
        "audio_codec": audio.codec_context.codec.canonical_name if a is not None else None,
    }
    if errors:   # one stream decodes, the other not: usable, but say why a stream is missing
        facts["notes"] = [f"{kind} stream undecodable: {msg}" for kind, msg in errors.items()]
    return facts


def _first_frames(container, streams) -> tuple[dict[int, av.frame.Frame], dict[str, str]]:
    """First decoded frame per stream index, and an error message per stream type that failed."""
    frames, errors = {}, {}
    pending = {s.index: s for s in streams if s.codec_context is not None}
    errors.update({s.type: "no decoder for this codec" for s in streams if s.codec_context is None})
    for s in pending.values():
        s.codec_context.thread_count = 1      # one frame: threads only add start-up cost
    try:
        for n, packet in enumerate(container.demux(*pending.values()) if pending else ()):
            if not pending or n >= MAX_PACKETS:
                break
            stream = pending.get(packet.stream.index)
            if stream is None:    # a stream that already gave its frame
                continue
            try:
                decoded = packet.decode()
            except av.FFmpegError as e:
                errors[stream.type] = ffmpeg_problem(e)
                del pending[stream.index]
                decoded = []
            if decoded:
                frames[stream.index] = decoded[0]
                del pending[stream.index]
    except av.FFmpegError as e:   # the container breaks off (truncated file) before every stream gave a frame
        errors.update({s.type: f"demuxing failed: {ffmpeg_problem(e)}" for s in pending.values()})
        pending = {}
    for stream in pending.values():   # short files: frames still inside the decoder
        try:
            flushed = stream.decode(None)
        except av.FFmpegError as e:
            flushed, errors[stream.type] = [], ffmpeg_problem(e)
        if flushed:
            frames[stream.index] = flushed[0]
        else:
            errors.setdefault(stream.type, f"no frame within the first {MAX_PACKETS} packets")
    return frames, errors


def _stream_duration(streams) -> float | None:
    known = [float(s.duration * s.time_base) for s in streams if s.duration and s.time_base]
    return max(known) if known else None


def _duration_from_packets(container) -> float | None:
    """Last packet end time, for containers whose header states no duration (raw streams, some FLV);
    None when even that is unknown (the file decoded, so this is no reason to reject it)."""
    last = None
    try:
        container.seek(0)
        for packet in container.demux():
            if packet.pts is not None and packet.time_base:
                t = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                last = t if last is None else max(last, t)
    except av.FFmpegError:
        pass
    return last


def _fps(video) -> float | None:
    """Average frame rate (what VFR clips average to); guessed rate when the container states none."""
    rate = video.average_rate or video.guessed_rate
    return float(Fraction(rate)) if rate else None


def _rotation(frame, video) -> int:
    """Counter-clockwise degrees to turn decoded frames upright, in [0, 360): the display matrix, as PyAV's
    `VideoFrame.rotation`, else the legacy `rotate` tag (which counts clockwise)."""
    if frame.rotation:
        return int(round(frame.rotation)) % 360
    tag = video.metadata.get("rotate")
    return -int(float(tag)) % 360 if tag and tag.lstrip("-").replace(".", "", 1).isdigit() else 0
