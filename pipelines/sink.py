"""Where an engine's results go: one `StoreSink` per feature set writes feature rows and ledger rows as parts of
about `engine.chunk_size` rows and commits them (pipelines/store/commits.py); a `GroupSink` routes a batch's
{feature_set: Result} to them. Ray actors and Beam workers write their feature rows themselves (`worker_targets`,
`WorkerStage`) and hand back only the names of the files (`received`: `Result.staged`): the sink commits them with
its next part.
"""
from __future__ import annotations

from dataclasses import asdict

import pyarrow as pa

from pipelines.extractor import Result
from pipelines.manifest import LEDGER_SCHEMA, to_table
from pipelines.store import FeatureStore
from pipelines.store.commits import Staged


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


class WorkerStage:
    """What a Ray actor or a Beam worker does with a batch's results: stores each feature set's feature rows and
    ledger rows itself (files nobody reads until the driver commits them) and keeps, for the driver, a small record
    per feature set: the files' names and keys, and the rows they hold (`received` turns it back into a Result)."""

    def __init__(self, targets: dict[str, dict]):
        self.targets = targets
        self.stores = {fs: FeatureStore(t["root"], "") for fs, t in targets.items()}

    def __call__(self, results: dict[str, Result]) -> dict[str, dict]:
        records = {}
        for fs, result in results.items():
            target, store = self.targets[fs], self.stores[fs]
            failed = result.failures + result.errors
            staged = [store.stage("ledger", fs, target["corpus"], to_table(failed, LEDGER_SCHEMA), target["meta"]),
                      store.stage("part", fs, target["corpus"],
                                  pa.Table.from_pylist(result.rows, schema=target["schema"]), target["meta"])]
            records[fs] = {"staged": [asdict(s) for s in staged if s is not None],
                           "written": len(result.rows) + len(failed)}
        return records


def received(record: dict) -> Result:
    """A worker's record of one feature set's staged files, as the Result the driver's sink commits."""
    return Result(written=record["written"], staged=[Staged.of(s) for s in record["staged"]])

