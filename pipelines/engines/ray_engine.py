"""Ray Data engine: a callable extractor-group class per actor, `map_batches` over one actor pool for every
feature set of the run (actors start once, whatever the number of feature sets).

Local by default (`ray.init()` on this machine); `options["address"]` or `RAY_ADDRESS` joins a cluster
(`ray start --head` on one node, `ray start --address=HEAD:6379` on the others, aver installed on every node).
Actor resources (`num_cpus`, `num_gpus`) are the largest any member extractor's `resources` params ask for.
Work items travel pickled; each actor writes its batches' feature rows to the store itself (which must be on storage
every node reaches: a shared mount at the same path, or an object store URI) and sends the driver only ledger rows,
counts and the file names, which the driver commits (pipelines/store/commits.py): a file written by an actor that
died before its result came back is never committed, so a resubmitted batch is stored once. Rows are bit-identical
to the other engines'; the files are smaller (one per batch): `--compact-mb` merges them.
Failures: an extractor's unexpected exceptions are retried inside the actor (pipelines/engines/retry.py); an actor
that dies (OOM kill, lost node) is restarted and its task resubmitted at most `retry.attempts - 1` times; a batch
that still fails is skipped (`max_errored_blocks`) and the planner records its items as retryable.
"""
from __future__ import annotations

import os
import pickle
from typing import Callable

import numpy as np
import pyarrow as pa

from pipelines.engines.retry import RetryPolicy, process_with_retries
from pipelines.extractor import Result, limit_threads
from pipelines.group import ExtractorGroup, Member


class RayExtractor:
    """One per actor: builds and sets the extractor group up once, then processes batches of units and writes each
    batch's feature rows itself (one file per feature set and batch, committed by the driver); only ledger rows,
    counts and file names go back to the driver, so feature rows (crops, embeddings) never funnel through it."""

    def __init__(self, members: list[Member], policy: RetryPolicy, targets: dict[str, dict]):
        from pipelines.store import FeatureStore
        self.group, self.policy, self.targets = ExtractorGroup(members), policy, targets
        self.stores = {fs: FeatureStore(t["root"], "") for fs, t in targets.items()}
        limit_threads(self.group.resources)
        self.group.setup()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = process_with_retries(self.group, [pickle.loads(b) for b in batch["unit"]], self.policy)
        for fs, result in results.items():
            target = self.targets[fs]
            table = pa.Table.from_pylist(result.rows, schema=target["schema"])
            staged = self.stores[fs].stage("part", fs, target["corpus"], table, target["meta"])
            result.staged = [staged] if staged is not None else []
            result.written, result.rows = len(result.rows), []
        return {"result": np.array([pickle.dumps(results)], dtype=object)}


def _init(options: dict) -> None:
    import ray
    if ray.is_initialized():
        return
    address = options.get("address") or os.environ.get("RAY_ADDRESS")
    kwargs = {"address": address} if address else {"num_cpus": options.get("num_cpus")}
    ray.init(**kwargs, include_dashboard=False, log_to_driver=bool(options.get("verbose")),
             configure_logging=False)


def run(members: list[Member], units: list[dict], sink: Callable[[dict[str, Result]], None], options: dict) -> None:
    import ray
    _init(options)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = bool(options.get("verbose"))
    context.max_errored_blocks = -1         # a batch lost for good must not stop the others: retried next run
    resources = ExtractorGroup(members).resources
    policy = RetryPolicy.of(options)
    ds = ray.data.from_items([{"unit": pickle.dumps(u)} for u in units],
                             override_num_blocks=max(1, min(len(units), 4 * options.get("workers", 2))))
    ds = ds.map_batches(RayExtractor,
                        fn_constructor_kwargs={"members": members, "policy": policy, "targets": sink.worker_targets()},
                        batch_size=resources.batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=options.get("workers", 2)),
                        num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
                        max_restarts=-1, max_task_retries=policy.attempts - 1)
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
        for blob in batch["result"]:
            sink(pickle.loads(blob))
