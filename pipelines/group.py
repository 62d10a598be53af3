"""Several feature sets extracted in one pass: what every engine runs in a worker.

An engine builds one `ExtractorGroup` per worker from `members` — (feature_set, extractor kind, params), upstream
sets first — and feeds it *units*: one (clip, variant) work item (see pipelines/extractor.py) plus
  - `feature_sets`: the members this unit still needs, upstream first,
  - `stored_inputs`: {upstream feature set: variant} for upstream rows the worker reads by key from the store
    (`with_stored_inputs`, before processing: the driver never carries them),
  - `inputs`: {upstream feature set: row}, the rows at hand.
A unit's feature sets run one after another in the same process, so they share the decoded media
(features.audio_io keeps the last clips decoded) and a downstream set (`fer_embedding` after `faces`) gets the row
its upstream just produced without a round trip through the store. A single feature set is a group of one.
"""
from __future__ import annotations

from dataclasses import replace

from pipelines.extractor import RETRYABLE, Extractor, Resources, Result, build, failure
from pipelines.rowcheck import reject_garbage

Member = tuple[str, str, dict]      # (feature set, extractor kind, extractor params)


class ExtractorGroup:
    def __init__(self, members: list[Member], store: str | None = None):
        """`store`: the store's root (folder or URI) the units' `stored_inputs` are read from."""
        self.store = store
        self._upstream = None
        self.extractors: dict[str, Extractor] = {fs: build(kind, params) for fs, kind, params in members}
        res = [e.resources for e in self.extractors.values()]
        # The worker must fit its most demanding member; batches stay as small as the smallest member asks.
        self.resources = replace(Resources(), num_cpus=max(r.num_cpus for r in res),
                                 num_gpus=max(r.num_gpus for r in res), batch_size=min(r.batch_size for r in res))

    def setup(self) -> None:
        for extractor in self.extractors.values():
            extractor.setup()

    def with_stored_inputs(self, units: list[dict]) -> list[dict]:
        """The units with their `stored_inputs` read from the store into `inputs` (one filtered read per upstream
        set and batch). A row not found leaves the input lacking: `process` records `missing_input`."""
        wanted: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for u in units:
            for up, variant in (u.get("stored_inputs") or {}).items():
                if up not in (u.get("inputs") or {}):
                    wanted.setdefault((up, u["corpus"]), set()).add((u["clip_id"], variant))
        if not wanted:
            return units
        if self._upstream is None:
            from pipelines.store import FeatureStore
            from pipelines.store.reader import RowsByKey
            self._upstream = RowsByKey(FeatureStore(self.store, ""))
        found = {where: self._upstream.get(*where, keys) for where, keys in wanted.items()}
        return [{**u, "inputs": {**{up: row for up, variant in (u.get("stored_inputs") or {}).items()
                                    if (row := found.get((up, u["corpus"]), {}).get((u["clip_id"], variant)))},
                                 **(u.get("inputs") or {})}} for u in units]

    def process(self, units: list[dict]) -> dict[str, Result]:
        out = {fs: Result() for fs in self.extractors}
        for unit in units:
            produced: dict[str, dict] = {}
            errored: set[str] = set()
            for fs in unit["feature_sets"]:
                extractor = self.extractors[fs]
                inputs = {**(unit.get("inputs") or {}), **produced}
                lacking = [up for up in extractor.requires if up not in inputs]
                if lacking and lacking[0] in errored:   # upstream hit a transient error: retried together
                    out[fs].errors.append(failure(unit, extractor.kind, f"{RETRYABLE}upstream",
                                                  f"{lacking[0]} hit a retryable error on this clip"))
                    continue
                if lacking:     # the upstream set failed on this clip just now: its ledger row says why
                    out[fs].failures.append(failure(unit, extractor.kind, f"missing_input:{lacking[0]}",
                                                    f"{lacking[0]} failed on this clip in the same run"))
                    continue
                item = {**unit, "inputs": {up: inputs[up] for up in extractor.requires}}
                result = reject_garbage(extractor, [item], extractor.process([item]))   # never store garbage
                out[fs].rows += result.rows
                out[fs].failures += result.failures
                out[fs].errors += result.errors
                if result.rows:
                    produced[fs] = result.rows[0]
                if result.errors:
                    errored.add(fs)
        return out

