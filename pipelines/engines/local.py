"""In-process engine: one extractor group, batches in order. For debugging and small corpora."""
from __future__ import annotations

from typing import Callable

from pipelines.engines import batches
from pipelines.engines.retry import RetryPolicy, process_with_retries
from pipelines.extractor import Result, limit_threads
from pipelines.group import ExtractorGroup, Member


def run(members: list[Member], units: list[dict], sink: Callable[[dict[str, Result]], None], options: dict) -> None:
    group = ExtractorGroup(members)
    limit_threads(group.resources)
    group.setup()
    policy = RetryPolicy.of(options)
    for batch in batches(units, group.resources.batch_size):
        sink(process_with_retries(group, batch, policy))
