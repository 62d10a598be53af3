"""Apache Beam engine: the pass's units are read from its spool (`ReadFromParquet`); `DoFn.setup` builds the
extractor group once per worker; each worker writes its batches' feature rows and ledger rows to the store itself
(one file per feature set, kind and batch, through pyarrow.fs: a local folder or an object store URI) and leaves a small record of them under `<set>/<corpus>/_pending/<run>/`;
when the pipeline has finished, the driver reads those records and commits the files (pipelines/store/commits.py).
A bundle the runner retried may have left a record too: the commit keeps each key once. A killed Beam run commits
nothing (its files are never read and are deleted once old), where local and Ray keep every committed batch.
Unexpected exceptions are retried in the DoFn (pipelines/engines/retry.py) and leave as retryable ledger rows;
a dead worker's bundle is retried by the runner.

Runner and pipeline options pass through (`options["runner"]`, `options["pipeline_args"]`): DirectRunner in
multi-process mode here; PortableRunner, FlinkRunner, SparkRunner or DataflowRunner on a cluster (the store must
then be on storage every worker reaches: a shared mount or an object store URI, with credentials in the workers'
standard environment).
"""
from __future__ import annotations

import json
import uuid
from typing import Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.engines.retry import RetryPolicy, process_with_retries
from pipelines.extractor import Result, limit_threads
from pipelines.group import ExtractorGroup, Member
from pipelines.planning import Spool
from pipelines.sink import WorkerStage, received
from pipelines.store.files import Files

PENDING = "_pending"


class ExtractDoFn(beam.DoFn):
    def __init__(self, members: list[Member], policy: RetryPolicy, targets: dict[str, dict], run: str, store: str):
        self.members, self.policy, self.targets, self.run, self.store = members, policy, targets, run, store

    def setup(self):
        self.group = ExtractorGroup(self.members, self.store)
        self.stage = WorkerStage(self.targets)
        limit_threads(self.group.resources)
        self.group.setup()

    def process(self, batch):
        results = process_with_retries(self.group, [json.loads(record["unit"]) for record in batch], self.policy)
        for fs, record in self.stage(results).items():
            if record["staged"]:
                store, corpus = self.stage.stores[fs], self.targets[fs]["corpus"]
                folder = store.dir(fs, corpus) / PENDING / self.run
                store.files.write_bytes(folder / f"{uuid.uuid4().hex}.json", json.dumps(record).encode())
        yield len(batch)


def pipeline_options(options: dict, store_uri: str = "") -> PipelineOptions:
    runner = options.get("runner", "DirectRunner")
    args = [f"--runner={runner}", *options.get("pipeline_args", [])]
    if runner == "DirectRunner" and not any(a.startswith("--direct_running_mode") for a in args):
        args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={options.get('workers', 2)}"]
    endpoint = Files(store_uri).endpoint_url() if store_uri.startswith("s3://") else None
    if endpoint and not any(a.startswith("--s3_endpoint_url") for a in args):
        args.append(f"--s3_endpoint_url={endpoint}")    # Beam reads the spool on S3 with its own client (boto3)
    return PipelineOptions(args)


def _collect(sink, targets: dict[str, dict], run: str) -> None:
    """Hand the workers' records of this run to the sink (which commits them), then delete them."""
    from pipelines.store import FeatureStore
    for fs, target in targets.items():
        store = FeatureStore(target["root"], "")
        folder = store.dir(fs, target["corpus"]) / PENDING / run
        for info in store.files.entries(folder):
            sink({fs: received(json.loads(store.files.read_bytes(folder / info.base_name)))})
        sink.flush()
        if store.files.entries(folder):
            store.files.delete_folder(folder)


def run(members: list[Member], units: Spool, sink: Callable[[dict[str, Result]], None], options: dict) -> None:
    targets = sink.worker_targets()       # feature set -> where its rows go
    batch_size = ExtractorGroup(members).resources.batch_size
    run_id = uuid.uuid4().hex[:12]
    try:
        with beam.Pipeline(options=pipeline_options(options, units.store_uri)) as p:
            _ = (p
                 # Beam's filesystems take the endpoint from --s3_endpoint_url, not from pyarrow's URI options
                 | "Units" >> beam.io.ReadFromParquet(units.pattern().split("?")[0], columns=["unit"])
                 | "Spread" >> beam.Reshuffle()
                 | "Batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
                 | "Extract" >> beam.ParDo(ExtractDoFn(members, RetryPolicy.of(options), targets, run_id,
                                                      units.store_uri)))
    finally:        # what finished is committed even if the pipeline failed later
        _collect(sink, targets, run_id)
