"""Pre-trained emotion CNNs: leakage guard, training on store inputs, checkpoints, and the embedding extractors.

The inputs are synthetic but in the store's exact formats (aligned 112 px PNG face crops; [n_mels, frames] log-mels):
a face's mouth shape and a voice's spectral band/modulation carry the class, and every speaker has its own look and
voice (colours, face size, band shift, spectral tilt), so generalising to held-out speakers has to be learnt.
"""
import json
import shutil

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LeaveOneGroupOut, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from features.alignment import encode_image
from features.emotion_cnn import (FaceEmotionCNN, SpeechAttentionCNN, build_net, load_checkpoint, logmel_windows,
                                  read_checkpoint_info, save_checkpoint, window_mask)
from pipelines.extractor import build, full_schema
from pipelines.manifest import MANIFEST_SCHEMA, manifest_path, to_table, write_atomic
from pipelines.plan import run_extraction
from pipelines.store import FeatureStore
from training.pretrain import check_pretrain_leakage, pretrain, pretrain_command, without_excluded_speakers
from training.splits import SpeakerOverlapError

CORPUS = "syn"
CLASSES = ["happy", "sad", "surprised"]
SPEAKERS = [f"{CORPUS}/s{i}" for i in range(1, 7)]
PRETRAIN = SPEAKERS[:3]          # two train + one validation speaker
HELD_OUT = SPEAKERS[3:]
N_MELS = 32
F32 = pa.list_(pa.float32())
FACES_SCHEMA = pa.schema([("clip_id", pa.string()), ("variant", pa.string()), ("content_hash", pa.string()),
                          ("frame_times", F32), ("face_found", pa.list_(pa.bool_())), ("crops", pa.list_(pa.binary()))])
LOGMEL_SCHEMA = pa.schema([("clip_id", pa.string()), ("variant", pa.string()), ("content_hash", pa.string()),
                           ("logmel", F32), ("logmel_shape", pa.list_(pa.int32())), ("frame_times", F32)])


# ---- synthetic inputs ----------------------------------------------------------------------------------------
def face_crop(rng: np.random.Generator, speaker: int, emotion: str) -> bytes:
    """A drawn face, aligned like the `faces` crops: the mouth shows the emotion, the rest is the speaker's look."""
    look = np.random.default_rng(100 + speaker)
    skin, backdrop = look.integers(120, 240, 3), look.integers(0, 120, 3)
    img = np.empty((112, 112, 3), np.uint8)
    img[:] = backdrop
    w = int(look.integers(30, 40))
    cx, cy = 56 + int(rng.integers(-3, 4)), 58 + int(rng.integers(-3, 4))
    cv2.ellipse(img, (cx, cy), (w, int(1.3 * w)), 0, 0, 360, skin.tolist(), -1)
    for side in (-1, 1):
        cv2.circle(img, (cx + side * int(0.4 * w), cy - int(0.3 * w)), 4, (30, 30, 30), -1)
    mouth, dark = (cx, cy + int(0.55 * w)), (60, 20, 30)
    if emotion == "happy":          # corners up: lower half of an ellipse
        cv2.ellipse(img, (mouth[0], mouth[1] - 8), (int(0.45 * w), 10), 0, 0, 180, dark, 4)
    elif emotion == "sad":          # corners down: upper half
        cv2.ellipse(img, (mouth[0], mouth[1] + 6), (int(0.45 * w), 10), 0, 180, 360, dark, 4)
    else:                           # open round mouth
        cv2.ellipse(img, mouth, (int(0.18 * w), int(0.3 * w)), 0, 0, 360, dark, -1)
    noisy = img.astype(np.float32) + rng.normal(0, 6, img.shape)
    return encode_image(np.clip(noisy, 0, 255).astype(np.uint8))


def logmel(rng: np.random.Generator, speaker: int, emotion: str) -> np.ndarray:
    """[N_MELS, T] log-mel of a voice band: the emotion is in its movement (pitch wobble, steady, bursts), while the
    speaker moves the band up or down (vocal tract), tilts the spectrum and the clip's level varies."""
    voice = np.random.default_rng(200 + speaker)
    centre, tilt = 16 + int(voice.integers(-5, 6)), voice.uniform(-1.5, 1.5)
    frames = int(rng.integers(60, 140))
    x = rng.normal(-6.0 + rng.uniform(-1, 1), 0.7, (N_MELS, frames)) + tilt * np.linspace(-1, 1, N_MELS)[:, None]
    t = np.arange(frames)
    if emotion == "happy":          # pitch wobble
        track, gain = centre + 3 * np.sin(2 * np.pi * t / 20 + rng.uniform(0, 2 * np.pi)), np.full(frames, 4.0)
    elif emotion == "sad":          # steady
        track, gain = np.full(frames, float(centre)), np.full(frames, 4.0)
    else:                           # bursts, as loud on average
        track, gain = np.full(frames, float(centre)), 8.0 * ((t + int(rng.integers(0, 12))) // 6 % 2)
    bins = np.arange(N_MELS)[:, None]
    x += gain[None, :] * np.exp(-((bins - track[None, :]) / 2.0) ** 2)
    return x.astype(np.float32)


def make_corpus(root, per_class: int = 4, frames: int = 5):
    """Manifest + `faces` + `logmel` rows of 6 speakers x 3 emotions x `per_class` clips, written as a real store."""
    rng = np.random.default_rng(0)
    manifest, faces, mels = [], [], []
    for s, speaker in enumerate(SPEAKERS, start=1):
        for emotion in CLASSES:
            for take in range(per_class):
                cid = f"{CORPUS}/s{s}_{emotion}_{take}"
                manifest.append({"clip_id": cid, "corpus": CORPUS, "path": f"s{s}_{emotion}_{take}.mp4",
                                 "speaker": speaker, "emotion": emotion, "emotion_orig": emotion,
                                 "has_audio": True, "has_video": True, "content_hash": cid})
                crops = [face_crop(rng, s, emotion) for _ in range(frames)]
                crops[1] = b""                                   # a frame without a face
                faces.append({"clip_id": cid, "variant": "clean", "content_hash": cid,
                              "frame_times": [i / 5 for i in range(frames)],
                              "face_found": [bool(c) for c in crops], "crops": crops})
                m = logmel(rng, s, emotion)
                mels.append({"clip_id": cid, "variant": "clean", "content_hash": cid, "logmel": m.ravel(),
                             "logmel_shape": list(m.shape), "frame_times": np.arange(m.shape[1]) * 0.01})
    table = to_table(manifest, MANIFEST_SCHEMA)
    table = table.replace_schema_metadata({**table.schema.metadata, b"aver.root": str(root / "media").encode()})
    write_atomic(table, manifest_path(root / "manifests", CORPUS))
    store = FeatureStore(root / "store", root / "manifests")
    for fs, rows, schema in (("faces", faces, FACES_SCHEMA), ("logmel", mels, LOGMEL_SCHEMA)):
        store.write_part(fs, CORPUS, pa.Table.from_pylist(rows, schema=schema),
                         {"kind": fs, "version": "1", "fingerprint": f"{fs}-test", "params": {}})
    return store


def make_params(root) -> dict:
    small = {"corpora": [CORPUS], "speakers": PRETRAIN, "epochs": 12, "batch_size": 16, "lr": 3e-3,
             "embed_dim": 32, "width": 8, "threads": 1, "patience": 4}
    return {
        "paths": {"manifests": str(root / "manifests"), "store": str(root / "store")},
        "pretrain": {
            "face_cnn": {**small, "input_size": 48, "frames_per_clip": 3, "out": str(root / "models" / "face_cnn")},
            "speech_cnn": {**small, "window": 48, "hop": 24, "out": str(root / "models" / "speech_cnn")},
        },
        "train": {"corpora": [CORPUS], "labels": "all", "split": {"kind": "loso"}, "exclude_speakers": PRETRAIN},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    store = make_corpus(root)
    params = make_params(root)
    return root, store, params, {which: pretrain(params, which) for which in ("face", "speech")}


def items(store: FeatureStore, feature_set: str, speakers: list[str]) -> list[dict]:
    """Work items as the planner builds them: manifest row + variant + the upstream row in `inputs`."""
    df = store.load([], [CORPUS])
    rows = {r["clip_id"]: r for r in store.read(feature_set, CORPUS).to_pylist()}
    return [{**r, "path": r["clip_id"].split("/")[1] + ".mp4", "content_hash": r["clip_id"], "variant": "clean",
             "inputs": {feature_set: rows[r["clip_id"]]}}
            for r in df.to_dict("records") if r["speaker"] in speakers]


# ---- leakage guard -------------------------------------------------------------------------------------------
def test_leakage_guard_raises_on_overlap_and_passes_when_disjoint(tmp_path):
    make_corpus(tmp_path, per_class=1, frames=2)
    manifests = tmp_path / "manifests"
    loso = {"corpora": [CORPUS], "labels": "all", "split": {"kind": "loso"}}
    with pytest.raises(SpeakerOverlapError, match=r"syn/s1.*syn/s2.*exclude_speakers"):
        check_pretrain_leakage(PRETRAIN, loso, manifests)

    folds = check_pretrain_leakage(PRETRAIN, {**loso, "exclude_speakers": PRETRAIN}, manifests)
    assert sorted(s for f in folds for s in f.test_speakers) == HELD_OUT       # evaluation = the other speakers
    # the same filter, for the train stage's store table
    table = FeatureStore(tmp_path / "store", manifests).load([], [CORPUS])
    assert set(without_excluded_speakers(table, {"exclude_speakers": PRETRAIN})["speaker"]) == set(HELD_OUT)


def test_leakage_guard_on_official_splits(tmp_path):
    make_corpus(tmp_path, per_class=1, frames=2)
    path = manifest_path(tmp_path / "manifests", CORPUS)
    table = pq.read_table(path)
    split = ["test" if s in ("syn/s5", "syn/s6") else "train" for s in table.column("speaker").to_pylist()]
    table = table.set_column(table.schema.get_field_index("split"), "split", pa.array(split, pa.string()))
    write_atomic(table, path)
    official = {"corpora": [CORPUS], "labels": "all", "split": {"kind": "official"}}
    assert check_pretrain_leakage(PRETRAIN, official, tmp_path / "manifests")
    with pytest.raises(SpeakerOverlapError, match="syn/s5"):
        check_pretrain_leakage(["syn/s5"], official, tmp_path / "manifests")


def test_pretrain_refuses_a_leaking_evaluation_before_training(trained):
    root, _, params, _ = trained
    leaky = {**params, "train": {**params["train"], "exclude_speakers": []}}
    leaky["pretrain"] = {"face_cnn": {**params["pretrain"]["face_cnn"], "out": str(root / "never")}}
    with pytest.raises(SpeakerOverlapError, match="pre-training leakage"):
        pretrain(leaky, "face")
    assert not (root / "never").exists()


def test_pretrain_config_errors_are_clear(trained):
    root, _, params, _ = trained
    cfg = params["pretrain"]["speech_cnn"]
    with pytest.raises(ValueError, match="unknown keys"):
        pretrain({**params, "pretrain": {"speech_cnn": {**cfg, "epoch": 3}}}, "speech")
    with pytest.raises(ValueError, match="not of the corpora"):
        pretrain({**params, "pretrain": {"speech_cnn": {**cfg, "speakers": ["other/s1"]}}}, "speech")
    with pytest.raises(ValueError, match="without labelled logmel rows"):
        pretrain({**params, "pretrain": {"speech_cnn": {**cfg, "speakers": PRETRAIN + ["syn/s9"]}}}, "speech")
    with pytest.raises(ValueError, match="cannot leave 1 for validation"):
        pretrain({**params, "pretrain": {"speech_cnn": {**cfg, "speakers": ["syn/s1"]}}}, "speech")


# ---- training + checkpoints ----------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["face", "speech"])
def test_pretraining_learns_above_chance_on_a_held_out_speaker(trained, which):
    _, _, params, checkpoints = trained
    info = read_checkpoint_info(checkpoints[which], which)
    assert info["classes"] == sorted(CLASSES)
    assert info["pretrain_speakers"] == PRETRAIN
    assert len(info["valid_speakers"]) == 1
    assert set(info["train_speakers"]) | set(info["valid_speakers"]) == set(PRETRAIN)
    assert not set(info["train_speakers"]) & set(info["valid_speakers"])
    assert 1 <= info["best_epoch"] <= len(info["history"]) <= params["pretrain"][f"{which}_cnn"]["epochs"]
    best = info["history"][info["best_epoch"] - 1]
    assert best["valid_uar"] > 0.6, info["history"]              # chance is 1/3
    assert info["upstream"]["fingerprints"] == {CORPUS: "faces-test" if which == "face" else "logmel-test"}
    # 12 clips per speaker; faces: 3 of the 4 face frames of every clip
    assert info["n_clips"] == {"train": 24, "valid": 12}
    if which == "face":
        assert info["n_samples"] == {"train": 72, "valid": 36}


def test_checkpoint_round_trip_and_integrity(trained, tmp_path):
    _, _, _, checkpoints = trained
    net, info = load_checkpoint(checkpoints["speech"], "speech")
    assert isinstance(net, SpeechAttentionCNN) and not net.training
    assert float(net.std.min()) > 0 and float(net.mean.abs().sum()) > 0     # normalisation travelled along
    x = torch.randn(2, N_MELS, 48)
    with torch.no_grad():
        again, _ = load_checkpoint(checkpoints["speech"])
        assert torch.equal(net(x, window_mask([48, 20], 48))[1], again(x, window_mask([48, 20], 48))[1])
    with pytest.raises(ValueError, match="not a face"):
        load_checkpoint(checkpoints["speech"], "face")

    # save -> load keeps every tensor; a modified weights file is refused
    fresh = FaceEmotionCNN(n_classes=3, embed_dim=16, width=4, in_channels=1).eval()
    arch = {"net": "face", "n_classes": 3, "embed_dim": 16, "width": 4, "dropout": 0.3, "input_size": 32,
            "grayscale": True}
    out = save_checkpoint(tmp_path / "ck", fresh, {"arch": arch, "classes": CLASSES})
    loaded, meta = load_checkpoint(out, "face")
    image = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(image)[0], loaded(image)[0])
    assert meta["fingerprint"] == json.loads((out / "checkpoint.json").read_text())["fingerprint"]
    (out / "weights.pt").write_bytes((out / "weights.pt").read_bytes()[:-10])
    with pytest.raises(ValueError, match="does not match the fingerprint"):
        load_checkpoint(out)
    with pytest.raises(FileNotFoundError, match="aver pretrain"):
        read_checkpoint_info(tmp_path / "missing")


def test_pretrain_command_reproduces_the_checkpoint(trained):
    root, _, params, checkpoints = trained
    before = read_checkpoint_info(checkpoints["speech"])["fingerprint"]
    (root / "params.yaml").write_text(json.dumps(params))          # JSON is YAML
    summary = pretrain_command("speech", root / "params.yaml")
    assert f"fingerprint {before[:12]}" in summary and "valid UAR" in summary     # same seed, same weights
    assert sorted(p.name for p in (root / "models").iterdir()) == ["face_cnn", "speech_cnn"]   # no temporaries


def test_logmel_windows_cover_every_frame():
    x = np.arange(2 * 130, dtype=np.float32).reshape(2, 130)
    windows, lengths, starts = logmel_windows(x, 48, 24)
    assert starts.tolist() == [0, 24, 48, 72, 82] and lengths.tolist() == [48] * 5
    assert np.array_equal(windows[-1], x[:, 82:])
    short, lengths, starts = logmel_windows(x[:, :20], 48, 24)
    assert short.shape == (1, 2, 48) and lengths.tolist() == [20] and not short[0, :, 20:].any()


# ---- extractors ----------------------------------------------------------------------------------------------
def test_face_extractor_process(trained):
    _, store, _, checkpoints = trained
    ex = build("face_emotion_embedding", {"checkpoint": str(checkpoints["face"])})
    assert ex.version == "1+" + read_checkpoint_info(checkpoints["face"])["fingerprint"][:12]
    ex.setup()
    good = items(store, "faces", ["syn/s4"])[:2]
    bad = [dict(good[0], clip_id="syn/x_missing", inputs={}),
           dict(good[0], clip_id="syn/x_noface", inputs={"faces": {**good[0]["inputs"]["faces"],
                                                                    "crops": [b""] * 5, "face_found": [False] * 5}}),
           dict(good[0], clip_id="syn/x_corrupt", inputs={"faces": {**good[0]["inputs"]["faces"],
                                                                     "crops": [b"not a png"] * 5}}),
           items(store, "faces", ["syn/s1"])[0]]
    result = ex.process(good + bad)
    assert [f["reason"] for f in result.failures] == ["missing_input:faces", "no_face_crops", "bad_face_crop",
                                                      "pretrain_speaker"]
    table = pa.Table.from_pylist(result.rows, schema=full_schema(ex))       # rows match the declared schema
    row = table.to_pylist()[0]
    assert row["emb_shape"] == [4, 32] and len(row["emb"]) == 128 and row["emb_times"] == pytest.approx([0, .4, .6, .8])
    assert row["probs_shape"] == [4, 3] and sum(row[f"p_{c}"] for c in CLASSES) == pytest.approx(1, abs=1e-5)
    emb = np.array(row["emb"]).reshape(4, 32)
    assert np.allclose(row["emb_mean"], emb.mean(0), atol=1e-6) and np.allclose(row["emb_max"], emb.max(0))


def test_speech_extractor_process(trained):
    _, store, _, checkpoints = trained
    ex = build("speech_emotion_embedding", {"checkpoint": str(checkpoints["speech"])})
    ex.setup()
    good = items(store, "logmel", ["syn/s5"])[0]
    mel = good["inputs"]["logmel"]
    frames = mel["logmel_shape"][1]

    def variant(clip: str, **row):
        return dict(good, clip_id=f"syn/{clip}", inputs={"logmel": {**mel, **row}})

    short = np.asarray(mel["logmel"], np.float32).reshape(N_MELS, frames)[:, :20]
    times = mel["frame_times"]
    cases = [good, variant("short", logmel=short.ravel(), logmel_shape=[N_MELS, 20], frame_times=times[:20]),
             variant("tiny", logmel=short[:, :5].ravel(), logmel_shape=[N_MELS, 5], frame_times=times[:5]),
             variant("mels", logmel=short[:16].ravel(), logmel_shape=[16, 20], frame_times=times[:20]),
             variant("shape", logmel_shape=[N_MELS, frames + 1]),
             variant("nan", logmel=np.full(N_MELS * frames, np.nan, np.float32))]
    result = ex.process(cases)
    assert [f["reason"] for f in result.failures] == ["too_short", "input_mismatch", "bad_input", "bad_input"]
    rows = pa.Table.from_pylist(result.rows, schema=full_schema(ex)).to_pylist()
    windows = len(logmel_windows(np.zeros((1, frames)), 48, 24)[2])
    assert rows[0]["emb_shape"] == [windows, 32] and rows[1]["emb_shape"] == [1, 32]
    assert rows[1]["emb_times"] == pytest.approx([(0 + 0.19) / 2])              # centre of the padded window
    assert np.all(np.diff(rows[0]["emb_times"]) > 0)


def test_run_extraction_embeds_only_non_pretraining_speakers(trained):
    root, store, params, checkpoints = trained
    checkpoint = root / "speech_for_extraction"
    shutil.copytree(checkpoints["speech"], checkpoint)
    run_params = {**params, "features": {"speech_emb": {"extractor": "speech_emotion_embedding",
                                                        "params": {"checkpoint": str(checkpoint)}}}}
    summary = run_extraction(run_params, "speech_emb", CORPUS, engine="local", progress=False)
    assert summary.extracted == 36 and summary.failed == 36
    assert set(store.ledger("speech_emb", CORPUS)["reason"]) == {"pretrain_speaker"}
    df = store.load(["speech_emb"], [CORPUS])
    embedded = df[df["speech_emb.emb_mean"].notna()]
    assert set(embedded["speaker"]) == set(HELD_OUT)
    assert run_extraction(run_params, "speech_emb", CORPUS, engine="local", progress=False).extracted == 0

    # new weights at the same path (a retraining): a new configuration, so every row is made again
    net, info = load_checkpoint(checkpoint)
    with torch.no_grad():
        net.embed[1].bias.add_(0.5)
    save_checkpoint(checkpoint, net, {k: v for k, v in info.items() if k != "fingerprint"})
    again = run_extraction(run_params, "speech_emb", CORPUS, engine="local", progress=False)
    assert again.removed == 72 and again.extracted == 36
    assert store.info("speech_emb", CORPUS)["version"] == "1+" + read_checkpoint_info(checkpoint)["fingerprint"][:12]


def probe_accuracy(store: FeatureStore, checkpoint, which: str, upstream: str) -> float:
    """Leave-one-speaker-out accuracy of a linear probe on the clip-mean embeddings of the held-out speakers."""
    ex = build(f"{which}_emotion_embedding", {"checkpoint": str(checkpoint)})
    ex.setup()
    work = items(store, upstream, HELD_OUT)
    result = ex.process(work)
    assert not result.failures
    x = np.array([r["emb_mean"] for r in result.rows])
    y = np.array([w["emotion"] for w in work])
    groups = np.array([w["speaker"] for w in work])
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return cross_val_score(probe, x, y, groups=groups, cv=LeaveOneGroupOut()).mean()


@pytest.mark.parametrize("which,upstream", [("face", "faces"), ("speech", "logmel")])
def test_held_out_speaker_embeddings_separate_classes(trained, tmp_path, which, upstream):
    """Embeddings of speakers the CNN never saw separate the classes, clearly better than the same network untrained."""
    _, store, _, checkpoints = trained
    net, info = load_checkpoint(checkpoints[which], which)
    torch.manual_seed(0)
    untrained = build_net(info["arch"])
    if which == "speech":           # same input normalisation: only the learnt weights differ
        untrained.set_normalisation(net.mean.numpy(), net.std.numpy())
    baseline = save_checkpoint(tmp_path / "untrained", untrained.eval(),
                               {k: v for k, v in info.items() if k != "fingerprint"})
    trained_accuracy = probe_accuracy(store, checkpoints[which], which, upstream)
    untrained_accuracy = probe_accuracy(store, baseline, which, upstream)
    assert trained_accuracy > 0.8, trained_accuracy                           # chance is 1/3
    assert trained_accuracy > untrained_accuracy + 0.15, (trained_accuracy, untrained_accuracy)


def test_cuda_device_asks_ray_for_a_gpu(tmp_path):
    """Ray hides GPUs from actors that ask for none: `device: cuda` must request one, for the checkpoint
    embedders as for the other extractors."""
    arch = {"net": "face", "n_classes": 3, "embed_dim": 16, "width": 4, "dropout": 0.3, "input_size": 32,
            "grayscale": True}
    out = save_checkpoint(tmp_path / "ck", FaceEmotionCNN(n_classes=3, embed_dim=16, width=4), {"arch": arch,
                                                                                              "classes": CLASSES})
    for kind, params in [("face_emotion_embedding", {"checkpoint": str(out)}), ("fer_embedding", {}),
                         ("faces", {}), ("audioset_embedding", {})]:
        assert build(kind, {**params, "device": "cuda"}).resources.num_gpus == 1.0, kind
        assert build(kind, params).resources.num_gpus == 0.0, kind
    assert build("fer_embedding", {"device": "cuda", "resources": {"num_gpus": 0.5}}).resources.num_gpus == 0.5
