"""Speech-like voice synthesis: a band-limited glottal source through vowel formant filters, lip-sync tracks."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

from pipelines.demo.profiles import Prosody, Speaker


# vowel: (F1, F2, F3 of an adult male voice in Hz, mouth opening factor, mouth width factor)
VOWELS = {"a": ((730, 1090, 2440), 1.0, 1.0), "e": ((530, 1840, 2480), 0.7, 1.05),
          "i": ((270, 2290, 3010), 0.45, 1.1), "o": ((570, 840, 2410), 0.8, 0.8),
          "u": ((300, 870, 2240), 0.5, 0.7)}
FORMANT_BANDWIDTHS = (80, 100, 140, 250)
F4 = 3400.0


@dataclass(frozen=True)
class Syllable:
    start: float
    end: float
    vowel: str
    stressed: bool
    consonant: bool     # a fricative burst before the vowel


def plan_syllables(rng: np.random.Generator, tempo: float, duration: float) -> list[Syllable]:
    """Syllable timing: lead-in silence, syllables at `tempo` with one optional phrase pause, trailing silence."""
    t, stop = rng.uniform(0.04, 0.1) * duration, duration * (1 - rng.uniform(0.04, 0.1))
    pause_at = rng.uniform(0.35, 0.65) * duration if rng.random() < 0.5 else math.inf
    out: list[Syllable] = []
    while True:
        length = rng.uniform(0.75, 1.25) / max(tempo, 1.5)
        if t + length > stop:
            break
        out.append(Syllable(t, t + length, str(rng.choice(list(VOWELS))), rng.random() < 0.35, rng.random() < 0.6))
        t += length
        if t > pause_at:
            t, pause_at = t + rng.uniform(0.15, 0.3), math.inf
    return out or [Syllable(t, stop, "a", True, False)]


def formant_filter(x: np.ndarray, formants, sr: int) -> np.ndarray:
    """Cascade of unity-DC-gain two-pole resonators (Klatt style): the vocal tract's vowel colour."""
    for freq, bw in zip(formants, FORMANT_BANDWIDTHS):
        r = math.exp(-math.pi * bw / sr)
        a = [1.0, -2 * r * math.cos(2 * math.pi * min(freq, 0.45 * sr) / sr), r * r]
        x = signal.lfilter([sum(a)], a, x)
    return x


def synthesize_voice(rng: np.random.Generator, speaker: Speaker, prosody: Prosody, duration: float, sr: int):
    """Speech-like audio and the per-sample mouth opening/width the face lip-syncs to."""
    n = int(round(duration * sr))
    t = np.arange(n) / sr
    syllables = plan_syllables(rng, prosody.tempo, duration)
    env, mouth_open, mouth_width = np.zeros(n), np.zeros(n), np.ones(n)
    semitones = np.zeros(n)
    nuclei = []
    for s in syllables:
        i0, i1 = int(s.start * sr), min(int(s.end * sr), n)
        v0 = i0 + (int(min(0.3 * (i1 - i0), 0.06 * sr)) if s.consonant else 0)
        v1 = i1 - int(0.1 * (i1 - i0))      # a short gap before the next syllable
        _, opening, width = VOWELS[s.vowel]
        shape = signal.windows.tukey(v1 - v0, 0.6) * (1.0 if s.stressed else 0.7)
        env[v0:v1] = shape
        mouth_open[v0:v1], mouth_width[v0:v1] = shape * opening, width
        rise = np.sin(np.pi * np.linspace(0, 1, i1 - i0))
        semitones[i0:i1] += (prosody.bump + prosody.accent * s.stressed) * rise
        nuclei.append((s, v0, v1))
    span = (syllables[0].start, syllables[-1].end)
    semitones += prosody.declination * (np.clip((t - span[0]) / (span[1] - span[0]), 0, 1) - 0.5)
    semitones += max(prosody.tremolo, 0) * np.sin(2 * np.pi * rng.uniform(6, 8) * t + rng.uniform(0, 6.3))
    semitones += 0.3 * np.interp(t, np.linspace(0, duration, int(duration * 4) + 2),
                                 rng.standard_normal(int(duration * 4) + 2))   # slow natural drift
    f0 = speaker.f0 * prosody.f0_scale * 2 ** (semitones / 12)

    phase = 2 * np.pi * np.cumsum(f0) / sr
    source = np.zeros(n)
    tilt = max(prosody.tilt, 0.6)
    for k in range(1, int(0.45 * sr / f0.min()) + 1):   # band-limited harmonic glottal source
        source += k ** -tilt * np.clip((0.45 * sr - k * f0) / 300, 0, 1) * np.sin(k * phase)
    source /= np.sqrt(np.mean(source ** 2))
    excitation = (source + max(prosody.breath, 0) * 4 * rng.standard_normal(n)) * env

    audio = np.zeros(n)
    tail = int(0.03 * sr)                 # let the resonators ring out
    for s, v0, v1 in nuclei:
        formants = [f * speaker.formant_scale for f in (*VOWELS[s.vowel][0], F4)]
        seg = formant_filter(np.concatenate([excitation[v0:v1], np.zeros(tail)]), formants, sr)
        end = min(v0 + len(seg), n)
        audio[v0:end] += seg[:end - v0]
    voiced_rms = np.sqrt(np.mean(audio[env > 0] ** 2))
    hiss = signal.butter(2, 2500, "highpass", fs=sr, output="sos")
    for s, v0, _ in nuclei:
        if s.consonant and v0 > int(s.start * sr):
            i0 = int(s.start * sr)
            burst = signal.sosfilt(hiss, rng.standard_normal(v0 - i0)) * np.hanning(v0 - i0)
            audio[i0:v0] += 0.5 * voiced_rms * burst
    audio *= 10 ** (prosody.level_db / 20) / voiced_rms
    audio += 10 ** (-62 / 20) * signal.lfilter([0.3], [1, -0.7], rng.standard_normal(n))   # room noise floor
    return (0.98 * np.tanh(audio / 0.98)).astype(np.float32), mouth_open, mouth_width


def frame_means(x: np.ndarray, sr: int, fps: float, n_frames: int) -> np.ndarray:
    """Mean of a per-sample track over each video frame's interval."""
    edges = np.minimum(np.round(np.arange(n_frames + 1) * sr / fps).astype(int), len(x))
    csum = np.concatenate([[0.0], np.cumsum(x)])
    return (csum[edges[1:]] - csum[edges[:-1]]) / np.maximum(edges[1:] - edges[:-1], 1)
