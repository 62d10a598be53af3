"""Test extractors that fail on purpose, and the miniature corpus they run on (tests of pipelines/engines/retry.py).

`Transient` raises an OSError on the first attempt at some clips, `Broken` raises a RuntimeError while
`Broken.broken` is set, `Dies` kills its worker process when it meets clip 1 (the first time only, given a
marker file that remembers it across processes; leaving one file per death in the folder `tries` if given),
`NoSpeech` has a clip fault (ClipError) on clip 0; `Slow` takes
`seconds` per clip (so that two runs overlap); `FlakyDownstream` needs an `up` feature set and fails once per clip.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa

import miniature
from pipelines.extractor import LOCAL_KINDS, BaseExtractor, ClipError
from pipelines.ingest import ingest

KINDS = {"transient": "Transient", "broken": "Broken", "dies": "Dies", "no_speech": "NoSpeech", "slow": "Slow",
         "flaky_down": "FlakyDownstream"}
N_CLIPS = 6


def register() -> None:
    """Make the kinds known to this process (a Ray worker runs it as its setup hook)."""
    LOCAL_KINDS.update({kind: f"failing_extractors:{cls}" for kind, cls in KINDS.items()})


def corpus(root: Path, manifests: Path) -> dict:
    for i in range(N_CLIPS):
        miniature.audio(root / f"s{i % 2}_happy_{i}.wav")
    cfg = {"adapter": "generic", "root": str(root), "glob": "*.wav",
           "regex": r"(?P<speaker>s\d)_(?P<emotion>[a-z]+)_\d"}
    ingest("c", cfg, manifests, progress=False)
    return cfg


class _Tone(BaseExtractor):
    defaults = {"marker": "", "seconds": 0.0, "tries": ""}

    def schema(self) -> pa.Schema:
        return pa.schema([("index", pa.int32())])

    def extract(self, item: dict) -> dict:
        return {"index": int(item["clip_id"][-1])}


class Transient(_Tone):
    kind = "transient"
    attempts: dict[str, int] = {}

    def extract(self, item: dict) -> dict:
        n = self.attempts[item["clip_id"]] = self.attempts.get(item["clip_id"], 0) + 1
        if n == 1 and int(item["clip_id"][-1]) % 2 == 0:
            raise OSError("Input/output error (the network share hiccupped)")
        return super().extract(item)


class Broken(_Tone):
    kind = "broken"
    broken = True

    def extract(self, item: dict) -> dict:
        if self.broken:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().extract(item)


class Dies(_Tone):
    kind = "dies"

    def extract(self, item: dict) -> dict:
        marker = Path(self.params["marker"]) if self.params["marker"] else None
        if item["clip_id"].endswith("_1") and not (marker and marker.exists()):
            if marker:
                marker.touch()
            if self.params["tries"]:
                (Path(self.params["tries"]) / f"{os.getpid()}-{time.time_ns()}").touch()
            os._exit(1)         # the worker dies the way an OOM kill would: no exception, no cleanup
        return super().extract(item)


class NoSpeech(_Tone):
    kind = "no_speech"

    def extract(self, item: dict) -> dict:
        if item["clip_id"].endswith("_0"):
            raise ClipError("digital_silence", "nothing but zeros")
        return super().extract(item)


class Slow(_Tone):
    kind = "slow"

    def extract(self, item: dict) -> dict:
        time.sleep(self.params["seconds"])
        return super().extract(item)


class FlakyDownstream(_Tone):
    kind = "flaky_down"
    requires = ("up",)
    calls: list[list[str]] = []

    def extract(self, item: dict) -> dict:
        self.calls.append(sorted(item["inputs"]))
        if len(self.calls) == 1:
            raise OSError("the disk went away")
        return {"index": item["inputs"]["up"]["index"] + 1}
