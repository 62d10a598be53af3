"""Extractors are found through the `aver.extractors` entry points: the example package of
docs/writing_an_extractor.md, built and installed here, runs on every engine; a kind registered twice or a broken
package is a clear error for that kind only; aver's own kinds are registered the same way."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray

import miniature
from pipelines.extractor import ExtractorUnavailable, build, extractor_class, registered
from pipelines.ingest import ingest
from pipelines.plan import run_extraction
from pipelines.store import FeatureStore

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing_an_extractor.md"


def _installed_site(site: Path, monkeypatch) -> None:
    """Make a folder of installed packages visible here and to the engines' worker processes."""
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    registered.cache_clear()


def _dist_info(site: Path, name: str, entry_points: str, module: str = "") -> None:
    """A minimal installed distribution (what pip leaves in site-packages), for the error cases."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[aver.extractors]\n{entry_points}\n")
    if module:
        (site / f"{name.replace('-', '_')}.py").write_text(module)


@pytest.fixture(scope="module")
def loudness_site(tmp_path_factory) -> Path:
    """The how-to's package, written from the doc's code blocks and installed with pip into its own folder."""
    src, site = tmp_path_factory.mktemp("aver_loudness"), tmp_path_factory.mktemp("site")
    blocks = dict(re.findall(r"```(python|toml)\n(.*?)```", DOC.read_text(), re.S))
    (src / "aver_loudness.py").write_text(blocks["python"])
    (src / "pyproject.toml").write_text(blocks["toml"])
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(src)], check=True)
    return site


@pytest.fixture(autouse=True)
def fresh_registry():
    registered.cache_clear()
    yield
    registered.cache_clear()


def test_avers_own_kinds_are_entry_points():
    assert {"logmel", "opensmile", "faces", "ssl_speech"} <= set(registered())
    assert {ep.dist.name for ep in registered()["logmel"]} == {"aver"}
    with pytest.raises(ExtractorUnavailable, match="unknown extractor 'nope'"):
        build("nope")


@pytest.mark.parametrize("engine", ["local", "ray", "beam"])
def test_package_extractor_runs_on_every_engine(loudness_site, tmp_path, monkeypatch, engine):
    _installed_site(loudness_site, monkeypatch)
    root = tmp_path / "corpus"
    for i, seconds in enumerate((0.4, 0.7)):
        miniature.audio(root / f"s1_angry_{i}.wav", seconds=seconds)
    miniature.audio(root / "s2_happy_0.wav", seconds=0.05)                    # shorter than one 0.1 s frame
    params = {"paths": {"manifests": str(tmp_path / "manifests"), "store": str(tmp_path / "store")},
              "corpora": {"c": {"adapter": "generic", "root": str(root), "glob": "*.wav",
                                "regex": r"(?P<speaker>s\d+)_(?P<emotion>[a-z]+)_\d+"}},
              "engine": {"name": engine, "chunk_size": 2, "ray": {"workers": 1}, "beam": {"workers": 1}},
              "features": {"loud": {"extractor": "loudness", "params": {"frame_s": 0.1}}}}
    ingest("c", params["corpora"]["c"], Path(params["paths"]["manifests"]), progress=False)
    ray.shutdown()
    try:
        summary = run_extraction(params, "loud", "c", progress=False)
    finally:
        ray.shutdown()
    store = FeatureStore(params["paths"]["store"], params["paths"]["manifests"])
    rows = sorted(store.read("loud", "c").to_pylist(), key=lambda r: r["clip_id"])
    assert summary.extracted == 2 and [len(r["frame_db"]) for r in rows] == [4, 7]
    # miniature's tone has amplitude 3000/32768: RMS = that / sqrt(2)
    expected = 20 * np.log10(3000 / 32768 / np.sqrt(2))
    assert all(abs(r["rms_db"] - expected) < 0.1 for r in rows)
    assert [r["reason"] for r in store.read("loud", "c", kind="ledger").to_pylist()] == ["too_short"]
    assert store.info("loud", "c")["kind"] == "loudness"


def test_kind_in_two_packages_names_both(loudness_site, tmp_path, monkeypatch):
    _dist_info(tmp_path, "other-loudness", "loudness = other_loudness:Loudness")
    _installed_site(loudness_site, monkeypatch)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ExtractorUnavailable, match=r"several packages: .*aver-loudness.*other-loudness|"
                                                   r"several packages: .*other-loudness.*aver-loudness"):
        extractor_class("loudness")
    assert build("logmel").kind == "logmel"                                   # unrelated kinds still work


def test_broken_package_is_named_and_harms_no_other_kind(tmp_path, monkeypatch):
    _dist_info(tmp_path, "aver-broken", "broken = aver_broken:Broken", "import not_a_real_dependency\n")
    _dist_info(tmp_path, "aver-misnamed", "misnamed = aver_misnamed:Thing", "class Thing:\n    kind = 'other'\n")
    _installed_site(tmp_path, monkeypatch)
    with pytest.raises(ExtractorUnavailable, match="package aver-broken cannot be loaded.*ModuleNotFoundError"):
        build("broken")
    with pytest.raises(ExtractorUnavailable, match="package aver-misnamed .*does not implement"):
        build("misnamed")
    assert build("opensmile").kind == "opensmile"



class Renamed:
    """A protocol-shaped class under a kind of its own, for in-process registration."""
    kind, version, modality, requires = "renamed", "1", "audio", ()
    schema = setup = process = None


def test_register_makes_a_kind_known_in_this_process_and_refuses_to_shadow_a_package(monkeypatch):
    from pipelines import extractor
    monkeypatch.setattr(extractor, "LOCAL_KINDS", {})
    with pytest.raises(ExtractorUnavailable, match="unknown extractor 'renamed'"):
        extractor_class("renamed")
    extractor.register("renamed", "test_entry_points:Renamed")
    assert extractor_class("renamed") is Renamed
    with pytest.raises(ExtractorUnavailable, match="already provided by aver"):
        extractor.register("logmel", "test_entry_points:Renamed")
    extractor.register("misnamed", "test_entry_points:Renamed")
    with pytest.raises(ExtractorUnavailable, match="does not implement the protocol"):
        extractor_class("misnamed")
