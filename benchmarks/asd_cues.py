"""Active speaker cues compared offline: which visual and audio signals tell the heard face from a moving listener.

    python benchmarks/asd_cues.py                         # every cue on the tuning, heldout and mute pairs
    python benchmarks/asd_cues.py --cues motion ridge     # some of them

`benchmarks/live.py --only asd` measures what `aver live` does, a few minutes per pair set. This replays the same
decisions in seconds, to try a cue before building it: each source face of tests/two_faces.py is measured once on
its own (the mouth signal at each frame of a 25-fps clip of it), a two-face clip of benchmarks/live.PAIRS is then
the two faces' signals side by side with the heard face's sound (looped twice, as live.py does), and
pipelines.live.speaker's rule is replayed window by window (1-s windows every 0.5 s, the last HISTORY_S seconds,
its `follow`: hysteresis and continuity). The figures are close to live.py's, not equal (live.py
measures each window's frames as the stream brings them).

Cues (visual signal x audio signal, correlated at the best of the sound delays):
  motion    the shipped one: mouth motion energy (features.mouth_motion) x the syllable envelope;
  shift     motion energy after the best shift of the mouth patch by up to 2 px (head motion taken out);
  vgrad     change of the patch's vertical gradient (lip edges) instead of its grey levels;
  aperture  the inner-lip gap of dlib's 68 points fitted at every frame (`faces` mouth_open at 25 fps);
  mixed     0.3 x aperture + 0.7 x motion (each standardised per face);
  ridge     motion x a learned audio signal: ridge regression from 8 log-mel bands' syllable contrasts at the four
            delays to the motion of the faces with sound, trained per clip on the talkers not in it
            (leave-the-pair-out; the CREMA-D utterances share one actor and sentence).
"""
from __future__ import annotations

import _setup  # noqa: F401  (repository on sys.path, offline models)

import argparse
import json
import sys
import tempfile
from pathlib import Path
from unittest import mock

import cv2
import librosa
import numpy as np

sys.path.insert(0, str(_setup.ROOT / "tests"))
from live import PAIRS  # noqa: E402
from two_faces import SIDE, SILENT_TALKERS, SOURCES, compose  # noqa: E402

from features import active_speaker, mouth_motion  # noqa: E402
from features.audio_io import decode_audio  # noqa: E402
from features.faces import FacesExtractor  # noqa: E402
from pipelines.config import feature_config, load_params  # noqa: E402
from pipelines.live.speaker import HISTORY_S, follow  # noqa: E402

FPS, SR = 25, active_speaker.CLIP_SAMPLE_RATE
CUES = ("motion", "shift", "vgrad", "aperture", "mixed", "ridge")
MEL_BANDS, RIDGE = 8, 100.0


def _shifted_energy(previous, frame, region) -> float:
    """mouth_motion's energy after the best shift of the patch by up to 2 px."""
    a, b = _patches(previous, frame, region)
    if a is None:
        return np.nan
    return float(min(np.abs(a[2 + dy:22 + dy, 2 + dx:30 + dx] - b[2:22, 2:30]).mean()
                     for dx in range(-2, 3) for dy in range(-2, 3)))


def _gradient_energy(previous, frame, region) -> float:
    """Mean absolute change of the patch's vertical gradient."""
    a, b = _patches(previous, frame, region)
    if a is None:
        return np.nan
    return float(np.mean(np.abs(cv2.Sobel(a, cv2.CV_32F, 0, 1) - cv2.Sobel(b, cv2.CV_32F, 0, 1))))


def _patches(previous, frame, region):
    if previous is None or region is None or previous.shape != frame.shape:
        return None, None
    x0, y0, x1, y1 = region
    return (cv2.resize(f[y0:y1, x0:x1].astype(np.float32), mouth_motion.MOUTH_PATCH, interpolation=cv2.INTER_AREA)
            for f in (previous, frame))


def measure(work: Path, faces_params: dict) -> dict:
    """Per source: {cue's visual signal: value per 25-fps frame (NaN where none)} and its sound (None: silent)."""
    extractor = FacesExtractor(**faces_params)
    extractor.setup()
    every_frame = FacesExtractor(**{**faces_params, "fps": float(FPS), "identity": False})
    every_frame.setup()
    signals = {}
    for name, relative in {**SOURCES, **SILENT_TALKERS}.items():
        source = _setup.SHARED / "data" / relative
        twin = compose(work / f"{name}.mp4", [source, source], 0 if name in SOURCES else None)
        out = {}
        for cue, energy in (("motion", mouth_motion._energy), ("shift", _shifted_energy),
                            ("vgrad", _gradient_energy)):
            with mock.patch.object(mouth_motion, "_energy", energy):
                row = extractor.extract(_item(twin))
            tracks = json.loads(row["speaking_tracks"]).values()
            left = next(t for t in tracks if (t["box"][0] + t["box"][2]) / 2 < SIDE)
            out[cue] = _per_frame([t for t, _ in left["motion"]], [v for _, v in left["motion"]])
        row = every_frame.extract(_item(source))
        out["aperture"] = _per_frame(row["frame_times"], row["mouth_open"])
        signals[name] = (out, decode_audio(twin, SR) if name in SOURCES else None)
        print(f"measured {name}", file=sys.stderr, flush=True)
    return signals


def _item(path: Path) -> dict:
    return {"clip_id": path.stem, "corpus": "bench", "path": path.name, "abspath": str(path), "variant": "clean",
            "content_hash": path.stem}


def _per_frame(times, values) -> np.ndarray:
    index = np.round(np.asarray(times, np.float64) * FPS).astype(int)
    out = np.full(index.max() + 1, np.nan)
    out[index] = np.asarray(values, np.float64)
    return out


def _standard(x: np.ndarray) -> np.ndarray:
    return (x - np.nanmean(x)) / np.nanstd(x)


def visual(signals: dict, name: str, cue: str) -> np.ndarray:
    out = signals[name][0]
    if cue == "mixed":
        n = min(len(out["aperture"]), len(out["motion"]))
        return 0.3 * _standard(out["aperture"][:n]) + 0.7 * _standard(out["motion"][:n])
    return out["motion" if cue == "ridge" else cue]


def mel_contrasts(audio: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(len(times), MEL_BANDS x delays): each log-mel band less its mean over DETREND_S, at each sound delay."""
    mel = librosa.feature.melspectrogram(y=np.nan_to_num(audio).astype(np.float32), sr=SR, n_fft=512, hop_length=160,
                                         n_mels=MEL_BANDS, fmin=80, fmax=7600, center=True)
    level = librosa.power_to_db(mel, top_db=60.0)
    width = round(active_speaker.DETREND_S * 100)
    trend = np.stack([np.convolve(np.pad(b, width // 2, mode="edge"), np.ones(width) / width, "valid")[:len(b)]
                      for b in level])
    grid, end = np.arange(level.shape[1]) / 100.0, len(audio) / SR
    columns = []
    for delay in active_speaker.SOUND_DELAYS_S:
        at = times + delay
        block = np.stack([np.interp(at, grid, band) for band in level - trend], 1)
        block[(at < 0.03) | (at > end - 0.03)] = np.nan
        columns.append(block)
    return np.concatenate(columns, 1)


def train_ridge(signals: dict, talkers: list[str]):
    """Weights mapping mel_contrasts to the standardised mouth motion of `talkers` (their own sound)."""
    features, targets = [], []
    for name in talkers:
        motion, audio = visual(signals, name, "motion"), signals[name][1]
        x = mel_contrasts(audio[:round(len(motion) / FPS * SR)], np.arange(len(motion)) / FPS)
        ok = np.isfinite(motion) & np.isfinite(x).all(1)
        features.append(x[ok])
        targets.append(_standard(motion[ok]))
    x, y = np.concatenate(features), np.concatenate(targets)
    mean, std = x.mean(0), x.std(0) + 1e-9
    z = (x - mean) / std
    weights = np.linalg.solve(z.T @ z + RIDGE * len(z) / 100 * np.eye(z.shape[1]), z.T @ y)
    return lambda audio, times: ((mel_contrasts(audio, times) - mean) / std) @ weights


def score(cue: str, times: np.ndarray, signal: np.ndarray, audio: np.ndarray, ridge=None) -> float:
    if cue == "ridge":
        predicted = ridge(audio, times)
        ok = np.isfinite(signal) & np.isfinite(predicted)
        if ok.sum() < active_speaker.MIN_FRAMES or np.median(signal[ok]) < active_speaker.MIN_MOTION:
            return np.nan
        return float(np.corrcoef(signal[ok], predicted[ok])[0, 1])
    envelopes = active_speaker.delayed_envelopes(audio, SR, times)
    if cue in ("motion", "shift", "vgrad"):
        return active_speaker.synchrony(signal, envelopes)
    best = np.nan          # aperture, mixed: no still-mouth floor in grey levels
    for envelope in envelopes:
        ok = np.isfinite(signal) & np.isfinite(envelope)
        if ok.sum() >= active_speaker.MIN_FRAMES and np.std(signal[ok]) > 1e-3:
            best = np.nanmax([best, np.corrcoef(signal[ok], envelope[ok])[0, 1]])
    return float(best)


def replay(signals: dict, cue: str, left: str, right: str, heard: int, repeat: int = 2) -> str:
    """The windows of one two-face clip: + right face, - wrong face, ? none."""
    a, b = visual(signals, left, cue), visual(signals, right, cue)
    n = min(len(a), len(b))
    sound = signals[(left, right)[heard]][1]
    samples = round(n / FPS * SR)
    audio = np.tile(np.pad(sound[:samples], (0, max(0, samples - len(sound)))), repeat)
    faces = (np.tile(a[:n], repeat), np.tile(b[:n], repeat))
    ridge = train_ridge(signals, [s for s in SOURCES if s not in (left, right)]) if cue == "ridge" else None
    times = np.arange(n * repeat) / FPS
    speaker, confirmed, marks, end = None, False, "", 1.0
    while end <= n * repeat / FPS + 1e-9:
        seen = (times < end) & (times >= end - HISTORY_S)
        heard_so_far = audio[:round(end * SR)]
        scores = {k: score(cue, times[seen], face[seen], heard_so_far, ridge) for k, face in enumerate(faces)}
        speaker, confirmed = follow(scores, speaker, confirmed)
        marks += "?" if speaker is None else "+" if speaker == heard else "-"
        end += 0.5
    return marks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cues", nargs="+", choices=CUES, default=list(CUES))
    ap.add_argument("--pairs", nargs="+", choices=("tuning", "heldout", "mute"), default=["tuning", "heldout", "mute"])
    args = ap.parse_args()
    faces_params = dict(feature_config(load_params(_setup.ROOT / "params.yaml"), "faces")["params"])
    with tempfile.TemporaryDirectory() as tmp:
        signals = measure(Path(tmp), faces_params)
    print("| cue | " + " | ".join(args.pairs) + " |")
    print("|---|" + "---|" * len(args.pairs))
    for cue in args.cues:
        cells = []
        for pairs in args.pairs:
            marks = "".join(replay(signals, cue, *pair) for pair in PAIRS[pairs])
            cells.append(f"{100 * marks.count('+') / len(marks):.1f} % of {len(marks)}")
        print(f"| {cue} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
