"""The pipeline's steps: ingest, extract, train, evaluate, metrics, report, pretrain, and the demo corpus."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pipelines.cli.common import ParamsOpt, app, console, open_store, table
from pipelines.config import corpus_config, load_params, paths
from pipelines.errors import UserError


@app.command()
def ingest(corpora: list[str] = typer.Argument(None, help="corpus names (default: all in params.yaml)"),
           params_file: Path = ParamsOpt) -> None:
    """Scan and probe corpora into manifests (+ a ledger of unusable files)."""
    from pipelines.ingest import ingest as run_ingest
    params = load_params(params_file)
    rows = []
    for name in corpora or list(params.get("corpora", {})):
        s = run_ingest(name, corpus_config(params, name), paths(params)["manifests"])
        rows.append([name, s.clips, s.speakers, s.failed])
    table("ingest", ["corpus", "clips", "speakers", "ledger rows"], rows)


def extract_targets(params: dict, feature_sets: list[str], corpora: list[str]) -> dict[str, list[str]]:
    """corpus -> feature sets: the given sets x the given corpora, else the extract/embed entries naming either."""
    entries = {**params.get("extract", {}), **params.get("embed", {}), **params.get("embed_trained", {})}
    targets = [(t["feature_set"], t["corpus"]) for t in entries.values()]
    if feature_sets and corpora:
        targets = [(fs, c) for c in corpora for fs in feature_sets]
    elif feature_sets or corpora:
        targets = [t for t in targets if t[0] in feature_sets or t[1] in corpora]
    grouped: dict[str, list[str]] = {}
    for fs, corpus in targets:
        grouped.setdefault(corpus, []).append(fs)
    return grouped


@app.command()
def extract(feature_sets: list[str] = typer.Argument(None, help="feature sets (default: every `extract:` and "
                                                                 "`embed:` entry)"),
            corpus: list[str] = typer.Option(None, "--corpus", "-c", help="corpus (repeatable)"),
            engine: Optional[str] = typer.Option(None, help="local | ray | beam (default: params engine.name)"),
            workers: Optional[int] = typer.Option(None, help="Ray actors / Beam workers"),
            ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster address"),
            runner: Optional[str] = typer.Option(None, help="Beam runner, e.g. FlinkRunner"),
            pipeline_arg: list[str] = typer.Option(None, help="extra Beam pipeline option (repeatable)"),
            limit: Optional[int] = typer.Option(None, help="extract at most N new items per feature set (smoke runs)"),
            compact_mb: Optional[int] = typer.Option(None, help="at the end, merge small store files into files "
                                                                "of about this size (MiB)"),
            versions_out: Optional[Path] = typer.Option(None, help="write the store versions the run produced to "
                                                                   "this version file (a DVC output)"),
            params_file: Path = ParamsOpt) -> None:
    """Extract feature sets into the store (incremental: only new or changed clips). The feature sets of a corpus
    run together: one worker pool, each clip decoded once."""
    from pipelines.plan import run_extractions
    params = load_params(params_file)
    options = {k: v for k, v in {"workers": workers, "address": ray_address, "runner": runner,
                                 "pipeline_args": pipeline_arg or None, "compact_mb": compact_mb}.items() if v}
    targets = extract_targets(params, feature_sets or [], corpus or [])
    if not targets:
        raise UserError("nothing to extract: name a feature set and --corpus, or add `extract:` entries to params")
    rows, retryable = [], 0
    for c, fss in targets.items():
        for s in run_extractions(params, fss, c, engine=engine, engine_options=options, limit=limit):
            retryable += s.retryable
            rows.append([s.feature_set, c, s.engine, s.planned, s.already_done, s.extracted, s.failed,
                         s.retryable, s.removed, f"{s.seconds:.1f}"])
    table("extract", ["feature set", "corpus", "engine", "planned", "cached", "new rows", "new ledger",
                       "retryable", "pruned", "seconds"], rows)
    if versions_out:
        from pipelines.store import versions
        versions.write(versions_out, versions.current(open_store(params_file), [(fs, c) for c, fss in targets.items()
                                                                            for fs in fss]))
    if retryable:
        console.print(f"[red]{retryable} items failed for reasons that are not their own[/] (worker lost, I/O or "
                      "unexpected error; `aver store show FS CORPUS --ledger` says which): they are not cached, "
                      "run `aver extract` again to retry them")
        raise typer.Exit(1)


@app.command()
def train(params_file: Path = ParamsOpt) -> None:
    """Train the configured models on cached features (cross-validated + final fit)."""
    from training.stages import train_stage
    train_stage(load_params(params_file))


@app.command()
def evaluate(params_file: Path = ParamsOpt) -> None:
    """Compute every metric and the plot data from the training predictions (`<runs>/metrics.json`)."""
    from training.stages import evaluate_stage
    _metricstable(evaluate_stage(load_params(params_file)))


@app.command()
def metrics(params_file: Path = ParamsOpt) -> None:
    """Print the evaluate stage's metrics as a table (one row per model)."""
    path = paths(load_params(params_file))["runs"] / "metrics.json"
    if not path.exists():
        raise UserError(f"{path} does not exist yet: run `dvc repro` (or `aver train && aver evaluate`)")
    _metricstable(json.loads(path.read_text()))


def _metricstable(m: dict) -> None:
    """UAR mean ± std, WA, macro-F1 and the UAR of every robustness variant, per model."""
    extra = sorted({v for model in m["models"].values() for v in model.get("robustness") or {}})

    def num(block: dict | None, key: str = "mean") -> str:
        value = (block or {}).get(key)
        return "-" if value is None else f"{value:.3f}"
    rows = [[name, f"{num(v['uar'])} ± {num(v['uar'], 'std')}", num(v["wa"]), num(v["f1"]),
             *[num((v.get("robustness") or {}).get(k, {}).get("uar")) for k in extra]]
            for name, v in m["models"].items()]
    table(f"{m['split']} over {m['n_folds']} folds, {m['n_clips']} clips", ["model", "UAR", "WA", "macro-F1",
           *[f"UAR {k}" for k in extra]], rows)


@app.command()
def report(params_file: Path = ParamsOpt) -> None:
    """Write the static HTML run report."""
    from training.report import write_report
    console.print(f"report: {write_report(load_params(params_file))}")


@app.command()
def pretrain(which: str = typer.Argument(..., help="face | speech"), params_file: Path = ParamsOpt) -> None:
    """Train an emotion CNN on the declared pre-training speakers (params `pretrain:`), for the embedding extractors."""
    from training.pretrain import pretrain_command
    console.print(pretrain_command(which, params_file))


@app.command()
def demo(out: Path = typer.Option(Path("data/demo"), help="where to write the demo corpus"),
         seed: int = typer.Option(0), params_file: Path = ParamsOpt) -> None:
    """Generate the embedded synthetic talking-face demo corpus."""
    from pipelines.demo import generate
    cfg = load_params(params_file).get("demo", {}) if params_file.exists() else {}
    cfg = {**cfg, "seed": seed}
    console.print(f"demo corpus: {generate(out, **cfg)}")
