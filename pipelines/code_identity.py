"""What code computes a feature set: part of its fingerprint, so changed code re-extracts its rows.

The identity of an extractor class is
  - the source text of its module and of every module of the same top-level package it imports, directly or not
    (an extractor in features/ plus the features/ helpers it uses: audio_io, video_io, ...), found by parsing the
    sources (nothing is imported or run) and hashed with normalised line endings, so it is the same on every
    machine whatever the checkout's paths, mtimes or newline convention;
  - the versions of the third-party distributions those modules import (opensmile, librosa, torch, onnxruntime,
    numpy, ...): another library version may compute other numbers.
Where a computation runs (device) and how it is batched are not part of it.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import sys
from functools import lru_cache
from pathlib import Path


def _imports(module: str, source: str) -> set[str]:
    """Absolute names of the modules a source imports (`from pkg import name` gives pkg and pkg.name)."""
    package = module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _file(module: str) -> Path | None:
    """The source file of a module, found from its top-level package's folder (finding a top-level spec imports
    nothing; finding a submodule's would import its parents)."""
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    for folder in spec.submodule_search_locations or []:
        base = Path(folder, *rest.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _source(module: str) -> str | None:
    path = _file(module)
    if path is None:
        return None
    with open(path, encoding="utf-8", newline="") as f:
        return f.read().replace("\r\n", "\n")


@lru_cache(maxsize=None)
def code_identity(module: str) -> dict:
    """{"source": sha256 of the module's and its same-package imports' sources, "libraries": {dist: version}}."""
    top = module.split(".")[0]
    sources: dict[str, str] = {}
    third_party: set[str] = set()
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        if name in sources or name in seen:
            continue
        seen.add(name)
        text = _source(name)
        if text is None:        # `from pkg.module import function`: the function is not a module
            continue
        sources[name] = text
        for imported in _imports(name, text):
            root = imported.split(".")[0]
            if root == top:
                todo.append(imported)
            elif root not in sys.stdlib_module_names and root != "pipelines":
                third_party.add(root)
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(f"{name}\n{len(sources[name])}\n{sources[name]}".encode())
    return {"source": digest.hexdigest()[:16], "libraries": _versions(third_party)}


@lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _versions(roots: set[str]) -> dict[str, str]:
    dists = _distributions()
    out = {}
    for root in roots:
        for dist in dists.get(root, []):
            out[dist] = importlib.metadata.version(dist)
    return dict(sorted(out.items()))
