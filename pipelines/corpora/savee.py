"""SAVEE (Surrey Audio-Visual Expressed Emotion, Haq & Jackson 2009): 4 male British speakers, 480 utterances.

Layout of the official release:
    AudioData/DC/a01.wav            speaker folders DC JE JK KL, 44.1 kHz mono
    AudioVisualClip/DC/a01.avi      the same utterances as audio-visual clips
    VideoData/DC/a01/*.jpg          frame images (not used: no media file)
File name `<emotion code><nn>`: a anger, d disgust, f fear, h happiness, n neutral, sa sadness, su surprise;
nn = 01-15 (neutral 01-30). The flat re-distribution `<speaker>_<code><nn>.wav` (e.g. Kaggle's `ALL/DC_a01.wav`)
is accepted too. One clip per utterance: the first extension in `prefer` wins, the other file is listed in
`extra["alternatives"]`.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pipelines.corpora._common import make_clip, media_files, one_per_utterance, rel, skip, suffix_rank
from pipelines.manifest import Clip

SPEAKERS = ("DC", "JE", "JK", "KL")
NAME = re.compile(r"(?:(?P<speaker>DC|JE|JK|KL)_)?(?P<code>a|d|f|h|n|sa|su)(?P<number>\d{1,2})")
LABELS = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprised"}


def scan(root: Path, corpus: str = "savee", exclude=(), prefer=("avi", "wav")) -> Iterator[Clip | dict]:
    named = []
    for path in media_files(root, {".wav", ".avi"}, exclude):
        m = NAME.fullmatch(path.stem)
        speaker = m and (m["speaker"] or (path.parent.name if path.parent.name in SPEAKERS else None))
        if not speaker:
            yield skip(corpus, rel(path, root), "bad_name", f"{path.name}: expected <speaker folder>/<code><nn> or "
                       "<speaker>_<code><nn> with speaker DC/JE/JK/KL and code a d f h n sa su")
            continue
        named.append(((speaker, m["code"], int(m["number"])), path))
    for (speaker, code, number), path, others in one_per_utterance(named, suffix_rank(prefer)):
        extra = {"number": number}
        if others:
            extra["alternatives"] = [rel(p, root) for p in others]
        yield make_clip(corpus, f"{speaker}_{code}{number:02d}", rel(path, root), speaker, code, LABELS[code],
                        extra=extra)
