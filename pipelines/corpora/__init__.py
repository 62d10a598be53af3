"""Corpus adapters: one small recipe per corpus that turns its folder layout and label files into `Clip`s.

Each adapter module exposes `scan(root: Path, corpus: str = <its name>, exclude=(), **options)` yielding
`pipelines.manifest.Clip` for every usable file and an ingest ledger row (dict) for every file it saw but
cannot use (bad name, no label). Options come from the corpus entry in params.yaml; see docs/corpora.md.
"""
from __future__ import annotations

import importlib
import inspect
import itertools
from collections.abc import Iterator
from pathlib import Path

from pipelines.corpora._common import skipped_folders
from pipelines.errors import BadParams, MissingFile, UnknownName
from pipelines.manifest import Clip

# adapter name -> module. Modules are imported lazily so one corpus's optional needs never affect another.
ADAPTERS: dict[str, str] = {
    "afew": "pipelines.corpora.afew",
    "crema_d": "pipelines.corpora.crema_d",
    "demo": "pipelines.corpora.demo",
    "emodb": "pipelines.corpora.emodb",
    "enterface05": "pipelines.corpora.enterface05",
    "generic": "pipelines.corpora.generic",
    "iemocap": "pipelines.corpora.iemocap",
    "mead": "pipelines.corpora.mead",
    "meld": "pipelines.corpora.meld",
    "msp_improv": "pipelines.corpora.msp_improv",
    "ravdess": "pipelines.corpora.ravdess",
    "savee": "pipelines.corpora.savee",
}


def scan_corpus(name: str, adapter: str, root: Path, **options) -> Iterator[Clip | dict]:
    """Run adapter `adapter` over `root`, naming clips `<name>/...` (a corpus entry may reuse an adapter)."""
    if adapter not in ADAPTERS:
        raise UnknownName(f"unknown corpus adapter {adapter!r}; known: {sorted(ADAPTERS)}")
    root = Path(root)
    if not root.is_dir():
        raise MissingFile(f"corpus {name!r}: root {root} is not a folder")
    module = importlib.import_module(ADAPTERS[adapter])
    try:   # check the options before scanning, so a typo in params.yaml is named as such
        inspect.signature(module.scan).bind(root, corpus=name, **options)
    except TypeError as e:
        raise BadParams(f"corpus {name!r}: bad options for adapter {adapter!r}: {e}") from None
    # folder links the walk does not enter (loops, a folder linked twice) are ledgered here, for every adapter
    return itertools.chain(module.scan(root, corpus=name, **options),
                           skipped_folders(name, root, options.get("exclude", ())))
