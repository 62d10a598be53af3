"""The evaluate step: every metric of a training run, computed once, from the files the train step wrote.

`evaluate_run(train_dir)` reads `run.json`, `folds.json`, `predictions.parquet` (and `regression.parquet`) and
returns the run's one metrics document:
  corpora, split, classes, n_clips, n_folds, train_variants, n_excluded   (from run.json)
  models.<name>     WA / UAR / macro-F1 mean ± std over folds and mean per-class recall (clean test clips),
                    `pooled` (all folds' predictions together) and `robustness.<variant>` (noisy test variants,
                    audio_only / video_only for the missing-modality evaluation)
  regression        (when configured) CCC mean ± std over folds, per model and target
  folds             per fold: its speakers and sizes, each model's metrics per test variant (with the confusion
                    matrix) and each regressor's CCC per target
`write_evaluation` writes it as `metrics.json` (the DVC metrics file: `dvc metrics show` reads its numbers) and
the DVC plot data (training/plots.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from training.metrics import ccc, classification, mean_std, summarize
from training.plots import write_plots


def pooled_metrics(rows: pd.DataFrame, classes: list[str]) -> dict:
    """Metrics of prediction rows taken together (one fold's, or all folds' for one confusion matrix)."""
    index = {c: i for i, c in enumerate(classes)}
    return classification(rows["true"].map(index).to_numpy(), rows["pred"].map(index).to_numpy(), classes)


def _model_summary(name: str, by_variant: dict[str, dict], per_fold: list[dict]) -> dict:
    """Mean ± std over folds per variant (folds that tested the variant), pooled metrics and robustness."""
    summaries = {v: summarize([f[name][v] for f in per_fold if v in f.get(name, {})]) for v in by_variant}
    clean = by_variant["clean"]
    return {**summaries["clean"], "pooled": {k: clean[k] for k in ("wa", "uar", "f1")},
            "robustness": {v: {"uar": summaries[v]["uar"], "wa": summaries[v]["wa"],
                               "pooled_uar": by_variant[v]["uar"]} for v in by_variant if v != "clean"}}


def _regression(train_dir: Path, folds: list[dict]) -> dict:
    """CCC per fold (added to `folds`) and mean ± std over folds, per regressor and target."""
    path = train_dir / "regression.parquet"
    rows = pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=["fold", "model", "target"])
    by_fold = {f["fold"]: f for f in folds}
    values: dict[str, dict[str, list[float]]] = {}
    for (fold, model, target), r in rows.groupby(["fold", "model", "target"], sort=False):
        score = ccc(r["true"].to_numpy(), r["pred"].to_numpy())
        by_fold[fold].setdefault("regression", {}).setdefault(model, {})[target] = score
        values.setdefault(model, {}).setdefault(target, []).append(score)
    return {m: {t: {"ccc": mean_std(v)} for t, v in ts.items()} for m, ts in values.items()}


def evaluate_run(train_dir: Path) -> tuple[dict, pd.DataFrame, dict]:
    """(metrics document, predictions, model -> variant -> pooled metrics) of the run in `train_dir`."""
    train_dir = Path(train_dir)
    run = json.loads((train_dir / "run.json").read_text())
    folds = json.loads((train_dir / "folds.json").read_text())
    predictions = pd.read_parquet(train_dir / "predictions.parquet")
    classes = run["classes"]
    per_fold: dict[str, dict] = {f["fold"]: {} for f in folds}
    for (fold, model, variant), rows in predictions.groupby(["fold", "model", "variant"], sort=False):
        per_fold[fold].setdefault(model, {})[variant] = pooled_metrics(rows, classes)
    pooled = {m: {v: pooled_metrics(rows, classes) for v, rows in g.groupby("variant", sort=False)}
              for m, g in predictions.groupby("model", sort=False)}
    metrics = {k: v for k, v in run.items() if k != "regression"}
    metrics["models"] = {name: _model_summary(name, by_variant, list(per_fold.values()))
                         for name, by_variant in pooled.items()}
    folds = [{**f, "models": per_fold[f["fold"]]} for f in folds]
    if run.get("regression"):
        metrics["regression"] = _regression(train_dir, folds)
    metrics["folds"] = folds
    return metrics, predictions, pooled


def write_evaluation(train_dir: Path, metrics_path: Path, plots_dir: Path) -> dict:
    """Evaluate the run in `train_dir`: `metrics_path` and `<plots_dir>/plots/`; returns the metrics."""
    metrics, predictions, pooled = evaluate_run(train_dir)
    Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics_path).write_text(json.dumps(metrics, indent=2))
    write_plots(predictions, pooled, Path(plots_dir))
    return metrics
