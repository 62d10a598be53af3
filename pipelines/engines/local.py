"""In-process engine: one extractor group, batches in order. For debugging and small corpora."""
from __future__ import annotations

from typing import Callable

from pipelines.engines.retry import RetryPolicy, process_with_retries
from pipelines.extractor import Result, limit_threads
from pipelines.group import ExtractorGroup, Member
from pipelines.planning import Spool


def run(members: list[Member], units: Spool, sink: Callable[[dict[str, Result]], None], options: dict) -> None:
    group = ExtractorGroup(members, units.store_uri)
    limit_threads(group.resources)
    group.setup()
    policy = RetryPolicy.of(options)
    for batch in units.batches(group.resources.batch_size):
        sink(process_with_retries(group, batch, policy))
