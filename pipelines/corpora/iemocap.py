"""IEMOCAP (Busso et al. 2008): 5 sessions of dyadic improvised and scripted dialogs, 10 actors, audio-visual.

Layout of IEMOCAP_full_release:
    Session1/dialog/wav/Ses01F_impro01.wav                 the whole dialog recording
    Session1/dialog/avi/DivX/Ses01F_impro01.avi            the same dialog on video (`media: avi`)
    Session1/dialog/EmoEvaluation/Ses01F_impro01.txt       utterance labels (subfolders Categorical/, Attribute/ ...
                                                           hold the per-rater files and are not needed)
    Session1/dialog/transcriptions/Ses01F_impro01.txt      optional: utterance text
EmoEvaluation format, one block per utterance after a `%` header line:
    [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]
    C-E2:<TAB>Neutral;<TAB>()             (per-rater lines, ignored)
i.e. start - end in seconds inside the dialog recording, utterance id, consensus label (neu fru ang sad hap exc
sur fea dis oth, xxx = no agreement) and the mean [valence, activation, dominance] on a 1-5 scale.

One clip per utterance: `path` is the dialog recording and `start`/`end` the segment. The utterance id's last
field gives the speaker's gender (`..._F000` is the woman, whatever the `Ses01F` prefix says: that letter is
who wore the motion-capture markers), so speaker = session + gender, e.g. `Ses01_F`. Sessions 1-5 are the
usual cross-validation folds (`extra["session"]`); IEMOCAP has no official split.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pipelines.corpora._common import excluded, make_clip, rel, skip
from pipelines.errors import BadParams
from pipelines.manifest import Clip

UTTERANCE = re.compile(r"\[(?P<start>\d+(?:\.\d+)?)\s*-\s*(?P<end>\d+(?:\.\d+)?)\]\s+(?P<uid>Ses(?P<session>\d\d)\w+)"
                       r"\s+(?P<label>\w+)\s+\[(?P<v>[\d.]+),\s*(?P<a>[\d.]+),\s*(?P<d>[\d.]+)\]")
TRANSCRIPT = re.compile(r"(?P<uid>Ses\d\d\w+) \[[\d.]+-[\d.]+\]:\s*(?P<text>.*)")
MEDIA = {"wav": "dialog/wav", "avi": "dialog/avi/DivX"}


def parse_evaluation(text: str) -> Iterator[re.Match]:
    """The utterance header lines of an EmoEvaluation file (rater lines and the `%` header are skipped)."""
    for line in text.splitlines():
        if m := UTTERANCE.match(line.strip()):
            yield m


def _transcripts(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    found = (TRANSCRIPT.match(line.strip()) for line in path.read_text(errors="replace").splitlines())
    return {m["uid"]: m["text"] for m in found if m}


def _sessions(root: Path) -> list[Path]:
    """Session folders at the root, or one level down (the IEMOCAP_full_release folder)."""
    found = sorted(p for p in root.glob("Session*") if p.is_dir())
    return found or sorted(p for p in root.glob("*/Session*") if p.is_dir())


def scan(root: Path, corpus: str = "iemocap", exclude=(), media: str = "wav") -> Iterator[Clip | dict]:
    if media not in MEDIA:
        raise BadParams(f"media: {media!r} is not one of {sorted(MEDIA)}")
    for session in _sessions(root):
        media_dir, labels_dir = session / MEDIA[media], session / "dialog" / "EmoEvaluation"
        recordings = {p.stem: p for p in sorted(media_dir.glob(f"*.{media}"))
                      if not p.name.startswith(".") and not excluded(p, root, exclude)}
        evaluations = {p.stem: p for p in sorted(labels_dir.glob("*.txt"))
                       if not p.name.startswith(".") and not excluded(p, root, exclude)}
        for dialog, recording in recordings.items():
            if dialog not in evaluations:
                yield skip(corpus, rel(recording, root), "no_label", f"no EmoEvaluation/{dialog}.txt for this dialog")
        for dialog, evaluation in evaluations.items():
            if dialog not in recordings:
                yield skip(corpus, rel(evaluation, root), "missing_media",
                           f"labels for dialog {dialog} but no {MEDIA[media]}/{dialog}.{media}")
                continue
            yield from _utterances(corpus, root, recordings[dialog], evaluation,
                                   _transcripts(session / "dialog" / "transcriptions" / f"{dialog}.txt"))


def _utterances(corpus: str, root: Path, recording: Path, evaluation: Path,
                texts: dict[str, str]) -> Iterator[Clip | dict]:
    try:
        labels = evaluation.read_text(errors="replace")
    except OSError as e:
        yield skip(corpus, rel(evaluation, root), "unreadable", f"cannot read the label file: {e}")
        return
    utterances = list(parse_evaluation(labels))
    if not utterances:
        yield skip(corpus, rel(recording, root), "no_label", f"{evaluation.name} has no utterance line "
                   "([start - end] id label [V, A, D])")
    for m in utterances:
        uid, start, end = m["uid"], float(m["start"]), float(m["end"])
        if end <= start:
            yield skip(corpus, rel(recording, root), "bad_segment", f"{uid}: end {end} <= start {start}", uid)
            continue
        gender = uid.rsplit("_", 1)[-1][:1]
        extra = {"session": int(m["session"]), "dialog": recording.stem, "improvised": "_impro" in uid,
                 "gender": {"F": "female", "M": "male"}.get(gender)}
        if uid in texts:
            extra["text"] = texts[uid]
        yield make_clip(corpus, uid, rel(recording, root), f"Ses{m['session']}_{gender}", m["label"], m["label"],
                        valence=float(m["v"]), arousal=float(m["a"]), dominance=float(m["d"]),
                        start=start, end=end, extra=extra)
