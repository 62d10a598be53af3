"""Two kinds of failure. A clip's own fault (`ClipError`) is a permanent ledger row, decided by the extractor.
Anything else (an unexpected exception, an I/O or CUDA error) comes back in `Result.errors`; every engine calls
`process_with_retries`, which runs those items again after an exponential backoff, a bounded number of times.
What still fails is returned as retryable ledger rows: stored, never counted as done, tried again by the next run.
A worker that dies is the engine's to retry (Ray restarts the actor and resubmits its task, Beam's runner retries
the bundle); the planner records whatever never came back as retryable too (pipelines/plan.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from pipelines.extractor import Result, error_row
from pipelines.group import ExtractorGroup


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3          # tries of an item, the first one included
    backoff_s: float = 1.0     # wait before the second try; doubled before each later one
    max_backoff_s: float = 30.0

    @classmethod
    def of(cls, options: dict) -> "RetryPolicy":
        """From params `engine.retry: {attempts, backoff_s, max_backoff_s}` (passed as options["retry"])."""
        return cls(**(options.get("retry") or {}))

    def delay(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))


def _key(row: dict) -> tuple[str, str]:
    return row["clip_id"], row["variant"]


def _run(group: ExtractorGroup, units: list[dict]) -> dict[str, Result]:
    try:
        return group.process(group.with_stored_inputs(units))
    except Exception as e:  # noqa: BLE001 - reading upstream rows or a batched extractor's process() raised:
        # the whole batch is retried
        return {fs: Result(errors=[error_row(u, ex.kind, e) for u in units if fs in u["feature_sets"]])
                for fs, ex in group.extractors.items()}


def process_with_retries(group: ExtractorGroup, units: list[dict], policy: RetryPolicy) -> dict[str, Result]:
    out = {fs: Result() for fs in group.extractors}
    produced: dict[tuple[str, str], dict[str, dict]] = {}     # rows made so far: inputs of a retried downstream
    pending = units
    for attempt in range(1, policy.attempts + 1):
        results = _run(group, pending)
        again: dict[tuple[str, str], set[str]] = {}
        for fs, result in results.items():
            out[fs].rows += result.rows
            out[fs].failures += result.failures
            for row in result.rows:
                produced.setdefault(_key(row), {})[fs] = row
            for row in result.errors:
                again.setdefault(_key(row), set()).add(fs)
        if not again or attempt == policy.attempts:
            for fs, result in results.items():
                out[fs].errors += result.errors
            return out
        time.sleep(policy.delay(attempt))
        pending = [{**u, "feature_sets": [fs for fs in u["feature_sets"] if fs in again[_key(u)]],
                    "inputs": {**(u.get("inputs") or {}), **produced.get(_key(u), {})}}
                   for u in pending if _key(u) in again]
    return out
