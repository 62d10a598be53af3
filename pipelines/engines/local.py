"""In-process engine: one extractor, batches in order. For debugging and small corpora."""
from __future__ import annotations

from typing import Callable

from pipelines.engines import batches
from pipelines.extractor import Result, build, limit_threads


def run(kind: str, params: dict, items: list[dict], sink: Callable[[Result], None], options: dict) -> None:
    extractor = build(kind, params)
    limit_threads(extractor.resources)
    extractor.setup()
    for batch in batches(items, extractor.resources.batch_size):
        sink(extractor.process(batch))
