"""EmoDB (Berlin Database of Emotional Speech, Burkhardt et al. 2005): acted German speech, audio only.

Layout:
    <root>/wav/03a01Fa.wav            535 files, 10 speakers
    <root>/erkennung.txt              optional: recognition and naturalness ratings per file (latin-1, tab separated)
File name `<speaker 2><text 3><emotion 1><version 1>.wav`: speaker 03 08 09 10 11 12 13 14 15 16, text a01..a05,
b01..b10, emotion as a German letter (W Wut=anger, L Langeweile=boredom, E Ekel=disgust, A Angst=fear,
F Freude=happiness, T Trauer=sadness, N neutral), version a, b, c... for repeated takes.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pipelines.corpora._common import AUDIO_SUFFIXES, make_clip, media_files, rel, skip
from pipelines.manifest import Clip

NAME = re.compile(r"(?P<speaker>\d\d)(?P<text>[ab]\d\d)(?P<emotion>[A-Z])(?P<version>[a-z])")
LABELS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fearful", "F": "happy", "T": "sad", "N": "neutral"}
MALE_SPEAKERS = {"03", "10", "11", "12", "15"}


def _ratings(path: Path) -> dict[str, dict]:
    """file stem -> {recognition_pct, naturalness_pct} from erkennung.txt (decimal commas, padded with NBSP)."""
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text(encoding="latin-1").splitlines()[1:]:
        cells = [c.strip("\xa0 ") for c in line.split("\t")]
        if len(cells) >= 4 and cells[1].endswith(".wav"):
            out[cells[1][:-4]] = {"recognition_pct": float(cells[2].replace(",", ".")),
                                  "naturalness_pct": float(cells[3].replace(",", "."))}
    return out


def scan(root: Path, corpus: str = "emodb", exclude=(), ratings: str = "erkennung.txt") -> Iterator[Clip | dict]:
    extra_by_stem = _ratings(root / ratings)
    for path in media_files(root, AUDIO_SUFFIXES, exclude):
        m = NAME.fullmatch(path.stem)
        if not m:
            yield skip(corpus, rel(path, root), "bad_name", f"{path.name} is not <speaker 2><text 3><emotion 1>"
                       "<version 1>.wav")
            continue
        code = m["emotion"]
        extra = {"text": m["text"], "version": m["version"],
                 "gender": "male" if m["speaker"] in MALE_SPEAKERS else "female",
                 **extra_by_stem.get(path.stem, {})}
        yield make_clip(corpus, path.stem, rel(path, root), m["speaker"], code, LABELS.get(code), extra=extra)
