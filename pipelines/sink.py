"""Where an engine's results go: one `StoreSink` per feature set writes feature rows and ledger rows as atomic parts
of about `engine.chunk_size` rows; a `GroupSink` routes a batch's {feature_set: Result} to them. Ray actors and Beam
workers store their feature rows themselves: the sink tells them where (`worker_targets`, `beam_targets`).
"""
from __future__ import annotations

import json
import uuid

import pyarrow as pa

from pipelines.errors import BadParams
from pipelines.extractor import Result
from pipelines.manifest import LEDGER_SCHEMA
from pipelines.store import FeatureStore


class StoreSink:
    """Receives batch results from an engine and writes them as atomic parts of about `chunk_size` rows."""

    def __init__(self, store: FeatureStore, feature_set: str, corpus: str, schema: pa.Schema, meta: dict,
                 chunk_size: int, progress=None, task=None):
        self.store, self.feature_set, self.corpus = store, feature_set, corpus
        self.schema, self.meta, self.chunk_size = schema, meta, chunk_size
        self.progress, self.task = progress, task
        self.rows: list[dict] = []
        self.failures: list[dict] = []

    def __call__(self, result: Result) -> None:
        self.rows += result.rows
        self.failures += result.failures + result.errors
        if self.progress is not None:
            self.progress.advance(self.task, result.written + len(result.rows) + len(result.failures)
                                  + len(result.errors))
        if len(self.rows) + len(self.failures) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        # The ledger goes first: its keys and the part's keys are disjoint, so either order is safe to resume.
        self.store.write_ledger(self.feature_set, self.corpus, self.failures, self.meta)
        self.store.write_part(self.feature_set, self.corpus,
                              pa.Table.from_pylist(self.rows, schema=self.schema), self.meta)
        self.rows, self.failures = [], []

    def worker_target(self) -> dict:
        """What a worker needs to store this feature set's rows itself (the store must be reachable from it)."""
        return {"root": self.store.files.uri, "corpus": self.corpus, "schema": self.schema,
                "meta": self.meta}

    def beam_targets(self) -> dict:
        if not self.store.files.local:
            raise BadParams("the Beam engine writes to a local or mounted store folder; use Ray for an object store")
        run = uuid.uuid4().hex[:12]
        d = self.store.dir(self.feature_set, self.corpus)
        d.mkdir(parents=True, exist_ok=True)
        meta = {b"aver": json.dumps({**self.meta, "feature_set": self.feature_set, "corpus": self.corpus},
                                    sort_keys=True).encode()}
        return {"part_prefix": str(d / f"part-{run}"), "part_schema": self.schema.with_metadata(meta),
                "ledger_prefix": str(d / f"ledger-{run}"), "ledger_schema": LEDGER_SCHEMA.with_metadata(meta)}


class GroupSink:
    """Routes each batch's {feature_set: Result} to that feature set's StoreSink."""

    def __init__(self, sinks: dict[str, StoreSink]):
        self.sinks = sinks

    def __call__(self, results: dict[str, Result]) -> None:
        for fs, result in results.items():
            self.sinks[fs](result)

    def flush(self) -> None:
        for sink in self.sinks.values():
            sink.flush()

    def beam_targets(self) -> dict[str, dict]:
        return {fs: sink.beam_targets() for fs, sink in self.sinks.items()}

    def worker_targets(self) -> dict[str, dict]:
        return {fs: sink.worker_target() for fs, sink in self.sinks.items()}
