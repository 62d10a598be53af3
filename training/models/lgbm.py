"""LightGBM classifiers and valence/arousal regressors on scalar features (functionals, face statistics, embeddings).

Params (params.yaml, per model): any LGBMClassifier/LGBMRegressor argument (n_estimators, learning_rate,
num_leaves, ...), plus `modalities` (override the default of the registry name), `features` (modality -> {feature
set: globs}, override the train section's selection), `normalize` (none | global | speaker) and
`early_stopping_rounds` (used only when the train stage passes a validation frame).
"""
from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np

from pipelines.errors import BadParams
from training.data import Frame
from training.models import MODALITIES
from training.models.state import read_state, write_state
from training.models.tabular import TabularInputs, full_proba

DEFAULTS = {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 10,
            "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.5, "reg_lambda": 1.0,
            "random_state": 0, "verbose": -1,
            "n_jobs": 1}   # OpenMP threads spin-wait: on small data or a busy machine one thread is many times faster


def _split_params(params: dict, modalities: tuple[str, ...]) -> tuple[TabularInputs, int | None, dict]:
    params = dict(params)
    inputs = TabularInputs(params.pop("modalities", modalities), params.pop("features", None),
                           params.pop("normalize", "none"))
    stopping = params.pop("early_stopping_rounds", None)
    return inputs, stopping, {**DEFAULTS, **params}


def _threads(params: dict) -> int:
    return int(params.get("n_jobs") or 0)      # 0: LightGBM's default


def _callbacks(stopping: int | None) -> list:
    return [lgb.early_stopping(int(stopping), verbose=False)] if stopping else []


class LGBMModel:
    """Gradient-boosted trees; missing inputs (NaN) are handled natively by LightGBM. Saved as LightGBM's own text
    model (no code runs on loading), and predicted from that booster whether fitted or loaded."""

    def __init__(self, params: dict, classes: list[str], modalities: tuple[str, ...]):
        self.name, self.classes = "lgbm", classes
        self.inputs, self.stopping, self.lgbm_params = _split_params(params, modalities)
        self.modalities = self.inputs.modalities

    def fit(self, train: Frame, valid: Frame | None = None) -> None:
        x = self.inputs.fit_transform(train)
        estimator = lgb.LGBMClassifier(**self.lgbm_params)
        extra = {}
        if valid is not None and len(valid) and self.stopping:
            extra = {"eval_set": [(self.inputs.transform(valid), valid.y)],
                     "eval_sample_weight": [valid.weights], "callbacks": _callbacks(self.stopping)}
        estimator.fit(x, train.y, sample_weight=train.weights, **extra)
        self.booster, self.seen = estimator.booster_, estimator.classes_

    def predict_proba(self, test: Frame, modalities: tuple[str, ...] = MODALITIES) -> np.ndarray:
        # what LGBMClassifier.predict_proba returns: the booster's probabilities, two columns for a binary task
        proba = self.booster.predict(self.inputs.transform(test, modalities), num_threads=_threads(self.lgbm_params))
        proba = proba if proba.ndim == 2 else np.column_stack([1.0 - proba, proba])
        return full_proba(proba, self.seen, len(self.classes))

    def save(self, directory: Path) -> None:
        self.booster.save_model(Path(directory) / "lgbm.txt")
        write_state(directory, "inputs", {"inputs": self.inputs.state(), "seen": self.seen})

    def restore(self, directory: Path) -> None:
        state = read_state(directory, "inputs")
        self.inputs.restore(state["inputs"])
        self.seen = state["seen"]
        self.booster = lgb.Booster(model_file=Path(directory) / "lgbm.txt")


class LGBMRegressor:
    """One LGBMRegressor per continuous target, each fitted on the rows where that target is known."""

    def __init__(self, params: dict, targets: list[str], modalities: tuple[str, ...]):
        self.name, self.targets = "lgbm_reg", targets
        self.inputs, self.stopping, self.lgbm_params = _split_params(params, modalities)
        self.modalities = self.inputs.modalities

    def fit(self, train: Frame, valid: Frame | None = None) -> None:
        x = self.inputs.fit_transform(train)
        self.estimators = {}
        for t in self.targets:
            y = train.target(t)
            known = np.isfinite(y)
            if not known.any():
                raise BadParams(f"no training rows have a {t!r} label")
            extra = {}
            if valid is not None and self.stopping and np.isfinite(valid.target(t)).any():
                vy = valid.target(t)
                vk = np.isfinite(vy)
                extra = {"eval_set": [(self.inputs.transform(valid)[vk], vy[vk])],
                         "callbacks": _callbacks(self.stopping)}
            self.estimators[t] = lgb.LGBMRegressor(**self.lgbm_params).fit(x[known], y[known], **extra)

    def predict(self, test: Frame, modalities: tuple[str, ...] = MODALITIES) -> np.ndarray:
        x = self.inputs.transform(test, modalities)
        return np.column_stack([self.estimators[t].predict(x) for t in self.targets])


def lgbm_audio(params: dict, classes: list[str]) -> LGBMModel:
    return LGBMModel(params, classes, ("audio",))


def lgbm_video(params: dict, classes: list[str]) -> LGBMModel:
    return LGBMModel(params, classes, ("video",))


def lgbm_concat(params: dict, classes: list[str]) -> LGBMModel:
    return LGBMModel(params, classes, ("audio", "video"))


def lgbm_reg_audio(params: dict, targets: list[str]) -> LGBMRegressor:
    return LGBMRegressor(params, targets, ("audio",))


def lgbm_reg_video(params: dict, targets: list[str]) -> LGBMRegressor:
    return LGBMRegressor(params, targets, ("video",))


def lgbm_reg_concat(params: dict, targets: list[str]) -> LGBMRegressor:
    return LGBMRegressor(params, targets, ("audio", "video"))
