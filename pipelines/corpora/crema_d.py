"""CREMA-D (Cao et al. 2014): 91 actors, 12 sentences, 6 emotions, audio-visual.

Layout of the official repository (CheyneyComputerScience/CREMA-D):
    AudioWAV/1001_DFA_ANG_XX.wav    16 kHz mono
    AudioMP3/1001_DFA_ANG_XX.mp3
    VideoFlash/1001_DFA_ANG_XX.flv  480x360 VP6 + MP3 audio
    VideoDemographics.csv           ActorID,Age,Sex,Race,Ethnicity
File name `{actor}_{sentence}_{emotion}_{level}`: actor 1001-1091; sentence IEO TIE IOM IWW TAI MTI IWL ITH DFA ITS
TSI WSI; emotion ANG DIS FEA HAP NEU SAD; level LO MD HI, or XX (unspecified).

The same utterance ships as several files (flv, wav, mp3, or mp4 conversions): one clip per utterance, taking
the first extension in `prefer`; the other files are listed in `extra["alternatives"]`. Files are found by name
anywhere under the root, so partial copies (only AudioWAV, or a flat folder) work too.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pipelines.corpora._common import (make_clip, media_files, one_per_utterance, read_csv_rows, rel, skip,
                                       suffix_rank)
from pipelines.manifest import Clip

NAME = re.compile(r"(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})")
LABELS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened", "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about", "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold", "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment", "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before", "TSI": "The surface is slick", "WSI": "We'll stop in a couple of minutes",
}


def _demographics(path: Path) -> dict[str, dict]:
    """ActorID -> {age, sex, race, ethnicity} from VideoDemographics.csv (absent file: no demographics)."""
    if not path.is_file():
        return {}
    out = {}
    for row in read_csv_rows(path):
        actor = (row.get("ActorID") or "").strip()
        if actor:
            age = (row.get("Age") or "").strip()
            out[actor] = {"age": int(age) if age.isdigit() else None, "sex": row.get("Sex"),
                          "race": row.get("Race"), "ethnicity": row.get("Ethnicity")}
    return out


def scan(root: Path, corpus: str = "crema_d", exclude=(), prefer=("flv", "mp4", "wav", "mp3"),
         demographics: str = "VideoDemographics.csv") -> Iterator[Clip | dict]:
    people = _demographics(root / demographics)
    named = []
    for path in media_files(root, exclude=exclude):
        if NAME.fullmatch(path.stem):
            named.append(((path.stem,), path))
        else:
            yield skip(corpus, rel(path, root), "bad_name",
                       f"{path.name} is not {{actor}}_{{sentence}}_{{emotion}}_{{level}}, e.g. 1001_DFA_ANG_XX.wav")
    for (stem,), path, others in one_per_utterance(named, suffix_rank(prefer)):
        m = NAME.fullmatch(stem)
        extra = {"sentence": m["sentence"], "text": SENTENCES.get(m["sentence"]),
                 "intensity": LEVELS.get(m["level"], m["level"]), **people.get(m["actor"], {})}
        if others:
            extra["alternatives"] = [rel(p, root) for p in others]
        yield make_clip(corpus, stem, rel(path, root), m["actor"], m["emotion"], LABELS.get(m["emotion"]),
                        extra=extra)
