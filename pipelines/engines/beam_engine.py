"""Apache Beam engine: the pass's units are read from its spool (`ReadFromParquet`); `DoFn.setup` builds the
extractor group once per worker; each feature set's rows and ledger rows leave the DoFn as tagged outputs and are written by Beam's parquetio (temporary files renamed at finalisation, so a killed run leaves no partial shard).
Unexpected exceptions are retried in the DoFn (pipelines/engines/retry.py) and leave as retryable ledger rows;
a dead worker's bundle is retried by the runner.

Runner and pipeline options pass through (`options["runner"]`, `options["pipeline_args"]`): DirectRunner in
multi-process mode here; FlinkRunner, SparkRunner or DataflowRunner on a cluster (the store must then be on a
filesystem every worker reaches, e.g. a shared mount or an object store path Beam understands).
"""
from __future__ import annotations

import json
from typing import Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.engines.retry import RetryPolicy, process_with_retries
from pipelines.extractor import Result, limit_threads
from pipelines.group import ExtractorGroup, Member
from pipelines.planning import Spool


def _tags(index: int) -> tuple[str, str]:
    """Output tags of the index-th member: its rows and its ledger rows."""
    return f"rows{index}", f"failures{index}"


class ExtractDoFn(beam.DoFn):
    def __init__(self, members: list[Member], policy: RetryPolicy, store: str):
        self.members, self.policy, self.store = members, policy, store

    def setup(self):
        self.group = ExtractorGroup(self.members, self.store)
        limit_threads(self.group.resources)
        self.group.setup()

    def process(self, batch):
        results = process_with_retries(self.group, [json.loads(record["unit"]) for record in batch], self.policy)
        for index, (fs, _, _) in enumerate(self.members):
            rows_tag, failures_tag = _tags(index)
            for row in results[fs].rows:
                yield beam.pvalue.TaggedOutput(rows_tag, row)
            for failure in results[fs].failures + results[fs].errors:
                yield beam.pvalue.TaggedOutput(failures_tag, failure)


def pipeline_options(options: dict) -> PipelineOptions:
    runner = options.get("runner", "DirectRunner")
    args = [f"--runner={runner}", *options.get("pipeline_args", [])]
    if runner == "DirectRunner" and not any(a.startswith("--direct_running_mode") for a in args):
        args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={options.get('workers', 2)}"]
    return PipelineOptions(args)


def run(members: list[Member], units: Spool, sink: Callable[[dict[str, Result]], None], options: dict) -> None:
    targets = sink.beam_targets()       # feature set -> where its rows and ledger rows go
    batch_size = ExtractorGroup(members).resources.batch_size
    tags = [tag for index in range(len(members)) for tag in _tags(index)]
    with beam.Pipeline(options=pipeline_options(options)) as p:
        out = (p
               | "Units" >> beam.io.ReadFromParquet(units.pattern(), columns=["unit"])
               | "Spread" >> beam.Reshuffle()
               | "Batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
               | "Extract" >> beam.ParDo(ExtractDoFn(members, RetryPolicy.of(options), units.store_uri))
               .with_outputs(*tags))
        for index, (fs, _, _) in enumerate(members):
            rows_tag, failures_tag = _tags(index)
            _ = out[rows_tag] | f"WriteRows{index}" >> beam.io.WriteToParquet(
                targets[fs]["part_prefix"], schema=targets[fs]["part_schema"], file_name_suffix=".parquet")
            _ = out[failures_tag] | f"WriteLedger{index}" >> beam.io.WriteToParquet(
                targets[fs]["ledger_prefix"], schema=targets[fs]["ledger_schema"], file_name_suffix=".parquet")
