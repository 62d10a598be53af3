"""eNTERFACE'05 audio-visual emotion database (Martin et al. 2006): 42-44 subjects, 6 emotions, 5 sentences each.

Layout of the original archive:
    subject 1/anger/sentence 1/s1_an_1.avi
    subject 1/happiness/sentence 5/s1_ha_5.avi
    ...
Emotion folders anger, disgust, fear, happiness, sadness, surprise (file codes an di fe ha sa su); AVI with
720x576 25 fps video and 48 kHz audio. The folders are the reliable labels: several file names in the
original release are wrong (subject 11's files are named s12_*, some are `s_3_*`, one is `s16_su_3avi.avi`),
so subject, emotion and sentence come from the folder names, and from the file name only where a folder is
missing (e.g. a subject folder with the clips directly inside the emotion folder).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pipelines.corpora._common import make_clip, media_files, rel, skip
from pipelines.manifest import Clip

LABELS = {"anger": "angry", "disgust": "disgust", "fear": "fearful", "happiness": "happy", "sadness": "sad",
          "surprise": "surprised"}
CODES = {"an": "anger", "di": "disgust", "fe": "fear", "ha": "happiness", "sa": "sadness", "su": "surprise"}
SUBJECT = re.compile(r"subject\s*(\d+)", re.I)
SENTENCE = re.compile(r"sentence\s*(\d+)", re.I)
FILE = re.compile(r"s_?(?P<subject>\d+)_(?P<code>an|di|fe|ha|sa|su)_(?P<sentence>\d)", re.I)


def _parse(parts: list[str], stem: str) -> tuple[str, str, str] | None:
    """(subject, emotion folder name, sentence) from the folders, falling back to the file name."""
    subject = next((m[1] for p in parts if (m := SUBJECT.fullmatch(p))), None)
    emotion = next((p.lower() for p in parts if p.lower() in LABELS), None)
    sentence = next((m[1] for p in parts if (m := SENTENCE.fullmatch(p))), None)
    f = FILE.match(stem)
    subject = subject or (f and f["subject"])
    emotion = emotion or (f and CODES[f["code"].lower()])
    sentence = sentence or (f and f["sentence"])
    return (str(int(subject)), emotion, str(int(sentence))) if subject and emotion and sentence else None


def scan(root: Path, corpus: str = "enterface05", exclude=()) -> Iterator[Clip | dict]:
    for path in media_files(root, {".avi"}, exclude):
        path_rel = rel(path, root)
        parsed = _parse(path_rel.split("/")[:-1], path.stem)
        if parsed is None:
            yield skip(corpus, path_rel, "bad_name", "neither the folders (subject N/<emotion>/sentence N) nor the "
                       "file name (sN_<an|di|fe|ha|sa|su>_N) give subject, emotion and sentence")
            continue
        subject, emotion, sentence = parsed
        code = next(c for c, name in CODES.items() if name == emotion)
        yield make_clip(corpus, f"s{subject}_{code}_{sentence}", path_rel, f"s{subject}", emotion, LABELS[emotion],
                        extra={"sentence": int(sentence), "file_name": path.name})
