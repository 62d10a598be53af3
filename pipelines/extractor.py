"""The extractor protocol: what every feature extractor implements, whatever engine runs it.

An engine builds the extractor once per worker (`build(kind, params)`), calls `setup()` once (load models),
then `process(items)` on batches of work items. A work item is a manifest row (dict) plus:
  - `abspath`: absolute path of the media file,
  - `variant`: "clean" or an augmentation name (features/augment_audio.py, features/augment_video.py),
  - `peers`: absolute paths of a few other clips of the same corpus (babble noise source),
  - `inputs`: {feature_set: row} for the upstream feature sets the extractor `requires`.
`process` returns a `Result`: feature rows (dicts matching `schema()` plus the key columns), ledger rows for items
that failed through their own fault (`ClipError`: permanent) and ledger rows for items hit by anything else
(`errors`: an unexpected exception, I/O or CUDA error; the engine retries them, see pipelines/engines/retry.py).
One bad item never fails the batch. An extractor whose numbers depend on files its params do not pin (model
weights) may also define `provenance() -> dict` (JSON-able): the planner puts it in the store's metadata and the
config fingerprint.

Extractor kinds are found through the `aver.extractors` entry points (aver's own are declared in pyproject.toml), so
another installed package can add one: docs/writing_an_extractor.md.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import re
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

import pyarrow as pa

from pipelines.errors import BadParams, UnknownName
from pipelines.manifest import ledger_row

KEY_FIELDS = [("clip_id", pa.string()), ("variant", pa.string()), ("content_hash", pa.string())]
RETRYABLE = "retryable:"                          # reason prefix of a failure that is not the clip's fault
RETRIED_REASONS = ("missing_input:", RETRYABLE)   # ledger rows that do not count as done: the next run retries


@dataclass(frozen=True)
class Resources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 8


@dataclass
class Result:
    rows: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)     # permanent: the clip's own fault
    errors: list[dict] = field(default_factory=list)       # retryable: reason starts with RETRYABLE
    written: int = 0        # items the worker stored itself (Ray, Beam: rows and ledger rows): not sent back
    staged: list = field(default_factory=list)      # the files it wrote them to, for the driver to commit


class Extractor(Protocol):
    kind: ClassVar[str]           # registry name, e.g. "opensmile"
    version: ClassVar[str]        # bump when the output of the same params changes
    modality: ClassVar[str]       # "audio" or "video": which clips it can use
    requires: ClassVar[tuple[str, ...]]   # upstream feature sets joined into item["inputs"]
    params: dict
    resources: Resources

    def schema(self) -> pa.Schema: ...
    def setup(self) -> None: ...
    def process(self, items: list[dict]) -> Result: ...


class ClipError(Exception):
    """A known, per-clip reason why a feature cannot be computed (becomes a ledger row)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class BaseExtractor:
    """Per-item extractor: subclasses implement `extract(item) -> dict of feature columns`."""
    kind: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    modality: ClassVar[str] = "audio"
    requires: ClassVar[tuple[str, ...]] = ()
    nan_columns: ClassVar[tuple[str, ...]] = ()   # float columns (fnmatch patterns) where NaN marks a missing value
    defaults: ClassVar[dict] = {}

    def __init__(self, **params: Any):
        unknown = set(params) - set(self.defaults) - {"resources"}
        if unknown:
            raise BadParams(f"{self.kind}: unknown params {sorted(unknown)}; known: {sorted(self.defaults)}")
        res = params.pop("resources", {}) or {}
        self.params = {**self.defaults, **params}
        self.resources = Resources(**res)
        if str(self.params.get("device", "")).startswith("cuda") and not self.resources.num_gpus:
            self.resources = replace(self.resources, num_gpus=1.0)   # Ray hides GPUs from actors that ask for none

    def schema(self) -> pa.Schema:
        raise NotImplementedError

    def setup(self) -> None:
        pass

    def extract(self, item: dict) -> dict:
        raise NotImplementedError

    def process(self, items: list[dict]) -> Result:
        out = Result()
        for item in items:
            try:
                out.rows.append({**key_of(item), **self.extract(item)})
            except ClipError as e:
                out.failures.append(failure(item, self.kind, e.reason, e.detail))
            except Exception as e:  # noqa: BLE001 - not a known clip fault: retried, never cached as done
                out.errors.append(error_row(item, self.kind, e))
        return out


def upstream_row(item: dict, feature_set: str) -> dict:
    """The item's row of an upstream feature set it `requires` (a ClipError when the planner found none)."""
    row = (item.get("inputs") or {}).get(feature_set)
    if row is None:
        raise ClipError(f"missing_input:{feature_set}", f"no row of the `{feature_set}` feature set for this clip")
    return row


def column(row: dict, name: str) -> list:
    """A list column of an upstream row (a list, or a numpy array when it came through pandas); [] when null."""
    value = row.get(name)
    return [] if value is None else list(value)


def key_of(item: dict) -> dict:
    return {"clip_id": item["clip_id"], "variant": item["variant"], "content_hash": item["content_hash"]}


def failure(item: dict, stage: str, reason: str, detail: str = "") -> dict:
    return ledger_row(item["corpus"], item["path"], stage, reason, detail, clip_id=item["clip_id"],
                      variant=item["variant"], content_hash=item["content_hash"])


def error_row(item: dict, stage: str, e: BaseException) -> dict:
    """The retryable ledger row of an item hit by an unexpected exception."""
    return failure(item, stage, f"{RETRYABLE}{type(e).__name__}", f"{e}\n{traceback.format_exc(limit=3)}")


def is_retried(reason: str) -> bool:
    return reason.startswith(RETRIED_REASONS)


def full_schema(extractor: Extractor) -> pa.Schema:
    """Key columns + the extractor's feature columns."""
    return pa.schema(KEY_FIELDS + list(extractor.schema()))


def fingerprint(kind: str, version: str, params: dict) -> str:
    """Identity of a feature set's configuration: changes when kind, version or any param changes."""
    blob = json.dumps({"kind": kind, "version": version, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


ENTRY_POINT_GROUP = "aver.extractors"


class ExtractorUnavailable(UnknownName):
    """An extractor kind that no installed package provides, that two provide, or whose package fails to load."""


@functools.cache
def registered() -> dict[str, list[importlib.metadata.EntryPoint]]:
    """kind -> the entry points of the `aver.extractors` group that name it (aver's own extractors register there
    too, in pyproject.toml). Read from the installed packages' metadata once per process."""
    found: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if all(ep.value != seen.value for seen in found.get(ep.name, [])):   # the same package seen twice on sys.path
            found.setdefault(ep.name, []).append(ep)
    return found


def _package(ep: importlib.metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "an unknown package"


# kind -> "module:Class" registered in this process alone, beside the entry points (tests, notebooks, a Ray worker's
# setup hook): the shape of fsspec's register_implementation. A kind named here wins over an entry point.
LOCAL_KINDS: dict[str, str] = {}


def register(kind: str, target: str) -> None:
    """Make `kind` ("module:Class") known to this process without installing a package."""
    if kind in registered() and registered()[kind][0].value != target:
        raise ExtractorUnavailable(f"extractor {kind!r} is already provided by {_package(registered()[kind][0])}")
    LOCAL_KINDS[kind] = target


def extractor_class(kind: str) -> type:
    """The class of an extractor kind, found through the `aver.extractors` entry points (or `register`). Only this
    kind's entry point is loaded, so a broken third-party package never stops the others."""
    if kind in LOCAL_KINDS:
        ep = importlib.metadata.EntryPoint(kind, LOCAL_KINDS[kind], ENTRY_POINT_GROUP)
        return _checked_class(kind, ep)
    eps = registered().get(kind)
    if not eps:
        hint = "" if registered() else (" (no extractor is registered at all: aver's package metadata predates its "
                                        "`aver.extractors` entry points; reinstall it: `pip install --no-deps -e .`)")
        raise ExtractorUnavailable(f"unknown extractor {kind!r}; known: {sorted({*registered(), *LOCAL_KINDS})}"
                                   f"{hint}")
    if len(eps) > 1:
        raise ExtractorUnavailable(f"extractor {kind!r} is registered by several packages: "
                                   + ", ".join(f"{_package(ep)} ({ep.value})" for ep in eps)
                                   + "; uninstall one of them")
    return _checked_class(kind, eps[0])


def _checked_class(kind: str, ep: importlib.metadata.EntryPoint) -> type:
    try:
        cls = ep.load()
    except Exception as e:  # noqa: BLE001 - any import-time failure of that package, reported as such
        raise ExtractorUnavailable(f"extractor {kind!r} of package {_package(ep)} cannot be loaded from "
                                   f"{ep.value}: {type(e).__name__}: {e}") from e
    missing = [a for a in ("modality", "requires", "version", "schema", "setup", "process") if not hasattr(cls, a)]
    if getattr(cls, "kind", None) != kind or missing:
        raise ExtractorUnavailable(f"extractor {kind!r} of package {_package(ep)} ({ep.value}) does not implement "
                                   f"the protocol of pipelines/extractor.py: kind={getattr(cls, 'kind', None)!r}, "
                                   f"missing {missing}")
    return cls


def modality_of(kind: str) -> str | None:
    """The modality of an extractor kind; None when no installed package provides it (a store made elsewhere)."""
    try:
        return extractor_class(kind).modality
    except ExtractorUnavailable:
        return None


def limit_threads(resources: Resources) -> None:
    """Pin torch's and the BLAS libraries' threads to the worker's CPU share: spinning extra threads slows shared
    cores down, and a fixed thread count keeps BLAS sums (librosa's mel projections) identical on every engine."""
    import torch
    from threadpoolctl import threadpool_limits
    threads = max(1, int(resources.num_cpus))
    torch.set_num_threads(threads)
    threadpool_limits(threads)


def build(kind: str, params: dict | None = None) -> Extractor:
    """The extractor of `kind` with `params`; a param an extractor rejects (its ValueError) is a BadParams."""
    cls = extractor_class(kind)
    try:
        return cls(**(params or {}))
    except BadParams:
        raise
    except ValueError as e:
        raise BadParams(f"{kind}: {e}") from e


def variant_modality(variant: str) -> str | None:
    """Which modality a variant perturbs: audio noise variants are `<noise>_snr<dB>`, the rest are video."""
    if variant == "clean":
        return None
    return "audio" if re.fullmatch(r"[a-z]+_snr-?\d+(\.\d+)?", variant) else "video"
