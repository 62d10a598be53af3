"""Training and evaluation from the feature store: Frame inputs, models beating chance, fusion, outputs, no media."""
import json
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.manifest import MANIFEST_SCHEMA, manifest_path, to_table, write_atomic
from pipelines.store import FeatureStore
from conftest import shared_path
from training.data import Frame, names_of, speaker_zscore
from training.models import ModelLoadError, build, load_model, save_model
from training.run import train_and_evaluate

CLASSES = ["happy", "angry", "sad", "neutral"]
FAST = {"n_estimators": 60, "learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 3}


def write_store(root, corpus: str, clips: list[dict], feature_sets: dict[str, list[dict]]) -> FeatureStore:
    """A real store + manifest on disk: clips are manifest rows, feature rows carry clip_id/variant + columns."""
    rows = [{"corpus": corpus, "path": c["clip_id"].split("/", 1)[1] + ".wav", "content_hash": c["clip_id"],
             "has_audio": True, "has_video": False, **c} for c in clips]
    table = to_table(rows, MANIFEST_SCHEMA)
    table = table.replace_schema_metadata({**table.schema.metadata, b"aver.root": str(root / "media").encode()})
    write_atomic(table, manifest_path(root / "manifests", corpus))
    store = FeatureStore(root / "store", root / "manifests")
    for fs, feats in feature_sets.items():
        t = pa.Table.from_pylist([{"content_hash": r["clip_id"], **r} for r in feats])
        store.write_part(fs, corpus, t, {"kind": fs, "version": "1", "fingerprint": "test", "params": {}})
    return store


def synthetic_corpus(root, seed=0, n_speakers=6, per_class=5):
    """Audio and video features where class information is real but noisy; speakers add offsets.

    Audio separates happy/angry from sad/neutral (arousal-like), video the other way (valence-like): each
    modality alone is weak on one pair, so fusion has something to gain. One clip has no features at all.
    """
    rng = np.random.default_rng(seed)
    arousal = {"happy": 1, "angry": 1, "sad": -1, "neutral": -1}
    valence = {"happy": 1, "angry": -1, "sad": -1, "neutral": 1}
    clips, audio, video = [], [], []
    for s in range(n_speakers):
        offset = rng.normal(0, 1.0, 6)
        for e in CLASSES:
            for i in range(per_class):
                cid = f"syn/s{s}_{e}_{i}"
                a = np.r_[arousal[e] * 1.5 + 0.3 * valence[e], rng.normal(0, 1, 5)] + offset
                clips.append({"clip_id": cid, "speaker": f"syn/s{s}", "emotion": e, "emotion_orig": e,
                              "valence": float(valence[e] + rng.normal(0, 0.3)),
                              "arousal": float(arousal[e] + rng.normal(0, 0.3))})
                if cid == "syn/s0_happy_0":
                    continue                                   # failed extraction everywhere -> ledger row
                for variant, noise in (("clean", 0.8), ("white_snr5", 5.0)):
                    audio.append({"clip_id": cid, "variant": variant,
                                  **{f"f{k}": np.float32(v + rng.normal(0, noise)) for k, v in enumerate(a)}})
                if i == per_class - 1:
                    continue                                   # no face found: missing video modality
                v = valence[e] * 1.5 + 0.3 * arousal[e] + rng.normal(0, 0.8)
                video.append({"clip_id": cid, "variant": "clean", "stat_mouth": np.float32(v),
                              "stat_noise": np.float32(rng.normal()),
                              "emb_mean": rng.normal(0, 1, 3).astype(np.float32) + v,
                              "emb": rng.normal(0, 1, 8).astype(np.float32), "emb_shape": np.int32([4, 2])})
    return write_store(root, "syn", clips, {"synth_audio": audio, "synth_video": video})


SYN_CFG = {
    "corpora": ["syn"], "labels": "four_class", "split": {"kind": "loso"},
    "modalities": {"audio": {"synth_audio": ["*"]}, "video": {"synth_video": ["stat_*", "emb_mean"]}},
    "robustness_variants": ["white_snr5"],
    "missing_modality": ["fusion_avg"],
    "models": {"lgbm_audio": FAST, "lgbm_video": FAST, "lgbm_concat": FAST,
               "fusion_avg": {"members": ["lgbm_audio", "lgbm_video"], "weights": "tune"},
               "fusion_stack": {"members": ["lgbm_audio", "lgbm_video"]}},
    "regression": {"targets": ["valence", "arousal"], "models": {"lgbm_reg_concat": FAST}},
}


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    store = synthetic_corpus(root)
    out = root / "run"
    return train_and_evaluate(SYN_CFG, store, out), out, store


# ---- Frame -------------------------------------------------------------------------------------------------------
def test_frame_inputs(tmp_path):
    store = synthetic_corpus(tmp_path, n_speakers=2, per_class=2)
    df = store.load(["synth_audio", "synth_video"], ["syn"], ("clean",))
    frame = Frame(df, CLASSES, SYN_CFG["modalities"])
    layout = frame.layout("video")
    # stat_* scalars + emb_mean expanded; emb (has emb_shape) is a sequence, not a scalar input
    assert names_of(layout) == ["synth_video.stat_mouth", "synth_video.stat_noise", "synth_video.emb_mean[0]",
                                "synth_video.emb_mean[1]", "synth_video.emb_mean[2]"]
    x = frame.matrix("video")
    assert x.shape == (len(df), 5) and x.dtype == np.float32
    # per_class=2: index 1 has no video row; s0_happy_0 has no features at all
    no_face = (df["clip_id"].str.endswith("_1") | (df["clip_id"] == "syn/s0_happy_0")).to_numpy()
    assert np.isnan(x[no_face]).all() and not np.isnan(x[~no_face]).any()
    assert frame.matrix("audio").shape == (len(df), 6)
    assert list(frame.y[:2]) == [0, 0] and frame.weights.shape == (len(df),)
    seq = frame.sequence("video", "synth_video", "emb")
    assert seq[1].shape == (0, 2) and seq[2].shape == (4, 2)
    assert frame.sequence("video", "synth_video", "emb", time_axis=1)[2].shape == (2, 4)
    sub = frame.subset(np.arange(3))
    assert sub.layout("video") == layout and len(sub) == 3
    with pytest.raises(ValueError, match="no store columns match"):
        frame.matrix("audio", {"compare_functionals": ["*"]})


def test_speaker_zscore_removes_speaker_offsets():
    x = np.array([[1.0, 10], [3.0, 10], [101.0, np.nan], [103.0, np.nan]], np.float32)
    z = speaker_zscore(x, np.array(["a", "a", "b", "b"]))
    assert z[:, 0] == pytest.approx([-1, 1, -1, 1])
    assert z[:2, 1] == pytest.approx([0, 0]) and np.isnan(z[2:, 1]).all()


def test_registry_builds_each_kind_under_its_run_name():
    model = build("my_lgbm", {"model": "lgbm_video", "normalize": "global"}, CLASSES)
    assert (type(model).__name__, model.name, model.modalities) == ("LGBMModel", "my_lgbm", ("video",))
    assert model.inputs.normalize == "global" and "normalize" not in model.lgbm_params
    fusion = build("fusion_avg", {"members": ["lgbm_audio", "svm_video"]}, CLASSES)
    assert [m.name for m in fusion.members] == ["lgbm_audio", "svm_video"] and fusion.modalities == ("audio", "video")
    with pytest.raises(KeyError, match="unknown model"):
        build("nope", {}, CLASSES)


def test_tuned_average_weights_come_from_every_training_speaker_held_out(tmp_path, monkeypatch):
    """Without a validation frame, fusion_avg tunes its weights on out-of-fold probabilities of every training row
    (each predicted by members that never saw its speaker), not on one held-out speaker."""
    from training.models.fusion import AverageFusion
    store = synthetic_corpus(tmp_path, n_speakers=4, per_class=4)
    frame = Frame(store.load(["synth_audio", "synth_video"], ["syn"], ("clean",)), CLASSES, SYN_CFG["modalities"])
    seen = []
    tune = AverageFusion._tune
    monkeypatch.setattr(AverageFusion, "_tune", lambda self, probas, y: seen.append(len(y)) or tune(self, probas, y))
    model = build("fusion_avg", {"members": {"lgbm_audio": FAST, "lgbm_video": FAST}, "weights": "tune"}, CLASSES)
    model.fit(frame)
    assert seen == [len(frame)] and model.weights.sum() == pytest.approx(1.0)


SAVED_KINDS = {"lgbm_concat": FAST, "svm_concat": {"normalize": "global"},
               "fusion_avg": {"members": {"lgbm_audio": FAST, "svm_video": {}}, "weights": "tune"},
               "fusion_stack": {"members": {"lgbm_audio": FAST, "lgbm_video": FAST}, "inner_folds": 2}}


@pytest.mark.parametrize("name", sorted(SAVED_KINDS))
def test_saved_models_are_data_only_and_predict_identically(tmp_path, name):
    store = synthetic_corpus(tmp_path, n_speakers=4, per_class=4)
    frame = Frame(store.load(["synth_audio", "synth_video"], ["syn"], ("clean",)), CLASSES, SYN_CFG["modalities"])
    model = build(name, SAVED_KINDS[name], CLASSES)
    model.fit(frame)
    save_model(model, tmp_path / "saved", {"name": name, "classes": CLASSES, "params": SAVED_KINDS[name]})
    files = [p for p in (tmp_path / "saved").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".npz", ".txt"}, files      # no pickle, no joblib
    for npz in (p for p in files if p.suffix == ".npz"):
        np.load(npz, allow_pickle=False)                                     # plain arrays only
    loaded = load_model(tmp_path / "saved")
    for modalities in (("audio", "video"), ("audio",)):
        assert np.array_equal(loaded.predict_proba(frame, modalities), model.predict_proba(frame, modalities))


class Payload:
    """Unpickling this creates `marker`: the proof that a pickle in a model folder would run code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_crafted_model_folder_cannot_run_code(tmp_path, monkeypatch):
    alive = tmp_path / "alive"
    pickle.loads(pickle.dumps(Payload(alive)))
    assert alive.exists()                                    # the payload is live when unpickled
    marker = tmp_path / "pwned"
    info = {"name": "x", "classes": CLASSES, "params": {}}
    pickled = tmp_path / "pickled"                           # an older aver's layout: joblib + loader
    pickled.mkdir()
    (pickled / "model.joblib").write_bytes(pickle.dumps(Payload(marker)))
    (pickled / "model.json").write_text(json.dumps({**info, "loader": "joblib"}))
    module = tmp_path / "module"                             # a loader naming a module shipped in the folder
    module.mkdir()
    (module / "evil_model.py").write_text(f"open({str(marker)!r}, 'w')\nclass Model:\n    pass\n")
    (module / "model.json").write_text(json.dumps({**info, "loader": "evil_model:Model"}))
    monkeypatch.syspath_prepend(str(module))
    for folder, said in ((pickled, "loader 'joblib'"), (module, "loader 'evil_model:Model'")):
        with pytest.raises(ModelLoadError, match="refusing to load") as error:
            load_model(folder)
        assert said in str(error.value) and "aver train" in str(error.value)
    # a registered kind whose data files hold a pickle: torch's weights_only and npz's allow_pickle refuse it
    torch_dir = tmp_path / "torch"
    torch_dir.mkdir()
    (torch_dir / "net.json").write_text(json.dumps({"columns": {}, "dims": {"audio": 6}}))
    (torch_dir / "net.pt").write_bytes(pickle.dumps(Payload(marker), protocol=2))
    (torch_dir / "model.json").write_text(json.dumps({**info, "kind": "temporal",
                                                      "params": {"features": {"audio": {"synth_audio": ["*"]}}}}))
    sklearn_dir = tmp_path / "sklearn"
    sklearn_dir.mkdir()
    (sklearn_dir / "model.json").write_text(json.dumps({**info, "kind": "svm_audio"}))
    np.save(sklearn_dir / "svm.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    (sklearn_dir / "svm.npz").write_bytes((sklearn_dir / "svm.npy").read_bytes())
    import sklearn
    (sklearn_dir / "svm.json").write_text(json.dumps({"sklearn": sklearn.__version__, "state": {"array": "a0"}}))
    for folder in (torch_dir, sklearn_dir):
        with pytest.raises(ModelLoadError, match="cannot load .* pickled Python objects"):
            load_model(folder)
    assert not marker.exists()


# ---- synthetic end to end ----------------------------------------------------------------------------------------
def test_models_beat_chance_and_fusion_helps(synthetic_run):
    metrics, _, _ = synthetic_run
    uar = {m: v["uar"]["mean"] for m, v in metrics["models"].items()}
    assert all(u > 0.45 for u in uar.values()), uar                     # chance is 0.25
    assert uar["lgbm_concat"] > max(uar["lgbm_audio"], uar["lgbm_video"]), uar
    assert max(uar["fusion_avg"], uar["fusion_stack"]) > max(uar["lgbm_audio"], uar["lgbm_video"]), uar
    noisy = metrics["models"]["lgbm_audio"]["robustness"]["white_snr5"]["uar"]["mean"]
    assert noisy < uar["lgbm_audio"]                                      # noisier test audio hurts
    fused = metrics["models"]["fusion_avg"]["robustness"]         # one fitted model, one modality removed
    assert fused["audio_only"]["uar"]["mean"] == pytest.approx(uar["lgbm_audio"], abs=0.1)
    assert fused["video_only"]["uar"]["mean"] < uar["fusion_avg"]
    assert "audio_only" not in metrics["models"]["lgbm_audio"]["robustness"]
    ccc = metrics["regression"]["lgbm_reg_concat"]
    assert ccc["valence"]["ccc"]["mean"] > 0.5 and ccc["arousal"]["ccc"]["mean"] > 0.5, ccc


def test_outputs(synthetic_run):
    metrics, out, store = synthetic_run
    assert metrics["n_folds"] == 6 and metrics["n_clips"] == 6 * 4 * 5 - 1 and metrics["n_excluded"] == 1
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert json.loads((out / "run.json").read_text())["classes"] == metrics["classes"] == CLASSES
    folds = json.loads((out / "folds.json").read_text())                 # what the train step knew: no metrics
    assert [f["test_speakers"] for f in folds] == [[f"syn/s{i}"] for i in range(6)] and "models" not in folds[0]
    assert [f["test_speakers"] for f in metrics["folds"]] == [f["test_speakers"] for f in folds]
    pred = pd.read_parquet(out / "predictions.parquet")
    # the per-fold metrics are those of the fold's predictions, and their mean is the model's summary
    rows = pred[(pred["fold"] == folds[2]["fold"]) & (pred["model"] == "lgbm_video") & (pred["variant"] == "clean")]
    fold_metrics = metrics["folds"][2]["models"]["lgbm_video"]["clean"]
    assert fold_metrics["n"] == len(rows) and fold_metrics["wa"] == pytest.approx((rows["true"] == rows["pred"]).mean())
    assert metrics["models"]["lgbm_video"]["uar"]["mean"] == pytest.approx(
        np.mean([f["models"]["lgbm_video"]["clean"]["uar"] for f in metrics["folds"]]))
    assert set(metrics["folds"][0]["regression"]["lgbm_reg_concat"]) == {"valence", "arousal"}
    assert {"clip_id", "fold", "model", "variant", "true", "pred", "probs"} <= set(pred.columns)
    clean = pred[(pred["model"] == "lgbm_audio") & (pred["variant"] == "clean")]
    assert len(clean) == 119 and clean["clip_id"].is_unique
    for fold, rows in clean.groupby("fold"):                               # test clips are the fold's speaker
        assert set(rows["speaker"]) == {fold.split(":", 1)[1]}
    assert np.allclose(np.stack(pred["probs"]).sum(1), 1, atol=1e-5)
    ledger = pq.read_table(out / "ledger.parquet").to_pandas()
    assert ledger[["clip_id", "reason"]].values.tolist() == [["syn/s0_happy_0", "no_features"]]
    conf = pd.read_csv(out / "plots/confusion/fusion_stack.csv")
    assert list(conf.columns) == ["actual", "predicted"] and len(conf) == 119
    recall = pd.read_csv(out / "plots/recall/lgbm_video.csv")
    assert recall["class"].tolist() == CLASSES and recall["recall"].between(0, 1).all()
    robust = pd.read_csv(out / "plots/robustness.csv")
    assert set(robust["variant"]) == {"clean", "white_snr5", "audio_only", "video_only"} and len(robust) == 12
    # the saved final models predict from the store alone
    df = store.load(["synth_audio", "synth_video"], ["syn"], ("clean",))
    frame = Frame(df[df["emotion"].notna()], CLASSES, SYN_CFG["modalities"])
    for name in SYN_CFG["models"]:
        model = load_model(out / "models" / name)
        proba = model.predict_proba(frame)
        assert proba.shape == (len(frame), 4)
        assert json.loads((out / "models" / name / "model.json").read_text())["classes"] == CLASSES
    fusion = load_model(out / "models/fusion_avg")
    audio_only = fusion.predict_proba(frame, modalities=("audio",))
    if fusion.weights[0] > 0:                                # the video member is left out without video
        assert np.allclose(audio_only, fusion.members[0].predict_proba(frame))


# ---- real EmoDB features, media deleted --------------------------------------------------------------------------
EMODB_CODES = {"F": "happy", "W": "angry", "T": "sad", "N": "neutral"}


@pytest.fixture(scope="module")
def emodb_store(tmp_path_factory):
    """eGeMAPS functionals of ~60 EmoDB clips (6 speakers x 4 classes), from a media copy deleted afterwards."""
    import opensmile
    import soundfile as sf

    wav_dir = shared_path("data", "emodb", "wav")
    root = tmp_path_factory.mktemp("emodb")
    media = root / "media"
    media.mkdir()
    picked = []
    for spk in ["03", "08", "09", "10", "11", "12"]:
        for code in EMODB_CODES:
            picked += sorted(wav_dir.glob(f"{spk}???{code}?.wav"))[:3]
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    clips, feats = [], []
    for src in picked:
        copy = media / src.name
        shutil.copyfile(src, copy)
        signal, sr = sf.read(copy, dtype="float32")
        row = smile.process_signal(signal, sr).iloc[0]
        cid = f"emodb/{src.stem}"
        clips.append({"clip_id": cid, "speaker": f"emodb/{src.stem[:2]}", "emotion": EMODB_CODES[src.stem[5]],
                      "emotion_orig": src.stem[5]})
        feats.append({"clip_id": cid, "variant": "clean", **{k: np.float32(v) for k, v in row.items()}})
    store = write_store(root, "emodb", clips, {"egemaps_functionals": feats})
    shutil.rmtree(media)
    return store, root


def test_real_emodb_training_without_media(emodb_store):
    store, root = emodb_store
    assert not (root / "media").exists()
    cfg = {"corpora": ["emodb"], "labels": "four_class", "split": {"kind": "loso"},
           "modalities": {"audio": {"egemaps_functionals": ["*"]}},
           "models": {"lgbm_audio": {**FAST, "n_estimators": 100}, "svm_audio": {},
                      "fusion_avg": {"members": ["lgbm_audio", "svm_audio"], "weights": [0.5, 0.5]}}}
    metrics = train_and_evaluate(cfg, store, root / "run")
    assert metrics["n_clips"] >= 60 and metrics["n_folds"] == 6
    for name, m in metrics["models"].items():
        assert m["uar"]["mean"] > 0.5 and m["pooled"]["uar"] > 0.5, (name, m)   # chance 0.25
    assert metrics["models"]["lgbm_audio"]["recall"]["sad"] > 0.5


def test_evaluate_and_metrics_commands_read_the_train_stage_outputs(synthetic_run, tmp_path):
    """The DVC layout: `aver evaluate` turns runs/train/ into the one runs/metrics.json; `aver metrics` prints it."""
    metrics, out, _ = synthetic_run
    shutil.copytree(out, tmp_path / "runs" / "train", ignore=shutil.ignore_patterns("metrics.json", "plots"))
    (tmp_path / "params.yaml").write_text(json.dumps({"paths": {"runs": str(tmp_path / "runs")}}))
    for verb in ("evaluate", "metrics"):
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", verb], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        uar = metrics["models"]["fusion_avg"]["uar"]
        row = next(line for line in done.stdout.splitlines() if "fusion_avg" in line)
        assert f"{uar['mean']:.3f} ± {uar['std']:.3f}" in row
        robust = metrics["models"]["fusion_avg"]["robustness"]
        assert f"{robust['audio_only']['uar']['mean']:.3f}" in row
    assert json.loads((tmp_path / "runs" / "metrics.json").read_text()) == metrics
    assert (tmp_path / "runs" / "plots" / "robustness.csv").exists()
