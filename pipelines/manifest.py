"""The manifest: one row per usable clip of a corpus, plus the ledger of what could not be used.

A corpus adapter yields `Clip`s (what the filename/metadata say); ingest probes the media and writes
`manifests/<corpus>.parquet` and `manifests/<corpus>.ledger.parquet`.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST_SCHEMA = pa.schema([
    ("clip_id", pa.string()),           # "<corpus>/<stable id>", unique across corpora
    ("corpus", pa.string()),
    ("path", pa.string()),              # relative to the corpus root
    ("speaker", pa.string()),           # "<corpus>/<speaker>" so speakers never collide across corpora
    ("emotion", pa.string()),           # canonical vocabulary (pipelines.vocab), null if unmapped
    ("emotion_orig", pa.string()),      # the corpus's own label
    ("valence", pa.float32()), ("arousal", pa.float32()), ("dominance", pa.float32()),
    ("start", pa.float64()), ("end", pa.float64()),   # segment inside the recording, seconds (null = whole file)
    ("split", pa.string()),             # official split where the corpus has one
    ("has_audio", pa.bool_()), ("has_video", pa.bool_()),
    ("duration", pa.float64()), ("fps", pa.float64()),
    ("width", pa.int32()), ("height", pa.int32()), ("rotation", pa.int32()),
    ("audio_rate", pa.int32()), ("channels", pa.int32()),
    ("video_codec", pa.string()), ("audio_codec", pa.string()),
    ("content_hash", pa.string()),      # sha256 of the file bytes (+ segment), drives incremental extraction
    ("extra", pa.string()),             # JSON of corpus-specific fields (intensity, sentence, gender, ...)
], metadata={b"aver.kind": b"manifest"})

LEDGER_SCHEMA = pa.schema([
    ("corpus", pa.string()),
    ("clip_id", pa.string()),
    ("variant", pa.string()),
    ("path", pa.string()),
    ("stage", pa.string()),             # ingest, or the feature set that failed
    ("reason", pa.string()),            # short machine-readable code, e.g. "no_audio_stream"
    ("detail", pa.string()),            # human-readable explanation
    ("content_hash", pa.string()),
    ("created_at", pa.string()),
], metadata={b"aver.kind": b"ledger"})


@dataclass
class Clip:
    """What an adapter knows about one clip before probing."""
    clip_id: str
    corpus: str
    path: str
    speaker: str | None
    emotion_orig: str | None
    emotion: str | None
    valence: float | None = None
    arousal: float | None = None
    dominance: float | None = None
    start: float | None = None
    end: float | None = None
    split: str | None = None
    extra: dict = field(default_factory=dict)

    def row(self) -> dict:
        d = asdict(self)
        d["extra"] = json.dumps(self.extra, sort_keys=True)
        return d


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def ledger_row(corpus: str, path: str, stage: str, reason: str, detail: str = "",
               clip_id: str | None = None, variant: str | None = None,
               content_hash: str | None = None) -> dict:
    return {"corpus": corpus, "clip_id": clip_id, "variant": variant, "path": path, "stage": stage,
            "reason": reason, "detail": detail, "content_hash": content_hash, "created_at": now()}


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file so that readers see either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def manifest_path(manifest_dir: Path, corpus: str) -> Path:
    return Path(manifest_dir) / f"{corpus}.parquet"


def ledger_path(manifest_dir: Path, corpus: str) -> Path:
    return Path(manifest_dir) / f"{corpus}.ledger.parquet"


def _files(manifest_dir):
    """The manifest folder as a local folder or an object store URI (the store's `Files`: one way to reach both)."""
    from pipelines.store.files import Files     # the store imports this module: resolved at call time
    return Files(manifest_dir)


def write_manifest(table: pa.Table, manifest_dir, name: str) -> str:
    """Write `<manifest_dir>/<name>` whole or not at all (a local folder or a URI); returns where it went."""
    files = _files(manifest_dir)
    files.write_table(table, files.root / name)
    return files.location(files.root / name)


def manifest_file(manifest_dir, corpus: str) -> pq.ParquetFile:
    files = _files(manifest_dir)
    return files.parquet_file(files.root / f"{corpus}.parquet")


def read_manifest(manifest_dir, corpus: str) -> pa.Table:
    return manifest_file(manifest_dir, corpus).read()


def manifest_batches(manifest_dir, corpus: str, size: int, columns: list[str] | None = None):
    """The manifest's rows as record batches of `size` rows (only `columns`): one batch in memory at a time."""
    yield from manifest_file(manifest_dir, corpus).iter_batches(batch_size=size, columns=columns)


def read_corpus_root(manifest_dir, corpus: str) -> Path | str:
    """The corpus root the manifest's paths are relative to: a folder, or an object store URI (kept as text)."""
    root = (manifest_file(manifest_dir, corpus).schema_arrow.metadata or {})[b"aver.root"].decode()
    return root if "://" in root else Path(root)


def media_location(root: Path | str, rel: str) -> str:
    """A clip's media: `root/rel` for a folder; for a URI the path joins before its options (`?endpoint_...`)."""
    root = str(root)
    if "://" not in root:
        return str(Path(root) / rel)
    base, _, options = root.partition("?")
    return f"{base.rstrip('/')}/{rel}" + (f"?{options}" if options else "")
