"""Who speaks, with continuity across live windows.

One window is short (1 s), and a face's synchrony on it alone is noisy. So the live run keeps the last HISTORY_S
seconds of audio and, for every face it has seen in that time (matched from window to window by box overlap), its
mouth motion at each frame (features.mouth_motion, from the window's `faces` row), and decides the speaker on that
history with features.active_speaker's synchrony and hysteresis. The hysteresis protects a speaker only once it
has led every other face by its margin: a first decision made on a near tie (the first second of a stream) is
revised as soon as the history says otherwise, instead of being held. Overlapping windows hold the same frames and the
same audio: each frame and each sample is remembered once, and the envelope is computed on the continuous audio.
"""
from __future__ import annotations

import itertools
import json

import numpy as np

from features import active_speaker
from features.audio_io import resample, to_mono
from features.face_tracking import box_iou

HISTORY_S = 4.0
MATCH_IOU = 0.3
SR = active_speaker.CLIP_SAMPLE_RATE


def follow(scores: dict, speaker, confirmed: bool) -> tuple[int | None, bool]:
    """The speaker after a window with these synchrony `scores`, and whether it is confirmed (protected by the
    hysteresis: it stayed confirmed, or it leads every other face by HYSTERESIS)."""
    chosen = active_speaker.choose_speaker(scores, speaker if confirmed else None)
    return chosen, chosen is not None and ((confirmed and chosen == speaker)
                                           or active_speaker.lead(scores, chosen) >= active_speaker.HYSTERESIS)


class SpeakerMemory:
    def __init__(self):
        self.faces: dict[int, dict] = {}       # id -> {"box", "last", "motion": {frame time: motion}}
        self.speaker: int | None = None
        self.confirmed = False      # the speaker once led every other face by HYSTERESIS: only then is it protected
        self.audio, self.audio_start = np.zeros(0, np.float32), 0.0     # NaN where a window was never heard
        self._ids = itertools.count()

    @property
    def box(self) -> list[float] | None:
        return self.faces[self.speaker]["box"] if self.speaker in self.faces else None

    def update(self, faces_row: dict | None, media, start: float) -> dict | None:
        """Add a window's faces (its `faces` row) and audio (`WindowMedia`); the speaking face so far, or None."""
        if faces_row is None or not faces_row.get("speaking_tracks") or media.audio is None:
            return self._report(0)
        tracks = json.loads(faces_row["speaking_tracks"])
        self._hear(resample(to_mono(media.audio), media.audio.rate, SR), start)
        end = faces_row["frame_times"][-1] if faces_row["frame_times"] else start
        for track in tracks.values():
            face = self._match(track["box"], end)
            for t, value in track.get("motion") or []:
                face["motion"].setdefault(round(t, 3), value)
        horizon = max(f["last"] for f in self.faces.values()) - HISTORY_S
        scores = {}
        for face_id in list(self.faces):
            face = self.faces[face_id]
            if face["last"] < horizon:
                del self.faces[face_id]
                continue
            face["motion"] = {t: v for t, v in face["motion"].items() if t >= horizon}
            times = np.array(sorted(face["motion"]), np.float64)
            if len(times):
                envelopes = active_speaker.delayed_envelopes(self.audio, SR, times - self.audio_start)
                scores[face_id] = active_speaker.synchrony([face["motion"][t] for t in times], envelopes)
        self.speaker, self.confirmed = follow(scores, self.speaker, self.confirmed)
        return self._report(len(tracks), scores.get(self.speaker))

    def _hear(self, signal: np.ndarray, start: float) -> None:
        """Append the part of a window's audio not heard yet (NaN over a gap: dropped windows), keep HISTORY_S + 1 s."""
        heard_until = self.audio_start + len(self.audio) / SR
        if not len(self.audio) or start > heard_until + 1.0:     # the first window, or a gap longer than a second
            self.audio, self.audio_start = signal.astype(np.float32), start
        else:
            skip = round((heard_until - start) * SR)
            gap = np.full(max(0, -skip), np.nan, np.float32)
            self.audio = np.concatenate([self.audio, gap, signal[max(0, skip):].astype(np.float32)])
        excess = len(self.audio) - round((HISTORY_S + 1.0) * SR)
        if excess > 0:
            self.audio, self.audio_start = self.audio[excess:], self.audio_start + excess / SR

    def _match(self, box: list[float], t: float) -> dict:
        """The remembered face this box continues (best overlap), else a new face."""
        overlaps = {i: box_iou(f["box"], box) for i, f in self.faces.items()}
        best = max(overlaps, key=overlaps.get, default=None)
        if best is None or overlaps[best] < MATCH_IOU:
            best = next(self._ids)
            self.faces[best] = {"motion": {}}
        self.faces[best].update(box=box, last=t)
        return self.faces[best]

    def _report(self, n_faces: int, sync: float | None = None) -> dict | None:
        if self.speaker is None or self.speaker not in self.faces:
            return None
        return {"box": self.faces[self.speaker]["box"], "face_id": self.speaker, "n_faces": n_faces,
                "sync": None if sync is None or not np.isfinite(sync) else round(float(sync), 4)}
