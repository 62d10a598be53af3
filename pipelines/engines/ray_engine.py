"""Ray Data engine: a callable extractor-group class per actor, `map_batches` over one actor pool for every
feature set of the run (actors start once, whatever the number of feature sets).

Local by default (`ray.init()` on this machine); `options["address"]` or `RAY_ADDRESS` joins a cluster
(`ray start --head` on one node, `ray start --address=HEAD:6379` on the others, aver installed on every node).
Actor resources (`num_cpus`, `num_gpus`) are the largest any member extractor's `resources` params ask for.
Units are read on the cluster from the pass's spool (CPU-less tasks, one per Parquet file of JSON units beside the
store); each actor reads its units' upstream rows by key from the store, writes its batches' feature rows and
ledger rows to the store itself (which must be on storage every node reaches: an object store URI, or a shared
mount at the same path) and sends the driver only the names and keys of those files and counts; the driver commits
them (pipelines/store/commits.py): a file written by an actor that died before its result came back is never
committed, so a resubmitted batch is stored once. Rows are bit-identical to
the other engines'; the files are smaller (one per batch): `--compact-mb` merges them.
Failures: an extractor's unexpected exceptions are retried inside the actor (pipelines/engines/retry.py). An actor
that dies (OOM kill, a node lost) is restarted, on a node that has room, and Ray resubmits its tasks without limit
(Ray Data's own default), so a killed worker or node costs time, not rows: the run completes on what remains. The
limit is on real tries instead: `BatchTries`, a counter on the driver's node, counts how often each batch was
started on an actor; a batch whose actor died on each of its `retry.attempts` tries is not started again but
recorded as retryable rows (`retryable:lost`). Counting tries, not submissions, matters: while a lost node is not
yet declared dead (seconds), every resubmission to its actor fails at once ("actor unavailable") and a bounded
`max_task_retries` ran out before the actor came back, losing the batches in flight. Anything Ray still cannot
return (an input block lost with no lineage left) is skipped (`max_errored_blocks`); the planner records its items
as retryable.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Callable

import numpy as np
import pyarrow.parquet as pq

from pipelines.engines.retry import RetryPolicy, process_with_retries
from pipelines.extractor import RETRYABLE, Result, failure, limit_threads
from pipelines.group import ExtractorGroup, Member
from pipelines.planning import Spool
from pipelines.sink import WorkerStage, received


class BatchTries:
    """How many times each batch was started on an actor, kept outside the actors so that it survives their deaths
    (one per run, on the driver's node, no CPU). A batch is forgotten once its result is on its way back."""

    def __init__(self):
        self.started: dict[str, int] = {}

    def start(self, batch: str) -> int:
        self.started[batch] = self.started.get(batch, 0) + 1
        return self.started[batch]

    def finish(self, batch: str) -> None:
        self.started.pop(batch, None)


def _batch_id(units: list[dict]) -> str:
    return hashlib.sha256(json.dumps(sorted([u["clip_id"], u["variant"]] for u in units)).encode()).hexdigest()


class RayExtractor:
    """One per actor: builds and sets the extractor group up once, then processes batches of units and stores each
    batch's feature rows and ledger rows itself (one file per feature set, kind and batch, committed by the driver);
    only the files' names, keys and counts go back to the driver, so feature rows (crops, embeddings) never funnel
    through it."""

    def __init__(self, members: list[Member], policy: RetryPolicy, targets: dict[str, dict], store: str, tries):
        self.group, self.policy, self.tries = ExtractorGroup(members, store), policy, tries
        self.stage = WorkerStage(targets)
        limit_threads(self.group.resources)
        self.group.setup()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import ray
        units = [json.loads(u) for u in batch["unit"]]
        batch_id = _batch_id(units)
        tries = ray.get(self.tries.start.remote(batch_id))
        if tries > self.policy.attempts:        # its actor died on every try: this batch kills its worker
            results = self._given_up(units, tries - 1)
        else:
            results = process_with_retries(self.group, units, self.policy)
        commits = self.stage(results)
        self.tries.finish.remote(batch_id)
        return {"commit": np.array([json.dumps(commits)], dtype=object)}

    def _given_up(self, units: list[dict], tries: int) -> dict[str, Result]:
        detail = (f"its worker died during each of the {tries} tries of its batch (killed for memory? a crash in "
                  "native code?); retried by the next run")
        return {fs: Result(errors=[failure(u, ex.kind, f"{RETRYABLE}lost", detail)
                                   for u in units if fs in u["feature_sets"]])
                for fs, ex in self.group.extractors.items()}


def _read_spool(store: str, item: dict) -> list[dict]:
    """The units of one spool file (JSON, as the driver wrote them)."""
    from pipelines.store.files import Files
    table = pq.read_table(item["file"], columns=["unit"], filesystem=Files(store).fs)
    return [{"unit": unit} for unit in table.column("unit").to_pylist()]


def _init(options: dict) -> None:
    import ray
    if ray.is_initialized():
        return
    address = options.get("address") or os.environ.get("RAY_ADDRESS")
    kwargs = {"address": address} if address else {"num_cpus": options.get("num_cpus")}
    ray.init(**kwargs, include_dashboard=False, log_to_driver=bool(options.get("verbose")),
             configure_logging=False)


def run(members: list[Member], units: Spool, sink: Callable[[dict[str, Result]], None], options: dict) -> None:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    _init(options)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = bool(options.get("verbose"))
    context.max_errored_blocks = -1         # a block Ray cannot recover must not stop the others: retried next run
    resources = ExtractorGroup(members).resources
    policy = RetryPolicy.of(options)
    # One item per spool file, read in a task that asks for no CPU, so it never waits behind the extractor actors
    # (read_parquet lists and reads in tasks of one CPU each: on a cluster the actors hold, they would starve).
    ds = ray.data.from_items([{"file": name} for name in units.names()])
    ds = ds.flat_map(functools.partial(_read_spool, units.store_uri), num_cpus=0)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    tries = ray.remote(num_cpus=0, max_restarts=0, scheduling_strategy=here)(BatchTries).remote()
    # Actor restarts and task resubmissions are unlimited by Ray Data's default for actor pools (max_restarts=-1,
    # max_task_retries=-1; passing them to map_batches is deprecated since Ray 2.60): BatchTries bounds the tries.
    ds = ds.map_batches(RayExtractor,
                        fn_constructor_kwargs={"members": members, "policy": policy, "targets": sink.worker_targets(),
                                               "store": units.store_uri, "tries": tries},
                        batch_size=resources.batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=options.get("workers", 2)),
                        num_cpus=resources.num_cpus, num_gpus=resources.num_gpus)
    try:
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
            for commit in batch["commit"]:
                sink({fs: received(record) for fs, record in json.loads(commit).items()})
    finally:
        ray.kill(tries)
