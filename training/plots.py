"""DVC plot data files written by the evaluate stage (one file per model so each renders as its own plot).

  plots/confusion/<model>.csv   actual,predicted        one row per clean test prediction (`dvc plots`
                                                        template `confusion`, x: actual, y: predicted)
  plots/recall/<model>.csv      class,recall            pooled per-class recall (template `bar_horizontal`)
  plots/robustness.csv          model,variant,uar       pooled UAR per test variant (clean and noisy)
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def write_plots(predictions: pd.DataFrame, pooled: dict[str, dict[str, dict]], out_dir: Path) -> list[Path]:
    """`predictions`: model, variant, true, pred rows; `pooled`: model -> variant -> classification metrics."""
    written = []
    for sub in ("confusion", "recall"):
        (out_dir / "plots" / sub).mkdir(parents=True, exist_ok=True)
    for model, rows in predictions[predictions["variant"] == "clean"].groupby("model", sort=True):
        path = out_dir / "plots" / "confusion" / f"{model}.csv"
        rows[["true", "pred"]].rename(columns={"true": "actual", "pred": "predicted"}).to_csv(path, index=False)
        written.append(path)
    for model, by_variant in pooled.items():
        path = out_dir / "plots" / "recall" / f"{model}.csv"
        recall = by_variant["clean"]["recall"]
        pd.DataFrame({"class": list(recall), "recall": list(recall.values())}).to_csv(path, index=False)
        written.append(path)
    robustness = [{"model": m, "variant": v, "uar": r["uar"]} for m, bv in pooled.items() for v, r in bv.items()]
    path = out_dir / "plots" / "robustness.csv"
    pd.DataFrame(robustness, columns=["model", "variant", "uar"]).to_csv(path, index=False)
    return [*written, path]
