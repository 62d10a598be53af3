"""Helpers shared by the corpus adapters: walking a corpus tree, building `Clip`s and ingest ledger rows."""
from __future__ import annotations

import csv
import fnmatch
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pipelines.manifest import Clip, ledger_row
from pipelines.vocab import EMOTIONS, canonical

AUDIO_SUFFIXES = frozenset({".wav", ".mp3", ".m4a", ".flac", ".aac", ".ogg", ".opus"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".flv", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v"})
MEDIA_SUFFIXES = AUDIO_SUFFIXES | VIDEO_SUFFIXES


def media_files(root: Path, suffixes: Iterable[str] = MEDIA_SUFFIXES,
                exclude: str | Iterable[str] = ()) -> Iterator[Path]:
    """Media files under `root` in a stable order.

    Follows symlinked folders (corpora are often linked in), skips hidden files and the macOS `._*` resource
    forks shipped inside some archives (MELD, IEMOCAP), and paths matching an `exclude` glob (relative to root).
    """
    suffixes = {s.lower() for s in suffixes}
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if not name.startswith(".") and path.suffix.lower() in suffixes and not excluded(path, root, exclude):
                yield path


def excluded(path: Path, root: Path, exclude: str | Iterable[str]) -> bool:
    """Whether the corpus entry's `exclude` globs (relative to root, `*` spans folders) leave `path` out."""
    patterns = [exclude] if isinstance(exclude, str) else exclude
    return any(fnmatch.fnmatch(rel(path, root), p) for p in patterns)


def rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def to_vocab(word: str | None) -> str | None:
    """A corpus label translated to English → vocabulary name, or None when it is not in the vocabulary."""
    mapped = canonical(word)
    return mapped if mapped in EMOTIONS else None


def make_clip(corpus: str, uid: str, path: str, speaker: str | None, emotion_orig: str | None,
              emotion: str | None, **fields) -> Clip:
    """A `Clip` with the `<corpus>/` prefixes on clip_id and speaker that keep corpora apart."""
    return Clip(clip_id=f"{corpus}/{uid}", corpus=corpus, path=path,
                speaker=f"{corpus}/{speaker}" if speaker is not None else None,
                emotion_orig=emotion_orig, emotion=to_vocab(emotion), **fields)


def skip(corpus: str, path: str, reason: str, detail: str, uid: str | None = None) -> dict:
    """Ingest ledger row for a file the adapter saw but cannot turn into a clip."""
    return ledger_row(corpus, path, "ingest", reason, detail, clip_id=f"{corpus}/{uid}" if uid else None)


def one_per_utterance(files: Iterable[tuple[tuple, Path]],
                      rank: Callable[[Path], int]) -> Iterator[tuple[tuple, Path, list[Path]]]:
    """Group files that hold the same utterance (same key) and keep the best-ranked one (lowest rank).

    Yields (key, chosen file, the other files). Used where a corpus ships one utterance as several files
    (CREMA-D flv/wav/mp3, SAVEE wav/avi, MSP-IMPROV avi/wav, MEAD video/audio): one clip per utterance,
    the rest recorded in the clip's `extra["alternatives"]` so nothing is dropped silently.
    """
    groups: dict[tuple, list[Path]] = {}
    for key, path in files:
        groups.setdefault(key, []).append(path)
    for key, paths in groups.items():
        paths.sort(key=lambda p: (rank(p), str(p)))
        yield key, paths[0], paths[1:]


def suffix_rank(prefer: Iterable[str]) -> Callable[[Path], int]:
    """Rank files by extension in the order of `prefer` (e.g. ["flv", "wav"]); unlisted ones last."""
    order = [s.lower().lstrip(".") for s in prefer]
    return lambda p: order.index(p.suffix.lower().lstrip(".")) if p.suffix.lower().lstrip(".") in order else len(order)


def read_csv_rows(path: Path) -> list[dict]:
    """Rows of a metadata CSV; tolerant of a BOM and of stray bytes in free-text columns."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        return list(csv.DictReader(f))


def choices(option: str, values: str | Iterable[str], allowed: Iterable[str]) -> tuple[str, ...]:
    """A list option as a tuple (a single YAML string counts as one value); unknown values are rejected
    rather than silently matching nothing."""
    values = (values,) if isinstance(values, str) else tuple(values)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"{option}: unknown value(s) {unknown}; choose from {sorted(allowed)}")
    return values
