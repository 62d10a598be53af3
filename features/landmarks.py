"""68 facial landmarks (dlib's iBUG 300-W shape predictor) and face geometry derived from them.

dlib's predictor refines a mean shape placed in a box: it is given the RetinaFace box of the face on the
grayscale frame. Geometry is measured after normalising the 68 points to the eye line: origin between the eye
centres, eye line horizontal (head roll removed), unit = inter-ocular distance (distance between eye centres).
Image y points down, so "up" distances are taken as positive below. "r"/"l" are the subject's right/left
(iBUG: points 36-41 and 17-21 are the subject's right eye and brow, on the image left of a frontal face).

Openness (OPENNESS) is measured as aspect ratios, which need no normalisation: eye aspect ratio (Soukupova & Cech
2016, lid gaps over eye width) and mouth aspect ratio (inner-lip gap over inner mouth width). Head pose (POSE) is
the rotation that best maps a generic 3-D face model onto six of the 68 points (cv2.solvePnP), for a pinhole camera
whose focal length is the frame width and whose principal point is the frame centre.
"""
from __future__ import annotations

import cv2
import dlib
import numpy as np

from pipelines.weights import fetch

GEOMETRY = ("mouth_open", "mouth_width", "brow_raise_r", "brow_raise_l", "eye_open_r", "eye_open_l",
            "head_roll", "head_yaw")
OPENNESS = ("eye_aspect_r", "eye_aspect_l", "mouth_aspect")
POSE = ("pose_yaw", "pose_pitch", "pose_roll")
MEASURES = GEOMETRY + OPENNESS + POSE      # the faces feature set's per-frame columns
STATISTICS = ("mean", "std", "min", "max")

RIGHT_EYE, LEFT_EYE = slice(36, 42), slice(42, 48)
RIGHT_BROW, LEFT_BROW = slice(17, 22), slice(22, 27)
NOSE_TIP, JAW_RIGHT, JAW_LEFT = 30, 0, 16
MOUTH_RIGHT, MOUTH_LEFT, INNER_LIP_TOP, INNER_LIP_BOTTOM = 48, 54, 62, 66
CHIN, RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 8, 36, 45

# Generic 3-D face (model units ~ mm / 2.5) in camera axes: x image right, y down, z away from the camera, nose tip
# at the origin; the widely used six-point model (nose tip, chin, outer eye corners, mouth corners).
POSE_POINTS = [NOSE_TIP, CHIN, RIGHT_EYE_OUTER, LEFT_EYE_OUTER, MOUTH_RIGHT, MOUTH_LEFT]
FACE_MODEL_3D = np.array([[0.0, 0.0, 0.0], [0.0, 330.0, 65.0], [-225.0, -170.0, 135.0], [225.0, -170.0, 135.0],
                          [-150.0, 150.0, 125.0], [150.0, 150.0, 125.0]])


class ShapePredictor68:
    """dlib's 68-point predictor; load once per worker (the model file is ~100 MB)."""

    def __init__(self):
        self._predictor = dlib.shape_predictor(str(fetch("dlib_shape_predictor_68")))

    def __call__(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) float32 points in frame pixels for the face in `box` [x1, y1, x2, y2] of a uint8 gray frame."""
        x1, y1, x2, y2 = (int(round(float(v))) for v in box[:4])
        shape = self._predictor(gray, dlib.rectangle(x1, y1, x2, y2))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def normalise(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Points in eye-line units (origin mid-eyes, eyes on the x axis, inter-ocular distance 1) and roll in degrees."""
    points = np.asarray(points, np.float64)
    right_eye, left_eye = points[RIGHT_EYE].mean(0), points[LEFT_EYE].mean(0)
    dx, dy = left_eye - right_eye
    iod = float(np.hypot(dx, dy))
    if iod < 1e-6:
        raise ValueError("degenerate landmarks: both eye centres coincide")
    roll = np.arctan2(dy, dx)
    c, s = np.cos(-roll), np.sin(-roll)
    derolled = (points - (right_eye + left_eye) / 2) @ np.array([[c, s], [-s, c]])
    return derolled / iod, float(np.degrees(roll))


def geometry(points: np.ndarray) -> np.ndarray:
    """The GEOMETRY measures of one face, float32 (8,), distances in inter-ocular distances, roll in degrees."""
    q, roll = normalise(points)
    y = q[:, 1]
    return np.array([
        y[INNER_LIP_BOTTOM] - y[INNER_LIP_TOP],                              # mouth_open
        np.linalg.norm(q[MOUTH_LEFT] - q[MOUTH_RIGHT]),                      # mouth_width
        y[RIGHT_EYE].mean() - y[RIGHT_BROW].mean(),                         # brow_raise_r
        y[LEFT_EYE].mean() - y[LEFT_BROW].mean(),                           # brow_raise_l
        ((y[41] - y[37]) + (y[40] - y[38])) / 2,                            # eye_open_r (lower lid - upper lid)
        ((y[47] - y[43]) + (y[46] - y[44])) / 2,                            # eye_open_l
        roll,                                                                # head_roll
        q[NOSE_TIP, 0] - (q[JAW_RIGHT, 0] + q[JAW_LEFT, 0]) / 2,            # head_yaw (nose offset vs face centre)
    ], dtype=np.float32)


def openness(points: np.ndarray) -> np.ndarray:
    """The OPENNESS aspect ratios of one face, float32 (3,)."""
    p = np.asarray(points, np.float64)

    def gap(a, b):
        return np.linalg.norm(p[a] - p[b])

    return np.array([
        (gap(37, 41) + gap(38, 40)) / (2 * gap(36, 39)),                   # eye_aspect_r
        (gap(43, 47) + gap(44, 46)) / (2 * gap(42, 45)),                   # eye_aspect_l
        (gap(61, 67) + gap(62, 66) + gap(63, 65)) / (3 * gap(60, 64)),     # mouth_aspect
    ], dtype=np.float32)


def rotation_angles(rotation: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees of a model-to-camera rotation R = Rz(roll) @ Ry(-yaw) @ Rx(-pitch), camera axes
    (x image right, y down, z ahead): yaw > 0 turns the nose towards image right (the subject's left), pitch > 0
    tilts the face up, roll > 0 lowers the subject's left eye in the image (the sign of `head_roll`)."""
    yaw = -np.arcsin(np.clip(-rotation[2, 0], -1.0, 1.0))
    pitch = -np.arctan2(rotation[2, 1], rotation[2, 2])
    roll = np.arctan2(rotation[1, 0], rotation[0, 0])
    return np.degrees([yaw, pitch, roll])


def head_pose(points: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """The POSE angles of one face in degrees, float32 (3,): yaw, pitch, roll of the generic model fitted to the
    face's points in a (width, height) frame."""
    width, height = frame_size
    camera = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], np.float64)
    image_points = np.asarray(points, np.float64)[POSE_POINTS]
    if np.linalg.norm(image_points[3] - image_points[2]) < 1.0:
        raise ValueError("degenerate landmarks: outer eye corners less than a pixel apart")
    ok, rvec, _ = cv2.solvePnP(FACE_MODEL_3D, image_points, camera, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("solvePnP found no head pose for these landmarks")
    return rotation_angles(cv2.Rodrigues(rvec)[0]).astype(np.float32)


def measures(points: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """All MEASURES of one face, float32; NaN where a group cannot be measured (degenerate points)."""
    out = np.full(len(MEASURES), np.nan, np.float32)
    for start, compute in ((0, geometry), (len(GEOMETRY), openness),
                           (len(GEOMETRY) + len(OPENNESS), lambda p: head_pose(p, frame_size))):
        try:
            with np.errstate(divide="ignore", invalid="ignore"):
                values = compute(points)
        except (ValueError, ZeroDivisionError, cv2.error):
            continue
        if np.isfinite(values).all():
            out[start:start + len(values)] = values
    return out


def clip_statistics(per_frame: np.ndarray, names: tuple[str, ...] = GEOMETRY) -> dict[str, float]:
    """`stat_<measure>_<mean|std|min|max>` over the frames where that measure exists (NaN values are ignored)."""
    out = {}
    for j, name in enumerate(names):
        column = per_frame[:, j][~np.isnan(per_frame[:, j])]
        values = (column.mean(), column.std(), column.min(), column.max()) if len(column) else (np.nan,) * 4
        out.update({f"stat_{name}_{stat}": np.float32(v) for stat, v in zip(STATISTICS, values)})
    return out
