"""Audio decoding shared by every audio extractor: any container PyAV opens -> float32 mono at a target rate.

Resampler: soxr ("HQ"), not PyAV's AudioResampler. We resample the whole trimmed clip in one call, so there is no
streaming state to flush and no frame-pts rounding; soxr's linear-phase filter is delay-compensated and is
librosa's default resampler (`soxr_hq`), so features match librosa-based research code. libswresample's default
filter (as used by PyAV) is shorter and lower quality.

Downmix: a weighted mean of the channels with ffmpeg's (swresample's) coefficients: centre 1, front L/R 1/sqrt(2),
surround 1/2, LFE 0, normalised to sum 1. Stereo therefore becomes (L+R)/2, as in `librosa.load(mono=True)`,
and the dialogue channel of 5.1 film audio (MELD) keeps its weight instead of being averaged with 5 others.

Segment times (`start`/`end`, seconds) are relative to the container's start time, like `ffmpeg -ss`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soxr

from features.augment_audio import apply_variant
from pipelines.extractor import ClipError
from pipelines.media import open_container

MIN_DURATION_S = 0.025      # one 25 ms analysis frame: anything shorter yields no features
SILENCE_PEAK = 1e-4         # peak below -80 dBFS = digital silence (real recordings peak far above)
FULL_SCALE = 0.999          # |x| at or above this counts as clipped (lossy codecs ring around 1.0)
SEEK_PREROLL_S = 0.5        # seek this much early: mp3/aac need previous frames to decode the first one right
DOWNMIX_WEIGHTS = {"FC": 1.0, "FL": 0.5 ** 0.5, "FR": 0.5 ** 0.5, "LFE": 0.0,
                   "BL": 0.5, "BR": 0.5, "SL": 0.5, "SR": 0.5, "BC": 0.5}   # other/unnamed channels: 1


@dataclass(frozen=True)
class Decoded:
    samples: np.ndarray         # float32 (channels, samples) at the stream's own rate
    rate: int
    channels: tuple[str, ...]   # ffmpeg channel names ("FL", "FC", "LFE", ...; "NONE" when unspecified)


@dataclass(frozen=True)
class AudioClip:
    signal: np.ndarray          # float32 mono at `sr`, variant applied
    sr: int
    clipped_fraction: float     # share of clean native-rate sample instants at full scale in any channel


def _is_set(t) -> bool:
    return t is not None and not (isinstance(t, float) and math.isnan(t))


def _to_float(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as float32 (channels, samples), whatever the sample format."""
    arr = frame.to_ndarray()
    if not frame.format.is_planar:             # packed: (1, samples*channels) interleaved
        arr = arr.reshape(-1, frame.layout.nb_channels).T
    if arr.dtype.kind == "f":
        return arr.astype(np.float32, copy=False)
    full = 2.0 ** (8 * arr.itemsize - 1)
    offset = full if arr.dtype.kind == "u" else 0.0    # u8 is offset binary
    return ((arr.astype(np.float64) - offset) / full).astype(np.float32)


def _read(container, stream, seek_to: float | None, t_end: float):
    """Frames from `seek_to` (None = the beginning) to `t_end` -> (chunks, first sample time or None, rate,
    channel names, corrupt packet count)."""
    if seek_to is not None:
        container.seek(int(seek_to / stream.time_base), stream=stream, backward=True)
    chunks, first_time, rate, names, n, bad_packets = [], None, stream.rate, (), 0, 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.FFmpegError:              # skip a corrupt packet, like the ffmpeg CLI does
            bad_packets += 1
            continue
        for frame in frames:
            if not chunks:
                first_time = float(frame.time) if frame.pts is not None else None
                rate, names = frame.sample_rate, tuple(c.name for c in frame.layout.channels)
            chunks.append(_to_float(frame))
            n += frame.samples
        if first_time is not None and first_time + n / rate >= t_end:
            break
    return chunks, first_time, rate, names, bad_packets


def decode_native(path: str | Path, start: float | None = None, end: float | None = None) -> Decoded:
    """Decode the first audio stream at its own rate, trimmed to [start, end) seconds."""
    name = Path(str(path).partition("?")[0]).name
    with open_container(path) as container:
        if not container.streams.audio:
            raise ClipError("no_audio_stream", f"{name} has no audio stream")
        stream = container.streams.audio[0]
        origin = (container.start_time or 0) / av.time_base
        t_start = origin + start if _is_set(start) else None
        t_end = origin + end if _is_set(end) else math.inf
        # seek only where timestamps resolve single samples (FLV's 1 ms pts would misplace the cut by ~20 samples)
        exact_pts = bool(stream.time_base and stream.rate) and stream.time_base <= Fraction(1, stream.rate)
        seek_to = t_start - SEEK_PREROLL_S if t_start is not None and exact_pts else None
        seek_to = seek_to if seek_to is not None and seek_to > origin else None
        chunks, first_time, rate, names, bad = _read(container, stream, seek_to, t_end)
        if chunks and first_time is None and seek_to is not None:   # no pts after a seek: count from the start
            container.seek(0)
            chunks, first_time, rate, names, bad = _read(container, stream, None, math.inf)
    if not chunks and seek_to is not None:
        raise ClipError("too_short", f"{name}: the segment starts at {start} s, after the end of the audio")
    if not chunks:
        raise ClipError("undecodable", f"no audio samples decoded from {name}"
                        + (f" ({bad} corrupt packets)" if bad else ""))
    first_time = origin if first_time is None else first_time
    samples = np.concatenate(chunks, axis=1)
    i0 = max(0, round((t_start - first_time) * rate)) if t_start is not None else 0
    i1 = round((t_end - first_time) * rate) if t_end != math.inf else samples.shape[1]
    return Decoded(samples[:, i0:max(i0, i1)], rate, names)


def to_mono(decoded: Decoded) -> np.ndarray:
    samples = decoded.samples
    if samples.shape[0] == 1:
        return samples[0]
    weights = np.array([DOWNMIX_WEIGHTS.get(name, 1.0) for name in decoded.channels], dtype=np.float32)
    if len(weights) != samples.shape[0] or weights.sum() == 0:
        weights = np.ones(samples.shape[0], dtype=np.float32)
    return (weights / weights.sum()) @ samples


def resample(signal: np.ndarray, rate: int, sr: int) -> np.ndarray:
    if rate == sr:
        return np.ascontiguousarray(signal, dtype=np.float32)
    return soxr.resample(signal, rate, sr, quality="HQ").astype(np.float32, copy=False)


def resample_kaiser_best(signal: np.ndarray, rate: int, sr: int) -> np.ndarray:
    """librosa 0.9's `resample(res_type="kaiser_best")`: resampy, then zero-padded to ceil(n * sr / rate).
    What pre-2022 research code (EfficientAT) resampled with; about 40x slower than soxr."""
    if rate == sr:
        return np.ascontiguousarray(signal, dtype=np.float32)
    import resampy   # only this resampler needs it
    out = resampy.resample(signal, rate, sr, filter="kaiser_best", axis=-1).astype(np.float32)
    n = math.ceil(len(signal) * sr / rate)
    return np.pad(out[:n], (0, max(0, n - len(out))))


RESAMPLERS = {"soxr_hq": resample, "kaiser_best": resample_kaiser_best}


def decode_audio(path: str | Path, sr: int = 16000, start: float | None = None, end: float | None = None
                 ) -> np.ndarray:
    """Float32 mono signal at `sr` of the segment [start, end) of any audio/video file (no quality checks)."""
    decoded = decode_native(path, start, end)
    return resample(to_mono(decoded), decoded.rate, sr)


def check_quality(decoded: Decoded, name: str) -> float:
    """Raise ClipError for audio no feature can use; return the clipped fraction (a flag, not a failure)."""
    samples, rate = decoded.samples, decoded.rate
    n = samples.shape[1]
    if n < MIN_DURATION_S * rate:
        raise ClipError("too_short", f"{name}: {n / rate * 1000:.1f} ms of audio, "
                                     f"need {MIN_DURATION_S * 1000:.0f} ms")
    finite = np.isfinite(samples)
    if not finite.all():
        raise ClipError("non_finite", f"{name}: {int((~finite).sum())} NaN/inf samples")
    magnitude = np.abs(samples)
    peak = float(magnitude.max())
    if peak < SILENCE_PEAK:
        raise ClipError("digital_silence", f"{name}: peak {20 * math.log10(max(peak, 1e-12)):.1f} dBFS")
    return float((magnitude >= FULL_SCALE).any(axis=0).mean())


@functools.lru_cache(maxsize=2)
def _checked(path: str, start: float | None, end: float | None, content_hash: str | None) -> tuple[Decoded, float]:
    decoded = decode_native(path, start, end)
    return decoded, check_quality(decoded, Path(path).name)


@functools.lru_cache(maxsize=4)
def _clean(path: str, start: float | None, end: float | None, content_hash: str | None,
           sr: int, resampler: str) -> tuple[np.ndarray, float]:
    decoded, clipped = _checked(path, start, end, content_hash)
    signal = RESAMPLERS[resampler](to_mono(decoded), decoded.rate, sr)
    signal.flags.writeable = False      # shared by every caller of the cache
    return signal, clipped


def load_clip(item: dict, sr: int, resampler: str = "soxr_hq") -> AudioClip:
    """Decode the item's segment, check it, resample to `sr` and apply its audio variant (noise is mixed at `sr`).

    The last clips decoded stay cached in the process (keyed by path, segment and content hash), so the variants
    and feature sets of a clip that one worker extracts in a row decode and resample it once. An item carrying
    `media` (a live window's decoded samples, `Decoded` in `media.audio`) is read from it instead of a file."""
    if resampler not in RESAMPLERS:
        raise ValueError(f"resampler must be one of {sorted(RESAMPLERS)}, not {resampler!r}")
    media = item.get("media")
    if media is not None:       # a live window (pipelines/live): its samples are already decoded
        if media.audio is None:
            raise ClipError("no_audio_stream", f"{item['path']} has no audio stream")
        clipped = check_quality(media.audio, item["path"])
        clean = RESAMPLERS[resampler](to_mono(media.audio), media.audio.rate, sr)
        return AudioClip(apply_variant(clean, sr, item), sr, clipped)
    start, end = (t if _is_set(t) else None for t in (item.get("start"), item.get("end")))
    clean, clipped = _clean(item["abspath"], start, end, item.get("content_hash"), sr, resampler)
    return AudioClip(apply_variant(clean, sr, item), sr, clipped)


def require_samples(clip: AudioClip, n: int, needs: str) -> None:
    """ClipError `too_short` unless the clip has at least `n` samples, the least that `needs` works on."""
    if len(clip.signal) < n:
        raise ClipError("too_short", f"{len(clip.signal) / clip.sr * 1000:.1f} ms of audio; {needs} needs at least "
                                     f"{n / clip.sr * 1000:.1f} ms ({n} samples at {clip.sr} Hz)")


def load_audio(item: dict, sr: int, resampler: str = "soxr_hq") -> tuple[np.ndarray, int]:
    """The architecture contract: (float32 mono signal with the item's variant applied, sr)."""
    clip = load_clip(item, sr, resampler)
    return clip.signal, clip.sr
