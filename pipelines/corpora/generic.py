"""A corpus described only by its params.yaml entry: no code needed to add a dataset.

    corpora:
      my_corpus:
        adapter: generic
        root: /data/my_corpus
        glob: "**/*.wav"                          # which files, relative to root
        regex: '(?P<speaker>\\d+)_(?P<emotion>[a-z]+)_(?P<take>\\d+)\\.wav$'
        label_map: {ang: angry, hap: happy}     # corpus label -> vocabulary name (others: pipelines.vocab synonyms)
        metadata_csv: meta.csv                  # optional, relative to root
        join_on: speaker                        # CSV column matched to the regex group of that name, else to the file
        speaker: narrator                       # optional fixed speaker for single-speaker corpora

The regex is searched in the file's path relative to root (POSIX slashes), so it can use folder names; anchor
it with `^`/`$` as needed. Named groups `speaker`, `emotion`, `split`, `clip` (a stable id; default: the
relative path without extension), `valence`, `arousal`, `dominance`, `start`, `end` fill those fields; every
other group goes to `extra`. Metadata CSV columns with those names fill fields the regex left empty; the rest go
to `extra`. Without a speaker (group, CSV column or fixed `speaker`), each clip is its own speaker.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from pipelines.corpora._common import glob_match, make_clip, read_csv_rows, rel, skip, walk
from pipelines.errors import BadParams
from pipelines.manifest import Clip
from pipelines.vocab import EMOTIONS

FIELDS = ("speaker", "emotion", "split", "clip", "valence", "arousal", "dominance", "start", "end")
NUMERIC = ("valence", "arousal", "dominance", "start", "end")


def _metadata(root: Path, metadata_csv: str | None, join_on: str | None) -> dict[str, dict]:
    if not metadata_csv:
        return {}
    if not join_on:
        raise BadParams("metadata_csv needs join_on: the CSV column that identifies a file or a regex group")
    rows = read_csv_rows(root / metadata_csv)
    if rows and join_on not in rows[0]:
        raise BadParams(f"join_on: {metadata_csv} has no column {join_on!r}; columns: {sorted(rows[0])}")
    return {(row.get(join_on) or "").strip(): row for row in rows}


def _compile(regex: str) -> re.Pattern:
    try:
        return re.compile(regex)
    except re.error as e:
        raise BadParams(f"regex {regex!r} is not a valid regular expression: {e}") from None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def scan(root: Path, corpus: str = "generic", exclude=(), glob: str = "**/*.wav", regex: str = r"(?P<clip>.+)\.\w+$",
         label_map: dict | None = None, metadata_csv: str | None = None, join_on: str | None = None,
         speaker: str | None = None) -> Iterator[Clip | dict]:
    pattern = _compile(regex)
    label_map = {str(k): v for k, v in (label_map or {}).items()}
    if bad := sorted({v for v in label_map.values() if v not in EMOTIONS}):
        raise BadParams(f"label_map: {bad} not in the vocabulary {list(EMOTIONS)}")
    metadata = _metadata(root, metadata_csv, join_on)
    for path, reason, _ in walk(root, exclude):     # follows folder links; skipped ones: see scan_corpus
        path_rel = rel(path, root)
        if reason or path.name.startswith(".") or not glob_match(path_rel, glob):
            continue
        if metadata_csv and path_rel == Path(metadata_csv).as_posix():
            continue
        m = pattern.search(path_rel)
        if not m:
            yield skip(corpus, path_rel, "bad_name", f"does not match regex {regex!r}")
            continue
        groups = {k: v for k, v in m.groupdict().items() if v is not None}
        keys = [groups[join_on]] if join_on in groups else [path_rel, path.name, path.stem]
        row = next((metadata[k] for k in keys if k in metadata), {})
        values = {f: groups.get(f) or (row.get(f) or "").strip() or None for f in FIELDS}
        uid = values["clip"] or os.path.splitext(path_rel)[0]
        if values["emotion"] is None:
            yield skip(corpus, path_rel, "no_label", "no emotion from the regex group or the metadata CSV", uid)
            continue
        extra = {k: v for k, v in {**row, **groups}.items() if k not in FIELDS and k != join_on}
        who = values["speaker"] or speaker
        if who is None:
            who, extra["speaker_note"] = uid, "no speaker id; the clip is its own speaker"
        orig = values["emotion"]
        yield make_clip(corpus, uid, path_rel, who, orig, label_map.get(orig, orig), split=values["split"],
                        extra=extra, **{f: _number(values[f]) for f in NUMERIC})


def add_corpus_entry(params_path: str | Path, name: str, root: str, glob: str, regex: str,
                     label_map: dict[str, str] | None = None, metadata_csv: str | None = None,
                     join_on: str | None = None, speaker: str | None = None, overwrite: bool = False) -> dict:
    """Write a generic-adapter entry under `corpora:` in a params.yaml and return it.

    The rest of the file is kept as written (comments included): the entry is inserted as text at the end of
    the `corpora:` block, and the result is re-read with PyYAML to check it parses to the old content plus the
    new entry, before it atomically replaces the file.
    """
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise BadParams(f"corpus name {name!r}: use letters, digits, _ . - (it names files and clip ids)")
    pattern = _compile(regex)
    if "emotion" not in pattern.groupindex and not metadata_csv:
        raise BadParams("regex has no (?P<emotion>...) group and there is no metadata_csv to give the label")
    if bad := sorted({v for v in (label_map or {}).values() if v not in EMOTIONS}):
        raise BadParams(f"label_map: {bad} not in the vocabulary {list(EMOTIONS)}")
    entry = {"adapter": "generic", "root": str(root), "glob": glob, "regex": regex}
    entry.update({k: v for k, v in {"label_map": dict(label_map or {}) or None, "metadata_csv": metadata_csv,
                                    "join_on": join_on, "speaker": speaker}.items() if v})
    path = Path(params_path)
    text = path.read_text() if path.exists() else ""
    data = yaml.safe_load(text) or {}
    corpora = data.get("corpora") or {}
    if name in corpora and not overwrite:
        raise BadParams(f"corpus {name!r} already exists in {path}; remove it first, or pass overwrite=True")
    new_text = _insert_entry(text, name, entry)
    expected = {**data, "corpora": {**corpora, name: entry}}
    if yaml.safe_load(new_text) != expected:
        raise RuntimeError(f"could not add {name!r} to {path} without changing other settings; "
                           "is `corpora:` written in flow style? Add the entry by hand.")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new_text)
    tmp.replace(path)
    return entry


def _insert_entry(text: str, name: str, entry: dict) -> str:
    """`text` with `name: entry` as the last item of the top-level `corpora:` block (replacing an old `name`)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"corpora:\s*(\{\s*\})?\s*(#.*)?$", line)), None)
    if start is None:
        lines += ["", "corpora:"]
        start = len(lines) - 1
    lines[start] = "corpora:"
    end = start + 1   # end of the block: the next top-level key
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "#"))):
        end += 1
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1      # trailing blank lines and column-0 comments belong to the next section
    block = lines[start + 1:end]
    indent = next((len(b) - len(b.lstrip()) for b in block if b.strip() and not b.lstrip().startswith("#")), 2)
    block = _without_item(block, name, indent)
    snippet = yaml.safe_dump({name: entry}, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    block += [" " * indent + s for s in snippet.splitlines()]
    return "\n".join(lines[:start + 1] + block + lines[end:]) + "\n"


def _without_item(block: list[str], name: str, indent: int) -> list[str]:
    """The block's lines minus item `name` (its key line and everything indented deeper below it)."""
    out, dropping = [], False
    for line in block:
        depth = len(line) - len(line.lstrip())
        if line.strip() and depth == indent:
            dropping = bool(re.match(rf"['\"]?{re.escape(name)}['\"]?\s*:", line.strip()))
        if not dropping:
            out.append(line)
    return out
