"""One clip: voice and face of one speaker performing one emotion in one take, with natural head motion."""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.demo.encoding import encode
from pipelines.demo.face import Face
from pipelines.demo.profiles import (AFFECT, EXPRESSION_JITTER, EXPRESSIONS, PROSODY, PROSODY_JITTER, make_speaker,
                                     perform)
from pipelines.demo.voice import frame_means, synthesize_voice


def smooth_motion(rng: np.random.Generator, t: np.ndarray, amplitude: float) -> np.ndarray:
    """Slow, natural-looking wander: a few random sinusoids between 0.15 and 1.2 Hz."""
    f, phase, amp = rng.uniform(0.15, 1.2, 3), rng.uniform(0, 2 * np.pi, 3), rng.uniform(0.4, 1.0, 3)
    return amplitude * (amp[:, None] * np.sin(2 * np.pi * f[:, None] * t + phase[:, None])).sum(0) / amp.sum()


def blink_track(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Eyelid opening factor: 1 open, dipping to ~0 for 150 ms blinks every 2-5 s."""
    out = np.ones_like(t)
    tb = rng.uniform(0.2, 2.0)
    while tb < t[-1] + 0.2:
        out *= 1 - 0.95 * np.exp(-((t - tb) / 0.045) ** 2)
        tb += rng.uniform(2.0, 5.0)
    return out


def gaze_track(rng: np.random.Generator, t: np.ndarray, down: float) -> np.ndarray:
    """Iris offset in eye half-widths: fixations of 0.4-1.5 s with small jumps between them."""
    out = np.zeros((len(t), 2))
    start = 0.0
    while start <= t[-1]:
        stop = start + rng.uniform(0.4, 1.5)
        out[(t >= start) & (t < stop)] = (rng.uniform(-0.18, 0.18), rng.uniform(-0.08, 0.08) + down)
        start = stop
    return out


@dataclass(frozen=True)
class ClipJob:
    path: Path
    seed: int
    speaker: int
    emotion: str
    take: int
    duration: float
    fps: int
    size: int
    sample_rate: int


def clip_name(speaker: int, emotion: str, take: int, speakers: int) -> str:
    return f"spk{speaker:0{max(2, len(str(speakers)))}d}_{emotion}_t{take}.mp4"


def render_clip(job: ClipJob) -> Path:
    """Synthesise, draw and encode one clip; its content depends only on the job (never on worker order)."""
    speaker = make_speaker(job.seed, job.speaker)
    take_rng = np.random.default_rng([job.seed, job.speaker, zlib.crc32(job.emotion.encode()), job.take])
    voice_rng, face_rng, look_rng = take_rng.spawn(3)
    prosody = perform(PROSODY, PROSODY_JITTER, job.emotion, voice_rng)
    audio, mouth_open, mouth_width = synthesize_voice(voice_rng, speaker, prosody, job.duration, job.sample_rate)

    n_frames = math.ceil(job.duration * job.fps - 1e-9)
    t = np.arange(n_frames) / job.fps
    opening = frame_means(mouth_open, job.sample_rate, job.fps, n_frames)
    opening = (opening / max(opening.max(), 1e-6)) ** 0.8          # articulation, not loudness
    width = frame_means(mouth_width, job.sample_rate, job.fps, n_frames)
    expression = perform(EXPRESSIONS, EXPRESSION_JITTER, job.emotion, face_rng)
    face = Face(speaker, job.size, np.random.default_rng([job.seed, job.speaker, 1]))   # same look in every take
    s = job.size / 256
    energy = 1.3 if AFFECT[job.emotion][1] > 0 else 0.7   # aroused speakers move their heads more
    roll = look_rng.uniform(-3, 3) + smooth_motion(look_rng, t, 2.0 * energy)
    dx = s * (look_rng.uniform(-6, 6) + smooth_motion(look_rng, t, 3.0 * energy))
    dy = s * (look_rng.uniform(-5, 5) + smooth_motion(look_rng, t, 2.0 * energy) + 1.5 * opening)  # nods with speech
    scale = look_rng.uniform(0.94, 1.05) * (1 + smooth_motion(look_rng, t, 0.015))
    blink = blink_track(look_rng, t)
    gaze = gaze_track(look_rng, t, 0.1 if job.emotion == "sad" else 0.0)
    gains = look_rng.uniform(0.9, 1.08) * look_rng.uniform(0.96, 1.04, 3)   # exposure and white balance
    light = np.clip(np.arange(256)[:, None] * gains, 0, 255).astype(np.uint8)[:, None, :]

    frames = (face.render(expression, opening[i], width[i], blink[i], gaze[i], (roll[i], dx[i], dy[i], scale[i]),
                          light) for i in range(n_frames))
    encode(job.path, frames, audio, job.fps, job.size, job.sample_rate)
    return job.path
