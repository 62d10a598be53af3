"""The synthetic demo corpus written by `aver demo` (pipelines/demo.py).

Layout: one flat folder of `spk<NN>_<emotion>_t<take>.mp4` (H.264 + AAC mono) plus README.txt, e.g.
`spk01_happy_t1.mp4`. clip_id `demo/spk01_happy_t1`, speaker `demo/spk01`, emotion through the vocabulary;
valence/arousal are the targets the generator was designed around (pipelines.demo.AFFECT); extra: take.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipelines.corpora._common import make_clip, media_files, rel, skip
from pipelines.demo import AFFECT, NAME_RE
from pipelines.manifest import Clip
from pipelines.vocab import canonical


def scan(root: Path, corpus: str = "demo", exclude=()) -> Iterator[Clip | dict]:
    for path in media_files(root, suffixes=(".mp4",), exclude=exclude):
        m = NAME_RE.fullmatch(path.stem)
        if not m:
            yield skip(corpus, rel(path, root), "bad_name",
                       f"{path.name} is not <speaker>_<emotion>_t<take>.mp4, e.g. spk01_happy_t1.mp4")
            continue
        speaker, label, take = m.groups()
        if canonical(label) is None:
            yield skip(corpus, rel(path, root), "no_label", f"emotion {label!r} is not in the vocabulary",
                       uid=path.stem)
            continue
        valence, arousal = AFFECT.get(canonical(label), (None, None))
        yield make_clip(corpus, path.stem, rel(path, root), speaker, label, label,
                        valence=valence, arousal=arousal, extra={"take": int(take)})
