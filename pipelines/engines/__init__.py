"""Engines run an extractor group (pipelines/group.py) over work units and hand each batch's results to a sink.

All engines share one contract: `run(members, units, sink, options)`, `units` a `planning.Spool` (the pass's units
in Parquet files beside the store, read in batches: the driver never holds them all); `sink({feature_set: Result})`
is called in the driver for every processed batch: local, with the rows; Ray, with the names of the files the actor
wrote (`staged`) and `written` counting their rows; Beam, the same once the pipeline has finished. The sink commits.
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
