"""MEAD (Multi-view Emotional Audio-visual Dataset, Wang et al. 2020): 60 actors, 8 emotions at 3 levels, 7 views.

Layout of the official per-actor archives (video.tar, audio.tar):
    M003/video/front/angry/level_1/001.mp4      views front down top left_30 left_60 right_30 right_60
    M003/audio/angry/level_1/001.m4a
Actors M0xx (male) / W0xx (female); emotions angry contempt disgusted fear happy neutral sad surprised; levels
1-3 (neutral only level 1); clip numbers 001... Flat re-distributions name the same facts in the file name:
    M030_front_angry_level3_001.mp4  (DreamTalk)   M030_sad_3_001.mp4  (EAMM)   M030_angry.m4a  (EVP audio)

One clip per utterance (actor, emotion, level, clip): video of the first view in `views`, else the audio file
when `media` allows it; the other files of the utterance are listed in `extra["alternatives"]`. Views not in
`views` and media kinds not in `media` are left out by choice.

A `labels` CSV (default `labels.csv` at the root, as in the shared MEAD sample) with columns path, identity,
emotion and optional level, clip_id, note labels the files it lists directly: each becomes its own clip with
id = its path (such collections mix crops of one utterance from different sources). An identity like
"M030(visual match, unconfirmed)" gives speaker M030 (the safe choice for speaker-independent splits) and is
kept verbatim in `extra["identity"]`.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pipelines.corpora._common import (AUDIO_SUFFIXES, choices, make_clip, media_files, one_per_utterance,
                                       read_csv_rows, rel, skip)
from pipelines.manifest import Clip

VIEWS = ("front", "down", "top", "left_30", "left_60", "right_30", "right_60")
_VIEW = "|".join(VIEWS)
ACTOR = re.compile(r"[MW]\d{3}")
NESTED = re.compile(rf"(?:.*/)?(?P<actor>[MW]\d{{3}})/(?:video/(?P<view>{_VIEW})|audio)/(?P<emotion>[a-z]+)/"
                    r"level_(?P<level>\d)/(?P<clip>\d+)\.\w+")
FLAT = [re.compile(rf"(?P<actor>[MW]\d{{3}})_(?P<view>{_VIEW})_(?P<emotion>[a-z]+)_level_?(?P<level>\d)_(?P<clip>\d+)"),
        re.compile(r"(?P<actor>[MW]\d{3})_(?P<emotion>[a-z]+)_(?P<level>\d)_(?P<clip>\d+)"),
        re.compile(r"(?P<actor>[MW]\d{3})_(?P<emotion>[a-z]+)")]


def _parse(path_rel: str, stem: str) -> dict | None:
    m = NESTED.fullmatch(path_rel) or next((f for pattern in FLAT if (f := pattern.fullmatch(stem))), None)
    return m and {k: m.groupdict().get(k) for k in ("actor", "view", "emotion", "level", "clip")}


def _speaker(identity: str) -> str:
    found = ACTOR.match(identity.strip())
    return found[0] if found else re.sub(r"\W+", "_", identity.strip()).strip("_")


def _from_labels(corpus: str, path_rel: str, row: dict) -> Clip:
    identity, emotion = (row.get("identity") or "").strip(), (row.get("emotion") or "").strip()
    level, clip = (row.get("level") or "").strip(), (row.get("clip_id") or "").strip()
    extra = {"identity": identity, "level": int(level) if level.isdigit() else None, "clip": clip or None,
             "note": (row.get("note") or "").strip() or None}
    uid = path_rel.rsplit(".", 1)[0]
    return make_clip(corpus, uid, path_rel, _speaker(identity) if identity else None, emotion, emotion, extra=extra)


def scan(root: Path, corpus: str = "mead", exclude=(), views=("front",), media=("video", "audio"),
         labels: str = "labels.csv") -> Iterator[Clip | dict]:
    views, media = choices("views", views, VIEWS), choices("media", media, ("video", "audio"))
    labels_csv = root / labels
    listed = {(row.get("path") or "").strip(): row for row in read_csv_rows(labels_csv)} if labels_csv.is_file() else {}
    named = []
    for path in media_files(root, exclude=exclude):
        path_rel = rel(path, root)
        if path_rel in listed:
            row = listed[path_rel]
            if (row.get("emotion") or "").strip():
                yield _from_labels(corpus, path_rel, row)
            else:
                yield skip(corpus, path_rel, "no_label", f"{labels} lists this file without an emotion")
            continue
        facts = _parse(path_rel, path.stem)
        if facts is None:
            yield skip(corpus, path_rel, "bad_name", "expected <actor>/video/<view>/<emotion>/level_<L>/<clip>.mp4, "
                       "<actor>/audio/<emotion>/level_<L>/<clip>.m4a, a flat <actor>_<view>_<emotion>_level<L>_<clip> "
                       f"name, or a row in {labels}")
            continue
        kind = "audio" if path.suffix.lower() in AUDIO_SUFFIXES else "video"
        if kind not in media or (kind == "video" and facts["view"] and facts["view"] not in views):
            continue   # left out by the corpus entry's options
        named.append(((facts["actor"], facts["emotion"], facts["level"], facts["clip"]), path, facts, kind))
    yield from _utterances(corpus, root, named, views, media)


def _utterances(corpus: str, root: Path, named: list, views: tuple, media: tuple) -> Iterator[Clip]:
    facts_of = {path: (facts, kind) for _, path, facts, kind in named}

    def rank(path: Path) -> int:
        facts, kind = facts_of[path]
        view_rank = views.index(facts["view"]) if facts["view"] in views else len(views)
        return media.index(kind) * (len(views) + 1) + (view_rank if kind == "video" else 0)

    for (actor, emotion, level, clip), path, others in one_per_utterance(((k, p) for k, p, _, _ in named), rank):
        facts, kind = facts_of[path]
        uid = "_".join(x for x in (actor, emotion, level and f"level{level}", clip) if x)
        extra = {"level": int(level) if level else None, "clip": clip, "view": facts["view"], "modality": kind,
                 "gender": "male" if actor.startswith("M") else "female"}
        if others:
            extra["alternatives"] = [rel(p, root) for p in others]
        yield make_clip(corpus, uid, rel(path, root), actor, emotion, emotion, extra=extra)
