"""Extraction planning: which (clip, variant) keys a feature set still needs, and the run that fills them.

`run_extraction(params, feature_set, corpus)` is what `aver extract` and the DVC extract stages call:
manifest rows × configured variants → drop keys already in the store with the same content hash and config
fingerprint → run the engine → write atomic parts and ledger files as batches complete.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import math
import time
from dataclasses import dataclass

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from features.audio_io import MIN_DURATION_S
from pipelines.code_identity import code_identity
from pipelines.config import feature_config, paths
from pipelines.engines import get_engine
from pipelines.extractor import (RETRIED_REASONS, RETRYABLE, Extractor, build, extractor_class, failure, fingerprint,
                                 full_schema, key_of, modality_of, variant_modality)
from pipelines.group import Member
from pipelines.manifest import ledger_row, read_corpus_root, read_manifest
from pipelines.sink import GroupSink, StoreSink
from pipelines.store import FeatureStore
from pipelines.store.compaction import compact

N_PEERS = 3          # babble talkers (features.augment_audio.MIN_BABBLE_TALKERS)
PEER_SPARES = 5      # further candidates, used when a talker turns out unusable at extraction
PEER_STRIDE = 7
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


def _stable_int(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def _peer_pool(rows: list[dict]) -> list[dict]:
    """Clips that can be babble talkers as far as the manifest tells: an audio stream at least as long as the
    shortest usable clip. Extraction checks the samples too and skips a candidate that fails (augment_audio)."""
    return [r for r in rows if r["has_audio"] and (r.get("duration") is None or r["duration"] >= MIN_DURATION_S)]


def _peers(pool: list[dict], root, clip_id: str) -> list[str]:
    """Babble candidates for a clip, in order: N_PEERS talkers plus PEER_SPARES to fall back on, all distinct,
    drawn deterministically from the pool (without the clip itself) with a stride coprime to its size, so they
    spread over the corpus rather than sitting next to each other in clip order (often the same speaker)."""
    others = [r for r in pool if r["clip_id"] != clip_id]
    n = len(others)
    if not n:
        return []
    start = _stable_int(clip_id) % n
    stride = next(s for s in itertools.count(PEER_STRIDE) if math.gcd(s, n) == 1)
    return [str(root / others[(start + k * stride) % n]["path"]) for k in range(min(N_PEERS + PEER_SPARES, n))]


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


def plan_items(params: dict, feature_set: str, corpus: str, extractor: Extractor):
    """Every key the feature set should hold → (items to run, ledger rows for clips lacking the modality)."""
    p = paths(params)
    rows = read_manifest(p["manifests"], corpus).to_pylist()
    root = read_corpus_root(p["manifests"], corpus)
    variants = feature_config(params, feature_set)["variants"]
    augment = params.get("augment", {})
    need = "has_audio" if extractor.modality == "audio" else "has_video"
    items, absent = [], []
    pool = _peer_pool(rows)
    for row in rows:
        for variant in variants:
            item = {**row, "variant": variant, "abspath": str(root / row["path"])}
            if not row[need]:
                absent.append(ledger_row(corpus, row["path"], feature_set, "modality_absent",
                                         f"clip has no {extractor.modality} stream", clip_id=row["clip_id"],
                                         variant=variant, content_hash=row["content_hash"]))
                continue
            item["augment"] = augment
            item["peers"] = _peers(pool, root, row["clip_id"]) if variant.startswith("babble") else []
            items.append(item)
    return items, absent


def planned_keys(params: dict, feature_set: str, corpus: str) -> dict[tuple[str, str], str]:
    """(clip_id, variant) -> content hash of every row the feature set should hold for the corpus."""
    fcfg = feature_config(params, feature_set)
    items, absent = plan_items(params, feature_set, corpus, build(fcfg["extractor"], dict(fcfg["params"])))
    return {(i["clip_id"], i["variant"]): i["content_hash"] for i in items + absent}


class _StoredRows:
    """Upstream feature rows of the store, each feature set read once: the row of the item's (clip, variant), else
    the clip's clean row when the variant perturbs the other modality (noisy audio leaves the faces clean). A
    variant of the upstream's own modality never falls back: its results would be clean results."""

    def __init__(self, store: FeatureStore, corpus: str):
        self.store, self.corpus, self.tables, self.modalities = store, corpus, {}, {}

    def get(self, feature_set: str, item: dict) -> dict | None:
        if feature_set not in self.tables:
            self.tables[feature_set] = {(r["clip_id"], r["variant"]): r
                                        for r in self.store.read(feature_set, self.corpus).to_pylist()}
            kind = self.store.info(feature_set, self.corpus)["kind"]
            self.modalities[feature_set] = modality_of(kind)
        rows, variant = self.tables[feature_set], item["variant"]
        row = rows.get((item["clip_id"], variant))
        if row is None and variant_modality(variant) not in (None, self.modalities[feature_set]):
            row = rows.get((item["clip_id"], "clean"))
        return row


def _missing_input(item: dict, extractor: Extractor, feature_set: str, corpus: str) -> dict:
    return ledger_row(corpus, item["path"], extractor.kind, f"missing_input:{feature_set}",
                      f"no {feature_set} row for this clip (failed or not extracted yet)", **key_of(item))


def _attach_inputs(items: list[dict], extractor: Extractor, stored: _StoredRows,
                   corpus: str) -> tuple[list[dict], list[dict]]:
    """Join upstream feature rows from the store; report what is missing."""
    ready, missing = [], []
    for item in items:
        inputs = {fs: stored.get(fs, item) for fs in extractor.requires}
        lacking = [fs for fs, row in inputs.items() if row is None]
        if lacking:
            missing.append(_missing_input(item, extractor, lacking[0], corpus))
        else:
            ready.append({**item, "inputs": inputs})
    return ready, missing


@dataclass
class _Job:
    """One feature set's share of a run: what it still needs and where its results go."""
    feature_set: str
    extractor: Extractor
    meta: dict
    summary: ExtractSummary
    todo: list[dict]
    before: dict

    @property
    def member(self) -> Member:
        return self.feature_set, self.extractor.kind, self.meta["params"]


def _counts(store: FeatureStore, feature_set: str, corpus: str) -> dict[str, int]:
    """Committed feature rows and ledger rows (each key is stored once: pipelines/store/commits.py)."""
    return {"rows": store.read(feature_set, corpus, columns=["clip_id", "variant"]).num_rows,
            "failed": store.read(feature_set, corpus, "ledger", columns=["clip_id", "variant"]).num_rows}


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
    """Plan one feature set: prune stale rows, ledger clips lacking the modality, list the keys still to do."""
    extractor, fp, meta = config_fingerprint(params, feature_set, store, corpus, upstream_fps)
    meta["engine"] = engine
    items, absent = plan_items(params, feature_set, corpus, extractor)
    planned = {(i["clip_id"], i["variant"]): i["content_hash"] for i in items + absent}
    summary = ExtractSummary(feature_set, corpus, engine, fp, planned=len(planned))
    store.clean_temporaries(feature_set, corpus)
    summary.removed = store.prune(feature_set, corpus, fp, planned, retry_reasons=RETRIED_REASONS)
    done = store.done_keys(feature_set, corpus, fp)
    summary.already_done = len(done)
    before = _counts(store, feature_set, corpus)     # the run's new ledger rows include those for absent modalities
    store.write_ledger(feature_set, corpus, [a for a in absent if (a["clip_id"], a["variant"]) not in done], meta)
    todo = [i for i in items if (i["clip_id"], i["variant"]) not in done][:limit]
    return _Job(feature_set, extractor, meta, summary, todo, before)


def _units(jobs: list[_Job], store: FeatureStore, corpus: str) -> tuple[list[dict], dict[str, list[dict]]]:
    """One unit per (clip, variant) with every feature set that needs it, upstream first, ordered by clip so a
    worker sees a clip's variants together. An upstream row comes from the same unit when it is computed there,
    else from the store; items whose upstream is computed in this run under another key (a variant of the other
    modality falling back to the clean row) are returned per feature set, to run once this pass is stored."""
    units: dict[tuple[str, str], dict] = {}
    deferred: dict[str, list[dict]] = {}
    in_run = {job.feature_set for job in jobs}
    stored = _StoredRows(store, corpus)
    for job in jobs:
        ready, missing = [], []
        for item in job.todo:
            key = (item["clip_id"], item["variant"])
            chained = units[key]["feature_sets"] if key in units else []
            inputs = {up: stored.get(up, item) for up in job.extractor.requires if up not in chained}
            lacking = [up for up, row in inputs.items() if row is None]
            if not lacking:
                ready.append((key, item, inputs))
            elif lacking[0] in in_run:
                deferred.setdefault(job.feature_set, []).append(item)
            else:           # upstream not extracted at all: the same ledger rows a run of this set alone writes
                missing.append(_missing_input(item, job.extractor, lacking[0], corpus))
        store.write_ledger(job.feature_set, corpus, missing, job.meta)
        for key, item, inputs in ready:
            unit = units.setdefault(key, {**item, "feature_sets": [], "inputs": {}})
            unit["feature_sets"].append(job.feature_set)
            unit["inputs"].update(inputs)
    return sorted(units.values(), key=lambda u: (u["clip_id"], u["variant"])), deferred


def _run_pass(params: dict, jobs: list[_Job], units: list[dict], store: FeatureStore, corpus: str, engine: str,
              options: dict, bar: Progress) -> None:
    chunk = params.get("engine", {}).get("chunk_size", 32)
    sinks = {job.feature_set: StoreSink(store, job.feature_set, corpus, full_schema(job.extractor), job.meta, chunk,
                                        progress=bar, task=bar.add_task(job.feature_set, total=len(job.todo)))
             for job in jobs}
    sink = GroupSink(sinks)
    crash = ""
    try:
        get_engine(engine).run([job.member for job in jobs], units, sink, options)
    except Exception as e:  # noqa: BLE001 - the engine itself failed (cluster lost): keep what came back
        log.exception("the %s engine failed; the items it did not finish are recorded as retryable", engine)
        crash = f": the {engine} engine failed ({type(e).__name__}: {e})"
    sink.flush()
    _record_lost(jobs, units, store, corpus, crash)


def _record_lost(jobs: list[_Job], units: list[dict], store: FeatureStore, corpus: str, crash: str) -> None:
    """Units the engine never returned (a worker or node lost for good) become retryable ledger rows."""
    for job in jobs:
        present = store.done_keys(job.feature_set, corpus, job.meta["fingerprint"], include_retried=True)
        lost = [failure(u, job.extractor.kind, f"{RETRYABLE}lost", f"no result came back for this item{crash}")
                for u in units if job.feature_set in u["feature_sets"]
                and (u["clip_id"], u["variant"]) not in present]
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
    units, deferred = _units(jobs, store, corpus)
    label = f"{corpus} ({engine})"
    columns = [TextColumn(f"[bold]{{task.description}}[/] {label}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        if units:
            _run_pass(params, jobs, units, store, corpus, engine, options, bar)
        later = [job for job in jobs if job.feature_set in deferred]
        stored = _StoredRows(store, corpus)       # read after the first pass: it holds that pass's rows
        for job in later:
            job.todo, missing = _attach_inputs(deferred[job.feature_set], job.extractor, stored, corpus)
            store.write_ledger(job.feature_set, corpus, missing, job.meta)
        later = [job for job in later if job.todo]
        if later:
            second = [{**item, "feature_sets": [job.feature_set]} for job in later for item in job.todo]
            _run_pass(params, later, second, store, corpus, engine, options, bar)
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
