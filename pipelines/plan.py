"""Extraction planning: which (clip, variant) keys a feature set still needs, and the run that fills them.

`run_extraction(params, feature_set, corpus)` is what `aver extract` and the DVC extract stages call:
manifest rows × configured variants → drop keys already in the store with the same content hash and config
fingerprint → run the engine → write atomic parts and ledger files as batches complete.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass

import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pipelines.config import feature_config, paths
from pipelines.engines import get_engine
from pipelines.extractor import Extractor, Result, build, fingerprint, full_schema, key_of
from pipelines.manifest import LEDGER_SCHEMA, ledger_row, read_corpus_root, read_manifest
from pipelines.store import FeatureStore

N_PEERS = 3
RETRIED_REASONS = ("missing_input:",)


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
    removed: int = 0
    seconds: float = 0.0


def _stable_int(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def _peers(rows: list[dict], root, clip_id: str) -> list[str]:
    """A few other clips with audio, picked deterministically: the babble noise source."""
    others = [r for r in rows if r["has_audio"] and r["clip_id"] != clip_id]
    if not others:
        return []
    start = _stable_int(clip_id) % len(others)
    return [str(root / others[(start + k * 7) % len(others)]["path"]) for k in range(min(N_PEERS, len(others)))]


def config_fingerprint(params: dict, feature_set: str, store: FeatureStore, corpus: str) -> tuple[Extractor, str, dict]:
    fcfg = feature_config(params, feature_set)
    extractor = build(fcfg["extractor"], dict(fcfg["params"]))
    augment = params.get("augment", {}) if set(fcfg["variants"]) - {"clean"} else {}
    upstream = {fs: store.info(fs, corpus)["fingerprint"] for fs in extractor.requires}
    fp = fingerprint(extractor.kind, extractor.version,
                     {"params": fcfg["params"], "variants": sorted(fcfg["variants"]),
                      "augment": augment, "upstream": upstream})
    meta = {"kind": extractor.kind, "version": extractor.version, "params": fcfg["params"],
            "variants": fcfg["variants"], "augment": augment, "upstream": upstream, "fingerprint": fp}
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
    for row in rows:
        for variant in variants:
            item = {**row, "variant": variant, "abspath": str(root / row["path"])}
            if not row[need]:
                absent.append(ledger_row(corpus, row["path"], feature_set, "modality_absent",
                                         f"clip has no {extractor.modality} stream", clip_id=row["clip_id"],
                                         variant=variant, content_hash=row["content_hash"]))
                continue
            item["augment"] = augment
            item["peers"] = _peers(rows, root, row["clip_id"]) if variant.startswith("babble") else []
            items.append(item)
    return items, absent


def planned_keys(params: dict, feature_set: str, corpus: str) -> dict[tuple[str, str], str]:
    """(clip_id, variant) -> content hash of every row the feature set should hold for the corpus."""
    fcfg = feature_config(params, feature_set)
    items, absent = plan_items(params, feature_set, corpus, build(fcfg["extractor"], dict(fcfg["params"])))
    return {(i["clip_id"], i["variant"]): i["content_hash"] for i in items + absent}


def _attach_inputs(items: list[dict], extractor: Extractor, store: FeatureStore,
                   corpus: str) -> tuple[list[dict], list[dict]]:
    """Join upstream feature rows (clean row when the upstream lacks the variant); report what is missing."""
    missing = []
    tables = {fs: {(r["clip_id"], r["variant"]): r for r in store.read(fs, corpus).to_pylist()}
              for fs in extractor.requires}
    ready = []
    for item in items:
        inputs = {}
        for fs, rows in tables.items():
            row = rows.get((item["clip_id"], item["variant"])) or rows.get((item["clip_id"], "clean"))
            if row is None:
                missing.append(ledger_row(corpus, item["path"], extractor.kind, f"missing_input:{fs}",
                                          f"no {fs} row for this clip (failed or not extracted yet)",
                                          **key_of(item)))
                break
            inputs[fs] = row
        else:
            ready.append({**item, "inputs": inputs})
    return ready, missing


class StoreSink:
    """Receives batch results from an engine and writes them as atomic parts of about `chunk_size` rows."""

    def __init__(self, store: FeatureStore, feature_set: str, corpus: str, schema: pa.Schema, meta: dict,
                 chunk_size: int, progress=None, task=None):
        self.store, self.feature_set, self.corpus = store, feature_set, corpus
        self.schema, self.meta, self.chunk_size = schema, meta, chunk_size
        self.progress, self.task = progress, task
        self.rows: list[dict] = []
        self.failures: list[dict] = []

    def __call__(self, result: Result) -> None:
        self.rows += result.rows
        self.failures += result.failures
        if self.progress is not None:
            self.progress.advance(self.task, len(result.rows) + len(result.failures))
        if len(self.rows) + len(self.failures) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        # The ledger goes first: its keys and the part's keys are disjoint, so either order is safe to resume.
        self.store.write_ledger(self.feature_set, self.corpus, self.failures, self.meta)
        self.store.write_part(self.feature_set, self.corpus,
                              pa.Table.from_pylist(self.rows, schema=self.schema), self.meta)
        self.rows, self.failures = [], []

    def beam_targets(self) -> dict:
        run = uuid.uuid4().hex[:12]
        d = self.store.dir(self.feature_set, self.corpus)
        d.mkdir(parents=True, exist_ok=True)
        meta = {b"aver": json.dumps({**self.meta, "feature_set": self.feature_set, "corpus": self.corpus},
                                    sort_keys=True).encode()}
        return {"part_prefix": str(d / f"part-{run}"), "part_schema": self.schema.with_metadata(meta),
                "ledger_prefix": str(d / f"ledger-{run}"), "ledger_schema": LEDGER_SCHEMA.with_metadata(meta)}


def run_extraction(params: dict, feature_set: str, corpus: str, engine: str | None = None,
                   engine_options: dict | None = None, limit: int | None = None,
                   progress: bool = True) -> ExtractSummary:
    t0 = time.perf_counter()
    eng_cfg = params.get("engine", {})
    engine = engine or eng_cfg.get("name", "local")
    options = {**eng_cfg.get(engine, {}), **(engine_options or {})}
    p = paths(params)
    store = FeatureStore(p["store"], p["manifests"])
    extractor, fp, meta = config_fingerprint(params, feature_set, store, corpus)
    meta["engine"] = engine
    items, absent = plan_items(params, feature_set, corpus, extractor)
    planned = {(i["clip_id"], i["variant"]): i["content_hash"] for i in items + absent}
    summary = ExtractSummary(feature_set, corpus, engine, fp, planned=len(planned))

    store.clean_temporaries(feature_set, corpus)
    summary.removed = store.prune(feature_set, corpus, fp, planned, retry_reasons=RETRIED_REASONS)
    done = store.done_keys(feature_set, corpus, fp)
    summary.already_done = len(done)
    store.write_ledger(feature_set, corpus, [a for a in absent if (a["clip_id"], a["variant"]) not in done], meta)
    todo = [i for i in items if (i["clip_id"], i["variant"]) not in done][:limit]
    if extractor.requires:
        todo, missing = _attach_inputs(todo, extractor, store, corpus)
        store.write_ledger(feature_set, corpus, missing, meta)
        summary.failed += len(missing)

    before = store.info(feature_set, corpus)
    schema = full_schema(extractor)
    columns = [TextColumn(f"[bold]{feature_set}[/] {corpus} ({engine})"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("extract", total=len(todo))
        sink = StoreSink(store, feature_set, corpus, schema, meta,
                         chunk_size=eng_cfg.get("chunk_size", 32), progress=bar, task=task)
        if todo:
            get_engine(engine).run(extractor.kind, feature_config(params, feature_set)["params"], todo, sink, options)
            sink.flush()
    after = store.info(feature_set, corpus)
    summary.extracted = after["rows"] - before["rows"]
    summary.failed += after["failed"] - before["failed"]
    summary.seconds = time.perf_counter() - t0
    return summary
