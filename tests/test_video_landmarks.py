"""dlib 68 points on RetinaFace boxes, and the geometry measures derived from them."""
import json

import cv2
import numpy as np
import pytest

from conftest import shared_path
from features.landmarks import GEOMETRY, ShapePredictor68, clip_statistics, geometry, normalise

FRAMES = ["crema_1001_DFA_HAP_XX", "mead_W009_front_happy_level3_001", "meld_dia1_utt0"]


@pytest.fixture(scope="module")
def faces():
    """(gray frame, RetinaFace reference face, dlib points) for a few fixture frames."""
    reference = json.loads(shared_path("fixtures", "retinaface_mnet025_reference.json").read_text())
    predictor = ShapePredictor68()
    out = {}
    for name in FRAMES:
        gray = cv2.cvtColor(cv2.imread(str(shared_path("fixtures", "frames", f"{name}.png"))), cv2.COLOR_BGR2GRAY)
        entry = reference["frames"][name]
        # As the fixtures do: the 640 px result for frames larger than 640 px (upscaling fragments faces).
        face = entry["long_side_640" if max(entry["width"], entry["height"]) > 640 else "origin_size"]["faces"][0]
        out[name] = (gray, face, predictor(gray, np.array(face["box"])))
    return out


@pytest.mark.parametrize("name", FRAMES)
def test_dlib_points_agree_with_retinaface_landmarks(faces, name):
    _, face, points = faces[name]
    assert points.shape == (68, 2) and points.dtype == np.float32
    retina = np.array(face["landmarks"])
    ours = np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])
    inter_ocular = np.linalg.norm(retina[1] - retina[0])
    # Different definitions (eye centre vs pupil, corner vs lip line): within 15% of the inter-ocular distance.
    assert np.linalg.norm(ours - retina, axis=1).max() < 0.15 * inter_ocular


def test_normalised_eyes_sit_on_the_unit_axis(faces):
    q, _ = normalise(faces["crema_1001_DFA_HAP_XX"][2])
    assert q[36:42].mean(0) == pytest.approx([-0.5, 0.0], abs=1e-6)
    assert q[42:48].mean(0) == pytest.approx([0.5, 0.0], abs=1e-6)


def test_geometry_is_invariant_to_scale_and_shift_and_reads_roll(faces):
    points = faces["meld_dia1_utt0"][2].astype(np.float64)
    base = geometry(points)
    a = np.radians(30)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = (points - points.mean(0)) @ rotation.T * 2.5 + (1000, -40)
    turned = geometry(moved)
    roll = GEOMETRY.index("head_roll")
    assert turned[roll] == pytest.approx(base[roll] + 30, abs=1e-3)
    others = [i for i in range(len(GEOMETRY)) if i != roll]
    assert turned[others] == pytest.approx(base[others], abs=1e-4)


def test_geometry_measures_move_the_right_way(faces):
    points = faces["crema_1001_DFA_HAP_XX"][2].astype(np.float64)
    base = dict(zip(GEOMETRY, geometry(points)))
    iod = np.linalg.norm(points[42:48].mean(0) - points[36:42].mean(0))
    opened = points.copy()
    opened[[65, 66, 67]] += (0, 0.2 * iod)                 # lower inner lip drops
    raised = points.copy()
    raised[22:27] -= (0, 0.1 * iod)                        # subject's left brow goes up (image y points down)
    assert geometry(opened)[GEOMETRY.index("mouth_open")] == pytest.approx(base["mouth_open"] + 0.2, abs=1e-3)
    assert geometry(raised)[GEOMETRY.index("brow_raise_l")] == pytest.approx(base["brow_raise_l"] + 0.1, abs=1e-3)
    assert 0.6 < base["mouth_width"] < 1.3 and 0.1 < base["brow_raise_r"] < 0.6 and 0 < base["eye_open_r"] < 0.3


def test_clip_statistics_skip_frames_without_a_face():
    per_frame = np.array([[1.0] * 8, [np.nan] * 8, [3.0] * 8], np.float32)
    stats = clip_statistics(per_frame)
    assert len(stats) == 32
    assert stats["stat_mouth_open_mean"] == 2.0 and stats["stat_head_yaw_std"] == 1.0
    assert stats["stat_eye_open_l_min"] == 1.0 and stats["stat_brow_raise_r_max"] == 3.0
    assert np.isnan(clip_statistics(np.full((2, 8), np.nan, np.float32))["stat_mouth_open_mean"])
