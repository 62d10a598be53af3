"""MSP-IMPROV (Busso et al. 2017): 6 dyadic sessions, 12 actors (one woman, one man per session), audio-visual.

Layout of the release (the audio and video archives may sit side by side or under Audio/ and Video/):
    Evaluation.txt                                   consensus labels (some copies spell it Evalution.txt)
    session1/S01A/P/MSP-IMPROV-S01A-F01-P-FM01.avi   session / sentence+target emotion / condition / clip
    session1/S01A/P/MSP-IMPROV-S01A-F01-P-FM01.wav
File name `MSP-IMPROV-S<sentence 2><target emotion>-<gender><session 2>-<condition>-<turn>`: target emotion
A H S N (what the scenario was designed to elicit), the speaker is gender + session (F01..F06, M01..M06),
condition R (read) or P/S/T (improvised and natural-interaction recordings), turn e.g. FM01.
Evaluation.txt names the same utterance `UTD-IMPROV-...avi` and gives the perceptual consensus:
    UTD-IMPROV-S01A-F01-P-FM01.avi; A; A:3.000000; V:2.200000; D:2.600000 ; N:3.400000;
followed by per-rater lines (ignored): label A angry, H happy, S sad, N neutral, O other, X no agreement
(kept as emotion_orig "X", mapped to `other` like IEMOCAP's xxx), then activation, valence, dominance and
naturalness on a 1-5 scale.

`label: consensus` (default) uses Evaluation.txt; `label: target` uses the file name's target emotion.
One clip per utterance: the first extension in `prefer` wins, the other file goes to `extra["alternatives"]`.
Labelled utterances whose media is absent are not ledger rows (only files present are scanned).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pipelines.corpora._common import make_clip, media_files, one_per_utterance, rel, skip, suffix_rank
from pipelines.errors import BadParams
from pipelines.manifest import Clip

FILE = re.compile(r"MSP-IMPROV-S(?P<sentence>\d\d)(?P<target>[AHSN])-(?P<gender>[FM])(?P<session>\d\d)-"
                  r"(?P<condition>[A-Z])-(?P<turn>[A-Z]+\d+)", re.I)
EVALUATION = re.compile(r"(?:UTD|MSP)-IMPROV-(?P<key>[A-Z0-9-]+)\.\w+;\s*(?P<label>[A-Z]);\s*A:(?P<a>[\d.]+|NaN);"
                        r"\s*V:(?P<v>[\d.]+|NaN);\s*D:(?P<d>[\d.]+|NaN)\s*;\s*N:(?P<n>[\d.]+|NaN);?", re.I)
LABELS = {"A": "angry", "H": "happy", "S": "sad", "N": "neutral", "O": "other", "X": "other"}
LABEL_FILES = ("Evaluation.txt", "Evalution.txt", "*/Evaluation.txt", "*/Evalution.txt")


def read_evaluation(path: Path) -> dict[str, dict]:
    """utterance key (S01A-F01-P-FM01) -> {label, arousal, valence, dominance, naturalness}."""
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        if m := EVALUATION.match(line.strip()):
            num = {k: None if m[k].lower() == "nan" else float(m[k]) for k in "avdn"}
            out[m["key"].upper()] = {"label": m["label"].upper(), "arousal": num["a"], "valence": num["v"],
                                     "dominance": num["d"], "naturalness": num["n"]}
    return out


def _label_file(root: Path, labels: str | None) -> Path | None:
    if labels:
        return root / labels
    return next((hit for pattern in LABEL_FILES for hit in sorted(root.glob(pattern))), None)


def scan(root: Path, corpus: str = "msp_improv", exclude=(), label: str = "consensus", labels: str | None = None,
         prefer=("avi", "wav")) -> Iterator[Clip | dict]:
    if label not in ("consensus", "target"):
        raise BadParams(f"label: {label!r} is not 'consensus' or 'target'")
    label_file = _label_file(root, labels)
    evaluation = read_evaluation(label_file) if label_file and label_file.is_file() else {}
    named = []
    for path in media_files(root, {".avi", ".wav"}, exclude):
        if m := FILE.fullmatch(path.stem):
            named.append(((path.stem[len("MSP-IMPROV-"):].upper(),), path))
        else:
            yield skip(corpus, rel(path, root), "bad_name", f"{path.name} is not MSP-IMPROV-S<nn><A|H|S|N>-<F|M><nn>-"
                       "<condition>-<turn>")
    for (key,), path, others in one_per_utterance(named, suffix_rank(prefer)):
        m = FILE.fullmatch(path.stem)
        found = evaluation.get(key)
        if label == "consensus" and found is None:
            yield skip(corpus, rel(path, root), "no_label", f"{key} has no line in "
                       f"{label_file.name if label_file else 'Evaluation.txt (not found)'}", key)
            continue
        code = found["label"] if label == "consensus" else m["target"].upper()
        speaker = f"{m['gender'].upper()}{m['session']}"
        extra = {"session": int(m["session"]), "sentence": int(m["sentence"]), "target_emotion": m["target"].upper(),
                 "condition": m["condition"].upper(), "turn": m["turn"].upper(),
                 "gender": "female" if speaker[0] == "F" else "male"}
        if found:
            extra["naturalness"] = found["naturalness"]
        if others:
            extra["alternatives"] = [rel(p, root) for p in others]
        dims = {k: found[k] for k in ("valence", "arousal", "dominance")} if found else {}
        yield make_clip(corpus, key, rel(path, root), speaker, code, LABELS.get(code), extra=extra, **dims)
