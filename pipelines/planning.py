"""Streaming planning: the manifest read a slice at a time, units built slice by slice, spooled for the engines.

The driver never holds a corpus: it reads the manifest `SLICE_CLIPS` (1 000) rows at a time (pyarrow's batch
iterator), keeps the keys it must check (planned, done, stored upstream) as `KeySet`s (16 bytes a key), and writes each
slice's units to a spool of Parquet files beside the store (`<store>/.plan/<run>/`), which every engine reads back
in batches (local: an iterator; Ray: `ray.data.read_parquet`; Beam: `ReadFromParquet`). A unit names the upstream
rows it needs (`stored_inputs`: {feature set: variant}); the worker reads them by key from the store
(`reader.RowsByKey`), so no feature row passes through the driver.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import uuid
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from features.audio_io import MIN_DURATION_S
from pipelines.config import paths
from pipelines.keyset import KeySet
from pipelines.manifest import ledger_row, manifest_batches, media_location, read_corpus_root
from pipelines.store.files import Files

SLICE_CLIPS = 1_000
N_PEERS = 3          # babble talkers (features.augment_audio.MIN_BABBLE_TALKERS)
PEER_SPARES = 5      # further candidates, used when a talker turns out unusable at extraction
PEER_STRIDE = 7


def _stable_int(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def _talkers(batch: pa.RecordBatch) -> pa.Array:
    """Clips that can be babble talkers as far as the manifest tells: an audio stream at least as long as the
    shortest usable clip. Extraction checks the samples too and skips a candidate that fails (augment_audio)."""
    duration = batch.column("duration")
    long_enough = pc.or_kleene(pc.is_null(duration), pc.greater_equal(duration, MIN_DURATION_S))
    return pc.fill_null(pc.and_kleene(batch.column("has_audio"), long_enough), False)


def slices(manifests, corpus: str) -> Iterator[tuple[list[dict], list[int | None]]]:
    """(rows, talker index of each row or None) per slice of the manifest, in manifest order."""
    seen = 0
    for batch in manifest_batches(manifests, corpus, SLICE_CLIPS):
        talker = _talkers(batch).to_pylist()
        index = list(itertools.accumulate(talker, initial=seen))
        seen = index[-1]
        yield batch.to_pylist(), [i if t else None for i, t in zip(index, talker)]


class PeerPool:
    """Babble talker candidates of a corpus: their media paths, in manifest order, as one Arrow array."""

    def __init__(self, manifests, corpus: str, root: str):
        paths = [pc.filter(b.column("path"), _talkers(b))
                 for b in manifest_batches(manifests, corpus, SLICE_CLIPS, ["path", "has_audio", "duration"])]
        self.paths = pa.concat_arrays(paths) if paths else pa.array([], pa.string())
        self.root = root

    def peers(self, talker: int | None, clip_id: str) -> list[str]:
        """Candidates for a clip (`talker`: its own index in the pool, None if it is not a talker): N_PEERS talkers
        plus PEER_SPARES to fall back on, all distinct, drawn deterministically from the pool without the clip
        itself with a stride coprime to its size, so they spread over the corpus rather than sitting next to each
        other in clip order (often the same speaker)."""
        n = len(self.paths) - (talker is not None)
        if n <= 0:
            return []
        start = _stable_int(clip_id) % n
        stride = next(s for s in itertools.count(PEER_STRIDE) if math.gcd(s, n) == 1)
        out = []
        for k in range(min(N_PEERS + PEER_SPARES, n)):
            j = (start + k * stride) % n
            j += talker is not None and j >= talker           # skip the clip itself
            out.append(media_location(self.root, self.paths[j].as_py()))
        return out


class SliceContext:
    """What planning a corpus a slice at a time needs: its manifest, media root, babble pool (built on first use)."""

    def __init__(self, params: dict, store, corpus: str):
        self.manifests = paths(params)["manifests"]
        self.store, self.corpus, self.augment = store, corpus, params.get("augment", {})
        self.root = read_corpus_root(self.manifests, corpus)
        self._pool: PeerPool | None = None

    def slices(self):
        return slices(self.manifests, self.corpus)

    def peers(self, talker: int | None, clip_id: str) -> list[str]:
        if self._pool is None:
            self._pool = PeerPool(self.manifests, self.corpus, self.root)
        return self._pool.peers(talker, clip_id)

    def items(self, extractor, feature_set: str, variants: list[str], rows: list[dict], talkers: list[int | None],
              done: KeySet) -> tuple[list[dict], list[dict]]:
        """The (clip, variant) work items of one slice that are not done, and the not-done ledger rows of clips
        lacking the extractor's modality."""
        need = "has_audio" if extractor.modality == "audio" else "has_video"
        items, absent = [], []
        for row, talker in zip(rows, talkers):
            for variant in variants:
                if not row[need]:
                    absent.append(ledger_row(self.corpus, row["path"], feature_set, "modality_absent",
                                             f"clip has no {extractor.modality} stream", clip_id=row["clip_id"],
                                             variant=variant, content_hash=row["content_hash"]))
                    continue
                items.append({**row, "variant": variant, "abspath": media_location(self.root, row["path"]),
                              "augment": self.augment,
                              "peers": self.peers(talker, row["clip_id"]) if variant.startswith("babble") else []})
        return _not_done(items, done), _not_done(absent, done)


def _not_done(rows: list[dict], done: KeySet) -> list[dict]:
    found = done.contains([r["clip_id"] for r in rows], [r["variant"] for r in rows])
    return [r for r, f in zip(rows, found) if not f]


class Spool:
    """One engine pass's units, as Parquet files of JSON units under `<store>/.plan/<run id>/` (every worker
    reaches the store). The driver adds them slice by slice; they are written `FILE_UNITS` at a time, each batch
    split in up to `files_per_batch` files (the Ray engine reads one block per file), read back in batches by the
    engines, and removed after the pass."""
    FILE_UNITS = 10_000

    def __init__(self, store_uri: str, files_per_batch: int = 1):
        self.store_uri, self.files_per_batch = store_uri, max(1, files_per_batch)
        self.files = Files(store_uri)
        self.dir = self.files.root / ".plan" / uuid.uuid4().hex[:12]
        self.paths: list = []
        self.pending: list[str] = []
        self.count = 0

    def write(self, units: list[dict]) -> None:
        self.pending += [json.dumps(u) for u in units]
        self.count += len(units)
        if len(self.pending) >= self.FILE_UNITS:
            self.flush()

    def flush(self) -> None:
        step = max(1, math.ceil(len(self.pending) / self.files_per_batch))
        for start in range(0, len(self.pending), step):
            path = self.dir / f"units-{len(self.paths):06d}.parquet"
            self.files.write_table(pa.table({"unit": self.pending[start:start + step]}), path)
            self.paths.append(path)
        self.pending = []

    def batches(self, size: int) -> Iterator[list[dict]]:
        for path in self.paths:
            for batch in self.files.parquet_file(path).iter_batches(batch_size=max(1, size), columns=["unit"]):
                yield [json.loads(u) for u in batch.column("unit").to_pylist()]

    def names(self) -> list[str]:
        """The spool files, named for `self.files.fs` (pyarrow.fs), e.g. for ray.data.read_parquet."""
        return self.files.names(self.paths)

    def pattern(self) -> str:
        """A glob matching the spool files (Beam's ReadFromParquet)."""
        return self.files.location(self.dir / "units-*.parquet")

    def remove(self) -> None:
        for path in self.paths:
            self.files.delete(path)
        if self.files.local and self.paths:
            self.files.delete_folder(self.dir)
            try:
                self.dir.parent.rmdir()         # .plan itself, unless another run's spool is there
            except OSError:
                pass
