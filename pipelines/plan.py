"""Extraction planning: which (clip, variant) keys a feature set still needs, and the run that fills them.

`run_extraction(params, feature_set, corpus)` is what `aver extract` and the DVC extract stages call:
manifest rows × configured variants → drop keys already in the store with the same content hash and config
fingerprint → run the engine → write atomic parts and ledger files as batches complete.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pipelines.code_identity import code_identity
from pipelines.config import feature_config, paths
from pipelines.engines import get_engine
from pipelines.extractor import (RETRIED_REASONS, RETRYABLE, Extractor, build, extractor_class, failure, fingerprint,
                                 full_schema, key_of, modality_of, variant_modality)
from pipelines.keyset import KeySet
from pipelines.group import Member
from pipelines.manifest import ledger_row, manifest_batches
from pipelines import planning
from pipelines.planning import SliceContext, Spool
from pipelines.sink import GroupSink, StoreSink
from pipelines.store import FeatureStore
from pipelines.store.compaction import compact

# Planner rules that change stored rows, in the fingerprint of the sets they affect (only those re-extract):
# babble talkers (2: distinct, usable, with spares); upstream fallback (2: clean rows only across modalities).
PEERS_VERSION = 2
FALLBACK_VERSION = 2
log = logging.getLogger(__name__)


@dataclass
class ExtractSummary:
    feature_set: str
    corpus: str
    engine: str
    fingerprint: str
    planned: int = 0
    already_done: int = 0
    extracted: int = 0
    failed: int = 0
    retryable: int = 0      # items that failed for a reason not their own (worker lost, I/O, ...): retried next run
    removed: int = 0
    seconds: float = 0.0


NOT_COMPUTING = ("resources", "device", "max_batch", "batch_size")    # where a row is computed, and how batched


def _computing(params: dict) -> dict:
    """The params that change what is computed (the fingerprint's share of the params)."""
    return {k: v for k, v in params.items() if k not in NOT_COMPUTING}


def config_fingerprint(params: dict, feature_set: str, store: FeatureStore, corpus: str,
                       upstream_fps: dict[str, str] | None = None) -> tuple[Extractor, str, dict]:
    """The feature set's extractor, fingerprint and part metadata. An upstream set's fingerprint comes from
    `upstream_fps` when it is extracted in the same run (the store may still hold its previous configuration)."""
    fcfg = feature_config(params, feature_set)
    extractor = build(fcfg["extractor"], dict(fcfg["params"]))
    augment = params.get("augment", {}) if set(fcfg["variants"]) - {"clean"} else {}
    upstream = {fs: (upstream_fps or {}).get(fs) or store.info(fs, corpus)["fingerprint"] for fs in extractor.requires}
    rules = {}
    if any(v.startswith("babble") for v in fcfg["variants"]):
        rules["babble_peers"] = PEERS_VERSION
    if extractor.requires and any(variant_modality(v) == extractor.modality for v in fcfg["variants"]):
        rules["upstream_fallback"] = FALLBACK_VERSION
    plan = {"plan": rules} if rules else {}
    code = code_identity(type(extractor).__module__)
    config = {"params": _computing(fcfg["params"]), "variants": sorted(fcfg["variants"]), "augment": augment,
              "upstream": upstream, "code": code, **plan}
    # An extractor whose weights are not pinned by its params alone (a Hub model, a local model folder) says which
    # files it uses: they join the fingerprint, so new weights under the same name re-extract, and the metadata.
    provenance = extractor.provenance() if hasattr(extractor, "provenance") else None
    if provenance is not None:
        config["provenance"] = provenance
    fp = fingerprint(extractor.kind, extractor.version, config)
    meta = {"kind": extractor.kind, "version": extractor.version, "params": fcfg["params"],
            "variants": fcfg["variants"], "augment": augment, "upstream": upstream, "code": code, **plan,
            "fingerprint": fp, **({"provenance": provenance} if provenance is not None else {})}
    return extractor, fp, meta


def _manifest_keys(params: dict, feature_set: str, corpus: str):
    """(clip_ids, variants, content_hashes) of every key the feature set should hold, a manifest slice at a time
    (only the key columns are read)."""
    variants = feature_config(params, feature_set)["variants"]
    manifests = paths(params)["manifests"]
    for batch in manifest_batches(manifests, corpus, planning.SLICE_CLIPS, ["clip_id", "content_hash"]):
        ids, hashes = batch.column("clip_id").to_pylist(), batch.column("content_hash").to_pylist()
        for variant in variants:
            yield ids, [variant] * len(ids), hashes


def planned_keys(params: dict, feature_set: str, corpus: str) -> dict[tuple[str, str], str]:
    """(clip_id, variant) -> content hash of every row the feature set should hold for the corpus."""
    return {(c, v): h for ids, vs, hashes in _manifest_keys(params, feature_set, corpus)
            for c, v, h in zip(ids, vs, hashes)}


def _missing_input(item: dict, extractor: Extractor, feature_set: str, corpus: str) -> dict:
    return ledger_row(corpus, item["path"], extractor.kind, f"missing_input:{feature_set}",
                      f"no {feature_set} row for this clip (failed or not extracted yet)", **key_of(item))


@dataclass
class _Job:
    """One feature set's share of a run: what is done, where its upstream rows are, what it planned."""
    feature_set: str
    extractor: Extractor
    meta: dict
    summary: ExtractSummary
    variants: list[str]
    done: KeySet                       # keys not to plan again
    before: dict
    left: int | None = None            # items it may still plan (--limit)
    upstream: dict = field(default_factory=dict)    # upstream set -> (its stored keys, its modality)
    planned: int = 0                   # units of this pass that include it
    deferred: int = 0                  # items whose upstream row this pass computes under another key

    @property
    def member(self) -> Member:
        return self.feature_set, self.extractor.kind, self.meta["params"]


def _counts(store: FeatureStore, feature_set: str, corpus: str) -> dict[str, int]:
    """Feature rows and ledger rows stored (each key is stored once: pipelines/store/commits.py)."""
    return {"rows": len(store.key_set(feature_set, corpus, kind="part")),
            "failed": len(store.key_set(feature_set, corpus, include_retried=True, kind="ledger"))}


def upstream_first(params: dict, feature_sets: list[str]) -> list[str]:
    """The feature sets ordered so that every set comes after those of the list it requires."""
    order: list[str] = []

    def add(fs: str) -> None:
        if fs in order:
            return
        for up in extractor_class(feature_config(params, fs)["extractor"]).requires:
            if up in feature_sets:
                add(up)
        order.append(fs)
    for fs in feature_sets:
        add(fs)
    return order


def _prepare(params: dict, feature_set: str, corpus: str, store: FeatureStore, engine: str,
             upstream_fps: dict[str, str], limit: int | None) -> _Job:
    """Plan one feature set: prune stale rows and list the keys already done (streamed, as key sets)."""
    extractor, fp, meta = config_fingerprint(params, feature_set, store, corpus, upstream_fps)
    meta["engine"] = engine
    planned = KeySet.of(_manifest_keys(params, feature_set, corpus))
    summary = ExtractSummary(feature_set, corpus, engine, fp, planned=len(planned))
    store.clean_temporaries(feature_set, corpus)
    summary.removed = store.prune(feature_set, corpus, fp, planned, retry_reasons=RETRIED_REASONS)
    done = store.key_set(feature_set, corpus, fp)
    summary.already_done = len(done)
    before = _counts(store, feature_set, corpus)     # the run's new ledger rows include those for absent modalities
    return _Job(feature_set, extractor, meta, summary, feature_config(params, feature_set)["variants"], done, before,
                left=limit)


def _link_upstream(jobs: list[_Job], store: FeatureStore, corpus: str) -> None:
    """Which upstream rows the store holds now (keys only), for the jobs that read some."""
    for job in jobs:
        job.upstream = {up: (store.key_set(up, corpus, kind="part"), modality_of(store.info(up, corpus)["kind"]))
                        for up in job.extractor.requires}


def _upstream_variants(keys: KeySet, modality: str | None, ids: list[str], variants: list[str]) -> list[str | None]:
    """The upstream row each item reads: its own variant's, else the clean one when the variant perturbs the other
    modality (noisy audio leaves the faces clean), else none. A variant of the upstream's own modality never falls
    back: its results would be clean results."""
    own, clean = keys.contains(ids, variants), keys.contains(ids, ["clean"] * len(ids))
    return [v if o else "clean" if c and variant_modality(v) not in (None, modality) else None
            for v, o, c in zip(variants, own, clean)]


def _units(jobs: list[_Job], plan: SliceContext, in_run: set[str]) -> Iterator[list[dict]]:
    """Per manifest slice, one unit per (clip, variant) with every feature set that needs it, upstream first,
    ordered by clip so a worker sees a clip's variants together. An upstream row comes from the same unit when it
    is computed there, else the worker reads it from the store (`stored_inputs`: {set: variant}); an item whose
    upstream this run computes under another key (a variant of the other modality falling back to the clean row)
    is left for a second pass (`deferred`)."""
    store, corpus = plan.store, plan.corpus
    for rows, talkers in plan.slices():
        units: dict[tuple[str, str], dict] = {}
        for job in jobs:
            items, absent = plan.items(job.extractor, job.feature_set, job.variants, rows, talkers, job.done)
            store.write_ledger(job.feature_set, corpus, absent, job.meta)
            items = items if job.left is None else items[:max(0, job.left)]
            ids, variants = [i["clip_id"] for i in items], [i["variant"] for i in items]
            choice = {up: _upstream_variants(keys, modality, ids, variants)
                      for up, (keys, modality) in job.upstream.items()}
            missing = []
            for n, item in enumerate(items):
                key = (item["clip_id"], item["variant"])
                chained = units[key]["feature_sets"] if key in units else []
                stored = {up: choice[up][n] for up in job.extractor.requires if up not in chained}
                lacking = [up for up, variant in stored.items() if variant is None]
                if lacking and lacking[0] in in_run:
                    job.deferred += 1
                elif lacking:       # upstream not extracted at all: the same ledger rows a run of this set alone writes
                    missing.append(_missing_input(item, job.extractor, lacking[0], corpus))
                else:
                    unit = units.setdefault(key, {**item, "feature_sets": [], "stored_inputs": {}})
                    unit["feature_sets"].append(job.feature_set)
                    unit["stored_inputs"].update(stored)
                    job.planned += 1
            if job.left is not None:
                job.left -= len(items)
            store.write_ledger(job.feature_set, corpus, missing, job.meta)
        yield sorted(units.values(), key=lambda u: (u["clip_id"], u["variant"]))


def _run_pass(params: dict, jobs: list[_Job], units: Iterator[list[dict]], store: FeatureStore, corpus: str,
              engine: str, options: dict, bar: Progress) -> None:
    """Spool the units slice by slice, run the engine over the spool, record what never came back."""
    distributed = engine != "local"
    spool = Spool(store.files.uri, files_per_batch=4 * options.get("workers", 2) if distributed else 1)
    try:
        for chunk in units:
            spool.write(chunk)
        spool.flush()
        if not spool.count:
            return
        chunk_size = params.get("engine", {}).get("chunk_size", 32)
        sinks = {job.feature_set: StoreSink(store, job.feature_set, corpus, full_schema(job.extractor), job.meta,
                                            chunk_size, progress=bar,
                                            task=bar.add_task(job.feature_set, total=job.planned))
                 for job in jobs}
        sink = GroupSink(sinks)
        crash = ""
        try:
            get_engine(engine).run([job.member for job in jobs], spool, sink, options)
        except Exception as e:  # noqa: BLE001 - the engine itself failed (cluster lost): keep what came back
            log.exception("the %s engine failed; the items it did not finish are recorded as retryable", engine)
            crash = f": the {engine} engine failed ({type(e).__name__}: {e})"
        sink.flush()
        _record_lost(jobs, spool, store, corpus, crash)
    finally:
        spool.remove()


def _record_lost(jobs: list[_Job], spool: Spool, store: FeatureStore, corpus: str, crash: str) -> None:
    """Units the engine never returned (a worker or node lost for good) become retryable ledger rows."""
    for job in jobs:
        present = store.key_set(job.feature_set, corpus, job.meta["fingerprint"], include_retried=True)
        for units in spool.batches(planning.SLICE_CLIPS):
            mine = [u for u in units if job.feature_set in u["feature_sets"]]
            found = present.contains([u["clip_id"] for u in mine], [u["variant"] for u in mine])
            lost = [failure(u, job.extractor.kind, f"{RETRYABLE}lost", f"no result came back for this item{crash}")
                    for u, f in zip(mine, found) if not f]
            store.write_ledger(job.feature_set, corpus, lost, job.meta)


def run_extractions(params: dict, feature_sets: list[str], corpus: str, engine: str | None = None,
                    engine_options: dict | None = None, limit: int | None = None,
                    progress: bool = True) -> list[ExtractSummary]:
    """Extract several feature sets of a corpus in one engine run (one worker pool, media decoded once per clip);
    one summary per feature set, upstream sets first."""
    t0 = time.perf_counter()
    eng_cfg = params.get("engine", {})
    engine = engine or eng_cfg.get("name", "local")
    common = {k: eng_cfg[k] for k in ("retry", "compact_mb") if k in eng_cfg}    # for every engine
    options = {**common, **eng_cfg.get(engine, {}), **(engine_options or {})}
    p = paths(params)
    store = FeatureStore(p["store"], p["manifests"])
    jobs: list[_Job] = []
    for fs in upstream_first(params, feature_sets):
        jobs.append(_prepare(params, fs, corpus, store, engine, {j.feature_set: j.summary.fingerprint for j in jobs},
                             limit))
    plan = SliceContext(params, store, corpus)
    _link_upstream(jobs, store, corpus)
    label = f"{corpus} ({engine})"
    columns = [TextColumn(f"[bold]{{task.description}}[/] {label}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        _run_pass(params, jobs, _units(jobs, plan, {job.feature_set for job in jobs}), store, corpus, engine,
                  options, bar)
        later = [job for job in jobs if job.deferred]
        for job in later:       # plan again what the first pass left: its upstream rows are stored now
            job.done = store.key_set(job.feature_set, corpus, job.meta["fingerprint"], include_retried=True)
            job.left = None if limit is None else limit - job.planned
            job.planned = job.deferred = 0
        _link_upstream(later, store, corpus)
        if later:
            _run_pass(params, later, _units(later, plan, set()), store, corpus, engine, options, bar)
    if options.get("compact_mb"):
        for job in jobs:
            compact(store, job.feature_set, corpus, int(options["compact_mb"] * 2**20))
    for job in jobs:
        after = _counts(store, job.feature_set, corpus)
        reasons = store.read(job.feature_set, corpus, "ledger", columns=["reason"]).column("reason").to_pylist()
        job.summary.retryable = sum(r.startswith(RETRYABLE) for r in reasons)
        job.summary.extracted = after["rows"] - job.before["rows"]
        job.summary.failed += after["failed"] - job.before["failed"] - job.summary.retryable
        job.summary.seconds = time.perf_counter() - t0
    return [job.summary for job in jobs]


def run_extraction(params: dict, feature_set: str, corpus: str, **options) -> ExtractSummary:
    """Extract one feature set of a corpus (what `aver extract FS` and the DVC extract stages call)."""
    return run_extractions(params, [feature_set], corpus, **options)[0]
