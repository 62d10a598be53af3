"""AFEW (Acted Facial Expressions in the Wild, Dhall et al.; EmotiW challenge): movie excerpts, 7 emotions.

Layout of the challenge archives (AFEW 4.0-7.0):
    Train_AFEW/Angry/000046280.avi       split folder / emotion folder / clip
    Val_AFEW/Happy/000123400.avi
    Test_AFEW/000456789.avi              unlabelled (challenge test set)
Older copies use `Train/`, `Val/`, `Test/`. Emotion folders Angry Disgust Fear Happy Neutral Sad Surprise.
Feature folders shipped next to the clips (AlignedFaces_LBPTOP_Points, ...) hold no media and are ignored.

AFEW has no speaker ids (actors recur across movies unannotated), so each clip is its own speaker
(`speaker = <split>/<clip>`, noted in `extra["speaker_note"]`): speaker-independent splits cannot be made;
use the official split (`split` = train / dev (AFEW's Val) / test). Unlabelled test clips go to the ledger as
`no_label`.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pipelines.corpora._common import VIDEO_SUFFIXES, make_clip, media_files, rel, skip
from pipelines.manifest import Clip

LABELS = {"angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy", "neutral": "neutral",
          "sad": "sad", "surprise": "surprised"}
SPLIT = re.compile(r"(train|val|test)(_afew)?", re.I)
SPLIT_NAMES = {"train": "train", "val": "dev", "test": "test"}   # aver's split names are train/dev/test
SPEAKER_NOTE = "AFEW has no speaker ids; the clip is its own speaker"


def scan(root: Path, corpus: str = "afew", exclude=()) -> Iterator[Clip | dict]:
    for path in media_files(root, VIDEO_SUFFIXES, exclude):
        path_rel = rel(path, root)
        folders = path_rel.split("/")[:-1]
        split = next((SPLIT_NAMES[m[1].lower()] for f in folders if (m := SPLIT.fullmatch(f))), None)
        uid = f"{split}/{path.stem}" if split else path.stem
        label = next((f for f in folders if f.lower() in LABELS), None)
        if label is None:
            yield skip(corpus, path_rel, "no_label", "not inside an emotion folder (Angry, Disgust, Fear, Happy, "
                       "Neutral, Sad, Surprise); AFEW's test clips are unlabelled", uid)
            continue
        yield make_clip(corpus, uid, path_rel, uid, label, LABELS[label.lower()], split=split,
                        extra={"speaker_note": SPEAKER_NOTE})
