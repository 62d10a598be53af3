"""Active speaker detection: which of the visible faces speaks, from audio-visual synchrony.

A speaker's mouth moves with the loudness of the speech: the syllable rhythm (3-8 Hz) shows in both the mouth's
motion energy at the video's own frame rate (features.mouth_motion: 5 sampled frames a second would alias it) and
the speech envelope. Per face track, the synchrony score is the Pearson correlation between its mouth motion at
every frame and the audio's log-energy around those instants, at the best of a few delays of the sound behind the
lips (0-120 ms; the envelope is computed at shifted instants, so the delay does not depend on the frame rate). A
listener's mouth may move too (smiles, its own earlier speech), but not in time with someone else's voice; a face
whose mouth does not move at all (median motion under MIN_MOTION grey levels: a still picture) never speaks.

The speaking track is the best-scoring one when its score is above `MIN_SYNC`; a previous decision (the live
speaker) stays unless another track beats it by `HYSTERESIS`, so the choice does not flicker between windows.
Without audio (a video-only file, digital silence) or without landmarks, no track is said to speak; nor is any in a
file with a single face (no choice to make: the mouth motion, which decodes every frame again, is not measured).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from features.audio_io import load_audio
from features.face_tracking import box_iou
from pipelines.extractor import ClipError

ENVELOPE_HALF_WIDTH_S = 0.06     # log-energy over +-60 ms around each instant: one syllable nucleus, not the next
ENVELOPE_RATE = 100.0            # Hz: the envelope is computed on this grid, then read at the frame instants
DETREND_S = 0.5                  # span of the slow loudness trend taken off the envelope (phrases, not syllables)
SOUND_DELAYS_S = (0.0, 0.04, 0.08, 0.12)   # the sound follows the lips by up to ~120 ms
MIN_FRAMES = 10                  # fewer joint frames than this give no correlation worth trusting
MIN_MOTION = 0.2                 # median mouth motion (grey levels per frame) under this: a mouth that does not move
MIN_SYNC = 0.05                  # a correlation no higher says nothing: a mouth out of time with the voice scores ~0
HYSTERESIS = 0.15                # a new track must beat the previous speaker by this much to take over
SILENCE_DB = -60.0               # envelope floor (dBFS): pauses all weigh the same
CLIP_SAMPLE_RATE = 16000
FRAME_WINDOW_S = 2.0             # per-frame decisions look at the frames within +-1 s


def speech_envelope(signal: np.ndarray, sr: int, times: np.ndarray,
                    half_width: float = ENVELOPE_HALF_WIDTH_S) -> np.ndarray:
    """Log-energy (dBFS, floored at SILENCE_DB) of `signal` in [t - half_width, t + half_width] for each t of `times`
    (seconds from the signal's first sample); NaN where less than half the span lies inside the signal or the span
    holds a NaN sample (audio missing there)."""
    squares = np.square(np.asarray(signal, np.float64))
    missing = np.concatenate([[0], np.cumsum(np.isnan(squares))])
    energy = np.concatenate([[0.0], np.cumsum(np.nan_to_num(squares))])
    times = np.asarray(times, np.float64)
    i0 = np.clip(np.round((times - half_width) * sr), 0, len(squares)).astype(np.int64)
    i1 = np.clip(np.round((times + half_width) * sr), 0, len(squares)).astype(np.int64)
    ok = (i1 - i0 >= half_width * sr) & (missing[i1] == missing[i0])
    power = np.where(ok, (energy[i1] - energy[i0]) / np.maximum(i1 - i0, 1), np.nan)
    with np.errstate(invalid="ignore"):
        return np.where(ok, np.maximum(SILENCE_DB, 10 * np.log10(np.maximum(power, 1e-12))), np.nan)


def syllable_envelope(signal: np.ndarray, sr: int, times: np.ndarray) -> np.ndarray:
    """The speech envelope at `times` less its mean over the DETREND_S around each instant: the syllables' rise and
    fall without the slower loudness of phrases (which a listener's moving mouth may follow as well). Computed on an
    ENVELOPE_RATE grid, so it does not depend on the frame rate; NaN where the envelope is."""
    grid = np.arange(0.0, len(signal) / sr, 1.0 / ENVELOPE_RATE)
    level = speech_envelope(signal, sr, grid)
    known = np.isfinite(level)
    width = max(1, round(DETREND_S * ENVELOPE_RATE))
    kernel = np.ones(width)
    total = np.convolve(np.where(known, level, 0.0), kernel, mode="same")
    count = np.convolve(known.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        contrast = level - total / count
    if len(grid) < 2:
        return np.full(len(times), np.nan)
    return np.interp(np.asarray(times, np.float64), grid, contrast, left=np.nan, right=np.nan)


def delayed_envelopes(signal: np.ndarray, sr: int, times: np.ndarray) -> np.ndarray:
    """(len(SOUND_DELAYS_S), len(times)): the syllable envelope at each frame instant plus each candidate delay."""
    return np.stack([syllable_envelope(signal, sr, np.asarray(times, np.float64) + d) for d in SOUND_DELAYS_S])


def synchrony(motion: np.ndarray, envelopes: np.ndarray) -> float:
    """Best Pearson correlation of a mouth motion series with the delayed envelopes (NaN where absent); NaN when
    fewer than MIN_FRAMES frames have both, the envelope or the motion is constant, or the mouth does not move
    (median motion under MIN_MOTION)."""
    best = np.nan
    motion = np.asarray(motion, np.float64)
    for envelope in envelopes:
        ok = np.isfinite(motion) & np.isfinite(envelope)
        m, e = motion[ok], envelope[ok]
        if ok.sum() < MIN_FRAMES or np.median(m) < MIN_MOTION or np.std(m) < 1e-9 or np.std(e) < 1e-6:
            continue
        r = float(np.corrcoef(m, e)[0, 1])
        best = r if not np.isfinite(best) else max(best, r)
    return best


def choose_speaker(scores: dict, previous=None):
    """The speaking track: the best synchrony score above MIN_SYNC (the previous speaker stays unless beaten
    by HYSTERESIS); None when no track's score qualifies."""
    valid = _qualifying(scores)
    if not valid:
        return None
    best = max(valid, key=valid.get)
    if previous in valid and valid[best] - valid[previous] < HYSTERESIS:
        return previous
    return best


def lead(scores: dict, track) -> float:
    """How far `track`'s synchrony is ahead of the best other qualifying track's (inf when it is alone)."""
    others = [s for t, s in _qualifying(scores).items() if t != track]
    return float(scores[track] - max(others)) if others else float("inf")


def _qualifying(scores: dict) -> dict:
    """The tracks whose synchrony can make them the speaker."""
    return {t: s for t, s in scores.items() if np.isfinite(s) and s > MIN_SYNC}


@dataclass
class Speaker:
    """The decision for one clip: its speaking track (None: nobody, or undecidable), that of each sampled frame
    (-1: none), and per track its synchrony score, median box, mouth opening per sampled frame and, when measured,
    `motion` = (frame times, track -> mouth motion per frame)."""
    track: int | None
    frame_tracks: list[int]
    scores: dict[int, float]
    boxes: dict[int, np.ndarray]
    mouths: dict[int, np.ndarray]
    motion: tuple[np.ndarray, dict[int, np.ndarray]] | None = None

    def columns(self) -> dict:
        """The `faces` feature set's columns (`speaking_tracks` as JSON, NaN as null; `motion`: [time, value]
        pairs of the frames where it was measured)."""
        times, energy = self.motion if self.motion is not None else (np.zeros(0), {})
        tracks = {str(t): {"sync": _rounded(self.scores.get(t, np.nan)), "box": [_rounded(v, 1) for v in self.boxes[t]],
                           "mouth_open": [_rounded(v) for v in self.mouths[t]],
                           "motion": [[_rounded(f), _rounded(v, 3)] for f, v in zip(times, energy.get(t, ()))
                                      if np.isfinite(v)]}
                  for t in sorted(self.mouths)}
        return {"speaking_track": -1 if self.track is None else int(self.track),
                "speaking_track_ids": [int(t) for t in self.frame_tracks], "speaking_tracks": json.dumps(tracks)}


def _rounded(value, digits: int = 4):
    return round(float(value), digits) if np.isfinite(value) else None


def clip_envelopes(item: dict, times: np.ndarray) -> np.ndarray | None:
    """Delayed envelopes of the work item's clean audio at the given frame times; None without usable audio."""
    try:
        signal, sr = load_audio({**item, "variant": "clean"}, CLIP_SAMPLE_RATE)
    except ClipError:        # no audio stream, digital silence, ...: nothing to synchronise with
        return None
    start = item.get("start")
    offset = float(start) if start is not None and np.isfinite(start) else 0.0
    return delayed_envelopes(signal, sr, np.asarray(times, np.float64) - offset)


def decide(item: dict, times: list[float], mouths: dict[int, np.ndarray], boxes: dict[int, np.ndarray],
           motion: tuple[np.ndarray, dict[int, np.ndarray]] | None, previous: int | None = None) -> Speaker:
    """Who speaks in the clip and at each sampled frame (on the frames within +-FRAME_WINDOW_S / 2). `mouths`:
    track -> mouth opening per sampled frame (NaN where the track is absent); `boxes`: track -> its boxes;
    `motion`: features.mouth_motion's (frame times, track -> motion), None when not measured."""
    n = len(times)
    medians = {t: np.median(b, axis=0) for t, b in boxes.items()}
    envelopes = clip_envelopes(item, motion[0]) if motion is not None and len(motion[0]) else None
    if envelopes is None:
        return Speaker(None, [-1] * n, {}, medians, mouths, motion)
    frame_times, energy = motion
    scores = {t: synchrony(m, envelopes) for t, m in energy.items()}
    track = choose_speaker(scores, previous)
    frame_tracks = []
    for i, t in enumerate(times):
        span = np.abs(frame_times - t) <= FRAME_WINDOW_S / 2
        local = {k: synchrony(m[span], envelopes[:, span]) for k, m in energy.items() if np.isfinite(mouths[k][i])}
        chosen = choose_speaker(local, track)
        frame_tracks.append(-1 if chosen is None else chosen)
    return Speaker(track, frame_tracks, scores, medians, mouths, motion)


def hinted_track(boxes: dict[int, np.ndarray], hint) -> int | None:
    """The track whose median box overlaps `hint` (the live speaker's box) most, with IoU >= 0.3."""
    if hint is None or not boxes:
        return None
    overlaps = {t: box_iou(np.median(b, axis=0), hint) for t, b in boxes.items()}
    best = max(overlaps, key=overlaps.get)
    return best if overlaps[best] >= 0.3 else None
