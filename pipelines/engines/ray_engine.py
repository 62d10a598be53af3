"""Ray Data engine: a callable extractor class per actor, `map_batches` over an actor pool.

Local by default (`ray.init()` on this machine); `options["address"]` or `RAY_ADDRESS` joins a cluster
(`ray start --head` on one node, `ray start --address=HEAD:6379` on the others, aver installed on every node).
Per-extractor resources (`num_cpus`, `num_gpus`) come from the extractor's `resources` params.
Work items and results travel pickled so rows come back bit-identical to the other engines.
"""
from __future__ import annotations

import os
import pickle
from typing import Callable

import numpy as np

from pipelines.extractor import Result, build, limit_threads


class RayExtractor:
    """One per actor: builds and sets the extractor up once, then processes batches."""

    def __init__(self, kind: str, params: dict):
        self.extractor = build(kind, params)
        limit_threads(self.extractor.resources)
        self.extractor.setup()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.extractor.process([pickle.loads(b) for b in batch["item"]])
        return {"result": np.array([pickle.dumps(result)], dtype=object)}


def _init(options: dict) -> None:
    import ray
    if ray.is_initialized():
        return
    address = options.get("address") or os.environ.get("RAY_ADDRESS")
    kwargs = {"address": address} if address else {"num_cpus": options.get("num_cpus")}
    ray.init(**kwargs, include_dashboard=False, log_to_driver=bool(options.get("verbose")),
             configure_logging=False)


def run(kind: str, params: dict, items: list[dict], sink: Callable[[Result], None], options: dict) -> None:
    import ray
    _init(options)
    ray.data.DataContext.get_current().enable_progress_bars = bool(options.get("verbose"))
    resources = build(kind, params).resources
    ds = ray.data.from_items([{"item": pickle.dumps(it)} for it in items],
                             override_num_blocks=max(1, min(len(items), 4 * options.get("workers", 2))))
    ds = ds.map_batches(RayExtractor, fn_constructor_kwargs={"kind": kind, "params": params},
                        batch_size=resources.batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=options.get("workers", 2)),
                        num_cpus=resources.num_cpus, num_gpus=resources.num_gpus)
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
        for blob in batch["result"]:
            sink(pickle.loads(blob))
