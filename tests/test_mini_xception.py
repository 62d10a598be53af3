"""mini-Xception port: h5 conversion, TF 'same' pooling, parity with the Keras model, the fer_embedding extractor."""
import json

import cv2
import h5py
import numpy as np
import pyarrow as pa
import pytest
import torch

from conftest import shared_path
from features.fer_embedding import FerEmbedding
from features.mini_xception import CLASSES, MaxPoolSame, MiniXception, load_keras_h5, load_model, preprocess
from pipelines.extractor import build, full_schema
from pipelines.weights import fetch

KERAS_PARAMS = 58_423   # Keras model.count_params() of the h5, BN moving statistics included


@pytest.fixture(scope="module")
def h5_path():
    shared_path("models", "fer_mini_xception_fer2013")     # skip (or fail under AVER_REQUIRE_ASSETS) if absent
    return fetch("fer_mini_xception_fer2013")


@pytest.fixture(scope="module")
def reference():
    frames = json.loads(shared_path("fixtures", "mini_xception_reference.json").read_text())["frames"]
    crops = np.load(shared_path("fixtures", "mini_xception_inputs_uint8_gray64.npz"))
    names = sorted(frames)
    return names, np.stack([crops[n] for n in names]), frames


@pytest.fixture(scope="module")
def extractor(h5_path):
    ex = build("fer_embedding")
    ex.setup()
    return ex


def test_h5_converts_to_every_parameter_with_torch_shapes(h5_path):
    state = load_keras_h5(h5_path)
    expected = MiniXception().state_dict()
    assert set(state) == set(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    assert sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked")) == KERAS_PARAMS


def test_h5_kernels_are_transposed_not_reshaped(h5_path):
    state = load_keras_h5(h5_path)
    with h5py.File(h5_path, "r") as f:
        w = f["model_weights"]
        conv = w["conv2d_2/conv2d_2_1/kernel:0"][()]                             # [kh, kw, in, out]
        depthwise = w["separable_conv2d_3/separable_conv2d_3_1/depthwise_kernel:0"][()]   # [kh, kw, in, 1]
        pointwise = w["separable_conv2d_3/separable_conv2d_3_1/pointwise_kernel:0"][()]   # [1, 1, in, out]
        shortcut_var = w["batch_normalization_6/batch_normalization_6_1/moving_variance:0"][()]
    assert state["conv2.weight"][5, 3, 2, 0] == conv[2, 0, 3, 5]
    assert state["blocks.1.sep1.depthwise.weight"][7, 0, 0, 2] == depthwise[0, 2, 7, 0]
    assert state["blocks.1.sep1.pointwise.weight"][20, 11, 0, 0] == pointwise[0, 0, 11, 20]
    # Keras BN numbering: module 2's shortcut BN is batch_normalization_6, created before its main-path BNs
    assert np.array_equal(state["blocks.1.shortcut_bn.running_var"].numpy(), shortcut_var)


def test_h5_with_foreign_layers_is_rejected(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [b"dense_1"]
        layer = g.create_group("dense_1")
        layer.attrs["weight_names"] = [b"dense_1/kernel:0"]
        layer.create_dataset("dense_1/kernel:0", data=np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="dense_1"):
        load_keras_h5(path)


def test_same_max_pool_pads_bottom_right_like_tensorflow():
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    out = MaxPoolSame(3, 2)(x)
    # 6 -> 3 needs one pad row/column, which TF puts at the bottom/right: window 0 covers rows/cols 0..2
    assert out[0, 0].tolist() == [[14.0, 16.0, 17.0], [26.0, 28.0, 29.0], [32.0, 34.0, 35.0]]
    assert [MaxPoolSame()(torch.zeros(1, 1, n, n)).shape[-1] for n in (60, 30, 15, 8)] == [30, 15, 8, 4]


def test_probabilities_match_keras_reference(h5_path, reference):
    names, crops, frames = reference
    with torch.no_grad():
        logits, emb = load_model(h5_path)(preprocess(crops))
    probs = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_allclose(probs, [frames[n]["probabilities"] for n in names], atol=1e-4)
    np.testing.assert_allclose(logits.numpy(), [frames[n]["pre_softmax_gap"] for n in names], atol=1e-4)
    assert [CLASSES[i] for i in probs.argmax(1)] == [frames[n]["top_class"] for n in names]
    assert emb.shape == (len(names), 128) and torch.isfinite(emb).all()


def _png(gray: np.ndarray, size: int) -> bytes:
    """An RGB PNG crop like the faces feature set stores, made from a fixture gray crop."""
    rgb = cv2.cvtColor(cv2.resize(gray, (size, size), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2RGB)
    return cv2.imencode(".png", rgb)[1].tobytes()


def _item(crops: list[bytes], found: list[bool] | None = None) -> dict:
    faces = {"crops": crops, "frame_times": [0.04 * i for i in range(len(crops))],
             "face_found": found if found is not None else [len(c) > 0 for c in crops]}
    return {"clip_id": "test/clip", "corpus": "test", "path": "clip.mp4", "variant": "clean",
            "content_hash": "h", "inputs": {"faces": faces}}


def test_extractor_matches_reference_on_64px_crops(extractor, reference):
    names, crops, frames = reference
    result = extractor.process([_item([_png(c, 64) for c in crops])])
    assert not result.failures
    row = result.rows[0]
    probs = np.array(row["probs"]).reshape(row["probs_shape"])
    np.testing.assert_allclose(probs, [frames[n]["probabilities"] for n in names], atol=1e-4)
    np.testing.assert_allclose([row[f"fer_{c}"] for c in CLASSES], probs.mean(0), atol=1e-6)


def test_extractor_on_aligned_112px_crops_skips_faceless_frames(extractor, reference):
    _, crops, _ = reference
    pngs = [_png(c, 112) for c in crops[:4]]
    item = _item([pngs[0], b"", pngs[1], pngs[2], b"", pngs[3]])
    item["inputs"]["faces"]["face_found"][3] = False       # a crop whose face flag is off is not used either
    result = extractor.process([item])
    assert not result.failures
    row = result.rows[0]
    assert row["emb_shape"] == [3, 128] and row["probs_shape"] == [3, 7]
    assert row["emb_times"] == pytest.approx([0.0, 0.08, 0.20])
    emb = np.array(row["emb"]).reshape(3, 128)
    np.testing.assert_allclose(row["emb_mean"], emb.mean(0), atol=1e-6)
    np.testing.assert_allclose(row["emb_max"], emb.max(0), atol=1e-6)
    assert sum(row[f"fer_{c}"] for c in CLASSES) == pytest.approx(1.0, abs=1e-5)
    table = pa.Table.from_pylist(result.rows, schema=full_schema(extractor))
    assert table.num_rows == 1


def test_extractor_failures_become_ledger_rows(extractor, reference):
    _, crops, _ = reference
    no_face = _item([b"", b""], [False, False])
    corrupt = _item([_png(crops[0], 64), b"\x89PNG not really"])
    missing = {**_item([]), "inputs": {}}
    result = extractor.process([no_face, corrupt, missing])
    assert not result.rows
    assert [f["reason"] for f in result.failures] == ["no_face_crops", "bad_face_crop", "missing_input:faces"]
    assert all(f["stage"] == "fer_embedding" and f["clip_id"] == "test/clip" for f in result.failures)


def test_unknown_params_are_rejected():
    with pytest.raises(ValueError, match="unknown params"):
        FerEmbedding(batch=3)
