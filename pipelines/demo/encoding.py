"""H.264 + AAC in MP4 for the demo clips."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def video_codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def encode(path: Path, frames, audio: np.ndarray, fps: int, size: int, sr: int) -> None:
    """H.264 (libx264, or MPEG-4 part 2 where x264 is missing) + AAC mono in MP4, written via a temp file."""
    tmp = path.with_name(f".{path.name}.partial")
    with av.open(str(tmp), "w", format="mp4") as out:
        # single-threaded encoders are bit-exact across runs; one clip per process already fills the cores
        if video_codec() == "libx264":
            video = out.add_stream("libx264", rate=Fraction(fps),
                                   options={"crf": "23", "preset": "veryfast", "threads": "1"})
        else:
            video = out.add_stream("mpeg4", rate=Fraction(fps), options={"threads": "1"})
            video.bit_rate = 500_000
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=sr, layout="mono")
        sound.bit_rate = 48000
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="bgr24")
            vf.pts = i
            out.mux(video.encode(vf))
        out.mux(video.encode())
        af = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
        af.sample_rate, af.pts = sr, 0
        out.mux(sound.encode(af))
        out.mux(sound.encode())
    tmp.replace(path)
