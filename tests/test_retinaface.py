"""RetinaFace detectors against the original biubug6 code's outputs (shared/fixtures, README section 1)."""
import hashlib
import json
import zipfile

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou, nms

from features.retinaface import RetinaFaceDetector
from features.retinaface_net import NETS, load_network, resnet50_retinaface
from pipelines.weights import MODELS, WeightsUnavailable
from retinaface.prior_box import priorbox
from conftest import shared_path

MNET_WEIGHTS = ("models", "retinaface_mnet025_biubug6", "mobilenet0.25_Final.pth")


@pytest.fixture(scope="module")
def reference():
    shared_path(*MNET_WEIGHTS)
    return json.loads(shared_path("fixtures", "retinaface_mnet025_reference.json").read_text())["frames"]


def load_frame(entry: dict) -> np.ndarray:
    path = shared_path("fixtures", entry["frame"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["frame_sha256"]
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def origin_detector():
    shared_path(*MNET_WEIGHTS)
    return RetinaFaceDetector(max_side=None)


def test_mnet_loads_strictly_and_uses_plain_relu():
    shared_path(*MNET_WEIGHTS)
    net, _ = load_network("mnet025")
    assert len(net.state_dict()) == 300
    leaky = [m for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert leaky and all(m.negative_slope == 0.0 for m in leaky)


def test_raw_head_outputs_match_reference():
    raw = np.load(shared_path("fixtures", "retinaface_mnet025_raw_mead_M030_angry.npz"))
    net, spec = load_network("mnet025")
    bgr = cv2.imread(str(shared_path("fixtures", "frames", "mead_M030_front_angry_level3_001.png")))
    x = torch.from_numpy(bgr.astype(np.float32) - np.float32(spec.mean)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        loc, logits, landms = net(x)
    priors = priorbox([list(m) for m in spec.min_sizes], list(spec.steps), clip=False, image_size=bgr.shape[:2])
    for name, ours in [("loc", loc[0]), ("conf", logits[0].softmax(-1)), ("landms", landms[0]), ("priors", priors)]:
        np.testing.assert_allclose(ours.numpy(), raw[name], atol=1e-4, err_msg=name)


def detections_like_reference(variant: str, entry: dict, origin_detector) -> np.ndarray:
    """Our detections for one fixture variant. long_side_640 also UPscales small frames (detect.py's
    resize = 640/short side, capped by the long side); max_side only downscales, so the upscale is done here
    exactly as the fixture did (OpenCV bilinear on the float image) and mapped back by hand."""
    frame = load_frame(entry)
    if variant == "origin_size":
        return origin_detector.detect([frame])[0]
    if max(frame.shape[:2]) > 640:
        return RetinaFaceDetector(max_side=640).detect([frame])[0]
    resize = entry[variant]["resize"]
    upscaled = cv2.resize(frame.astype(np.float32), None, fx=resize, fy=resize, interpolation=cv2.INTER_LINEAR)
    out = origin_detector.detect([upscaled])[0].copy()
    out[:, :4] /= resize
    out[:, 5:] /= resize
    return out


@pytest.mark.parametrize("variant", ["origin_size", "long_side_640"])
def test_detections_match_reference_on_every_frame(reference, origin_detector, variant):
    for name, entry in reference.items():
        ours = detections_like_reference(variant, entry, origin_detector)
        faces = entry[variant]["faces"]
        assert ours.dtype == np.float32 and ours.shape == (len(faces), 15), name
        ref_boxes = np.array([f["box"] for f in faces], dtype=np.float32)
        top_iou = box_iou(torch.from_numpy(ours[:1, :4]), torch.from_numpy(ref_boxes[:1])).item()
        assert top_iou >= 0.9, name
        # The fixture is rounded to 4 decimals (boxes) and 6 (scores): anything beyond is a real difference.
        np.testing.assert_allclose(ours[:, :4], ref_boxes, atol=1e-2, err_msg=name)
        np.testing.assert_allclose(ours[:, 4], [f["score"] for f in faces], atol=1e-4, err_msg=name)
        np.testing.assert_allclose(ours[:, 5:], [np.ravel(f["landmarks"]) for f in faces], atol=1e-2, err_msg=name)


@pytest.mark.parametrize("max_side", [None, 640])
def test_torchvision_nms_keeps_what_the_plus_one_convention_keeps(reference, max_side):
    # detect.py's py_cpu_nms measures areas as (x2-x1+1)*(y2-y1+1): the same as torchvision's nms on boxes
    # whose x2, y2 are shifted by +1. The kept set of score >= 0.5 boxes only depends on candidates >= 0.5.
    candidates = RetinaFaceDetector(max_side=max_side, nms_threshold=1.0)
    detector = RetinaFaceDetector(max_side=max_side)
    for name, entry in reference.items():
        frame = load_frame(entry)
        boxes = torch.from_numpy(candidates.detect([frame])[0])
        plus_one = boxes[nms(boxes[:, :4] + torch.tensor([0, 0, 1.0, 1.0]), boxes[:, 4], 0.4)]
        assert torch.equal(boxes[nms(boxes[:, :4], boxes[:, 4], 0.4)], plus_one), name
        assert torch.equal(torch.from_numpy(detector.detect([frame])[0]), plus_one), name


def test_batched_detection_equals_one_at_a_time(reference):
    frames = [load_frame(reference[name]) for name in
              ["crema_1001_DFA_ANG_XX", "mead_M030_front_angry_level3_001", "crema_1001_DFA_HAP_XX",
               "meld_dia1_utt0", "crema_1001_DFA_SAD_XX", "mead_W009_front_happy_level3_001"]]
    frames.append(np.ascontiguousarray(frames[0][:, ::-1]))   # a mirrored face: a different image, same size
    detector = RetinaFaceDetector(batch_size=2)
    batched = detector.detect(frames)
    assert len(batched) == len(frames)
    for frame, together in zip(frames, batched):
        alone = detector.detect([frame])[0]
        assert together.shape == alone.shape and len(alone) >= 1
        np.testing.assert_allclose(together, alone, atol=1e-3)
    assert batched[-1][0, 0] > batched[0][0, 0]   # the mirrored face is found on the mirrored side


def test_no_faces_empty_input_and_bad_frames(origin_detector):
    assert origin_detector.detect([]) == []
    blank = origin_detector.detect([np.full((120, 160, 3), 128, np.uint8)])[0]
    assert blank.shape == (0, 15) and blank.dtype == np.float32
    for bad in [np.zeros((64, 64), np.uint8), np.zeros((64, 64, 4), np.uint8), np.zeros((0, 64, 3), np.uint8)]:
        with pytest.raises(ValueError, match="RGB HxWx3"):
            origin_detector.detect([bad])
    with pytest.raises(ValueError, match="unknown RetinaFace model"):
        RetinaFaceDetector(model="mnet")


def test_resnet50_offline_without_weights_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("AVER_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("AVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AVER_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match=MODELS["retinaface_resnet50"].file) as error:
        RetinaFaceDetector(model="resnet50")
    assert "AVER_MODELS_DIR/retinaface_resnet50" in str(error.value)


def test_resnet50_real_weights_find_the_face(reference):
    try:
        detector = RetinaFaceDetector(model="resnet50")
    except WeightsUnavailable as e:
        # CI cannot have them: they are not among ../shared/models and aver never downloads at test time
        pytest.skip(f"official ResNet-50 weights are not in ../shared/models (CI has no copy and tests never "
                    f"download): {e}")
    entry = reference["crema_1001_DFA_ANG_XX"]
    top = detector.detect([load_frame(entry)])[0][:1, :4]
    assert box_iou(torch.from_numpy(top), torch.tensor([entry["origin_size"]["faces"][0]["box"]])).item() > 0.6


def test_resnet50_builds_forwards_and_loads_a_zipped_checkpoint(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = resnet50_retinaface().eval()
    spec = NETS["resnet50"]
    with torch.inference_mode():
        loc, logits, landms = net(torch.randn(1, 3, 96, 128))
    num_priors = len(priorbox([list(m) for m in spec.min_sizes], list(spec.steps), clip=False, image_size=(96, 128)))
    assert loc.shape == (1, num_priors, 4) and logits.shape == (1, num_priors, 2) and landms.shape[2] == 10
    # The release asset is a one-file zip around the state dict (the legacy format torch.hub unpacks).
    folder = tmp_path / "retinaface_resnet50"
    folder.mkdir()
    torch.save(net.state_dict(), tmp_path / "retinaface.pth")
    with zipfile.ZipFile(folder / MODELS["retinaface_resnet50"].file, "w") as archive:
        archive.write(tmp_path / "retinaface.pth", "retinaface.pth")
    monkeypatch.setenv("AVER_MODELS_DIR", str(tmp_path))
    detector = RetinaFaceDetector(model="resnet50", score_threshold=0.0, max_side=64)
    assert torch.equal(detector.net.fpn.output1[0].weight,
                       net.fpn.output1[0].weight)
    out = detector.detect([np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)])[0]
    assert out.shape[1] == 15 and len(out) >= 1 and np.all(np.diff(out[:, 4]) <= 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (CI and the dev machines are CPU-only)")
def test_cuda_matches_cpu(reference):
    frames = [load_frame(entry) for entry in reference.values()]
    on_cpu = RetinaFaceDetector().detect(frames)
    on_gpu = RetinaFaceDetector(device="cuda").detect(frames)
    for cpu, gpu in zip(on_cpu, on_gpu):
        assert cpu.shape == gpu.shape
        np.testing.assert_allclose(gpu, cpu, atol=0.5)   # cuDNN may use TF32 convolutions


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_request_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        RetinaFaceDetector(device="cuda")
