"""Helpers shared by the corpus adapters: walking a corpus tree, building `Clip`s and ingest ledger rows."""
from __future__ import annotations

import csv
import fnmatch
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pipelines.errors import BadParams
from pipelines.manifest import Clip, ledger_row
from pipelines.vocab import EMOTIONS, canonical

AUDIO_SUFFIXES = frozenset({".wav", ".mp3", ".m4a", ".flac", ".aac", ".ogg", ".opus"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".flv", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v"})
MEDIA_SUFFIXES = AUDIO_SUFFIXES | VIDEO_SUFFIXES


def walk(root: Path, exclude: str | Iterable[str] = ()) -> Iterator[tuple[Path, str | None, str]]:
    """Every non-folder entry under `root` in a stable order as (path, None, ""), following folder symlinks
    (corpora are often linked in) so that each real folder is walked once. Not entered, and yielded as
    (folder, reason, detail) for the ledger: a link to an enclosing folder (`symlink_loop`), a link to a folder
    of the corpus (walked where it really is) and a folder already walked through another link
    (`duplicate_folder`). Hidden folders and files matching an `exclude` glob are left out. Files are yielded
    whatever they are (a dangling link, a FIFO): the probe ledgers those as `unreadable`."""
    real_root = os.path.realpath(root)
    walked = {real_root: "."}      # real folder -> where it was walked
    for folder, dirs, files in os.walk(root, followlinks=True):
        here, kept = os.path.realpath(folder), []
        for d in sorted(d for d in dirs if not d.startswith(".")):
            path = Path(folder) / d
            target = os.path.realpath(path)
            if _within(here, target):
                yield path, "symlink_loop", f"links to {target}, an enclosing folder: following it would loop"
            elif path.is_symlink() and _within(target, real_root):
                yield path, "duplicate_folder", f"links to {rel(Path(target), Path(real_root))}, a folder of the " \
                                                "corpus, scanned where it is"
            elif target in walked:
                yield path, "duplicate_folder", f"links to {target}, already scanned as {walked[target]}"
            else:
                walked[target] = rel(path, root)
                kept.append(d)
        dirs[:] = kept
        for name in sorted(files):
            path = Path(folder) / name
            if not excluded(path, root, exclude):
                yield path, None, ""


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def skipped_folders(corpus: str, root: Path, exclude: str | Iterable[str] = ()) -> Iterator[dict]:
    """Ingest ledger rows for the folder links `walk` does not enter."""
    for path, reason, detail in walk(root, exclude):
        if reason:
            yield skip(corpus, rel(path, root), reason, detail)


def media_files(root: Path, suffixes: Iterable[str] = MEDIA_SUFFIXES,
                exclude: str | Iterable[str] = ()) -> Iterator[Path]:
    """Media files under `root` in a stable order (see `walk`), without hidden files and the macOS `._*`
    resource forks shipped inside some archives (MELD, IEMOCAP)."""
    suffixes = {s.lower() for s in suffixes}
    for path, reason, _ in walk(root, exclude):
        if reason is None and not path.name.startswith(".") and path.suffix.lower() in suffixes:
            yield path


def glob_match(path: str, pattern: str) -> bool:
    """pathlib's glob semantics on a relative POSIX path (`**` = any number of folders, `*` stays within one
    name); Python 3.13's PurePath.full_match, for 3.11."""
    def match(parts: list[str], pats: list[str]) -> bool:
        if not pats:
            return not parts
        if pats[0] == "**":
            return any(match(parts[i:], pats[1:]) for i in range(len(parts) + 1))
        return bool(parts) and fnmatch.fnmatchcase(parts[0], pats[0]) and match(parts[1:], pats[1:])
    return match(path.split("/"), [p for p in pattern.split("/") if p not in ("", ".")])


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
        raise BadParams(f"{option}: unknown value(s) {unknown}; choose from {sorted(allowed)}")
    return values
