"""Fitted scikit-learn pieces (imputer, scaler, SVC, calibration, logistic regression) as JSON plus plain arrays.

A model folder must never run code when loaded, so nothing is pickled: `write_state` walks an estimator's
attributes and keeps only data (numbers, strings, lists, dicts, non-object numpy arrays, dtypes) and nested
estimators of the fixed classes in `ESTIMATORS`; `read_state` rebuilds them with `cls.__new__` and the saved
attributes. The file never names a class to import: an unknown class name is refused, and arrays are read with
`allow_pickle=False`. The scikit-learn version is recorded, and a different one is refused (fitted attributes
change between versions).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import sklearn
from sklearn.calibration import CalibratedClassifierCV, _CalibratedClassifier, _SigmoidCalibration
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

ESTIMATORS: dict[str, type] = {c.__name__: c for c in (
    SimpleImputer, StandardScaler, SVC, CalibratedClassifierCV, _CalibratedClassifier, _SigmoidCalibration,
    LogisticRegression, Pipeline)}


class StateError(ValueError):
    """A saved state that is not plain data of known estimator classes."""


def _encode(value, arrays: dict[str, np.ndarray]):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):       # before int/float: np.float64 is a float; keep the numpy type
        return {"scalar": value.dtype.str, "value": value.item()}
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise StateError(f"an object array (dtype {value.dtype}) is not plain data")
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"array": key}
    if isinstance(value, np.dtype):
        return {"dtype": value.str}
    if isinstance(value, (list, tuple)):
        return {"tuple" if isinstance(value, tuple) else "list": [_encode(v, arrays) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v, arrays) for k, v in value.items()}}
    name = type(value).__name__
    if ESTIMATORS.get(name) is type(value):
        return {"estimator": name, "state": _encode(vars(value), arrays)}
    raise StateError(f"cannot save a {type(value).__module__}.{name} as plain data")


def _decode(node, arrays):
    if node is None or isinstance(node, (bool, str, int, float)):
        return node
    if not isinstance(node, dict) or len(node) not in (1, 2):
        raise StateError(f"unexpected node {str(node)[:80]!r}")
    if "scalar" in node:
        return np.dtype(node["scalar"]).type(node["value"])
    if "array" in node:
        return arrays[node["array"]]
    if "dtype" in node:
        return np.dtype(node["dtype"])
    if "list" in node or "tuple" in node:
        items = [_decode(v, arrays) for v in node.get("list", node.get("tuple"))]
        return items if "list" in node else tuple(items)
    if "dict" in node:
        return {str(k): _decode(v, arrays) for k, v in node["dict"].items()}
    if "estimator" in node:
        cls = ESTIMATORS.get(node["estimator"])
        if cls is None:
            raise StateError(f"{node['estimator']!r} is not one of the estimator classes aver saves")
        obj = cls.__new__(cls)
        obj.__dict__.update(_decode(node["state"], arrays))
        return obj
    raise StateError(f"unexpected node {str(node)[:80]!r}")


def write_state(directory: Path, stem: str, state: dict) -> None:
    """`<stem>.json` (structure and small values) and `<stem>.npz` (arrays) in `directory`."""
    arrays: dict[str, np.ndarray] = {}
    tree = {"sklearn": sklearn.__version__, "state": _encode(state, arrays)}
    (Path(directory) / f"{stem}.json").write_text(json.dumps(tree, indent=1, sort_keys=True))
    np.savez(Path(directory) / f"{stem}.npz", **arrays)


def read_state(directory: Path, stem: str) -> dict:
    tree = json.loads((Path(directory) / f"{stem}.json").read_text())
    if tree.get("sklearn") != sklearn.__version__:
        raise StateError(f"saved with scikit-learn {tree.get('sklearn')}, this is {sklearn.__version__}: "
                         "re-train the model (`aver train`)")
    with np.load(Path(directory) / f"{stem}.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return _decode(tree["state"], arrays)
