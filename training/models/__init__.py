"""Model registry: every classifier the train stage can fit, behind one small interface.

A model is built by `build(name, params, classes)` from its registry name and its params.yaml block, fitted on a
training `Frame` (training/data.py) and asked for class probabilities on a test `Frame`. `MODELS` maps a name to a
factory `(params, classes) -> EmotionModel`; `lazy("module:attr")` defers the import so torch models cost nothing
until used.

A saved model folder never runs code when loaded: `model.json` names a model kind of `MODELS` (never an importable
path), the model is rebuilt from the registry with its params, then restores its fitted state from files that hold
data only (LightGBM text models, torch state dicts read with `weights_only`, JSON + npz arrays).
"""
from __future__ import annotations

import importlib
import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from pipelines.errors import UnknownName

if TYPE_CHECKING:
    from training.data import Frame

MODALITIES: tuple[str, ...] = ("audio", "video")


class EmotionModel(Protocol):
    """A classifier over `classes` (the order of `predict_proba`'s columns).

    `modalities` in `predict_proba` names the modalities available at test time: a model must ignore the inputs of
    the others (treat them as missing), so the same fitted model can be evaluated with a modality dropped.
    Optional: an attribute `modalities: tuple[str, ...]` (which inputs it uses; fusion skips members that have none
    available). `save(dir)` writes the fitted state as data only; `restore(dir)`, on an instance built from the same
    registry name and params, reads it back.
    """
    name: str

    def fit(self, train: "Frame", valid: "Frame | None" = None) -> None: ...

    def predict_proba(self, test: "Frame", modalities: tuple[str, ...] = MODALITIES) -> np.ndarray: ...

    def save(self, directory: Path) -> None: ...

    def restore(self, directory: Path) -> None: ...


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


class ModelLoadError(ValueError):
    """A model folder aver will not or cannot load, said in one line."""


def save_model(model: EmotionModel, directory: Path, info: dict) -> None:
    """Persist a fitted model plus `model.json` (name, kind, classes, params) for `aver predict`."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory)
    kind = (info.get("params") or {}).get("model", info["name"])
    (directory / "model.json").write_text(json.dumps({**info, "kind": kind}, indent=2, sort_keys=True, default=str))


def load_model(directory: Path) -> EmotionModel:
    """The model saved in `directory`: rebuilt from the registry by the kind `model.json` names, then restored from
    data files. Raises `ModelLoadError` for a folder aver did not write (e.g. a pickled model or a module path)."""
    directory = Path(directory)
    try:
        info = json.loads((directory / "model.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{directory} has no readable model.json ({e})") from None
    info = info if isinstance(info, dict) else {}
    kind = info.get("kind")
    if not isinstance(kind, str) or kind not in MODELS:
        found = f"kind {kind!r}" if "kind" in info else f"loader {info.get('loader')!r}"
        raise ModelLoadError(f"refusing to load {directory}: its model.json names {found}, not one of aver's model "
                             f"kinds ({', '.join(sorted(MODELS))}). aver loads only folders it wrote, and never "
                             "unpickles or imports code from a model folder: re-train with `aver train`")
    try:
        model = build(str(info["name"]), {**(info.get("params") or {}), "model": kind}, list(info["classes"]))
        model.restore(directory)
    except Exception as e:      # corrupt or foreign files: one line for the user
        reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        if isinstance(e, pickle.UnpicklingError) or "allow_pickle" in str(e):   # torch / numpy refusing a pickle
            reason = "a data file holds pickled Python objects, which could run code, so it was not read"
        raise ModelLoadError(f"cannot load the {kind} model in {directory}: {reason}") from None
    return model
