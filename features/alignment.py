"""Face alignment: similarity transform from 5 detected landmarks onto the ArcFace 5-point template.

The transform is the least-squares similarity (rotation, uniform scale, translation) of Umeyama (1991), as in
insightface's `norm_crop` via skimage's SimilarityTransform; it is computed here in numpy, so alignment is
exact and deterministic (no RANSAC). The crop is cut from the full-resolution frame with one bilinear affine
warp that gives the same bytes on every CPU (features/warp.py).
"""
from __future__ import annotations

import cv2
import numpy as np

from features.warp import warp_affine
from pipelines.extractor import ClipError, column, upstream_row

# ArcFace / insightface template for a 112x112 crop: image-left eye, image-right eye, nose tip, mouth corners.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def template(size: int = 112) -> np.ndarray:
    return ARCFACE_112 * (size / 112.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix M minimising sum |M [src; 1] - dst|^2 over similarities (Umeyama, no reflection)."""
    src, dst = np.asarray(src, np.float64).reshape(-1, 2), np.asarray(dst, np.float64).reshape(-1, 2)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    u, s, vt = np.linalg.svd(dc.T @ sc / len(src))
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(d) @ vt
    var_s = (sc ** 2).sum() / len(src)
    scale = (s * d).sum() / var_s if var_s > 0 else 1.0
    return np.hstack([scale * rotation, (mu_d - scale * rotation @ mu_s)[:, None]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def align_face(frame: np.ndarray, landmarks5: np.ndarray, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """(size x size aligned crop, 2x3 frame->crop matrix). Outside the frame is black."""
    matrix = similarity_transform(landmarks5, template(size))
    crop = warp_affine(frame, matrix, (size, size))      # cv2.warpAffine's bytes depend on the CPU
    return crop, matrix


def encode_image(rgb: np.ndarray, fmt: str = "png", jpeg_quality: int = 95) -> bytes:
    """PNG (lossless) or JPEG bytes of an RGB uint8 image."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    if fmt == "png":
        ok, data = cv2.imencode(".png", bgr)
    elif fmt in ("jpeg", "jpg"):
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    else:
        raise ValueError(f"crop_format must be 'png' or 'jpeg', got {fmt!r}")
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    return data.tobytes()


def decode_image(data: bytes) -> np.ndarray:
    """RGB uint8 array from PNG/JPEG bytes (inverse of `encode_image`)."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a PNG/JPEG image")
    return np.ascontiguousarray(bgr[..., ::-1])


def face_crops(item: dict, convert) -> tuple[np.ndarray, list[float]]:
    """Crops of the item's `faces` row where a face was found, each through `convert(encoded) -> array | None`, and
    their frame times; no row, a row whose lists disagree, an undecodable crop, or no face at all is a `ClipError`."""
    row = upstream_row(item, "faces")
    crops, times, found = (column(row, name) for name in ("crops", "frame_times", "face_found"))
    if not (len(crops) == len(times) == len(found)):
        raise ClipError("bad_input", f"faces row has {len(crops)} crops, {len(times)} frame_times and "
                                     f"{len(found)} face_found values")
    faces, face_times = [], []
    for i, (crop, t, ok) in enumerate(zip(crops, times, found)):
        if not ok or crop is None or len(crop) == 0:
            continue
        face = convert(bytes(crop))
        if face is None:
            raise ClipError("bad_face_crop", f"face crop of frame {i} (t={t:.3f} s) is not a decodable image")
        faces.append(face)
        face_times.append(float(t))
    if not faces:
        raise ClipError("no_face_crops", f"none of the {len(crops)} sampled frames has a face crop")
    return np.stack(faces), face_times
