"""Head pose (solvePnP on a generic 3-D face) and eye / mouth openness from the 68 points."""
import json

import cv2
import numpy as np
import pytest

from conftest import shared_path
from features.landmarks import (FACE_MODEL_3D, MEASURES, OPENNESS, POSE, POSE_POINTS, ShapePredictor68, head_pose,
                                measures, openness)

SIZE = (640, 480)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The head turned by `yaw` (nose to image right), tilted up by `pitch` and rolled by `roll` degrees:
    Rz(roll) @ Ry(-yaw) @ Rx(-pitch) in camera axes (y down), written out independently of the code under test."""
    y, p, r = np.radians([-yaw, -pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def projected_face(yaw, pitch, roll, distance=2500.0, offset=(40.0, -30.0), noise=0.0, seed=0) -> np.ndarray:
    """68 image points whose pose points are the generic model rotated by the angles and projected by a pinhole
    camera of focal length = frame width (the other points are left at the frame centre)."""
    world = FACE_MODEL_3D @ rotation(yaw, pitch, roll).T + (offset[0], offset[1], distance)
    focal, cx, cy = SIZE[0], SIZE[0] / 2, SIZE[1] / 2
    image = np.stack([focal * world[:, 0] / world[:, 2] + cx, focal * world[:, 1] / world[:, 2] + cy], axis=1)
    image += np.random.default_rng(seed).normal(0, noise, image.shape)
    points = np.tile([cx, cy], (68, 1))
    points[POSE_POINTS] = image
    return points


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (30, 0, 0), (-25, 0, 0), (0, 20, 0), (0, -15, 0),
                                            (0, 0, 25), (20, -10, 8), (-35, 15, -12)])
def test_known_rotations_are_recovered_within_two_degrees(yaw, pitch, roll):
    found = head_pose(projected_face(yaw, pitch, roll), SIZE)
    assert found == pytest.approx([yaw, pitch, roll], abs=2.0)


def test_pose_survives_half_a_pixel_of_landmark_noise():
    found = head_pose(projected_face(20, -10, 8, noise=0.5, seed=3), SIZE)
    assert found == pytest.approx([20, -10, 8], abs=2.0)


def test_pose_signs_follow_the_image():
    # Positive yaw: the nose tip moves towards image right of the eyes' midpoint; positive pitch (face up): the
    # nose tip rises towards the eye line. Checked on the projections, then on the recovered angles.
    frontal, turned, tilted = (projected_face(*angles) for angles in ((0, 0, 0), (20, 0, 0), (0, 20, 0)))
    nose, eyes = POSE_POINTS[0], POSE_POINTS[2:4]

    def nose_from_eyes(points):
        return points[nose] - points[eyes].mean(0)

    assert nose_from_eyes(turned)[0] > nose_from_eyes(frontal)[0] + 5
    assert nose_from_eyes(tilted)[1] < nose_from_eyes(frontal)[1] - 5
    assert head_pose(turned, SIZE)[0] > 15 and head_pose(tilted, SIZE)[1] > 15


def open_eye_and_mouth(eye_gap: float, mouth_gap: float) -> np.ndarray:
    """A schematic face: eyes 30 px wide with lids `eye_gap` apart, inner mouth 40 px wide, lips `mouth_gap` apart."""
    p = np.zeros((68, 2))
    for start, x0 in ((36, 100.0), (42, 160.0)):        # corners 36/39 and 42/45, lids 37,38 over 41,40 etc.
        p[start], p[start + 3] = (x0, 100), (x0 + 30, 100)
        p[start + 1], p[start + 2] = (x0 + 10, 100 - eye_gap / 2), (x0 + 20, 100 - eye_gap / 2)
        p[start + 5], p[start + 4] = (x0 + 10, 100 + eye_gap / 2), (x0 + 20, 100 + eye_gap / 2)
    p[60], p[64] = (125, 200), (165, 200)
    for top, bottom, x in ((61, 67, 135), (62, 66, 145), (63, 65, 155)):
        p[top], p[bottom] = (x, 200 - mouth_gap / 2), (x, 200 + mouth_gap / 2)
    return p


def test_openness_is_gap_over_width():
    assert openness(open_eye_and_mouth(9.0, 20.0)) == pytest.approx([0.3, 0.3, 0.5], abs=1e-6)
    assert openness(open_eye_and_mouth(0.0, 0.0)) == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


def test_degenerate_points_give_nan_not_garbage():
    values = measures(np.zeros((68, 2)), SIZE)
    assert values.shape == (len(MEASURES),) and np.isnan(values).all()


def test_real_face_has_a_plausible_near_frontal_pose():
    """CREMA-D actors face the camera: the fitted pose is within 25 degrees of frontal, eyes and mouth measurable."""
    reference = json.loads(shared_path("fixtures", "retinaface_mnet025_reference.json").read_text())
    bgr = cv2.imread(str(shared_path("fixtures", "frames", "crema_1001_DFA_HAP_XX.png")))
    face = reference["frames"]["crema_1001_DFA_HAP_XX"]["origin_size"]["faces"][0]
    points = ShapePredictor68()(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), np.array(face["box"]))
    values = dict(zip(MEASURES, measures(points, bgr.shape[1::-1])))
    assert all(abs(values[name]) < 25 for name in POSE)
    assert all(0.05 < values[name] < 0.6 for name in OPENNESS[:2]) and 0 <= values["mouth_aspect"] < 1.0
