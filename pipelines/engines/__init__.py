"""Engines run an extractor group (pipelines/group.py) over work units and hand each batch's results to a sink.

All engines share one contract: `run(members, units, sink, options)`; `sink({feature_set: Result})` is called in
the driver for every processed batch (local: with the rows; Ray: with the rows already written by the actor, `staged`
naming the files and `written` counting them; Beam: the same, once the pipeline has finished), and the sink commits.
"""
from __future__ import annotations

import importlib

from pipelines.errors import UnknownName

ENGINES = {"local": "pipelines.engines.local", "ray": "pipelines.engines.ray_engine",
           "beam": "pipelines.engines.beam_engine"}


def get_engine(name: str):
    if name not in ENGINES:
        raise UnknownName(f"unknown engine {name!r}; choose from {sorted(ENGINES)}")
    return importlib.import_module(ENGINES[name])


def batches(items: list, size: int):
    for i in range(0, len(items), max(1, size)):
        yield items[i:i + size]
