"""Alignment: the similarity fit maps landmarks onto the ArcFace template; crops encode and decode."""
import json

import cv2
import numpy as np
import pytest

from conftest import shared_path
from features.alignment import (align_face, apply_transform, decode_image, encode_image, similarity_transform,
                                template)


def similarity(angle_deg, scale, shift):
    a = np.radians(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), shift[0]],
                     [scale * np.sin(a), scale * np.cos(a), shift[1]]])


@pytest.mark.parametrize("size", [112, 224])
def test_exact_similarity_is_recovered(size):
    truth = similarity(25.0, 0.37, (-14.0, 31.0))                    # template -> "frame"
    frame_points = apply_transform(truth, template(size)) + 500
    matrix = similarity_transform(frame_points, template(size))
    assert np.abs(apply_transform(matrix, frame_points) - template(size)).max() < 1e-9


def test_least_squares_fit_is_not_fooled_by_a_noisy_point():
    points = apply_transform(similarity(-10, 2.0, (300, 200)), template())
    points[2] += (6.0, -4.0)                                          # one landmark off by ~7 px (3.6 template px)
    residual = apply_transform(similarity_transform(points, template()), points) - template()
    assert np.abs(residual).max() < 3.6 and np.abs(residual[[0, 1, 3, 4]]).max() < 1.5


def test_real_face_is_aligned_onto_the_template():
    name = "crema_1001_DFA_ANG_XX"
    reference = json.loads(shared_path("fixtures", "retinaface_mnet025_reference.json").read_text())
    face = reference["frames"][name]["origin_size"]["faces"][0]
    rgb = cv2.imread(str(shared_path("fixtures", "frames", f"{name}.png")))[..., ::-1]
    landmarks = np.array(face["landmarks"])
    crop, matrix = align_face(rgb, landmarks, 112)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    mapped = apply_transform(matrix, landmarks)
    assert np.linalg.norm(mapped - template(112), axis=1).max() < 4.0       # a real face is not the template
    left_eye, right_eye = mapped[0], mapped[1]
    assert abs(left_eye[1] - right_eye[1]) < 2.0                           # eye line horizontal
    # The crop shows the face: its centre is skin, not the green screen behind the actor.
    r, g, b = crop[40:80, 40:80].reshape(-1, 3).mean(0)
    assert r > g


def test_png_round_trip_is_exact_and_jpeg_close():
    rgb = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    png = encode_image(rgb, "png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and np.array_equal(decode_image(png), rgb)
    smooth = cv2.GaussianBlur(rgb, (0, 0), 3)
    jpeg = encode_image(smooth, "jpeg")
    assert jpeg[:2] == b"\xff\xd8" and np.abs(decode_image(jpeg).astype(int) - smooth).mean() < 3
    with pytest.raises(ValueError):
        encode_image(rgb, "gif")
