"""A feature set's fingerprint sees the code that computes it: the extractor's module, the package modules it
imports and the libraries' versions. Changed code marks the rows stale and re-extracts them."""
import importlib
import sys
import textwrap

import pytest

import failing_extractors
from pipelines.code_identity import code_identity
from pipelines.extractor import LOCAL_KINDS
from pipelines.plan import config_fingerprint, planned_keys, run_extraction
from pipelines.store import FeatureStore

EXTRACTOR = '''
import pyarrow as pa
from pipelines.extractor import BaseExtractor
from {pkg}.helper import scale


class Scaled(BaseExtractor):
    kind = "scaled"
    defaults = {{"device": "cpu"}}

    def schema(self):
        return pa.schema([("value", pa.float32())])

    def extract(self, item):
        return {{"value": scale(int(item["clip_id"][-1]))}}
'''


def _package(root, name: str, factor: int, newline: str = "\n"):
    pkg = root / name
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ext.py").write_text(EXTRACTOR.format(pkg=name))
    helper = textwrap.dedent(f"""
        import numpy as np


        def scale(x):
            return float(np.float32(x * {factor}))
        """)
    (pkg / "helper.py").write_bytes(helper.replace("\n", newline).encode())


def _reload(name: str) -> None:
    code_identity.cache_clear()
    for module in (f"{name}.helper", f"{name}.ext"):
        if module in sys.modules:
            importlib.reload(sys.modules[module])


@pytest.fixture
def setup(tmp_path, monkeypatch):
    cfg = failing_extractors.corpus(tmp_path / "corpus", tmp_path / "manifests")
    _package(tmp_path, "codepkg", factor=1)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(LOCAL_KINDS, "scaled", "codepkg.ext:Scaled")
    params = {"paths": {"manifests": str(tmp_path / "manifests"), "store": str(tmp_path / "store")},
              "corpora": {"c": cfg}, "engine": {"name": "local"},
              "features": {"f": {"extractor": "scaled", "params": {}}}}
    yield tmp_path, params
    code_identity.cache_clear()
    for module in ("codepkg.helper", "codepkg.ext", "codepkg"):
        sys.modules.pop(module, None)


def test_changed_helper_code_marks_rows_stale_and_reextracts_them(setup):
    tmp, p = setup
    store = FeatureStore(p["paths"]["store"], p["paths"]["manifests"])
    first = run_extraction(p, "f", "c", progress=False)
    assert first.extracted == failing_extractors.N_CLIPS
    _, fp, meta = config_fingerprint(p, "f", store, "c")
    assert meta["code"]["libraries"]["numpy"] and store.verify("f", "c", planned_keys(p, "f", "c"), fp).ok

    _package(tmp, "codepkg", factor=10)         # a shared module the extractor imports changes
    _reload("codepkg")
    _, changed, _ = config_fingerprint(p, "f", store, "c")
    assert changed != fp
    report = store.verify("f", "c", planned_keys(p, "f", "c"), changed)
    assert report.stale == failing_extractors.N_CLIPS and not report.ok
    again = run_extraction(p, "f", "c", progress=False)
    assert (again.removed, again.extracted) == (failing_extractors.N_CLIPS, failing_extractors.N_CLIPS)
    assert sorted(store.read("f", "c").column("value").to_pylist()) == [0, 10, 20, 30, 40, 50]


def test_fingerprint_ignores_line_endings_device_and_batching(setup):
    tmp, p = setup
    store = FeatureStore(p["paths"]["store"], p["paths"]["manifests"])
    _, fp, _ = config_fingerprint(p, "f", store, "c")
    _package(tmp, "codepkg", factor=1, newline="\r\n")       # a Windows checkout of the same code
    _reload("codepkg")
    p["features"]["f"]["params"] = {"device": "cuda", "resources": {"batch_size": 64, "num_gpus": 1}}
    assert config_fingerprint(p, "f", store, "c")[1] == fp
