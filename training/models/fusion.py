"""Decision-level fusion of unimodal models: weighted average of probabilities, or stacking.

Params:
  members   list of registry names or {name: params} (the train stage expands names of other configured models
            into their params); each member is a full model fitted on the same training frame.
  fusion_avg:   weights  list (one per member) or "tune": grid search on the simplex (step `grid_step`, default
                0.1) maximising UAR on the validation frame, or, without one, on out-of-fold member probabilities
                from `inner_folds` (default 3) speaker-grouped folds of the training frame (every training speaker
                held out once: one held-out speaker alone made the weights a coin toss).
  fusion_stack: logistic regression (C, default 1.0) on out-of-fold member probabilities from `inner_folds`
                (default 3) speaker-grouped folds of the training frame; members are then refitted on all of it.
At test time a member whose modalities are all unavailable is left out (average) or replaced by the uniform
distribution (stacking), so a fused model degrades gracefully when a modality is missing.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from pipelines.errors import BadParams
from training.data import Frame
from training.metrics import classification
from training.models import MODALITIES, EmotionModel, build, model_modalities
from training.models.state import read_state, write_state
from training.models.tabular import full_proba


def _members(spec, classes: list[str]) -> list[EmotionModel]:
    if not spec:
        raise BadParams("fusion needs `members`: a list of model names or {name: params}")
    if isinstance(spec, list):
        spec = dict((m, {}) if isinstance(m, str) else next(iter(m.items())) for m in spec)
    return [build(name, params, classes) for name, params in spec.items()]


def _usable(member: EmotionModel, modalities: tuple[str, ...]) -> bool:
    return bool(set(model_modalities(member)) & set(modalities))


def _speaker_folds(frame: Frame, n_splits: int, seed: int = 0):
    n_speakers = len(set(frame.speakers))
    if n_speakers < 2:
        raise BadParams(f"fusion needs at least 2 training speakers for its inner split, have {n_speakers}")
    cv = StratifiedGroupKFold(n_splits=min(n_splits, n_speakers), shuffle=True, random_state=seed)
    return cv.split(np.zeros(len(frame)), frame.y, frame.speakers)


class _Fusion:
    def __init__(self, params: dict, classes: list[str]):
        params = dict(params)
        self.name, self.classes = "fusion", classes
        self.members = _members(params.pop("members", None), classes)
        self.modalities = tuple(sorted({m for mem in self.members for m in model_modalities(mem)}))
        self.params = params

    def _fit_members(self, frame: Frame, valid: Frame | None = None) -> None:
        for m in self.members:
            m.fit(frame, valid)

    def _member_probas(self, test: Frame, modalities: tuple[str, ...]) -> list[np.ndarray | None]:
        return [m.predict_proba(test, modalities) if _usable(m, modalities) else None for m in self.members]

    def _out_of_fold(self, train: Frame) -> list[np.ndarray]:
        """Each member's probabilities for every training row, from members fitted without that row's speaker."""
        oof = [np.zeros((len(train), len(self.classes))) for _ in self.members]
        for inner, held in _speaker_folds(train, int(self.params.get("inner_folds", 3))):
            self._fit_members(train.subset(inner))
            for out, p in zip(oof, self._member_probas(train.subset(held), MODALITIES)):
                out[held] = p
        return oof

    # members are rebuilt from the fusion's own params (the registry), each restored from its folder
    def _member_dirs(self, directory: Path) -> list[Path]:
        return [Path(directory) / "members" / f"{i}-{m.name}" for i, m in enumerate(self.members)]

    def save(self, directory: Path) -> None:
        for member, path in zip(self.members, self._member_dirs(directory)):
            path.mkdir(parents=True, exist_ok=True)
            member.save(path)
        write_state(directory, "fusion", self._state())

    def restore(self, directory: Path) -> None:
        for member, path in zip(self.members, self._member_dirs(directory)):
            member.restore(path)
        self._restore(read_state(directory, "fusion"))


class AverageFusion(_Fusion):
    def fit(self, train: Frame, valid: Frame | None = None) -> None:
        weights = self.params.get("weights")
        if weights != "tune":
            self.weights = np.asarray(weights if weights is not None else [1.0] * len(self.members), float)
            if len(self.weights) != len(self.members):
                raise BadParams(f"fusion_avg: {len(self.weights)} weights for {len(self.members)} members")
            self._fit_members(train, valid)
        elif valid is not None and len(valid):
            self._fit_members(train, valid)
            self.weights = self._tune(self._member_probas(valid, MODALITIES), valid.y)
        else:   # no validation frame: tune on out-of-fold probabilities, then refit on everything
            self.weights = self._tune(self._out_of_fold(train), train.y)
            self._fit_members(train)

    def _tune(self, probas: list[np.ndarray], y: np.ndarray) -> np.ndarray:
        n = max(1, round(1 / float(self.params.get("grid_step", 0.1))))
        best, best_uar = None, -1.0
        for head in itertools.product(range(n + 1), repeat=len(self.members) - 1):
            if sum(head) > n:
                continue
            w = np.array([*head, n - sum(head)]) / n
            uar = classification(y, sum(wi * p for wi, p in zip(w, probas)).argmax(1), self.classes)["uar"]
            if uar > best_uar + 1e-12:
                best, best_uar = w, uar
        return best

    def predict_proba(self, test: Frame, modalities: tuple[str, ...] = MODALITIES) -> np.ndarray:
        probas = self._member_probas(test, modalities)
        used = [(w, p) for w, p in zip(self.weights, probas) if p is not None]
        total = sum(w for w, _ in used)
        if not used or total <= 0:
            return np.full((len(test), len(self.classes)), 1 / len(self.classes))
        return sum(w * p for w, p in used) / total

    def _state(self) -> dict:
        return {"weights": self.weights}

    def _restore(self, state: dict) -> None:
        self.weights = state["weights"]


class StackingFusion(_Fusion):
    def fit(self, train: Frame, valid: Frame | None = None) -> None:
        oof = np.hstack(self._out_of_fold(train))
        self.stacker = LogisticRegression(C=float(self.params.get("C", 1.0)), max_iter=2000)
        self.stacker.fit(oof, train.y, sample_weight=train.weights)
        self._fit_members(train, valid)

    def predict_proba(self, test: Frame, modalities: tuple[str, ...] = MODALITIES) -> np.ndarray:
        uniform = np.full((len(test), len(self.classes)), 1 / len(self.classes))
        x = np.hstack([uniform if p is None else p for p in self._member_probas(test, modalities)])
        return full_proba(self.stacker.predict_proba(x), self.stacker.classes_, len(self.classes))

    def _state(self) -> dict:
        return {"stacker": self.stacker}

    def _restore(self, state: dict) -> None:
        self.stacker = state["stacker"]


def fusion_avg(params: dict, classes: list[str]) -> AverageFusion:
    return AverageFusion(params, classes)


def fusion_stack(params: dict, classes: list[str]) -> StackingFusion:
    return StackingFusion(params, classes)
