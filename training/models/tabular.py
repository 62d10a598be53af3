"""Shared input handling for models on scalar features, and the SVM baselines.

A tabular model reads the matrices of its modalities (`Frame.layout`/`take`), fixed at fit time so that a test
frame gives the same columns. Inputs of modalities unavailable at test time become NaN (missing). Normalisation:
  none     raw values (trees do not need scaling),
  global   z-score with the training statistics,
  speaker  z-score within each (speaker, variant) of whichever frame is being read (training or test): removes
           speaker offsets using only that speaker's unlabeled inputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from pipelines.errors import BadParams
from training.data import Frame, Layout, normalisation_groups, speaker_zscore
from training.models import MODALITIES
from training.models.state import read_state, write_state

NORMALISE = ("none", "global", "speaker")


class TabularInputs:
    """Which columns a model reads, and how they are normalised."""

    def __init__(self, modalities, features: dict | None, normalize: str):
        if normalize not in NORMALISE:
            raise BadParams(f"normalize must be one of {NORMALISE}, got {normalize!r}")
        self.modalities = tuple(modalities)
        self.features = features or {}           # modality -> {feature set: globs}; default: the frame's
        self.normalize = normalize
        self.layouts: dict[str, Layout] = {}
        self._scaler: StandardScaler | None = None

    def fit_transform(self, frame: Frame) -> np.ndarray:
        self.layouts = {m: frame.layout(m, self.features.get(m)) for m in self.modalities}
        x = self._raw(frame, self.modalities)
        if self.normalize == "global":
            self._scaler = StandardScaler().fit(x)
        return self._normalised(frame, x)

    def state(self) -> dict:
        """What a fitted instance adds to its constructor arguments (the layouts and the scaler)."""
        return {"layouts": {m: [list(c) for c in layout] for m, layout in self.layouts.items()},
                "scaler": self._scaler}

    def restore(self, state: dict) -> None:
        self.layouts = {m: tuple((str(c), int(w)) for c, w in layout) for m, layout in state["layouts"].items()}
        self._scaler = state["scaler"]

    def transform(self, frame: Frame, available: tuple[str, ...] = MODALITIES) -> np.ndarray:
        return self._normalised(frame, self._raw(frame, available))

    def _raw(self, frame: Frame, available) -> np.ndarray:
        blocks = []
        for m in self.modalities:
            x = frame.take(self.layouts[m])
            blocks.append(x if m in available else np.full_like(x, np.nan))
        return np.hstack(blocks)

    def _normalised(self, frame: Frame, x: np.ndarray) -> np.ndarray:
        if self.normalize == "speaker":
            return speaker_zscore(x, normalisation_groups(frame))
        if self.normalize == "global":
            return self._scaler.transform(x).astype(np.float32)
        return x


def full_proba(proba: np.ndarray, seen: np.ndarray, n_classes: int) -> np.ndarray:
    """Map an estimator's probability columns (classes seen in training) onto all `n_classes`."""
    out = np.zeros((len(proba), n_classes))
    out[:, seen] = proba
    return out


class SVMModel:
    """Mean-imputed, standardised features + SVC with sigmoid-calibrated probabilities (classic openSMILE baseline).

    Params: SVC arguments (kernel, default linear; C, default 0.01), `calibration_folds` (default 3), plus
    `modalities` / `features` / `normalize` as for every tabular model.
    """

    def __init__(self, params: dict, classes: list[str], modalities: tuple[str, ...]):
        params = dict(params)
        self.name, self.classes = "svm", classes
        self.inputs = TabularInputs(params.pop("modalities", modalities), params.pop("features", None),
                                    params.pop("normalize", "none"))
        self.modalities = self.inputs.modalities
        self.calibration_folds = int(params.pop("calibration_folds", 3))
        self.svc_params = {"kernel": "linear", "C": 0.01, **params}

    def fit(self, train: Frame, valid: Frame | None = None) -> None:
        x = self.inputs.fit_transform(train)
        # an SVM always needs scaled, complete inputs; all-NaN columns are kept (as 0) so widths stay fixed
        svc = CalibratedClassifierCV(SVC(**self.svc_params), cv=self.calibration_folds, ensemble=False)
        self.pipeline = make_pipeline(SimpleImputer(strategy="mean", keep_empty_features=True), StandardScaler(), svc)
        self.pipeline.fit(x, train.y, calibratedclassifiercv__sample_weight=train.weights)

    def predict_proba(self, test: Frame, modalities: tuple[str, ...] = MODALITIES) -> np.ndarray:
        proba = self.pipeline.predict_proba(self.inputs.transform(test, modalities))
        return full_proba(proba, self.pipeline.classes_, len(self.classes))

    def save(self, directory: Path) -> None:
        write_state(directory, "svm", {"inputs": self.inputs.state(), "pipeline": self.pipeline})

    def restore(self, directory: Path) -> None:
        state = read_state(directory, "svm")
        self.inputs.restore(state["inputs"])
        self.pipeline = state["pipeline"]


def svm_audio(params: dict, classes: list[str]) -> SVMModel:
    return SVMModel(params, classes, ("audio",))


def svm_video(params: dict, classes: list[str]) -> SVMModel:
    return SVMModel(params, classes, ("video",))


def svm_concat(params: dict, classes: list[str]) -> SVMModel:
    return SVMModel(params, classes, ("audio", "video"))
