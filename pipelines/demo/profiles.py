"""What the demo's speakers are and how each emotion shapes their voice and face (the corpus design, docs/demo.md).

The voice carries arousal (pitch, loudness, tempo) with only weak cues inside an arousal group; the face carries
the expression (smile, brows, eyes) but draws sad and angry nearly alike.
"""
from __future__ import annotations

from dataclasses import astuple, dataclass

import numpy as np


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
