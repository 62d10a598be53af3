"""Apache Beam engine: `DoFn.setup` builds the extractor once per worker; rows and ledger rows are written
by Beam's parquetio (temporary files renamed at finalisation, so a killed run leaves no partial shard).

Runner and pipeline options pass through (`options["runner"]`, `options["pipeline_args"]`): DirectRunner in
multi-process mode here; FlinkRunner, SparkRunner or DataflowRunner on a cluster (the store must then be on a
filesystem every worker reaches, e.g. a shared mount or an object store path Beam understands).
"""
from __future__ import annotations

import pickle
from typing import Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.extractor import Result, build, limit_threads


class ExtractDoFn(beam.DoFn):
    def __init__(self, kind: str, params: dict):
        self.kind, self.params = kind, params

    def setup(self):
        self.extractor = build(self.kind, self.params)
        limit_threads(self.extractor.resources)
        self.extractor.setup()

    def process(self, batch):
        result = self.extractor.process([pickle.loads(b) for b in batch])
        yield from result.rows
        for failure in result.failures:
            yield beam.pvalue.TaggedOutput("failures", failure)


def pipeline_options(options: dict) -> PipelineOptions:
    runner = options.get("runner", "DirectRunner")
    args = [f"--runner={runner}", *options.get("pipeline_args", [])]
    if runner == "DirectRunner" and not any(a.startswith("--direct_running_mode") for a in args):
        args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={options.get('workers', 2)}"]
    return PipelineOptions(args)


def run(kind: str, params: dict, items: list[dict], sink: Callable[[Result], None], options: dict) -> None:
    targets = sink.beam_targets()
    batch_size = build(kind, params).resources.batch_size
    with beam.Pipeline(options=pipeline_options(options)) as p:
        out = (p
               | "Items" >> beam.Create([pickle.dumps(it) for it in items], reshuffle=True)
               | "Batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
               | "Extract" >> beam.ParDo(ExtractDoFn(kind, params)).with_outputs("failures", main="rows"))
        _ = out.rows | "WriteRows" >> beam.io.WriteToParquet(
            targets["part_prefix"], schema=targets["part_schema"], file_name_suffix=".parquet")
        _ = out.failures | "WriteLedger" >> beam.io.WriteToParquet(
            targets["ledger_prefix"], schema=targets["ledger_schema"], file_name_suffix=".parquet")
