"""68 facial landmarks (dlib's iBUG 300-W shape predictor) and face geometry derived from them.

dlib's predictor refines a mean shape placed in a box: it is given the RetinaFace box of the face on the
grayscale frame. Geometry is measured after normalising the 68 points to the eye line: origin between the eye
centres, eye line horizontal (head roll removed), unit = inter-ocular distance (distance between eye centres).
Image y points down, so "up" distances are taken as positive below. "r"/"l" are the subject's right/left
(iBUG: points 36-41 and 17-21 are the subject's right eye and brow, on the image left of a frontal face).
"""
from __future__ import annotations

import dlib
import numpy as np

from pipelines.weights import fetch

GEOMETRY = ("mouth_open", "mouth_width", "brow_raise_r", "brow_raise_l", "eye_open_r", "eye_open_l",
            "head_roll", "head_yaw")
STATISTICS = ("mean", "std", "min", "max")

RIGHT_EYE, LEFT_EYE = slice(36, 42), slice(42, 48)
RIGHT_BROW, LEFT_BROW = slice(17, 22), slice(22, 27)
NOSE_TIP, JAW_RIGHT, JAW_LEFT = 30, 0, 16
MOUTH_RIGHT, MOUTH_LEFT, INNER_LIP_TOP, INNER_LIP_BOTTOM = 48, 54, 62, 66


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


def clip_statistics(per_frame: np.ndarray) -> dict[str, float]:
    """`stat_<measure>_<mean|std|min|max>` over the frames that have a face (rows of NaN are ignored)."""
    valid = per_frame[~np.isnan(per_frame).any(axis=1)]
    out = {}
    for j, name in enumerate(GEOMETRY):
        column = valid[:, j]
        values = (column.mean(), column.std(), column.min(), column.max()) if len(column) else (np.nan,) * 4
        out.update({f"stat_{name}_{stat}": np.float32(v) for stat, v in zip(STATISTICS, values)})
    return out
