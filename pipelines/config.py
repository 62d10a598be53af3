"""params.yaml access: one place that knows the file's layout."""
from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.errors import MissingFile, UnknownName

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict:
    try:
        with open(path) as f:
            return yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise MissingFile(f"params file {path} does not exist (pass --params FILE)") from None


def _location(value: str):
    """A folder as a Path; an object store URI (s3://bucket/prefix) kept as text (a Path would fold its `//`)."""
    return value if "://" in str(value) else Path(value)


def paths(params: dict) -> dict[str, Path]:
    p = params.get("paths", {})
    return {"manifests": _location(p.get("manifests", "data/manifests")),
            "store": _location(p.get("store", "data/store")),
            "runs": Path(p.get("runs", "runs")),
            # version files (a file or a folder of them) pinning the store's reads for training (a store on S3)
            "store_versions": Path(p["store_versions"]) if p.get("store_versions") else None}


def feature_config(params: dict, feature_set: str) -> dict:
    """{extractor, params, variants, requires...} of one feature set, with defaults filled in."""
    try:
        cfg = params["features"][feature_set]
    except KeyError:
        raise UnknownName(f"feature set {feature_set!r} is not declared under features: in params.yaml") from None
    return {"extractor": cfg["extractor"], "params": cfg.get("params") or {},
            "variants": cfg.get("variants") or ["clean"]}


def corpus_config(params: dict, corpus: str) -> dict:
    try:
        return params["corpora"][corpus]
    except KeyError:
        raise UnknownName(f"corpus {corpus!r} is not declared under corpora: in params.yaml") from None
