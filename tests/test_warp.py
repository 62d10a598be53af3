"""features.warp.warp_affine: cv2.warpAffine's result, with the same bytes whatever SIMD code the CPU runs."""
import hashlib
import os
import subprocess
import sys

import cv2
import numpy as np

from conftest import ROOT
from features.warp import warp_affine

# Face crops (features.alignment) at random similarity transforms, hashed; run here and again with OpenCV's SIMD
# dispatch switched off, a stand-in for a machine with another instruction set.
CROPS = """
import hashlib, numpy as np
from features.alignment import align_face, template
rng = np.random.default_rng(0)
frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
crops = [align_face(frame, template(112) * rng.uniform(0.8, 1.4) + rng.uniform(20, 120, 2)
                    + rng.normal(0, 2.0, (5, 2)))[0] for _ in range(40)]
print(hashlib.md5(b"".join(c.tobytes() for c in crops)).hexdigest())
"""
NO_SIMD = "AVX512F,AVX2,FMA3,AVX,FP16,SSE4_2,SSE4_1,POPCNT,SSSE3"


def run_crops(**env) -> str:
    env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", CROPS], env=env, check=True, capture_output=True, text=True,
                          timeout=300).stdout.strip()


def test_face_crops_have_the_same_bytes_without_simd():
    assert run_crops() == run_crops(OPENCV_CPU_DISABLE=NO_SIMD)


def test_matches_cv2_warp_affine():
    yy, xx = np.mgrid[0:120, 0:160]
    img = np.dstack([xx, yy, (xx + yy) // 2]).astype(np.uint8)          # smooth: rounding moves a level at most
    zoom = cv2.getRotationMatrix2D((80.3, 60.7), 7.0, 1.3)            # every output pixel samples inside img
    shrink = cv2.getRotationMatrix2D((80.3, 60.7), -5.0, 0.6)          # the image's edges and black border show
    for matrix, size in ((zoom, None), (zoom, (64, 48)), (shrink, None)):
        ours = warp_affine(img, matrix, size).astype(int)
        theirs = cv2.warpAffine(img, matrix, size or (160, 120), flags=cv2.INTER_LINEAR).astype(int)
        assert ours.shape == theirs.shape
        if matrix is zoom:
            assert np.abs(ours - theirs).max() <= 1
        else:   # a 1/32-pixel rounding difference at the image's edge shows against black: compare coverage
            assert np.array_equal(ours[0, 0], theirs[0, 0]) and not ours[0, 0].any()
            assert abs((ours > 0).any(2).sum() - (theirs > 0).any(2).sum()) <= 0.01 * (ours > 0).any(2).sum()


def test_far_outside_is_black_not_wrapped():
    img = np.full((32, 32), 200, np.uint8)
    far = np.array([[1.0, 0, 5e5], [0, 1.0, -5e5]])
    assert not warp_affine(img, far).any()
    assert hashlib.md5(warp_affine(img, np.eye(2, 3)).tobytes()).digest() == hashlib.md5(img.tobytes()).digest()
