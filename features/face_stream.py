"""Faces of a live stream, window after window (`aver live`): each sampled frame is scanned once.

Live windows overlap (1 s every 0.5 s: half of a window's frames were in the previous one). The live run keeps one
`FaceStream` per stream and hands it to the `faces` extractor in each window's media (`WindowMedia.face_stream`);
the extractor itself stays stateless. The stream holds the frame-by-frame pass (features.face_scan.FaceScan:
tracker, tracks' identity descriptors, the follower's last detection) and the faces of the frames a later window
may still hold, so a window scans only its new frames, continuing the tracks of the previous ones: no first
detection and no new-track dlib descriptor per window, and the detection schedule runs over the stream, not over
each window.

What differs from the window computed alone (tests/test_face_stream.py measures it on a real clip): which frames are
detected rather than tracked (the schedule is the stream's), the track ids (the stream's), and the `identity`
columns (the mean of the track's last MAX_DESCRIPTORS descriptors over the stream, not of the window's). A window's
main track is picked among its tracks from the frames it holds (detected or tracked): coverage is the share of the
window's frames where a track has a face, and a track counts as confirmed when the stream has detected it twice.
The scan restarts (as for a window alone) when a window does not continue the frames scanned: its new frames start
more than MAX_GAP_S after the last scanned one (a long backlog drop), or it holds a frame older than the last
scanned one that is not remembered.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from features.face_scan import Face, FaceScan
from features.tracking import Track

MAX_GAP_S = 1.0           # new frames this soon after the last scanned one continue its tracks (a dropped window)
MAX_DESCRIPTORS = 10      # a stream track's identity: the mean of its last descriptors (~50 s at the defaults)


class FaceStream:
    def __init__(self):
        self.scan: FaceScan | None = None
        self.seen: dict[float, dict[int, Face]] = {}    # frame time -> faces, for frames a later window may hold
        self.last: float | None = None                  # time of the last scanned frame

    def window(self, frames: Iterable[tuple[float, np.ndarray]], new_scan: Callable[[], FaceScan], fps: float,
               every: int) -> tuple[list[float], dict[tuple[int, int], Face], list[Track], FaceScan]:
        """A window's sampled frames -> (their times, (track id, index in the window) -> face, the window's
        tracks, the scan). Frames already scanned give their remembered faces; the others are scanned in order."""
        frames = list(frames)
        if not self._continues(frames):
            self.scan, self.seen, self.last = None, {}, None
        if self.scan is None:
            self.scan = new_scan()
        self.scan.retune(every)
        times, faces = [], {}
        try:
            for index, (t, frame) in enumerate(frames):
                key = round(t, 6)
                if key not in self.seen:
                    if self.last is not None:       # grid frames the stream skipped keep the tracker's frame clock
                        self.scan.index += max(0, round((t - self.last) * fps) - 1)
                    self.seen[key], self.last = self.scan.step(frame), t
                times.append(t)
                faces.update({(track_id, index): face for track_id, face in self.seen[key].items()})
        except BaseException:       # a half-scanned frame leaves the state unknown: the next window starts afresh
            self.scan, self.seen, self.last = None, {}, None
            raise
        tracks = self._tracks(faces)
        self._forget(times[0] if times else None)
        return times, faces, tracks, self.scan

    def _continues(self, frames: list) -> bool:
        if self.scan is None or self.last is None:
            return False
        new = [t for t, _ in frames if round(t, 6) not in self.seen]
        return not new or (min(new) > self.last and min(new) - self.last <= MAX_GAP_S)

    def _tracks(self, faces: dict[tuple[int, int], Face]) -> list[Track]:
        """The window's tracks: every frame where a stream track has a face (detected or tracked), with the stream
        track's descriptors; those the stream detected at least twice when there are any (one-detection false
        positives drop out, as `tracking.confirmed` does for a clip)."""
        stream = {t.track_id: t for t in self.scan.tracker.tracks}
        view: dict[int, Track] = {}
        for (track_id, index), face in sorted(faces.items(), key=lambda kv: kv[0][1]):
            track = view.setdefault(track_id, Track(track_id, descriptors=list(stream[track_id].descriptors)))
            track.frames.append(index)
            track.detections.append(face.row)
        tracks = sorted(view.values(), key=lambda t: t.track_id)
        return [t for t in tracks if len(stream[t.track_id].frames) >= 2] or tracks

    def _forget(self, before: float | None) -> None:
        """Bounded memory on an endless stream: frames older than this window's first (later windows start later),
        closed tracks without a remembered face, and each track's history beyond what tracking needs (its last two
        detections: velocity) and what its identity averages."""
        if before is not None:
            self.seen = {t: faces for t, faces in self.seen.items() if t >= before - 1e-6}
        remembered = {track_id for faces in self.seen.values() for track_id in faces}
        tracker, now = self.scan.tracker, self.scan.index - 1
        tracker.tracks = [t for t in tracker.tracks if now - t.frames[-1] <= tracker.max_gap
                          or t.track_id in remembered]
        for track in tracker.tracks:
            track.frames, track.detections = track.frames[-2:], track.detections[-2:]
            track.descriptors = track.descriptors[-MAX_DESCRIPTORS:]
