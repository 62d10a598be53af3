"""cv2.warpAffine with bilinear interpolation that gives the same bytes on every CPU.

warpAffine computes each pixel's source coordinate in SIMD code whose rounding depends on the instruction set
(AVX2/FMA or SSE), so a few pixels per image moved between machines (docs/demo.md, "Same bytes on every
machine"). Here numpy computes the coordinates in float64 and rounds them to OpenCV's fixed-point map format;
cv2.remap's integer bilinear kernel is then exact on every instruction set.
"""
from __future__ import annotations

import cv2
import numpy as np

INTER_BITS = 5          # OpenCV's sub-pixel bits for fixed-point maps (cv2.INTER_TAB_SIZE = 32)


def warp_affine(img: np.ndarray, matrix: np.ndarray, size: tuple[int, int] | None = None,
                border_value: float = 0) -> np.ndarray:
    """cv2.warpAffine(img, matrix, size, INTER_LINEAR, BORDER_CONSTANT); size = (width, height), default img's."""
    width, height = size or (img.shape[1], img.shape[0])
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    tab = 1 << INTER_BITS
    fx = np.rint((inverse[0, 0] * xx + inverse[0, 1] * yy + inverse[0, 2]) * tab)
    fy = np.rint((inverse[1, 0] * xx + inverse[1, 1] * yy + inverse[1, 2]) * tab)
    # far outside the image is outside either way: keep the whole-pixel part inside int16
    fx, fy = (np.clip(f, -32768 * tab, 32767 * tab).astype(np.int64) for f in (fx, fy))
    whole = np.stack([fx >> INTER_BITS, fy >> INTER_BITS], -1).astype(np.int16)
    fraction = ((fy & (tab - 1)) * tab + (fx & (tab - 1))).astype(np.uint16)
    return cv2.remap(img, whole, fraction, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=border_value)
