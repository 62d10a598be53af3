"""Synthetic talking-face audio-visual corpus: a deterministic, offline stand-in for a real AV emotion corpus.

`generate(out_dir)` writes `<speaker>_<emotion>_t<take>.mp4` (H.264 + AAC) clips of a drawn face saying
vowel-like syllables, plus README.txt. The emotion is split across the channels on purpose (docs/demo.md):
the voice carries arousal (pitch, loudness, tempo) with only weak cues inside an arousal group, the face carries
the expression (smile, brows, eyes) but draws sad and angry nearly alike. Every take performs its emotion at a
random intensity with jitter, so neither channel alone is perfect and audio-visual fusion has something to win.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import re
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import astuple, dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from scipy import signal

from pipelines.errors import BadParams

VERSION = "1"
DEFAULT_EMOTIONS = ("neutral", "happy", "sad", "angry", "fearful", "surprised")
NAME_RE = re.compile(r"(spk\d+)_([a-z]+)_t(\d+)")     # file stem: speaker, emotion, take
# (valence, arousal) in [-1, 1] that the design targets, for the manifest's dimensional columns
AFFECT = {"neutral": (0.0, -0.2), "happy": (0.8, 0.5), "sad": (-0.7, -0.5), "angry": (-0.6, 0.8),
          "fearful": (-0.6, 0.6), "surprised": (0.3, 0.8)}


@dataclass(frozen=True)
class Prosody:
    """How an emotion shapes the voice, relative to the speaker's own."""
    f0_scale: float     # mean pitch multiplier
    declination: float  # pitch change across the utterance, semitones (negative = falling)
    bump: float         # pitch rise-fall inside every syllable, semitones
    accent: float       # extra rise-fall on stressed syllables, semitones
    tremolo: float      # 6-8 Hz pitch wobble depth, semitones
    tempo: float        # syllables per second
    level_db: float     # loudness of the voiced part, dBFS RMS
    tilt: float         # harmonic roll-off exponent (lower = tenser, brighter voice)
    breath: float       # aspiration noise relative to voicing


@dataclass(frozen=True)
class Expression:
    """How an emotion shapes the face (sizes in eye or mouth half-widths)."""
    smile: float        # mouth-corner lift, mouth half-widths (negative = frown)
    brow_raise: float   # whole-brow lift, eye half-widths
    brow_inner: float   # inner brow end lifted (+) or pulled down (-), eye half-widths
    brow_knit: float    # inner brow ends pulled toward the nose and down, eye half-widths
    eye_open: float     # upper-lid opening multiplier
    lower_lid: float    # lower lid pushed up by the cheeks, 0..1
    mouth_width: float  # mouth width multiplier
    jaw: float          # mouth opening held between syllables, fraction of the full opening


# Arousal lives in the voice: low (neutral, sad) vs high, with small differences inside a group.
PROSODY = {
    #                    f0    decl  bump accent trem tempo level  tilt  breath
    "neutral":   Prosody(1.00, -2.0, 1.0, 1.5, 0.0, 4.0, -23.0, 1.35, 0.04),
    "sad":       Prosody(0.94, -2.8, 0.6, 1.0, 0.0, 3.5, -25.0, 1.50, 0.06),
    "happy":     Prosody(1.28, -1.0, 2.6, 2.5, 0.0, 4.8, -17.5, 1.10, 0.04),
    "angry":     Prosody(1.24, -1.5, 1.6, 3.5, 0.0, 5.0, -16.5, 0.95, 0.03),
    "fearful":   Prosody(1.40, 0.0, 1.2, 1.2, 0.5, 5.3, -18.5, 1.20, 0.08),
    "surprised": Prosody(1.36, 3.0, 2.4, 2.5, 0.0, 4.6, -17.5, 1.15, 0.05),
}
PROSODY_JITTER = Prosody(0.05, 0.8, 0.5, 0.6, 0.1, 0.35, 1.5, 0.08, 0.015)

# Expression lives in the face: smile vs frown vs raised brows; sad and angry differ only a little.
EXPRESSIONS = {
    #                      smile  raise  inner  knit  eyes  lid  width  jaw
    "neutral":   Expression(0.05, 0.00, 0.00, 0.00, 1.00, 0.0, 1.00, 0.00),
    "happy":     Expression(0.90, 0.10, 0.00, 0.00, 0.90, 0.6, 1.15, 0.10),
    "sad":       Expression(-0.55, -0.15, 0.25, 0.45, 0.85, 0.1, 0.95, 0.00),
    "angry":     Expression(-0.55, -0.30, 0.00, 0.60, 0.80, 0.2, 0.95, 0.00),
    "fearful":   Expression(-0.25, 0.70, 0.50, 0.40, 1.40, 0.0, 1.20, 0.20),
    "surprised": Expression(0.10, 1.00, 0.00, 0.00, 1.45, 0.0, 0.80, 0.45),
}
EXPRESSION_JITTER = Expression(0.12, 0.12, 0.10, 0.10, 0.08, 0.10, 0.05, 0.05)
INTENSITY = (0.4, 1.0)       # how strongly a take performs its emotion, drawn per take and per channel

# vowel: (F1, F2, F3 of an adult male voice in Hz, mouth opening factor, mouth width factor)
VOWELS = {"a": ((730, 1090, 2440), 1.0, 1.0), "e": ((530, 1840, 2480), 0.7, 1.05),
          "i": ((270, 2290, 3010), 0.45, 1.1), "o": ((570, 840, 2410), 0.8, 0.8),
          "u": ((300, 870, 2240), 0.5, 0.7)}
FORMANT_BANDWIDTHS = (80, 100, 140, 250)
F4 = 3400.0

# RGB palettes the speakers draw from (converted to BGR for OpenCV)
SKIN = [(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 134, 98), (160, 104, 72), (110, 72, 52)]
HAIR = [(28, 24, 22), (62, 42, 30), (104, 72, 46), (196, 162, 104), (136, 70, 40), (150, 148, 146)]
IRIS = [(92, 60, 34), (70, 110, 160), (76, 112, 70), (120, 98, 52)]
CLOTHES = [(40, 60, 110), (120, 40, 50), (50, 90, 60), (70, 70, 75), (200, 190, 170), (30, 30, 35)]
BACKDROPS = [((200, 205, 210), (120, 130, 140)), ((210, 200, 185), (140, 125, 110)),
             ((185, 200, 190), (100, 120, 110)), ((195, 190, 210), (110, 105, 130))]


@dataclass(frozen=True)
class Speaker:
    f0: float               # voice: mean pitch, Hz
    formant_scale: float    # voice: vocal-tract size (higher = shorter tract)
    skin: tuple             # look: BGR colours
    hair: tuple
    iris: tuple
    lips: tuple
    clothes: tuple
    backdrop: tuple         # (top, bottom) BGR
    face_w: float           # face half-width, fraction of the frame
    aspect: float           # face half-height / half-width
    taper: float            # jaw narrowing, 0..1
    eye_spacing: float      # eye centre offset, face half-widths
    eye_size: float         # eye half-width, face half-widths
    brow_width: float       # brow thickness, eye half-widths
    long_hair: bool
    hairline: float         # forehead hair edge, face half-heights above the face centre


def _bgr(rgb) -> tuple:
    return tuple(float(c) for c in rgb[::-1])


def _mix(palette, t: float) -> tuple:
    """A colour between neighbours of a palette (t in [0, 1]), so every speaker's colour is its own."""
    x = t * (len(palette) - 1)
    i = min(int(x), len(palette) - 2)
    return _bgr(np.add(np.multiply(palette[i], 1 - (x - i)), np.multiply(palette[i + 1], x - i)))


def make_speaker(seed: int, index: int) -> Speaker:
    """Speaker `index` (1-based): odd ones have a male-range voice and short hair, even ones female-range and long.

    Colours walk through corpus-wide shuffled palettes so that neighbouring speakers never look alike.
    """
    corpus, rng = np.random.default_rng(seed), np.random.default_rng([seed, index])
    hair_order, iris_order, clothes_order, backdrop_order = (corpus.permutation(len(p))
                                                             for p in (HAIR, IRIS, CLOTHES, BACKDROPS))
    female = index % 2 == 0
    skin = _mix(SKIN, (corpus.uniform(0, 1) + (index - 1) * 0.618 + rng.uniform(-0.05, 0.05)) % 1)

    def pick(palette, order):
        return palette[order[(index - 1) % len(palette)]]

    return Speaker(
        f0=rng.uniform(185, 230) if female else rng.uniform(95, 135),
        formant_scale=rng.uniform(1.12, 1.2) if female else rng.uniform(0.95, 1.05),
        skin=skin, hair=_bgr(pick(HAIR, hair_order)), iris=_bgr(pick(IRIS, iris_order)),
        lips=tuple(c * f for c, f in zip(skin, (0.62, 0.55, 0.85))),       # redder and darker than the skin
        clothes=_bgr(pick(CLOTHES, clothes_order)),
        backdrop=tuple(_bgr(c) for c in pick(BACKDROPS, backdrop_order)),
        face_w=rng.uniform(0.2, 0.23), aspect=rng.uniform(1.22, 1.38), taper=rng.uniform(0.1, 0.3),
        eye_spacing=rng.uniform(0.4, 0.47), eye_size=rng.uniform(0.19, 0.23), brow_width=rng.uniform(0.25, 0.38),
        long_hair=female, hairline=rng.uniform(0.55, 0.72))


def perform(table: dict, sigma, emotion: str, rng: np.random.Generator):
    """The emotion's profile as one take performs it: moved toward neutral by a random intensity, plus jitter."""
    amount = rng.uniform(*INTENSITY)
    neutral, goal = astuple(table["neutral"]), astuple(table[emotion])
    noise = rng.standard_normal(len(goal))
    return type(table[emotion])(*(n + amount * (g - n) + s * z
                                  for n, g, s, z in zip(neutral, goal, astuple(sigma), noise)))


# ---------------------------------------------------------------- voice

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


# ---------------------------------------------------------------- face

SHIFT = 4                      # OpenCV sub-pixel bits for anti-aliased drawing


def _pts(xy) -> np.ndarray:
    return np.round(np.asarray(xy) * (1 << SHIFT)).astype(np.int32)


def _fill(img, xy, color) -> None:
    cv2.fillPoly(img, [_pts(xy)], color, cv2.LINE_AA, SHIFT)


def _stroke(img, xy, color, thickness: int) -> None:
    cv2.polylines(img, [_pts(xy)], False, color, max(thickness, 1), cv2.LINE_AA, SHIFT)


def _ellipse(cx, cy, ax, ay, n: int = 48) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + ax * np.cos(a), cy + ay * np.sin(a)], 1)


def _mask(size: int, xy) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    _fill(m, xy, 255)
    return m.astype(np.float32) / 255


def _texture(rng, size: int, blur, amount: float) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), *blur)
    return 1 + amount * noise / noise.std()


def _rgba(color) -> tuple:
    return (*color, 255)


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(float(x), lo), hi)


class Face:
    """One speaker's head: skin, hair, neck, nose and background drawn once; eyes, brows and mouth per frame."""

    def __init__(self, speaker: Speaker, size: int, rng: np.random.Generator):
        self.sp, self.size = speaker, size
        s = size
        self.w = speaker.face_w * s
        self.h = self.w * speaker.aspect
        self.cx, self.cy = s / 2, 0.46 * s
        self.eye_y = self.cy - 0.08 * self.h
        self.eye_dx, self.ew = speaker.eye_spacing * self.w, speaker.eye_size * self.w
        self.nose_y, self.mouth_y = self.cy + 0.3 * self.h, self.cy + 0.55 * self.h
        self.mw = 0.36 * self.w
        self.line = max(1, round(s / 200))
        self.head = self._draw_head(rng)
        self.backdrop, self.clothes, self.clothes_alpha = self._draw_scene(rng)

    def outline(self) -> np.ndarray:
        a = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        narrow = 1 - self.sp.taper * np.clip(np.sin(a), 0, None) ** 2
        return np.stack([self.cx + self.w * np.cos(a) * narrow, self.cy + self.h * np.sin(a)], 1)

    def _draw_head(self, rng) -> np.ndarray:
        """The static head as BGRA uint8: hair, neck, ears, shaded skin, hairline, nose."""
        s, sp, w, h, cx, cy = self.size, self.sp, self.w, self.h, self.cx, self.cy
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        u, v = (xx - cx) / w, (yy - cy) / h
        light = (1.08 - 0.2 * (u ** 2 + v ** 2) - 0.08 * u)[..., None]      # key light from the viewer's left
        shade = np.ones((s, s), np.float32)                                  # soft darkening marks on the skin
        cv2.line(shade, (int(cx + 0.06 * w), int(self.eye_y + 0.1 * h)), (int(cx + 0.12 * w), int(self.nose_y)),
                 0.8, max(2, int(0.05 * w)))                                  # nose side in shadow
        cv2.ellipse(shade, (int(cx), int(self.nose_y + 0.05 * h)), (int(0.18 * w), int(0.04 * h)),
                    0, 0, 360, 0.85, -1)                                       # under the nose
        for side in (-1, 1):   # eye sockets
            cv2.ellipse(shade, (int(cx + side * self.eye_dx), int(self.eye_y - 0.2 * self.ew)),
                        (int(1.3 * self.ew), int(0.8 * self.ew)), 0, 0, 360, 0.9, -1)
        shade = cv2.GaussianBlur(shade, (0, 0), 0.04 * w)[..., None]
        skin = np.asarray(sp.skin, np.float32) * light * shade * _texture(rng, s, (0.8,), 0.025)[..., None]
        hair = (np.asarray(sp.hair, np.float32) * (1.15 - 0.25 * (v + 1)[..., None].clip(0, 2) / 2)
                * _texture(rng, s, (1.0, 6.0), 0.1)[..., None])                # streaks along the hair
        hair += 18 * np.clip(1 - ((u + 0.3) ** 2 + (v + 0.9) ** 2) * 4, 0, 1)[..., None]   # sheen

        color = np.zeros((s, s, 3), np.float32)
        alpha = np.zeros((s, s), np.float32)

        def paint(xy, src):
            m = _mask(s, xy)[..., None]
            color[:] = color * (1 - m) + src * m
            alpha[:] = np.maximum(alpha, m[..., 0])

        if sp.long_hair:
            paint(np.concatenate([_ellipse(cx, cy - 0.05 * h, 1.22 * w, 1.05 * h)[24:],
                                  [[cx + 1.3 * w, s + 5], [cx - 1.3 * w, s + 5]]]), hair)
        paint([[cx - 0.42 * w, cy + 0.5 * h], [cx + 0.42 * w, cy + 0.5 * h],
               [cx + 0.5 * w, s + 5], [cx - 0.5 * w, s + 5]], skin * 0.78)                 # neck
        for side in (-1, 1):
            paint(_ellipse(cx + side * 0.97 * w, self.eye_y + 0.2 * h, 0.15 * w, 0.26 * h), skin * 0.9)
        paint(_ellipse(cx, cy - 0.18 * h, 1.07 * w, 0.9 * h), hair)                       # hair volume
        face = self.outline()
        paint(face, skin)
        # hair over the forehead, down to a curved hairline with a side parting
        xs = np.linspace(cx - 1.1 * w, cx + 1.1 * w, 40)
        part = rng.choice([-0.4, 0.4])
        edge = cy - sp.hairline * h + 0.35 * h * ((xs - cx) / w) ** 2 + 0.12 * h * np.tanh(3 * ((xs - cx) / w - part))
        hairline_poly = np.concatenate([np.stack([xs, edge], 1), [[cx + 1.1 * w, cy - 1.2 * h],
                                                                  [cx - 1.1 * w, cy - 1.2 * h]]])
        m = _mask(s, hairline_poly) * _mask(s, _ellipse(cx, cy - 0.02 * h, 1.03 * w, 1.02 * h))
        color[:] = color * (1 - m[..., None]) + hair * m[..., None]

        head = np.dstack([np.clip(color, 0, 255), alpha * 255]).astype(np.uint8)
        nostril = tuple(c * 0.45 for c in sp.skin)
        for side in (-1, 1):
            _fill(head, _ellipse(cx + side * 0.09 * w, self.nose_y + 0.01 * h, 0.045 * w, 0.022 * h), _rgba(nostril))
        _stroke(head, [[cx - 0.16 * w, self.nose_y - 0.02 * h], [cx - 0.1 * w, self.nose_y + 0.03 * h]],
                _rgba(tuple(c * 0.7 for c in sp.skin)), self.line)
        return head

    def _draw_scene(self, rng):
        """Backdrop (vertical gradient, a soft window light) and the clothes that hide the neck's base."""
        s, w, h, cx = self.size, self.w, self.h, self.cx
        top, bottom = (np.asarray(c, np.float32) for c in self.sp.backdrop)
        ramp = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
        backdrop = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (s, s, 3)).copy()
        window = np.zeros((s, s), np.float32)
        x0, y0 = rng.uniform(0, 0.6) * s, rng.uniform(0, 0.3) * s
        cv2.rectangle(window, (int(x0), int(y0)), (int(x0 + 0.35 * s), int(y0 + 0.4 * s)), 1.0, -1)
        backdrop += 35 * cv2.GaussianBlur(window, (0, 0), 0.05 * s)[..., None]
        shoulder_y = self.cy + 1.25 * h
        body = np.concatenate([
            [[cx - 2.2 * w, s + 5], [cx - 2.0 * w, shoulder_y + 0.3 * h], [cx - 1.2 * w, shoulder_y]],
            np.stack([cx + np.linspace(-0.55, 0.55, 15) * w,                  # round neckline
                      shoulder_y - 0.05 * h + 0.25 * h * np.cos(np.linspace(-1.3, 1.3, 15))], 1),
            [[cx + 1.2 * w, shoulder_y], [cx + 2.0 * w, shoulder_y + 0.3 * h], [cx + 2.2 * w, s + 5]]])
        alpha = _mask(s, body)
        folds = _texture(rng, s, (6.0,), 0.06)[..., None]
        clothes = np.asarray(self.sp.clothes, np.float32) * folds * (1.05 - 0.3 * np.abs(
            (np.arange(s, dtype=np.float32) - cx) / (2.2 * w)))[None, :, None]
        return np.clip(backdrop, 0, 255).astype(np.uint8), np.clip(clothes, 0, 255).astype(np.uint8), alpha

    def _eye(self, img, side: int, e: Expression, blink: float, gaze) -> None:
        sp, ew, line = self.sp, self.ew, self.line
        ex, ey = self.cx + side * self.eye_dx, self.eye_y
        up = 0.5 * ew * _clip(e.eye_open, 0.4, 1.8) * blink
        low = 0.32 * ew * (1 - 0.55 * _clip(e.lower_lid, 0, 1)) * max(blink, 0.3)
        xs = np.linspace(-1, 1, 17)
        tilt = -0.08 * ew * xs * side                  # outer corner slightly higher
        upper = np.stack([ex + ew * xs, ey + tilt - up * (1 - xs ** 2) * (1 - 0.15 * xs * side)], 1)
        lower = np.stack([ex + ew * xs, ey + tilt + low * (1 - xs ** 2)], 1)
        if up + low > 1.0:
            x0, y0 = int(ex - ew) - 2, int(ey - up - 0.2 * ew) - 2
            x1, y1 = int(ex + ew) + 3, int(ey + low + 0.2 * ew) + 3
            almond = np.concatenate([upper, lower[::-1]]) - (x0, y0)
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            _fill(mask, almond, 255)
            patch = np.empty((y1 - y0, x1 - x0, 4), np.uint8)
            patch[:] = (228, 232, 236, 255)
            ix, iy = ex + gaze[0] * ew - x0, ey + gaze[1] * ew - y0
            _fill(patch, _ellipse(ix, iy, 0.46 * ew, 0.46 * ew), _rgba(sp.iris))
            _fill(patch, _ellipse(ix, iy, 0.2 * ew, 0.2 * ew), (15, 15, 15, 255))
            _fill(patch, _ellipse(ix - 0.15 * ew, iy - 0.15 * ew, 0.08 * ew, 0.08 * ew), (250, 250, 250, 255))
            roi = img[y0:y1, x0:x1]
            m = mask[..., None].astype(np.float32) / 255
            roi[:] = (roi * (1 - m) + patch * m).astype(np.uint8)
        _stroke(img, upper, (25, 22, 22, 255), 2 * line)
        _stroke(img, lower, _rgba(tuple(c * 0.7 for c in sp.skin)), line)
        crease = upper + (0, -0.3 * ew)
        _stroke(img, crease[3:-3], _rgba(tuple(c * 0.78 for c in sp.skin)), line)

    def _brow(self, img, side: int, e: Expression) -> None:
        ew = self.ew
        base = self.eye_y - 1.25 * ew - 0.5 * ew * e.brow_raise
        inner = np.array([self.cx + side * (self.eye_dx - 0.9 * ew + 0.3 * ew * max(e.brow_knit, 0)),
                          base + 0.1 * ew - 0.5 * ew * e.brow_inner + 0.2 * ew * max(e.brow_knit, 0)])
        outer = np.array([self.cx + side * (self.eye_dx + 1.15 * ew), base + 0.25 * ew + 0.1 * ew * e.brow_raise])
        peak = inner + 0.6 * (outer - inner) + (0, -0.3 * ew - 0.15 * ew * max(e.brow_raise, 0))
        k = np.linspace(0, 1, 16)[:, None]
        curve = (1 - k) ** 2 * inner + 2 * k * (1 - k) * peak + k ** 2 * outer       # quadratic Bezier
        normal = np.gradient(curve, axis=0)[:, ::-1] * (1, -1)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        half = (self.sp.brow_width * ew * (1 - 0.65 * k)) / 2                       # tapers outward
        _fill(img, np.concatenate([curve + normal * half, (curve - normal * half)[::-1]]),
              _rgba(tuple(c * 0.75 for c in self.sp.hair)))

    def _mouth(self, img, e: Expression, opening: float, width: float) -> None:
        sp = self.sp
        mw = self.mw * _clip(e.mouth_width, 0.6, 1.4) * (1 + 0.6 * (width - 1) * opening)
        gap = 0.6 * self.mw * _clip(e.jaw + (1 - e.jaw) * opening, 0, 1)
        s = np.linspace(-1, 1, 25)
        body = (1 - s ** 2) ** 0.7
        mid = self.mouth_y - 0.35 * self.mw * e.smile * s ** 2              # corners up for a smile
        in_up, in_low = mid - 0.3 * gap * body, mid + 0.7 * gap * body      # the jaw drops the lower lip
        out_up = in_up - 0.16 * self.mw * np.sqrt(1 - s ** 2) * (1 - 0.3 * np.exp(-(s / 0.15) ** 2))
        out_low = in_low + 0.22 * self.mw * np.sqrt(1 - s ** 2)
        x = self.cx + mw * s
        if e.smile > 0.2:        # nasolabial folds deepen with a smile
            fold = _rgba(tuple(c * (1 - 0.25 * min(e.smile, 1)) for c in sp.skin))
            for side in (-1, 1):
                _stroke(img, [[self.cx + side * 0.22 * self.w, self.nose_y - 0.02 * self.h],
                              [self.cx + side * (mw + 0.08 * self.w), mid[-1] + 0.04 * self.h]], fold, self.line)
        _fill(img, np.concatenate([np.stack([x, out_up], 1), np.stack([x, out_low], 1)[::-1]]), _rgba(sp.lips))
        if gap > 0.8:
            _fill(img, np.concatenate([np.stack([x, in_up], 1), np.stack([x, in_low], 1)[::-1]]), (35, 25, 70, 255))
            teeth = np.minimum(0.4 * (in_low - in_up), 0.14 * self.mw)[4:-4]
            tx = x[4:-4]
            _fill(img, np.concatenate([np.stack([tx, in_up[4:-4]], 1),
                                       np.stack([tx, in_up[4:-4] + teeth], 1)[::-1]]), (222, 228, 232, 255))
        else:
            _stroke(img, np.stack([x, mid], 1), _rgba(tuple(c * 0.55 for c in sp.lips)), self.line)
        shine = _rgba(tuple(min(c * 1.2, 255) for c in sp.lips))              # light on the lower lip
        _fill(img, _ellipse(self.cx, (in_low[12] + out_low[12]) / 2 + 0.02 * self.mw, 0.3 * mw, 0.05 * self.mw), shine)

    def render(self, e: Expression, opening: float, width: float, blink: float, gaze, pose, light) -> np.ndarray:
        """One BGR uint8 frame: features drawn on the head, the head moved by `pose` (roll deg, dx, dy, scale),
        the camera's exposure and white balance applied by `light`, a (256, 1, 3) lookup table."""
        head = self.head.copy()
        for side in (-1, 1):
            self._eye(head, side, e, blink, gaze)
            self._brow(head, side, e)
        self._mouth(head, e, opening, width)
        roll, dx, dy, scale = pose
        m = cv2.getRotationMatrix2D((self.cx, self.cy + 1.1 * self.h), roll, scale)   # pivot at the neck
        m[:, 2] += (dx, dy)
        head = cv2.warpAffine(head, m, (self.size, self.size), flags=cv2.INTER_LINEAR)
        a = head[..., 3].astype(np.float32) * (1 / 255)
        frame = cv2.blendLinear(cv2.cvtColor(head, cv2.COLOR_BGRA2BGR), self.backdrop, a, 1 - a)
        frame = cv2.blendLinear(self.clothes, frame, self.clothes_alpha, 1 - self.clothes_alpha)
        return cv2.LUT(frame, light)


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


# ---------------------------------------------------------------- clips

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


def _quiet_worker() -> None:
    cv2.setNumThreads(1)   # one clip per process already fills the cores


def generate(out_dir: Path, seed: int = 0, speakers: int = 6, emotions=DEFAULT_EMOTIONS, takes: int = 4,
             duration: float = 2.5, fps: int = 25, size: int = 256, sample_rate: int = 16000,
             workers: int | None = None) -> Path:
    """Write the synthetic corpus into `out_dir` (created; stale demo clips not in this request are removed)."""
    unknown = [e for e in emotions if e not in PROSODY]
    if unknown:
        raise BadParams(f"demo has no profile for emotions {unknown}; choose from {sorted(PROSODY)}")
    if speakers < 1 or takes < 1 or duration < 0.5 or fps < 1 or fps != int(fps) or size < 64 or sample_rate < 8000:
        raise BadParams("need speakers >= 1, takes >= 1, duration >= 0.5 s, a whole fps >= 1, size >= 64, "
                         "sample_rate >= 8000")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [ClipJob(out_dir / clip_name(spk, emo, take, speakers), seed, spk, emo, take, float(duration),
                    int(fps), int(size), int(sample_rate))
            for spk in range(1, speakers + 1) for emo in emotions for take in range(1, takes + 1)]
    wanted = {job.path.name for job in jobs}
    for old in out_dir.glob("*.mp4"):
        if NAME_RE.fullmatch(old.stem) and old.name not in wanted:
            old.unlink()
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers == 1:
        for job in jobs:
            render_clip(job)
    else:   # spawn: safe even when the caller already runs threads (torch, ray)
        with ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), initializer=_quiet_worker) as pool:
            list(pool.map(render_clip, jobs, chunksize=2))
    (out_dir / "README.txt").write_text(readme(seed, speakers, emotions, takes, duration, fps, size, sample_rate))
    return out_dir


def readme(seed, speakers, emotions, takes, duration, fps, size, sample_rate) -> str:
    return (
        "aver demo corpus: SYNTHETIC data, generated by pipelines/demo.py (generator version "
        f"{VERSION}). No real person is shown or heard.\n\n"
        f"seed={seed} speakers={speakers} emotions={','.join(emotions)} takes={takes}\n"
        f"duration={duration}s video={size}x{size}@{fps}fps {video_codec()} audio={sample_rate}Hz mono AAC\n"
        "files: <speaker>_<emotion>_t<take>.mp4, e.g. spk01_happy_t1.mp4\n\n"
        "Each clip is a drawn face saying vowel-like syllables. The voice carries arousal (pitch, loudness,\n"
        "tempo) with only weak cues inside an arousal group; the face carries the expression (smile, brows,\n"
        "eyes) but draws sad and angry nearly alike. Every take performs its emotion at a random intensity,\n"
        "so neither channel alone is perfect and fusing both helps. See docs/demo.md.\n")
