"""face_affect: HSEmotion-style ONNX models built here with the original's input / output layout (weights cannot be
downloaded offline), the original's pre-processing, the embedding read at the classifier's input, ledger rows."""
import cv2
import numpy as np
import onnx
import pyarrow as pa
import pytest
from onnx import TensorProto, helper, numpy_helper

from features.face_affect import CLASSES_7, CLASSES_8, FaceAffect, preprocess, with_embedding_output
from pipelines.extractor import full_schema
from pipelines.weights import MODELS, WeightsUnavailable, sha256_of


def hsemotion_like(path, size: int, n_out: int, seed: int = 0):
    """input [N,3,size,size] -> GlobalAveragePool -> Flatten (the 3-d 'embedding': per-channel means of the
    normalised input) -> Gemm classifier -> [N, n_out], like the official exports' tail (pool, flatten, Gemm)."""
    rng = np.random.default_rng(seed)
    weight, bias = rng.normal(size=(n_out, 3)).astype(np.float32), rng.normal(size=n_out).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["features"]),
         helper.make_node("Gemm", ["features", "W", "B"], ["output"], transB=1)],
        "hsemotion_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", n_out])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return weight, bias


def reference_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """Written from hsemotion-onnx's documented pre-processing: RGB face, cv2.resize to size x size (default
    interpolation), divide by 255, per channel (x - mean) / std with ImageNet statistics, CHW."""
    x = cv2.resize(rgb, (size, size)) / 255
    for c, (mean, std) in enumerate(zip([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])):
        x[..., c] = (x[..., c] - mean) / std
    return x.transpose(2, 0, 1).astype("float32")


def png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))[1].tobytes()


def item(crops: list[bytes], found=None) -> dict:
    faces = {"crops": crops, "frame_times": [0.2 * i for i in range(len(crops))],
             "face_found": found if found is not None else [len(c) > 0 for c in crops]}
    return {"clip_id": "t/clip", "corpus": "t", "path": "clip.mp4", "variant": "clean", "content_hash": "h",
            "inputs": {"faces": faces}}


def faces(n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [cv2.GaussianBlur(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), (5, 5), 1.5) for _ in range(n)]


def built(tmp_path, monkeypatch, model: str, **params):
    spec = MODELS[f"hsemotion_{model}"]
    size = 224 if "_b0_" in model else 260
    n_out = (7 if "_7" in model else 8) + (2 if "_mtl" in model else 0)
    weight, bias = hsemotion_like(tmp_path / spec.name / spec.file, size, n_out)
    monkeypatch.setenv("AVER_MODELS_DIR", str(tmp_path))
    extractor = FaceAffect(model=model, weights_sha256=sha256_of(tmp_path / spec.name / spec.file), **params)
    return extractor, weight, bias, size


@pytest.mark.parametrize("size", [224, 260])
def test_preprocessing_matches_the_documented_reference(size):
    for face in faces(3):
        np.testing.assert_allclose(preprocess(face, size), reference_input(face, size), atol=1e-5)


def test_channels_reach_the_network_in_rgb_order(tmp_path, monkeypatch):
    """A pure red crop: the embedding (channel means of the network input) reads red in channel 0."""
    extractor, _, _, _ = built(tmp_path, monkeypatch, "enet_b0_8_best_vgaf")
    red = np.zeros((112, 112, 3), np.uint8)
    red[..., 0] = 255
    row = extractor.process([item([png(red)])]).rows[0]
    expected = (np.array([1.0, 0.0, 0.0]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(row["emb_mean"], expected, atol=1e-3)   # float32 sums over 224x224 pixels


def test_outputs_are_the_models_on_the_original_input(tmp_path, monkeypatch):
    extractor, weight, bias, size = built(tmp_path, monkeypatch, "enet_b0_8_best_vgaf")
    crops = faces(4)
    result = extractor.process([item([png(crops[0]), b"", png(crops[1]), png(crops[2]), png(crops[3])])])
    assert not result.failures
    row = result.rows[0]
    features = np.stack([reference_input(c, size).mean(axis=(1, 2)) for c in crops])
    logits = features @ weight.T + bias
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert row["emb_shape"] == [4, 3] and row["probs_shape"] == [4, 8]
    assert row["emb_times"] == pytest.approx([0.0, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(np.reshape(row["emb"], (4, 3)), features, atol=1e-4)
    np.testing.assert_allclose(np.reshape(row["probs"], (4, 8)), probs, atol=1e-5)
    np.testing.assert_allclose([row[f"affect_{c}"] for c in CLASSES_8], probs.mean(0), atol=1e-5)
    assert "valence" not in row
    assert pa.Table.from_pylist(result.rows, schema=full_schema(extractor)).num_rows == 1


def test_multitask_model_gives_valence_and_arousal(tmp_path, monkeypatch):
    extractor, weight, bias, size = built(tmp_path, monkeypatch, "enet_b0_8_va_mtl", max_batch=2)
    crops = faces(3, seed=5)
    row = extractor.process([item([png(c) for c in crops])]).rows[0]
    logits = np.stack([reference_input(c, size).mean(axis=(1, 2)) for c in crops]) @ weight.T + bias
    np.testing.assert_allclose(row["valence"], logits[:, 8], atol=1e-4)
    np.testing.assert_allclose(row["arousal"], logits[:, 9], atol=1e-4)
    assert row["valence_mean"] == pytest.approx(logits[:, 8].mean(), abs=1e-4)
    assert sum(row[f"affect_{c}"] for c in CLASSES_8) == pytest.approx(1.0, abs=1e-5)
    assert {"valence", "arousal"} <= set(extractor.schema().names)


def test_seven_class_b2_model_uses_260_pixels(tmp_path, monkeypatch):
    extractor, _, _, size = built(tmp_path, monkeypatch, "enet_b2_7")
    row = extractor.process([item([png(faces(1)[0])])]).rows[0]
    assert size == 260 and row["probs_shape"] == [1, 7] and [f"affect_{c}" in row for c in CLASSES_7] == [True] * 7


def test_unverified_weights_are_refused_without_a_user_sha256(tmp_path, monkeypatch):
    """Engines call setup() before any clip: the refusal stops the run instead of becoming per-clip ledger rows."""
    built(tmp_path, monkeypatch, "enet_b0_8_best_vgaf")
    with pytest.raises(WeightsUnavailable, match="no published sha256"):
        FaceAffect().setup()


def test_bad_inputs_become_ledger_rows(tmp_path, monkeypatch):
    extractor, _, _, _ = built(tmp_path, monkeypatch, "enet_b0_8_best_vgaf")
    result = extractor.process([item([b"", b""]), item([png(faces(1)[0]), b"\x89PNG broken"]),
                                {**item([]), "inputs": {}}])
    assert not result.rows
    assert [f["reason"] for f in result.failures] == ["no_face_crops", "bad_face_crop", "missing_input:faces"]


def test_a_model_without_a_final_classifier_is_refused(tmp_path):
    hsemotion_like(tmp_path / "m.onnx", 224, 8)
    model = onnx.load(tmp_path / "m.onnx")
    model.graph.node.append(helper.make_node("Relu", ["output"], ["relu"]))
    model.graph.output[0].name = "relu"
    with pytest.raises(ValueError, match="classifier Gemm"):
        with_embedding_output(model.SerializeToString())


def test_unknown_model_is_rejected():
    with pytest.raises(ValueError, match="unknown model"):
        FaceAffect(model="enet_b9")
