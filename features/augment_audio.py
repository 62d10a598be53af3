"""Audio variants `<noise>_snr<dB>`: the clean signal plus noise scaled to an exact signal-to-noise ratio.

Noises: `white` (Gaussian), `pink` (1/f power spectrum), `babble` (the sum of the first three usable clips of
`item["peers"]`, each brought to the same power so no single talker dominates), `noise` (a file from
`item["augment"]["noise_dir"]`).
Every random choice comes from an rng seeded by (augment seed, clip_id, variant) through sha256, so a variant is
the same on every run, worker and engine. Variant names that are not audio variants (`blur`, ...) return the
clean signal: the audio features of a video variant are the clean ones.
"""
from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

import numpy as np

from pipelines.extractor import ClipError

NOISES = ("white", "pink", "babble", "noise")
VARIANT_RE = re.compile(r"^(?P<noise>[a-z]+)_snr(?P<snr>-?\d+(?:\.\d+)?)$")
MIN_BABBLE_TALKERS = 3
NOISE_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus", ".webm", ".mp4", ".mkv"}


def parse_variant(variant: str) -> tuple[str, float] | None:
    """(noise, snr_db) for an audio variant name, None for `clean` and non-audio variants."""
    m = VARIANT_RE.match(variant or "")
    if not m:
        return None
    if m["noise"] not in NOISES:
        raise ClipError("unknown_variant", f"{variant!r}: audio noise must be one of {', '.join(NOISES)}")
    return m["noise"], float(m["snr"])


def variant_rng(seed: int, clip_id: str, variant: str) -> np.random.Generator:
    """Stable across processes and Python versions (unlike hash())."""
    digest = hashlib.sha256(f"{seed}\x1f{clip_id}\x1f{variant}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """signal + noise scaled so that power(signal) / power(scaled noise) = snr_db over the whole clip.

    Not clipped to [-1, 1]: features are computed on floats, and clipping would change the achieved SNR.
    """
    p_noise = power(noise)
    if p_noise == 0.0:
        raise ClipError("silent_noise", "the noise source is all zeros")
    gain = np.sqrt(power(signal) / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (signal.astype(np.float64) + gain * noise).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f power spectrum: white noise shaped by 1/sqrt(f) in the frequency domain (no DC)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    spectrum[1:] /= np.sqrt(f[1:])
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def fit_length(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Loop `x` and cut `n` samples from a random offset."""
    reps = -(-(n + len(x)) // len(x))
    offset = int(rng.integers(len(x)))
    return np.tile(x, reps)[offset:offset + n]


@functools.lru_cache(maxsize=MIN_BABBLE_TALKERS + 1)
def _native(path: str) -> tuple[np.ndarray, int]:
    """A noise source as (mono samples, rate) at its own rate, after the quality checks every clip passes (finite,
    not silent, not too short): a source with inf samples has infinite power and would turn the mix into NaN.
    Kept for the clip's other feature sets: they mix its babble at their own rates (16 and 32 kHz), and decoding
    each talker once, not once per rate, halves what babble costs (the talkers are random clips of the corpus, so
    they are rarely the clip's own or the previous clip's)."""
    from features.audio_io import check_quality, decode_native, to_mono   # audio_io imports this module
    decoded = decode_native(path)
    check_quality(decoded, Path(path).name)
    return to_mono(decoded), decoded.rate


@functools.lru_cache(maxsize=8)
def _decoded(path: str, sr: int) -> np.ndarray:
    """A noise source at `sr`. Noise files are reused across many clips: keep the last few (bounded: they can be
    long)."""
    from features.audio_io import resample
    samples, rate = _native(path)
    x = resample(samples, rate, sr)
    x.flags.writeable = False
    return x


def babble(peers: list[str], n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """The first MIN_BABBLE_TALKERS usable clips of `peers` (candidates in the planner's order), each brought to
    unit power; an unusable candidate is skipped, so the same files always give the same talkers."""
    talkers, skipped = [], []
    for path in peers:
        if len(talkers) == MIN_BABBLE_TALKERS:
            break
        try:
            x = _decoded(str(path), sr)
        except ClipError as e:      # a peer without usable audio is simply not a talker
            skipped.append(f"{Path(path).name}: {e.reason}")
            continue
        talkers.append(fit_length(x, n, rng) / np.sqrt(power(x)))
    if len(talkers) < MIN_BABBLE_TALKERS:
        raise ClipError("no_noise_source", f"babble needs {MIN_BABBLE_TALKERS} usable peer clips, found "
                                           f"{len(talkers)} among {len(peers)} candidates"
                                           + (f" (skipped {'; '.join(skipped)})" if skipped else ""))
    return np.sum(talkers, axis=0)


@functools.lru_cache(maxsize=8)
def noise_files(noise_dir: str) -> tuple[str, ...]:
    root = Path(noise_dir)
    return tuple(sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in NOISE_EXTENSIONS))


def folder_noise(noise_dir: str | None, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    files = noise_files(str(noise_dir)) if noise_dir else ()
    if not files:
        raise ClipError("no_noise_source", f"augment.noise_dir {noise_dir!r} holds no audio files")
    path = files[int(rng.integers(len(files)))]
    try:
        x = _decoded(path, sr)
    except ClipError as e:
        raise ClipError("no_noise_source", f"noise file {path}: {e.reason} ({e.detail})") from e
    return fit_length(x, n, rng)


def make_noise(kind: str, n: int, sr: int, item: dict, rng: np.random.Generator) -> np.ndarray:
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "pink":
        return pink_noise(n, rng)
    if kind == "babble":
        return babble(item.get("peers") or [], n, sr, rng)
    return folder_noise((item.get("augment") or {}).get("noise_dir"), n, sr, rng)


def apply_variant(signal: np.ndarray, sr: int, item: dict) -> np.ndarray:
    """The item's audio variant of a clean float32 mono signal (the signal itself for clean/video variants)."""
    parsed = parse_variant(item.get("variant", "clean"))
    if parsed is None:
        return signal
    kind, snr_db = parsed
    rng = variant_rng((item.get("augment") or {}).get("seed", 0), item["clip_id"], item["variant"])
    return mix_at_snr(signal, make_noise(kind, len(signal), sr, item, rng), snr_db)
