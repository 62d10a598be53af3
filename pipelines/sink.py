"""Where an engine's results go: one `StoreSink` per feature set writes feature rows and ledger rows as parts of
about `engine.chunk_size` rows and commits them (pipelines/store/commits.py); a `GroupSink` routes a batch's
{feature_set: Result} to them. Ray actors and Beam workers write their feature rows themselves (`worker_targets`)
and hand back only the names of the files (`Result.staged`): the sink commits them with its next part.
"""
from __future__ import annotations

import pyarrow as pa

from pipelines.extractor import Result
from pipelines.manifest import LEDGER_SCHEMA, to_table
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
        self.staged: list = []
        self.pending = 0        # rows in staged files

    def __call__(self, result: Result) -> None:
        self.rows += result.rows
        self.failures += result.failures + result.errors
        self.staged += result.staged
        self.pending += result.written
        if self.progress is not None:
            self.progress.advance(self.task, result.written + len(result.rows) + len(result.failures)
                                  + len(result.errors))
        if len(self.rows) + len(self.failures) + self.pending >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        """Commit the rows received so far and the workers' files in one record."""
        ledger = to_table(self.failures, LEDGER_SCHEMA)
        parts = pa.Table.from_pylist(self.rows, schema=self.schema)
        self.store.commit(self.feature_set, self.corpus, [
            self.store.stage("ledger", self.feature_set, self.corpus, ledger, self.meta),
            self.store.stage("part", self.feature_set, self.corpus, parts, self.meta), *self.staged])
        self.rows, self.failures, self.staged, self.pending = [], [], [], 0

    def worker_target(self) -> dict:
        """What a worker needs to store this feature set's rows itself (the store must be reachable from it)."""
        return {"root": self.store.files.uri, "corpus": self.corpus, "schema": self.schema,
                "meta": self.meta}


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

    def worker_targets(self) -> dict[str, dict]:
        return {fs: sink.worker_target() for fs, sink in self.sinks.items()}
