"""The DVC train and evaluate stages, as the CLI runs them from params.yaml.

train    : `train:` section -> cross-validated predictions, per-fold details and final models in `<runs>/train/`.
evaluate : `<runs>/train/` -> the DVC metrics file `<runs>/metrics.json` (one compact block per model) and the DVC
           plot data under `<runs>/plots/` (confusion matrices, per-class recall, robustness).
"""
from __future__ import annotations

import json

import pandas as pd

from pipelines.config import paths
from pipelines.store import FeatureStore
from training.plots import write_plots
from training.run import pooled_metrics, train_and_evaluate


def train_stage(params: dict) -> dict:
    p = paths(params)
    return train_and_evaluate(params["train"], FeatureStore(p["store"], p["manifests"]), p["runs"] / "train")


def evaluate_stage(params: dict) -> dict:
    runs = paths(params)["runs"]
    full = json.loads((runs / "train" / "metrics.json").read_text())
    predictions = pd.read_parquet(runs / "train" / "predictions.parquet")
    classes = full["classes"]
    pooled = {m: {v: pooled_metrics(rows, classes) for v, rows in g.groupby("variant", sort=False)}
              for m, g in predictions.groupby("model", sort=False)}
    write_plots(predictions, pooled, runs)
    compact = {"n_clips": full["n_clips"], "n_folds": full["n_folds"], "split": full["split"], "models": {
        name: {"uar": m["uar"]["mean"], "uar_std": m["uar"]["std"], "wa": m["wa"]["mean"], "f1": m["f1"]["mean"],
               **{f"uar_{v}": r["uar"]["mean"] for v, r in m.get("robustness", {}).items()}}
        for name, m in full["models"].items()}}
    if "regression" in full:
        compact["regression"] = {name: {t: v["ccc"]["mean"] for t, v in targets.items()}
                                 for name, targets in full["regression"].items()}
    (runs / "metrics.json").write_text(json.dumps(compact, indent=2))
    return compact
