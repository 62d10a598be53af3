"""Active speaker detection: which of the visible faces speaks, from audio-visual synchrony.

A speaker's mouth opens and closes with the loudness of the speech: the syllable rhythm (3-8 Hz) shows in both the
mouth opening measured from the 68 landmarks (`mouth_open`, in inter-ocular distances, so faces of any size compare)
and the speech envelope. Per face track, the synchrony score is the Pearson correlation between its mouth opening and
the audio's log-energy around each sampled frame, at the best of a few small lags (the lips move up to ~150 ms
before the sound). A silent listener's mouth still moves (chewing, smiles, its own earlier speech), but not in time
with someone else's voice, so its correlation stays near 0.

The speaking track is the best-scoring one when its score clears `MIN_SYNC`; a previous decision (live windows) keeps
the speaker unless another track beats it by `HYSTERESIS`, so the choice does not flicker between windows.
Without audio (a video-only file, digital silence) or without landmarks, no track is said to speak.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from features.audio_io import load_audio
from pipelines.extractor import ClipError

ENVELOPE_HALF_WIDTH_S = 0.06     # log-energy over +-60 ms around each frame: one syllable nucleus, not the next
MAX_LAG_S = 0.15                 # lips lead the sound by up to ~150 ms
MIN_FRAMES = 4                   # fewer joint frames than this give no correlation worth trusting
MIN_SYNC = 0.1                   # below this correlation no track is said to speak
HYSTERESIS = 0.15                # a new track must beat the previous speaker by this much to take over
SILENCE_DB = -60.0               # envelope floor (dBFS): pauses all weigh the same


def speech_envelope(signal: np.ndarray, sr: int, times: np.ndarray,
                    half_width: float = ENVELOPE_HALF_WIDTH_S) -> np.ndarray:
    """Log-energy (dBFS, floored at SILENCE_DB) of `signal` in [t - half_width, t + half_width] for each t of `times`
    (seconds from the signal's first sample); NaN where the span lies outside the signal."""
    out = np.full(len(times), np.nan, np.float64)
    for k, t in enumerate(np.asarray(times, np.float64)):
        i0, i1 = max(0, round((t - half_width) * sr)), min(len(signal), round((t + half_width) * sr))
        if i1 - i0 >= half_width * sr:          # at least half the span inside the signal
            power = float(np.mean(np.square(signal[i0:i1], dtype=np.float64)))
            out[k] = max(SILENCE_DB, 10 * np.log10(max(power, 1e-12)))
    return out


def synchrony(mouth: np.ndarray, envelope: np.ndarray, max_lag: int) -> float:
    """Best Pearson correlation of mouth opening with the envelope over lags 0..max_lag frames (mouth first);
    NaN when fewer than MIN_FRAMES frames have both or either series is constant."""
    best = np.nan
    for lag in range(max_lag + 1):
        m, e = (mouth[:len(mouth) - lag], envelope[lag:]) if lag else (mouth, envelope)
        ok = np.isfinite(m) & np.isfinite(e)
        if ok.sum() < MIN_FRAMES or np.std(m[ok]) < 1e-6 or np.std(e[ok]) < 1e-6:
            continue
        r = float(np.corrcoef(m[ok], e[ok])[0, 1])
        best = r if not np.isfinite(best) else max(best, r)
    return best


def track_scores(mouths: dict[int, np.ndarray], envelope: np.ndarray, fps: float) -> dict[int, float]:
    """Synchrony of each track's mouth-opening series (one value per sampled frame, NaN where the track is absent)
    with the envelope at the same frames."""
    max_lag = int(MAX_LAG_S * fps + 1e-9)
    return {track: synchrony(np.asarray(series, np.float64), envelope, max_lag) for track, series in mouths.items()}


def choose_speaker(scores: dict[int, float], previous: int | None = None) -> int | None:
    """The speaking track: the best synchrony score at or above MIN_SYNC (the previous speaker stays unless beaten
    by HYSTERESIS); None when no track's score qualifies."""
    valid = {t: s for t, s in scores.items() if np.isfinite(s) and s >= MIN_SYNC}
    if not valid:
        return None
    best = max(valid, key=valid.get)
    if previous in valid and valid[best] - valid[previous] < HYSTERESIS:
        return previous
    return best


CLIP_SAMPLE_RATE = 16000
FRAME_WINDOW_S = 2.0             # per-frame decisions look at the frames within +-1 s


@dataclass
class Speaker:
    """The decision for one clip: its speaking track (None: nobody, or undecidable), that of each sampled frame
    (-1: none) and every track's synchrony score."""
    track: int | None
    frame_tracks: list[int]
    scores: dict[int, float]

    def columns(self) -> dict:
        """The `faces` feature set's columns (scores as JSON, NaN as null)."""
        scores = {str(t): (round(s, 4) if np.isfinite(s) else None) for t, s in sorted(self.scores.items())}
        return {"speaking_track": -1 if self.track is None else int(self.track),
                "speaking_track_ids": [int(t) for t in self.frame_tracks], "speaking_scores": json.dumps(scores)}


def clip_envelope(item: dict, times: np.ndarray) -> np.ndarray | None:
    """The speech envelope of the work item's clean audio at the sampled frame times; None without usable audio."""
    try:
        signal, sr = load_audio({**item, "variant": "clean"}, CLIP_SAMPLE_RATE)
    except ClipError:        # no audio stream, digital silence, ...: nothing to synchronise with
        return None
    start = item.get("start")
    offset = float(start) if start is not None and np.isfinite(start) else 0.0
    return speech_envelope(signal, sr, np.asarray(times, np.float64) - offset)


def decide(item: dict, times: list[float], mouths: dict[int, np.ndarray], fps: float,
           previous: int | None = None) -> Speaker:
    """Who speaks in the clip and at each sampled frame. `mouths`: track -> mouth opening per sampled frame."""
    n = len(times)
    envelope = clip_envelope(item, np.asarray(times)) if mouths else None
    if envelope is None:
        return Speaker(None, [-1] * n, {t: np.nan for t in mouths})
    scores = track_scores(mouths, envelope, fps)
    track = choose_speaker(scores, previous)
    half = max(1, round(FRAME_WINDOW_S * fps / 2))
    frame_tracks = []
    for i in range(n):
        span = slice(max(0, i - half), i + half + 1)
        present = {t: m[span] for t, m in mouths.items() if np.isfinite(m[i])}
        chosen = choose_speaker(track_scores(present, envelope[span], fps), track)
        frame_tracks.append(-1 if chosen is None else chosen)
    return Speaker(track, frame_tracks, scores)


def hinted_track(boxes: dict[int, np.ndarray], hint) -> int | None:
    """The track whose median box overlaps `hint` (the previous window's speaker box) most, IoU >= 0.3."""
    if hint is None or not boxes:
        return None
    hint = np.asarray(hint, np.float64)

    def iou(box):
        w = max(0.0, min(box[2], hint[2]) - max(box[0], hint[0]))
        h = max(0.0, min(box[3], hint[3]) - max(box[1], hint[1]))
        union = (box[2] - box[0]) * (box[3] - box[1]) + (hint[2] - hint[0]) * (hint[3] - hint[1]) - w * h
        return w * h / union if union > 0 else 0.0

    overlaps = {t: iou(np.median(b, axis=0)) for t, b in boxes.items()}
    best = max(overlaps, key=overlaps.get)
    return best if overlaps[best] >= 0.3 else None
