"""Who speaks, with continuity across live windows.

One window holds few sampled frames (1 s at 5 fps: 5), too few for a trustworthy audio-visual correlation. So the
live run keeps, for every face it has seen in the last HISTORY_S seconds (matched from window to window by box
overlap), its mouth opening at each sampled instant and the speech envelope at the same instants, and decides the
speaker on that history with features.active_speaker's synchrony and hysteresis.
"""
from __future__ import annotations

import itertools
import json

import numpy as np

from features import active_speaker
from features.audio_io import resample, to_mono

HISTORY_S = 4.0
MATCH_IOU = 0.3


class SpeakerMemory:
    def __init__(self):
        self.faces: dict[int, dict] = {}       # id -> {"box", "last", "samples": {time: (mouth, envelopes)}}
        self.speaker: int | None = None
        self._ids = itertools.count()

    @property
    def box(self) -> list[float] | None:
        return self.faces[self.speaker]["box"] if self.speaker in self.faces else None

    def update(self, faces_row: dict | None, media, start: float) -> dict | None:
        """Add a window's faces (its `faces` row) and audio (`WindowMedia`); the speaking face so far, or None."""
        if faces_row is None or not faces_row.get("speaking_tracks") or media.audio is None:
            return self._report(0)
        tracks = json.loads(faces_row["speaking_tracks"])
        times = np.asarray(faces_row["frame_times"], np.float64)
        signal = resample(to_mono(media.audio), media.audio.rate, active_speaker.CLIP_SAMPLE_RATE)
        envelopes = active_speaker.delayed_envelopes(signal, active_speaker.CLIP_SAMPLE_RATE, times - start)
        for track in tracks.values():
            face = self._match(track["box"], times[-1] if len(times) else start)
            for i, mouth in enumerate(track["mouth_open"]):
                if mouth is not None and np.isfinite(envelopes[:, i]).all():
                    face["samples"][round(float(times[i]), 4)] = (mouth, envelopes[:, i])
        latest = max((f["last"] for f in self.faces.values()), default=start)
        for face_id in [i for i, f in self.faces.items() if f["last"] < latest - HISTORY_S]:
            del self.faces[face_id]
        scores = {}
        for face_id, face in self.faces.items():
            face["samples"] = {t: v for t, v in face["samples"].items() if t >= latest - HISTORY_S}
            ordered = [face["samples"][t] for t in sorted(face["samples"])]
            if ordered:
                mouth = np.array([m for m, _ in ordered], np.float64)
                scores[face_id] = active_speaker.synchrony(mouth, np.stack([e for _, e in ordered], axis=1))
        self.speaker = active_speaker.choose_speaker(scores, self.speaker)
        return self._report(len(tracks), scores.get(self.speaker))

    def _match(self, box: list[float], t: float) -> dict:
        """The remembered face this box continues (best overlap), else a new face."""
        overlaps = {i: active_speaker.iou(f["box"], box) for i, f in self.faces.items()}
        best = max(overlaps, key=overlaps.get, default=None)
        if best is None or overlaps[best] < MATCH_IOU:
            best = next(self._ids)
            self.faces[best] = {"samples": {}}
        self.faces[best].update(box=box, last=t)
        return self.faces[best]

    def _report(self, n_faces: int, sync: float | None = None) -> dict | None:
        if self.speaker is None or self.speaker not in self.faces:
            return None
        return {"box": self.faces[self.speaker]["box"], "face_id": self.speaker, "n_faces": n_faces,
                "sync": None if sync is None or not np.isfinite(sync) else round(float(sync), 4)}
