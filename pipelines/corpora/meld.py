"""MELD (Poria et al. 2019): utterances from the TV series Friends, multi-party dialogs, audio-visual.

Layout of MELD.Raw (after unpacking train.tar.gz, dev.tar.gz, test.tar.gz):
    train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv
    train/train_splits/dia0_utt0.mp4                 (the `train/` level may be absent)
    dev/dev_splits_complete/dia0_utt0.mp4
    test/output_repeated_splits_test/dia0_utt0.mp4
CSV columns: Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, Season, Episode,
StartTime, EndTime. The clip of a row is `dia{Dialogue_ID}_utt{Utterance_ID}.mp4` in its split's folder; the
split comes from which CSV labels it (dialog ids restart in each split). Emotions: neutral joy sadness anger
surprise fear disgust; sentiment positive/negative/neutral. StartTime/EndTime locate the utterance in the
episode (kept in `extra`), not in the clip.

Only media files present are scanned: a CSV row without its clip file is not a ledger row (partial copies
would otherwise flood the ledger); a clip file without a CSV row is ledgered `no_label`.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from pipelines.corpora._common import make_clip, media_files, read_csv_rows, rel, skip
from pipelines.manifest import Clip

log = logging.getLogger(__name__)
SPLIT_FOLDERS = {"train_splits": "train", "dev_splits_complete": "dev", "output_repeated_splits_test": "test"}
CLIP = re.compile(r"dia(?P<dialog>\d+)_utt(?P<utterance>\d+)")
LABELS = {"neutral": "neutral", "joy": "happy", "sadness": "sad", "anger": "angry", "surprise": "surprised",
          "fear": "fearful", "disgust": "disgust"}


def _int(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() else None


def read_labels(root: Path) -> dict[tuple[str, int, int], dict]:
    """(split, dialog, utterance) -> CSV row, from `<split>_sent_emo.csv` at the root or one level down."""
    out = {}
    for split in ("train", "dev", "test"):
        for csv_path in sorted(root.glob(f"{split}_sent_emo.csv")) + sorted(root.glob(f"*/{split}_sent_emo.csv")):
            for row in read_csv_rows(csv_path):
                dialog, utterance = _int(row.get("Dialogue_ID")), _int(row.get("Utterance_ID"))
                if dialog is not None and utterance is not None:
                    out[(split, dialog, utterance)] = row
    return out


def scan(root: Path, corpus: str = "meld", exclude=()) -> Iterator[Clip | dict]:
    labels = read_labels(root)
    matched = 0
    for path in media_files(root, {".mp4"}, exclude):
        path_rel = rel(path, root)
        split = next((SPLIT_FOLDERS[f] for f in path_rel.split("/")[:-1] if f in SPLIT_FOLDERS), None)
        m = CLIP.fullmatch(path.stem)
        if split is None or m is None:
            yield skip(corpus, path_rel, "bad_name", f"expected <{'|'.join(SPLIT_FOLDERS)}>/dia<D>_utt<U>.mp4")
            continue
        uid = f"{split}/{path.stem}"
        row = labels.get((split, int(m["dialog"]), int(m["utterance"])))
        if row is None:
            yield skip(corpus, path_rel, "no_label", f"no row for dialog {m['dialog']} utterance {m['utterance']} "
                       f"in {split}_sent_emo.csv", uid)
            continue
        matched += 1
        emotion = (row.get("Emotion") or "").strip()
        if not emotion:
            yield skip(corpus, path_rel, "no_label", f"the {split}_sent_emo.csv row has an empty Emotion", uid)
            continue
        extra = {"utterance": row.get("Utterance"), "sentiment": row.get("Sentiment"),
                 "season": _int(row.get("Season")), "episode": _int(row.get("Episode")),
                 "episode_start": row.get("StartTime"), "episode_end": row.get("EndTime")}
        speaker = (row.get("Speaker") or "").strip() or None
        yield make_clip(corpus, uid, path_rel, speaker, emotion, LABELS.get(emotion), split=split, extra=extra)
    if len(labels) > matched:
        log.info("%s: %d labelled utterances have no clip file under %s (only files present are scanned)",
                 corpus, len(labels) - matched, root)
