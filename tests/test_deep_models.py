"""The torch fusion models (fbp, temporal, vavl) on a small synthetic store whose labels need both modalities:
audio carries arousal (angry/happy vs neutral/sad), video carries valence (happy/neutral vs angry/sad)."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from pipelines.extractor import KEY_FIELDS
from pipelines.manifest import MANIFEST_SCHEMA, manifest_path, to_table, write_atomic
from pipelines.store import FeatureStore
from training.data import Frame
from training.models import build, build_regressor, load_model, save_model
from training.models.torch_inputs import load_sequences, resolve_columns, shorten
from training.trainer import train_loop

CLASSES = ["angry", "happy", "neutral", "sad"]
AROUSAL = {"angry": 1, "happy": 1, "neutral": -1, "sad": -1}
VALENCE = {"angry": -1, "happy": 1, "neutral": 1, "sad": -1}
FAST = {"hidden": 32, "epochs": 40, "patience": 6, "batch_size": 16, "lr": 3e-3, "seed": 0}
SEQ = pa.list_(pa.float32())
SHAPE = pa.list_(pa.int32())


def _rows(rng):
    """Manifest rows and feature rows of 6 speakers x 4 emotions x 4 takes; 3 clips lack video, 1 lacks audio."""
    arousal_dir, valence_dir = rng.normal(size=12), rng.normal(size=8)
    manifest, logmel, audioset, fer = [], [], [], []
    for s in range(6):
        offset = rng.normal(scale=0.3, size=8)
        for emo in CLASSES:
            for take in range(4):
                cid = f"synth/s{s}_{emo}_{take}"
                a, v = AROUSAL[emo], VALENCE[emo]
                manifest.append({"clip_id": cid, "corpus": "synth", "path": f"{cid}.wav", "speaker": f"synth/s{s}",
                                 "emotion": emo, "emotion_orig": emo, "content_hash": cid,
                                 "valence": v * 0.5 + rng.normal(scale=0.1),
                                 "arousal": a * 0.5 + rng.normal(scale=0.1)})
                key = {"clip_id": cid, "variant": "clean", "content_hash": cid}
                t = int(rng.integers(20, 70))
                mel = rng.normal(size=(16, t)).astype(np.float32)
                mel[slice(10, 14) if a > 0 else slice(2, 6), t // 4: 3 * t // 4] += 1.5   # arousal: which band
                windows = int(rng.integers(3, 9))
                emb = rng.normal(size=(windows, 12)) + 0.8 * a * arousal_dir
                frames = int(rng.integers(6, 30))
                face = rng.normal(size=(frames, 8)) + 0.8 * v * valence_dir + offset
                if (s, take) != (0, 3) or emo != "sad":
                    logmel.append({**key, "logmel": mel.ravel(), "logmel_shape": [16, t]})
                    audioset.append({**key, "emb": emb.ravel(), "emb_shape": list(emb.shape)})
                if not (s == 1 and take == 0 and emo != "angry"):
                    fer.append({**key, "emb": face.ravel(), "emb_shape": list(face.shape)})
    return manifest, {"logmel": (logmel, {"logmel": SEQ, "logmel_shape": SHAPE}),
                      "audioset_embedding": (audioset, {"emb": SEQ, "emb_shape": SHAPE}),
                      "fer_embedding": (fer, {"emb": SEQ, "emb_shape": SHAPE})}


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    manifest, parts = _rows(np.random.default_rng(7))
    table = to_table(manifest, MANIFEST_SCHEMA).replace_schema_metadata({b"aver.root": str(root).encode()})
    write_atomic(table, manifest_path(root / "manifests", "synth"))
    store = FeatureStore(root / "store", root / "manifests")
    for fs, (rows, cols) in parts.items():
        schema = pa.schema(KEY_FIELDS + list(cols.items()))
        store.write_part(fs, "synth", pa.Table.from_pylist(rows, schema=schema), {"kind": fs})
    df = store.load(list(parts), ["synth"])
    frame = Frame(df, CLASSES, {})
    test = frame.df["speaker"].isin(["synth/s4", "synth/s5"]).to_numpy()
    return frame.subset(~test), frame.subset(test)


@pytest.fixture(scope="module")
def fitted(frames):
    train, _ = frames
    models = {}
    for name in ("fbp", "temporal", "vavl"):
        models[name] = build(name, FAST, CLASSES)
        models[name].fit(train)
    return models


def _accuracy(proba, frame):
    return float((proba.argmax(axis=1) == frame.y).mean())


@pytest.mark.parametrize("name", ["fbp", "temporal", "vavl"])
def test_model_learns_what_needs_both_modalities(fitted, frames, name):
    _, test = frames
    proba = fitted[name].predict_proba(test)
    assert proba.shape == (len(test), len(CLASSES))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert _accuracy(proba, test) >= 0.7, f"{name}: accuracy {_accuracy(proba, test):.2f} (chance 0.25)"


def test_vavl_single_modality_keeps_its_half_of_the_information(fitted, frames):
    _, test = frames
    vavl = fitted["vavl"]
    truth = np.array(CLASSES)[test.y]
    audio = np.array(CLASSES)[vavl.predict_proba(test, modalities=("audio",)).argmax(axis=1)]
    video = np.array(CLASSES)[vavl.predict_proba(test, modalities=("video",)).argmax(axis=1)]
    same_arousal = np.mean([AROUSAL[p] == AROUSAL[t] for p, t in zip(audio, truth)])
    same_valence = np.mean([VALENCE[p] == VALENCE[t] for p, t in zip(video, truth)])
    assert same_arousal >= 0.85 and same_valence >= 0.85, (same_arousal, same_valence)   # chance: 0.5


def test_rows_without_the_requested_modalities_get_the_training_prior(fitted, frames):
    train, _ = frames
    vavl = fitted["vavl"]
    no_video = train.subset(train.df["fer_embedding.emb"].isna().to_numpy())
    assert len(no_video) == 3
    prior = np.bincount(train.y, minlength=len(CLASSES)) / len(train)
    video_only = vavl.predict_proba(no_video, modalities=("video",))
    assert np.abs(video_only - prior).max() < 0.05          # the prior of the inner training split
    both = vavl.predict_proba(no_video)                     # the audio head answers when audio is allowed
    assert (both.argmax(axis=1) == no_video.y).mean() >= 2 / 3


@pytest.mark.parametrize("name", ["fbp", "temporal", "vavl"])
def test_padding_does_not_change_outputs(fitted, frames, name):
    _, test = frames
    model = fitted[name]
    together = model.predict_proba(test)          # one padded batch: every clip padded to the longest
    lengths = test.df["logmel.logmel_shape"].map(lambda s: s[1]).to_numpy()
    for i in np.argsort(lengths)[:3]:             # the shortest clips carry the most padding
        alone = model.predict_proba(test.subset([i]))
        np.testing.assert_allclose(alone[0], together[i], atol=1e-5)


@pytest.mark.parametrize("name", ["fbp", "vavl"])
def test_save_load_round_trip_gives_identical_probabilities(fitted, frames, tmp_path, name):
    _, test = frames
    model = fitted[name]
    save_model(model, tmp_path / name, {"name": name, "classes": CLASSES, "params": FAST})
    loaded = load_model(tmp_path / name)
    np.testing.assert_array_equal(loaded.predict_proba(test), model.predict_proba(test))
    np.testing.assert_array_equal(loaded.predict_proba(test, ("audio",)), model.predict_proba(test, ("audio",)))


def test_training_is_deterministic(frames):
    train, test = frames
    params = {**FAST, "epochs": 3}
    runs = []
    for _ in range(2):
        model = build("temporal", params, CLASSES)
        model.fit(train)
        runs.append(model.predict_proba(test))
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("name", ["vavl_reg", "temporal_reg"])
def test_dimension_regression_with_ccc_loss(frames, name):
    train, test = frames
    model = build_regressor(name, FAST, ["valence", "arousal"])
    model.fit(train)
    pred = model.predict(test)
    gold = test.df[["valence", "arousal"]].to_numpy(float)
    assert pred.shape == gold.shape
    for j, dim in enumerate(["valence", "arousal"]):
        c = np.cov(pred[:, j], gold[:, j], bias=True)
        ccc = 2 * c[0, 1] / (c[0, 0] + c[1, 1] + (pred[:, j].mean() - gold[:, j].mean()) ** 2)
        assert ccc > 0.6, f"{name} {dim}: CCC {ccc:.2f}"
    with pytest.raises(TypeError):
        model.predict_proba(test)


def test_sequences_from_per_frame_series_with_missing_faces():
    nan = np.nan
    df = pd.DataFrame({
        "clip_id": ["a", "b", "c"], "emotion": ["sad"] * 3,
        "faces.mouth_open": [np.array([0.1, nan, 0.3, 0.4], np.float32), None, np.array([nan, nan], np.float32)],
        "faces.brow_left": [np.array([1.0, nan, 3.0, 4.0], np.float32), None, np.array([nan, nan], np.float32)],
        "faces.frame_times": [np.arange(4, dtype=np.float32), None, np.arange(2, dtype=np.float32)],
        "faces.stat_mouth_mean": [0.3, nan, nan],
    })
    frame = Frame(df, ["sad"], {})
    cols = resolve_columns(df, {"faces": ["*"]})
    assert cols == ["faces.mouth_open", "faces.brow_left"]        # no scalars, no *_times companions
    seqs = load_sequences(frame, "video", cols, {}, max_frames=100)
    np.testing.assert_allclose(seqs[0], [[0.1, 1.0], [0.3, 3.0], [0.4, 4.0]], rtol=1e-6)   # no-face frame dropped
    assert seqs[1] is None and seqs[2] is None                    # missing clip, clip without any face
    with pytest.raises(ValueError, match="stat_"):
        resolve_columns(df, {"faces": ["stat_*"]})


def test_shorten_averages_windows():
    x = np.arange(10, dtype=np.float32)[:, None]
    np.testing.assert_allclose(shorten(x, 4)[:, 0], [1.0, 4.0, 7.0, 9.0])
    assert shorten(x, 10) is x


def test_temporal_on_one_modality(frames):
    train, test = frames
    model = build("temporal", {**FAST, "epochs": 5, "features": {"video": {"fer_embedding": ["emb"]}}}, CLASSES)
    assert model.modalities == ("video",)
    model.fit(train)
    assert model.predict_proba(test).shape == (len(test), len(CLASSES))
    prior_only = model.predict_proba(test, modalities=("audio",))     # nothing it reads is available
    np.testing.assert_allclose(prior_only, np.broadcast_to(prior_only[0], prior_only.shape))


def test_bad_params_are_rejected():
    with pytest.raises(ValueError, match="unknown params"):
        build("vavl", {"hiden": 3}, CLASSES)
    with pytest.raises(ValueError, match="target"):
        build("fbp", {"target": "valence"}, CLASSES)
    with pytest.raises(ValueError, match="needs `features`"):
        build("vavl", {"features": {"audio": {"logmel": ["logmel"]}}}, CLASSES)


def test_the_shared_training_loop_keeps_the_best_epoch_and_stops_after_patience():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    x, target = torch.randn(10, 3), torch.randn(10, 1)
    losses = iter([3.0, 2.0, 2.5, 1.99995, 2.6, 9.0])   # epoch 4 is not lower by more than 1e-4
    seen: list[dict] = []

    def validate():
        seen.append({k: v.clone() for k, v in net.state_dict().items()})
        return {"valid_loss": next(losses)}

    def batch_loss(idx, rng):
        return ((net(x[idx]) - target[idx]) ** 2).mean()
    cfg = {"epochs": 6, "batch_size": 3, "lr": 0.1, "weight_decay": 0.0, "patience": 3, "seed": 0}
    history, best = train_loop(net, 10, batch_loss, cfg, validate)
    assert best == 2 and [h["epoch"] for h in history] == [1, 2, 3, 4, 5] and not net.training
    assert all(torch.equal(v, seen[1][k]) for k, v in net.state_dict().items())      # epoch 2's weights
    assert not torch.equal(seen[1]["weight"], seen[4]["weight"])
    # without validation every epoch runs and the last weights stay; batches of one row are skipped
    steps = []
    history, best = train_loop(net, 10, lambda idx, rng: steps.append(len(idx)) or batch_loss(idx, rng),
                               {**cfg, "epochs": 2}, None)
    assert best == 2 and len(history) == 2 and steps == [3, 3, 3] * 2
