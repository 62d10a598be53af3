"""RetinaFace detectors against the original biubug6 code's outputs (shared/fixtures, README section 1)."""
import dataclasses
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
from pipelines.weights import MODELS, WeightsUnavailable, sha256_of
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


def test_resnet50_without_weights_says_where_to_download_and_put_them(tmp_path, monkeypatch):
    spec = MODELS["retinaface_resnet50_biubug6"]
    monkeypatch.setenv("AVER_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("AVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AVER_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match="Resnet50_Final.pth") as error:
        RetinaFaceDetector(model="resnet50")
    message = str(error.value)
    assert "AVER_MODELS_DIR/retinaface_resnet50_biubug6/Resnet50_Final.pth" in message
    assert "drive.google.com" in message and spec.sha256 in message


def biubug6_resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """Resnet50_Final.pth's keys (without DataParallel's `module.`) and shapes, restated from Pytorch_Retinaface's
    models/retinaface.py and models/net.py with cfg_re50 (in_channel 256, out_channel 256, 2 anchors per cell) and
    torchvision's resnet50 cut after layer4 by IntermediateLayerGetter."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(name: str, out: int, inp: int, kernel: int, bn: str) -> None:
        shapes[f"{name}.weight"] = (out, inp, kernel, kernel)
        for buffer in ["weight", "bias", "running_mean", "running_var"]:
            shapes[f"{bn}.{buffer}"] = (out,)
        shapes[f"{bn}.num_batches_tracked"] = ()

    conv_bn("body.conv1", 64, 3, 7, "body.bn1")
    inplanes = 64
    for layer, (width, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for block in range(blocks):
            at = f"body.layer{layer}.{block}"
            conv_bn(f"{at}.conv1", width, inplanes, 1, f"{at}.bn1")
            conv_bn(f"{at}.conv2", width, width, 3, f"{at}.bn2")
            conv_bn(f"{at}.conv3", width * 4, width, 1, f"{at}.bn3")
            if block == 0:
                conv_bn(f"{at}.downsample.0", width * 4, inplanes, 1, f"{at}.downsample.1")
            inplanes = width * 4
    for level, channels in enumerate([512, 1024, 2048], start=1):
        conv_bn(f"fpn.output{level}.0", 256, channels, 1, f"fpn.output{level}.1")
    for level in [1, 2]:
        conv_bn(f"fpn.merge{level}.0", 256, 256, 3, f"fpn.merge{level}.1")
    for ssh in ["ssh1", "ssh2", "ssh3"]:
        for branch, (out, inp) in {"conv3X3": (128, 256), "conv5X5_1": (64, 256), "conv5X5_2": (64, 64),
                                   "conv7X7_2": (64, 64), "conv7x7_3": (64, 64)}.items():
            conv_bn(f"{ssh}.{branch}.0", out, inp, 3, f"{ssh}.{branch}.1")
    for head, per_anchor in [("ClassHead", 2), ("BboxHead", 4), ("LandmarkHead", 10)]:
        for level in range(3):
            shapes[f"{head}.{level}.conv1x1.weight"] = (2 * per_anchor, 256, 1, 1)
            shapes[f"{head}.{level}.conv1x1.bias"] = (2 * per_anchor,)
    return shapes


@pytest.fixture(scope="module")
def biubug6_checkpoint(tmp_path_factory):
    """A file in Resnet50_Final.pth's format (`module.`-prefixed keys), every tensor filled with its own index."""
    state = {f"module.{key}": torch.full(shape, index, dtype=torch.int64 if key.endswith("num_batches_tracked")
                                         else torch.float32)
             for index, (key, shape) in enumerate(biubug6_resnet50_shapes().items())}
    path = tmp_path_factory.mktemp("models") / "retinaface_resnet50_biubug6" / "Resnet50_Final.pth"
    path.parent.mkdir()
    torch.save(state, path)
    return path, state


@pytest.fixture
def registered_checkpoint(biubug6_checkpoint, monkeypatch):
    """The checkpoint above stands in for the official file: registered with its own sha256 and size."""
    path, state = biubug6_checkpoint
    spec = MODELS["retinaface_resnet50_biubug6"]
    monkeypatch.setitem(MODELS, spec.name, dataclasses.replace(spec, sha256=sha256_of(path),
                                                                size=path.stat().st_size))
    monkeypatch.setenv("AVER_MODELS_DIR", str(path.parent.parent))
    return state


def test_resnet50_loads_a_biubug6_checkpoint_with_every_key_matched(registered_checkpoint):
    assert len(registered_checkpoint) == 456
    net, _ = load_network("resnet50")     # strict: no key missing, none unexpected, every shape equal
    loaded = net.state_dict()
    assert sorted(loaded) == sorted(key.removeprefix("module.") for key in registered_checkpoint)
    for key, value in registered_checkpoint.items():
        assert torch.equal(loaded[key.removeprefix("module.")], value), key


def test_resnet50_spec_is_cfg_re50_and_the_network_sees_bgr_minus_104_117_123(registered_checkpoint):
    spec = NETS["resnet50"]
    assert spec.weights == "retinaface_resnet50_biubug6"
    assert (spec.min_sizes, spec.steps, spec.variance) == (((16, 32), (64, 128), (256, 512)), (8, 16, 32), (0.1, 0.2))
    assert spec.bgr and spec.mean == (104.0, 117.0, 123.0) and spec.std == (1.0, 1.0, 1.0)
    detector = RetinaFaceDetector(model="resnet50", max_side=None, runtime="torch")   # the hook needs torch's forward
    seen = []
    detector.net.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].clone()))
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    detector.detect([rgb])
    expected = rgb[..., ::-1].astype(np.float32) - np.float32([104, 117, 123])
    assert torch.equal(seen[0], torch.from_numpy(expected).permute(2, 0, 1)[None])


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


def test_resnet50_ternaus_builds_forwards_and_loads_a_zipped_checkpoint(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = resnet50_retinaface().eval()
    spec = NETS["resnet50_ternaus"]
    with torch.inference_mode():
        loc, logits, landms = net(torch.randn(1, 3, 96, 128))
    num_priors = len(priorbox([list(m) for m in spec.min_sizes], list(spec.steps), clip=False, image_size=(96, 128)))
    assert loc.shape == (1, num_priors, 4) and logits.shape == (1, num_priors, 2) and landms.shape[2] == 10
    # The release asset is a one-file zip around the state dict (the legacy format torch.hub unpacks).
    folder = tmp_path / "retinaface_resnet50_ternaus"
    folder.mkdir()
    torch.save(net.state_dict(), tmp_path / "retinaface.pth")
    with zipfile.ZipFile(folder / MODELS["retinaface_resnet50_ternaus"].file, "w") as archive:
        archive.write(tmp_path / "retinaface.pth", "retinaface.pth")
    monkeypatch.setenv("AVER_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("AVER_UNVERIFIED_WEIGHTS", "retinaface_resnet50_ternaus")     # no published sha256
    detector = RetinaFaceDetector(model="resnet50_ternaus", score_threshold=0.0, max_side=64, runtime="torch")
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
