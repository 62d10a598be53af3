"""H.264 + AAC in MP4 for the demo clips."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def video_codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def add_video_stream(out: av.container.OutputContainer, fps: int) -> av.VideoStream:
    """A video stream whose bitstream depends only on the frames and the PyAV build, not on the CPU or threads."""
    # single-threaded encoders are bit-exact across runs; one clip per process already fills the cores.
    # x264's assembly kernels are not bit-exact with each other (AVX-512, AVX2, SSE, NEON pick different
    # motion-search decisions), so its portable C code runs instead: same bitstream on every CPU.
    if video_codec() == "libx264":
        return out.add_stream("libx264", rate=Fraction(fps), options={
            "crf": "23", "preset": "veryfast", "threads": "1", "x264-params": "no-asm=1"})
    video = out.add_stream("mpeg4", rate=Fraction(fps), options={"threads": "1", "flags": "+bitexact"})
    video.bit_rate = 500_000
    return video


def encode(path: Path, frames, audio: np.ndarray, fps: int, size: int, sr: int) -> None:
    """H.264 (libx264, or MPEG-4 part 2 where x264 is missing) + 16-bit PCM mono in MP4, written via a temp file.

    The bytes depend only on the inputs and the PyAV build (which bundles FFmpeg and x264; requirements.lock pins
    it), not on the CPU or the thread count: see docs/demo.md, "Same bytes on every machine".
    """
    tmp = path.with_name(f".{path.name}.partial")
    # bitexact: the muxer writes no "LavfNN.NN.NNN" encoder tag, which would change with every FFmpeg release
    with av.open(str(tmp), "w", format="mp4", container_options={"fflags": "+bitexact"}) as out:
        video = add_video_stream(out, fps)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        # 16-bit PCM, not AAC: FFmpeg's AAC encoder (MDCT, quantiser search) takes a different float path with and
        # without its SIMD code, so its packets changed with the CPU; PCM is the rounded samples, nothing else.
        sound = out.add_stream("pcm_s16le", rate=sr, layout="mono")
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="bgr24")
            vf.pts = i
            out.mux(video.encode(vf))
        out.mux(video.encode())
        samples = np.clip(np.rint(np.asarray(audio, np.float64) * 32767), -32768, 32767).astype(np.int16)
        af = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
        af.sample_rate, af.pts = sr, 0
        out.mux(sound.encode(af))
        out.mux(sound.encode())
    tmp.replace(path)
