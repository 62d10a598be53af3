"""Model registry: every classifier the train stage can fit, behind one small interface.

A model is built by `build(name, params, classes)` from its registry name and its params.yaml block, fitted on a
training `Frame` (training/data.py) and asked for class probabilities on a test `Frame`. `MODELS` maps a name to a
factory `(params, classes) -> EmotionModel`; `lazy("module:attr")` defers the import so torch models cost nothing
until used.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

import joblib
import numpy as np

from pipelines.errors import UnknownName

if TYPE_CHECKING:
    from training.data import Frame

MODALITIES: tuple[str, ...] = ("audio", "video")


@runtime_checkable
class EmotionModel(Protocol):
    """A classifier over `classes` (the order of `predict_proba`'s columns).

    `modalities` in `predict_proba` names the modalities available at test time: a model must ignore the inputs of
    the others (treat them as missing), so the same fitted model can be evaluated with a modality dropped.
    Optional: an attribute `modalities: tuple[str, ...]` (which inputs it uses; fusion skips members that have none
    available) and `save(dir)` / classmethod `load(dir)` (default: joblib of the whole object).
    """
    name: str

    def fit(self, train: "Frame", valid: "Frame | None" = None) -> None: ...

    def predict_proba(self, test: "Frame", modalities: tuple[str, ...] = MODALITIES) -> np.ndarray: ...


class RegressionModel(Protocol):
    """A regressor of continuous labels (valence, arousal, ...): `predict` returns [n, len(targets)]."""
    name: str
    targets: list[str]

    def fit(self, train: "Frame", valid: "Frame | None" = None) -> None: ...

    def predict(self, test: "Frame", modalities: tuple[str, ...] = MODALITIES) -> np.ndarray: ...


Factory = Callable[[dict, list[str]], EmotionModel]


def lazy(target: str) -> Callable:
    """A factory that imports "module:attr" on first call."""
    def factory(params: dict, labels: list[str]):
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)(params, labels)
    factory.__qualname__ = target
    return factory


# name -> factory(params, classes). One line per model; torch models live in fbp/temporal/vavl.
MODELS: dict[str, Factory] = {
    "lgbm_audio": lazy("training.models.lgbm:lgbm_audio"),
    "lgbm_video": lazy("training.models.lgbm:lgbm_video"),
    "lgbm_concat": lazy("training.models.lgbm:lgbm_concat"),
    "svm_audio": lazy("training.models.tabular:svm_audio"),
    "svm_video": lazy("training.models.tabular:svm_video"),
    "svm_concat": lazy("training.models.tabular:svm_concat"),
    "fusion_avg": lazy("training.models.fusion:fusion_avg"),
    "fusion_stack": lazy("training.models.fusion:fusion_stack"),
    "fbp": lazy("training.models.fbp:FBPModel"),
    "temporal": lazy("training.models.temporal:TemporalModel"),
    "vavl": lazy("training.models.vavl:VAVLModel"),
}

# name -> factory(params, targets) for the valence/arousal heads.
REGRESSORS: dict[str, Callable[[dict, list[str]], RegressionModel]] = {
    "lgbm_reg_audio": lazy("training.models.lgbm:lgbm_reg_audio"),
    "lgbm_reg_video": lazy("training.models.lgbm:lgbm_reg_video"),
    "lgbm_reg_concat": lazy("training.models.lgbm:lgbm_reg_concat"),
    "temporal_reg": lazy("training.models.temporal:temporal_regressor"),
    "vavl_reg": lazy("training.models.vavl:vavl_regressor"),
}


def _build(registry: dict[str, Callable], name: str, params: dict | None, outputs: list[str]):
    """A fresh model from `registry`; `params["model"]` picks the entry when `name` is a run alias."""
    params = dict(params or {})
    kind = params.pop("model", name)
    if kind not in registry:
        raise UnknownName(f"unknown model {kind!r}; known: {sorted(registry)}")
    model = registry[kind](params, list(outputs))
    model.name = name
    return model


def build(name: str, params: dict | None, classes: list[str]) -> EmotionModel:
    return _build(MODELS, name, params, classes)


def build_regressor(name: str, params: dict | None, targets: list[str]) -> RegressionModel:
    return _build(REGRESSORS, name, params, targets)


def model_modalities(model: object) -> tuple[str, ...]:
    """The modalities a model reads; models that do not say are assumed to read all of them."""
    return tuple(getattr(model, "modalities", MODALITIES))


def save_model(model: object, directory: Path, info: dict) -> None:
    """Persist a fitted model plus `model.json` (name, classes, params) for `aver predict`."""
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save"):
        model.save(directory)
        info = {**info, "loader": f"{type(model).__module__}:{type(model).__name__}"}
    else:
        joblib.dump(model, directory / "model.joblib")
        info = {**info, "loader": "joblib"}
    (directory / "model.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str))


def load_model(directory: Path) -> object:
    info = json.loads((Path(directory) / "model.json").read_text())
    if info["loader"] == "joblib":
        return joblib.load(Path(directory) / "model.joblib")
    module, cls = info["loader"].split(":")
    return getattr(importlib.import_module(module), cls).load(Path(directory))
