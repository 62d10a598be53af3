"""RAVDESS (Livingstone & Russo 2018): 24 actors, acted speech and song, audio-visual.

Layout of the official zips (any nesting is accepted; files are found by name):
    Audio_Speech_Actors_01-24/Actor_01/03-01-05-01-02-01-01.wav     audio-only speech
    Audio_Song_Actors_01-24/Actor_01/03-02-...wav                    audio-only song
    Video_Speech_Actor_01/Actor_01/01-01-...mp4 and 02-01-...mp4     full AV and video-only speech
    Video_Song_Actor_01/Actor_01/01-02-...mp4 and 02-02-...mp4       full AV and video-only song
File name: 7 two-digit fields modality-channel-emotion-intensity-statement-repetition-actor, e.g.
`01-01-07-02-02-01-01.mp4`: modality 01 full-AV / 02 video-only / 03 audio-only; channel 01 speech / 02 song;
emotion 01 neutral 02 calm 03 happy 04 sad 05 angry 06 fearful 07 disgust 08 surprised; intensity 01 normal /
02 strong; statement 01 "Kids are talking by the door" / 02 "Dogs are sitting by the door"; repetition 01/02;
actor 01-24 (odd = male). A trailing `_<tag>` added by re-distributions (e.g. `..-01_1.mp4`) is tolerated and
ignored: the clip id is the 7-part code, so two copies of one code become a duplicate in the ledger.

The three modality files of one utterance are distinct clips (the code says which); `modalities` restricts them.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pipelines.corpora._common import choices, make_clip, media_files, rel, skip
from pipelines.manifest import Clip

NAME = re.compile(r"(?P<code>(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d))(?:_[A-Za-z0-9]+)?")
MODALITY = {"01": "av", "02": "video", "03": "audio"}
CHANNEL = {"01": "speech", "02": "song"}
LABELS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
          "07": "disgust", "08": "surprised"}
INTENSITY = {"01": "normal", "02": "strong"}
STATEMENT = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
REPETITION = {"01": 1, "02": 2}


def _bad_field(fields: tuple[str, ...]) -> str | None:
    """Which of the 7 fields holds a code RAVDESS does not define (None if all are valid)."""
    tables = [("modality", MODALITY), ("channel", CHANNEL), ("emotion", LABELS), ("intensity", INTENSITY),
              ("statement", STATEMENT), ("repetition", REPETITION)]
    for (name, table), value in zip(tables, fields):
        if value not in table:
            return f"{name} {value}"
    return None if 1 <= int(fields[6]) <= 24 else f"actor {fields[6]}"


def scan(root: Path, corpus: str = "ravdess", exclude=(), modalities=("av", "video", "audio"),
         channels=("speech", "song")) -> Iterator[Clip | dict]:
    modalities = choices("modalities", modalities, MODALITY.values())
    channels = choices("channels", channels, CHANNEL.values())
    for path in media_files(root, {".mp4", ".wav"}, exclude):
        path_rel = rel(path, root)
        m = NAME.fullmatch(path.stem)
        if not m:
            yield skip(corpus, path_rel, "bad_name", f"{path.name} is not a RAVDESS 7-part code "
                       "(modality-channel-emotion-intensity-statement-repetition-actor)")
            continue
        fields = m.groups()[1:]
        if bad := _bad_field(fields):
            yield skip(corpus, path_rel, "bad_name", f"{path.name}: {bad} is not a RAVDESS code", m["code"])
            continue
        modality, channel, emotion, intensity, statement, repetition, actor = fields
        if MODALITY[modality] not in modalities or CHANNEL[channel] not in channels:
            continue   # left out by the corpus entry's options, not a problem of the file
        extra = {"modality": MODALITY[modality], "vocal_channel": CHANNEL[channel],
                 "intensity": INTENSITY[intensity], "statement": STATEMENT[statement],
                 "repetition": REPETITION[repetition], "gender": "male" if int(actor) % 2 else "female"}
        yield make_clip(corpus, m["code"], path_rel, actor, emotion, LABELS[emotion], extra=extra)
