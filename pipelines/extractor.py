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
One bad item never fails the batch.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import re
import traceback
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import pyarrow as pa

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
    written: int = 0        # rows the worker stored itself (Ray): they do not travel back in `rows`


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
    defaults: ClassVar[dict] = {}

    def __init__(self, **params: Any):
        unknown = set(params) - set(self.defaults) - {"resources"}
        if unknown:
            raise ValueError(f"{self.kind}: unknown params {sorted(unknown)}; known: {sorted(self.defaults)}")
        res = params.pop("resources", {}) or {}
        self.params = {**self.defaults, **params}
        self.resources = Resources(**res)

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


# kind -> "module:Class". One line per extractor file in features/.
REGISTRY: dict[str, str] = {
    "fer_embedding": "features.fer_embedding:FerEmbedding",
    "audioset_embedding": "features.audioset_embedding:AudioSetEmbedding",
    "opensmile": "features.opensmile_features:OpenSmileExtractor",
    "logmel": "features.logmel:LogMelExtractor",
    "spectral": "features.spectral:SpectralExtractor",
    "face_emotion_embedding": "features.face_emotion_embedding:FaceEmotionEmbedding",
    "speech_emotion_embedding": "features.speech_emotion_embedding:SpeechEmotionEmbedding",
    "faces": "features.faces:FacesExtractor",
}


def limit_threads(resources: Resources) -> None:
    """Pin torch's and the BLAS libraries' threads to the worker's CPU share: spinning extra threads slows shared
    cores down, and a fixed thread count keeps BLAS sums (librosa's mel projections) identical on every engine."""
    import torch
    from threadpoolctl import threadpool_limits
    threads = max(1, int(resources.num_cpus))
    torch.set_num_threads(threads)
    threadpool_limits(threads)


def extractor_class(kind: str) -> type:
    if kind not in REGISTRY:
        raise KeyError(f"unknown extractor {kind!r}; known: {sorted(REGISTRY)}")
    module, cls = REGISTRY[kind].split(":")
    return getattr(importlib.import_module(module), cls)


def build(kind: str, params: dict | None = None) -> Extractor:
    return extractor_class(kind)(**(params or {}))


def variant_modality(variant: str) -> str | None:
    """Which modality a variant perturbs: audio noise variants are `<noise>_snr<dB>`, the rest are video."""
    if variant == "clean":
        return None
    return "audio" if re.fullmatch(r"[a-z]+_snr-?\d+(\.\d+)?", variant) else "video"
