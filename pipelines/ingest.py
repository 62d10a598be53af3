"""Ingest a corpus: adapter scan → probe each media file → `<corpus>.parquet` manifest + `<corpus>.ledger.parquet`.

Every file the adapter reports ends in exactly one of the two: usable clips in the manifest (sorted by
clip_id), everything else in the ledger with a reason (`bad_name`, `no_label`, `duplicate_clip_id`,
`empty_file`, `undecodable`, `unreadable`, `no_media_stream`, `no_audio_stream`, `no_video_stream`,
`bad_segment`, ...). One bad file never stops the corpus.
"""
from __future__ import annotations

import json
import os
import tempfile
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pipelines.corpora import scan_corpus
from pipelines import media
from pipelines.corpora._common import MEDIA_SUFFIXES, choices
from pipelines.errors import BadParams
from pipelines.extractor import ClipError
from pipelines.manifest import (LEDGER_SCHEMA, MANIFEST_SCHEMA, Clip, ledger_path, ledger_row, manifest_path,
                                media_location, to_table, write_manifest)
from pipelines.store.files import is_uri
from pipelines.probe import ProbeError, probe_file, restrict


PROBE_CACHE = ".probe-cache"     # under the manifest folder: <corpus>.json


@dataclass
class IngestSummary:
    corpus: str
    root: Path | str
    clips: int
    speakers: int
    failed: int
    manifest: str
    ledger: str
    reasons: dict[str, int] = field(default_factory=dict)     # ledger reason -> rows
    emotions: dict[str, int] = field(default_factory=dict)    # emotion_orig -> clips

    def __str__(self) -> str:
        why = ", ".join(f"{r} {n}" for r, n in sorted(self.reasons.items())) or "none"
        return (f"{self.corpus}: {self.clips} clips, {self.speakers} speakers, {self.failed} ledger rows ({why}) "
                f"-> {self.manifest}")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ingest(corpus_name: str, cfg: dict, manifest_dir: Path, progress: bool = True,
           workers: int | None = None) -> IngestSummary:
    """Scan, probe and write the manifest and ledger of one corpus entry of params.yaml.

    `cfg` = {adapter, root, [require: [audio|video]], ...adapter options}; a relative root is taken from the
    current directory. `require` ledgers clips lacking a decodable stream of that kind.
    """
    options = dict(cfg)
    adapter = options.pop("adapter", corpus_name)
    if "root" not in options:
        raise BadParams(f"corpus {corpus_name!r}: the params entry needs a root")
    given = str(options.pop("root"))
    root = given if is_uri(given) else Path(os.path.abspath(Path(given).expanduser()))
    require = choices("require", options.pop("require", None) or (), ("audio", "video"))

    clips, ledger = [], []
    with _tree(root) as (tree, stats):
        for item in scan_corpus(corpus_name, adapter, tree, **options):
            (clips if isinstance(item, Clip) else ledger).append(item)
    clips, duplicates = _dedupe(corpus_name, clips)
    ledger += duplicates
    cache = ProbeCache(_cache_file(manifest_dir, corpus_name), root, stats)
    facts = _probe_all(root, sorted({c.path for c in clips}), workers or cpu_count(), progress, corpus_name, cache)

    rows = []
    for clip in sorted(clips, key=lambda c: c.clip_id):
        try:
            rows.append(_manifest_row(clip, facts[clip.path], require))
        except ProbeError as e:
            found = facts[clip.path]
            ledger.append(ledger_row(corpus_name, clip.path, "ingest", e.reason, e.detail, clip_id=clip.clip_id,
                                     content_hash=found.get("content_hash") if isinstance(found, dict) else None))
    ledger.sort(key=lambda r: (r["path"] or "", r["clip_id"] or ""))

    meta = {b"aver.root": str(root).encode(), b"aver.corpus": corpus_name.encode()}
    m_path = write_manifest(_with_meta(to_table(rows, MANIFEST_SCHEMA), meta), manifest_dir,
                            manifest_path("", corpus_name).name)
    l_path = write_manifest(_with_meta(to_table(ledger, LEDGER_SCHEMA), meta), manifest_dir,
                            ledger_path("", corpus_name).name)
    return IngestSummary(corpus_name, root, len(rows), len({r["speaker"] for r in rows}), len(ledger), m_path, l_path,
                         dict(Counter(r["reason"] for r in ledger)), dict(Counter(r["emotion_orig"] for r in rows)))


def _dedupe(corpus: str, clips: list[Clip]) -> tuple[list[Clip], list[dict]]:
    """Keep one clip per clip_id (the first by path); the others become `duplicate_clip_id` ledger rows."""
    kept: dict[str, Clip] = {}
    ledger = []
    for clip in sorted(clips, key=lambda c: (c.clip_id, c.path)):
        if clip.clip_id in kept:
            ledger.append(ledger_row(corpus, clip.path, "ingest", "duplicate_clip_id",
                                     f"{clip.clip_id} is already taken by {kept[clip.clip_id].path}",
                                     clip_id=clip.clip_id))
        else:
            kept[clip.clip_id] = clip
    return list(kept.values()), ledger


@contextmanager
def _tree(root: Path | str):
    """The corpus tree the adapter scans, and the files' (size, mtime) when they are objects. A folder is itself;
    for an object store root the adapter sees the bucket's listing as a temporary local tree (media as empty
    placeholders: only their names matter to a recipe; label files downloaded), so every recipe works unchanged,
    while ingest probes and hashes the objects themselves."""
    if not is_uri(root):
        yield root, None
        return
    stats = {}
    with tempfile.TemporaryDirectory(prefix="aver-listing-") as tmp:
        for info in media.listing(root):
            rel = media.relative(info, root)
            stats[rel] = [info.size, info.mtime_ns]
            copy = Path(tmp) / rel
            copy.parent.mkdir(parents=True, exist_ok=True)
            if copy.suffix.lower() in MEDIA_SUFFIXES:
                copy.touch()
            else:
                copy.write_bytes(media.read_bytes(media_location(root, rel)))
        yield Path(tmp), stats


def _cache_file(manifest_dir, corpus: str) -> Path | None:
    """Where the probe cache lives: beside local manifests (none for manifests on an object store)."""
    return None if is_uri(manifest_dir) else Path(manifest_dir) / PROBE_CACHE / f"{corpus}.json"


def _probe_safely(location: Path | str) -> dict | ProbeError:
    try:
        return probe_file(media.local(location))
    except ProbeError as e:
        return e
    except ClipError as e:      # an object that vanished since the listing
        return ProbeError(e.reason, e.detail)
    except Exception as e:  # noqa: BLE001 - an unforeseen failure on one file must not stop the corpus
        return ProbeError(f"error:{type(e).__name__}", f"{e}\n{traceback.format_exc(limit=3)}")


class ProbeCache:
    """Probe facts of the last ingest, keyed by relative path and valid while the file's size and mtime are the
    same: re-ingesting a grown corpus probes (and hashes) only new or modified files. `stats`: objects' (size,
    mtime) from the listing, for a root on an object store; `path` None: nothing is kept."""

    def __init__(self, path: Path | None, root: Path | str, stats: dict[str, list[int]] | None = None):
        self.path, self.root, self.stats = path, root, stats
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError, AttributeError):
            saved = {}
        self.entries = saved.get("files", {}) if saved.get("root") == str(root) else {}

    def _stat(self, rel: str) -> list[int] | None:
        if self.stats is not None:
            return self.stats.get(rel)
        try:
            st = (self.root / rel).stat()
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]

    def get(self, rel: str) -> dict | None:
        entry = self.entries.get(rel)
        return entry["facts"] if entry and entry["stat"] == self._stat(rel) else None

    def save(self, facts: dict[str, dict | ProbeError]) -> None:
        if self.path is None:
            return
        entries = {rel: {"stat": self._stat(rel), "facts": f} for rel, f in facts.items() if isinstance(f, dict)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"root": str(self.root), "files": entries}, sort_keys=True))
        os.replace(tmp, self.path)


def _probe_all(root: Path | str, paths: list[str], workers: int, progress: bool, corpus: str,
               cache: ProbeCache) -> dict:
    """path -> probe facts or ProbeError; each file probed once (IEMOCAP segments share a recording), files
    unchanged since the last ingest not at all. Failures are always probed again.

    Threads: PyAV and hashlib release the GIL while decoding and hashing."""
    out = {p: cache.get(p) for p in paths}
    todo = [p for p, facts in out.items() if facts is None]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar, ThreadPoolExecutor(workers) as pool:
        task = bar.add_task(f"probing {corpus}", total=len(todo))
        futures = {pool.submit(_probe_safely, media_location(root, p)): p for p in todo}
        for future in as_completed(futures):
            out[futures[future]] = future.result()
            bar.advance(task)
    cache.save(out)
    return out


def _manifest_row(clip: Clip, found: dict | ProbeError, require: tuple[str, ...]) -> dict:
    if clip.emotion_orig is None and all(v is None for v in (clip.valence, clip.arousal, clip.dominance)):
        raise ProbeError("no_label", "the adapter found neither a category nor a dimensional label")
    if isinstance(found, ProbeError):
        raise found
    facts = restrict(found, clip.start, clip.end) if clip.start is not None or clip.end is not None else found
    for kind in require:
        if not facts[f"has_{kind}"]:
            raise ProbeError(f"no_{kind}_stream", f"the corpus entry requires {kind}, and the file has no decodable "
                             f"{kind} stream")
    extra = {**clip.extra, "probe_notes": facts["notes"]} if facts.get("notes") else clip.extra
    media = {k: v for k, v in facts.items() if k != "notes"}
    return {**clip.row(), **media, "extra": json.dumps(extra, sort_keys=True)}


def _with_meta(table: pa.Table, meta: dict[bytes, bytes]) -> pa.Table:
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
