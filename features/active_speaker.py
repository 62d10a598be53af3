"""Active speaker detection: which of the visible faces speaks, from audio-visual synchrony.

A speaker's mouth opens and closes with the loudness of the speech: the syllable rhythm (3-8 Hz) shows in both the
mouth opening measured from the 68 landmarks (`mouth_open`, in inter-ocular distances, so faces of any size compare)
and the speech envelope. Per face track, the synchrony score is the Pearson correlation between its mouth opening at
the sampled frames and the audio's log-energy around those instants, at the best of a few delays of the sound
behind the lips (0-120 ms; the envelope is computed at shifted instants, so the delay does not depend on the frame
rate). A listener's mouth may move too (smiles, its own earlier speech), but not in time with someone else's voice.

The speaking track is the best-scoring one when its score clears `MIN_SYNC`; a previous decision (the live
speaker) stays unless another track beats it by `HYSTERESIS`, so the choice does not flicker between windows.
Without audio (a video-only file, digital silence) or without landmarks, no track is said to speak.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from features.audio_io import load_audio
from pipelines.extractor import ClipError

ENVELOPE_HALF_WIDTH_S = 0.06     # log-energy over +-60 ms around each instant: one syllable nucleus, not the next
SOUND_DELAYS_S = (0.0, 0.04, 0.08, 0.12)   # the sound follows the lips by up to ~120 ms
MIN_FRAMES = 4                   # fewer joint frames than this give no correlation worth trusting
MIN_MOUTH_MAD = 0.01            # mouth opening (inter-ocular units) barely moving: landmark jitter, not speech
MIN_SYNC = 0.1                   # below this correlation no track is said to speak
HYSTERESIS = 0.15                # a new track must beat the previous speaker by this much to take over
SILENCE_DB = -60.0               # envelope floor (dBFS): pauses all weigh the same
CLIP_SAMPLE_RATE = 16000
FRAME_WINDOW_S = 2.0             # per-frame decisions look at the frames within +-1 s


def speech_envelope(signal: np.ndarray, sr: int, times: np.ndarray,
                    half_width: float = ENVELOPE_HALF_WIDTH_S) -> np.ndarray:
    """Log-energy (dBFS, floored at SILENCE_DB) of `signal` in [t - half_width, t + half_width] for each t of `times`
    (seconds from the signal's first sample); NaN where less than half the span lies inside the signal."""
    out = np.full(len(times), np.nan, np.float64)
    for k, t in enumerate(np.asarray(times, np.float64)):
        i0, i1 = max(0, round((t - half_width) * sr)), min(len(signal), round((t + half_width) * sr))
        if i1 - i0 >= half_width * sr:
            power = float(np.mean(np.square(signal[i0:i1], dtype=np.float64)))
            out[k] = max(SILENCE_DB, 10 * np.log10(max(power, 1e-12)))
    return out


def delayed_envelopes(signal: np.ndarray, sr: int, times: np.ndarray) -> np.ndarray:
    """(len(SOUND_DELAYS_S), len(times)): the envelope at each frame instant plus each candidate sound delay."""
    return np.stack([speech_envelope(signal, sr, np.asarray(times, np.float64) + d) for d in SOUND_DELAYS_S])


def synchrony(mouth: np.ndarray, envelopes: np.ndarray) -> float:
    """Best Pearson correlation of a mouth-opening series with the delayed envelopes (NaN where absent); NaN when
    fewer than MIN_FRAMES frames have both, the envelope is constant or the mouth still (its median absolute
    deviation under MIN_MOUTH_MAD: whole-pixel landmarks of a still face jitter by a step now and then)."""
    best = np.nan
    mouth = np.asarray(mouth, np.float64)
    for envelope in envelopes:
        ok = np.isfinite(mouth) & np.isfinite(envelope)
        m = mouth[ok]
        if ok.sum() < MIN_FRAMES or np.median(np.abs(m - np.median(m))) < MIN_MOUTH_MAD or np.std(envelope[ok]) < 1e-6:
            continue
        r = float(np.corrcoef(m, envelope[ok])[0, 1])
        best = r if not np.isfinite(best) else max(best, r)
    return best


def choose_speaker(scores: dict, previous=None):
    """The speaking track: the best synchrony score at or above MIN_SYNC (the previous speaker stays unless beaten
    by HYSTERESIS); None when no track's score qualifies."""
    valid = {t: s for t, s in scores.items() if np.isfinite(s) and s >= MIN_SYNC}
    if not valid:
        return None
    best = max(valid, key=valid.get)
    if previous in valid and valid[best] - valid[previous] < HYSTERESIS:
        return previous
    return best


@dataclass
class Speaker:
    """The decision for one clip: its speaking track (None: nobody, or undecidable), that of each sampled frame
    (-1: none), and per track its synchrony score, median box and mouth opening per sampled frame."""
    track: int | None
    frame_tracks: list[int]
    scores: dict[int, float]
    boxes: dict[int, np.ndarray]
    mouths: dict[int, np.ndarray]

    def columns(self) -> dict:
        """The `faces` feature set's columns (`speaking_tracks` as JSON, NaN as null)."""
        tracks = {str(t): {"sync": _rounded(self.scores.get(t, np.nan)), "box": [_rounded(v, 1) for v in self.boxes[t]],
                           "mouth_open": [_rounded(v) for v in self.mouths[t]]} for t in sorted(self.mouths)}
        return {"speaking_track": -1 if self.track is None else int(self.track),
                "speaking_track_ids": [int(t) for t in self.frame_tracks], "speaking_tracks": json.dumps(tracks)}


def _rounded(value, digits: int = 4):
    return round(float(value), digits) if np.isfinite(value) else None


def clip_envelopes(item: dict, times: np.ndarray) -> np.ndarray | None:
    """Delayed envelopes of the work item's clean audio at the sampled frame times; None without usable audio."""
    try:
        signal, sr = load_audio({**item, "variant": "clean"}, CLIP_SAMPLE_RATE)
    except ClipError:        # no audio stream, digital silence, ...: nothing to synchronise with
        return None
    start = item.get("start")
    offset = float(start) if start is not None and np.isfinite(start) else 0.0
    return delayed_envelopes(signal, sr, np.asarray(times, np.float64) - offset)


def decide(item: dict, times: list[float], mouths: dict[int, np.ndarray], boxes: dict[int, np.ndarray],
           previous: int | None = None, fps: float = 5.0) -> Speaker:
    """Who speaks in the clip and at each sampled frame. `mouths`: track -> mouth opening per sampled frame (NaN
    where the track is absent); `boxes`: track -> its boxes."""
    n = len(times)
    medians = {t: np.median(b, axis=0) for t, b in boxes.items()}
    envelopes = clip_envelopes(item, np.asarray(times)) if mouths else None
    if envelopes is None:
        return Speaker(None, [-1] * n, {}, medians, mouths)
    scores = {t: synchrony(m, envelopes) for t, m in mouths.items()}
    track = choose_speaker(scores, previous)
    half = max(1, round(FRAME_WINDOW_S * fps / 2))
    frame_tracks = []
    for i in range(n):
        span = slice(max(0, i - half), i + half + 1)
        local = {t: synchrony(m[span], envelopes[:, span]) for t, m in mouths.items() if np.isfinite(m[i])}
        chosen = choose_speaker(local, track)
        frame_tracks.append(-1 if chosen is None else chosen)
    return Speaker(track, frame_tracks, scores, medians, mouths)


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


def hinted_track(boxes: dict[int, np.ndarray], hint) -> int | None:
    """The track whose median box overlaps `hint` (the live speaker's box) most, with IoU >= 0.3."""
    if hint is None or not boxes:
        return None
    overlaps = {t: iou(np.median(b, axis=0), hint) for t, b in boxes.items()}
    best = max(overlaps, key=overlaps.get)
    return best if overlaps[best] >= 0.3 else None
