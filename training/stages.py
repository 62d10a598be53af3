"""The DVC train and evaluate stages, as the CLI runs them from params.yaml.

train    : `train:` section -> cross-validated predictions, fold composition and final models in `<runs>/train/`
           (training/run.py); no metrics.
evaluate : `<runs>/train/` -> every metric, computed once, in the DVC metrics file `<runs>/metrics.json`, and the
           DVC plot data under `<runs>/plots/` (training/evaluate.py).
"""
from __future__ import annotations

from pipelines.config import paths
from pipelines.store.versions import reading_store
from training.evaluate import write_evaluation
from training.run import train


def train_stage(params: dict) -> dict:
    p = paths(params)
    return train(params["train"], reading_store(p), p["runs"] / "train")


def evaluate_stage(params: dict) -> dict:
    runs = paths(params)["runs"]
    return write_evaluation(runs / "train", runs / "metrics.json", runs)
