"""Deterministic video variants: blur, bright, jpeg, occlude.

A variant's random draws (blur strength, brightness shift, JPEG quality, patch position) are made once per clip
from a generator seeded by a stable hash of (augment seed, clip_id, variant), so a clip gets the same degradation
on every frame and on every run, on any machine. Parameters come from the `video:` block of the params.yaml
`augment:` section; any other variant name (clean, audio variants) leaves frames unchanged.
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from features.augment_audio import variant_rng   # the same sha256 seeding as the audio variants

VIDEO_VARIANTS = ("blur", "bright", "jpeg", "occlude")

DEFAULTS = {
    "blur_sigma": [0.004, 0.008],     # Gaussian sigma as a fraction of the frame's short side (1.4-2.9 px at 360p)
    "bright_shift": [-60.0, 60.0],    # added to every channel, uint8 levels
    "bright_contrast": [0.7, 1.3],    # multiplies the deviation from mid-grey
    "jpeg_quality": [5, 15],          # libjpeg quality of the re-encode
    "occlude_frac": 0.3,              # side of the square grey patch as a fraction of the short side
}

Augmenter = Callable[[np.ndarray], np.ndarray]


def frame_augmenter(variant: str, clip_id: str, augment: dict) -> Augmenter:
    """The per-frame function of `variant` for this clip (identity for non-video variants)."""
    if variant not in VIDEO_VARIANTS:
        return lambda frame: frame
    params = {**DEFAULTS, **(augment.get("video") or {})}
    rng = variant_rng(int(augment.get("seed", 0)), clip_id, variant)
    if variant == "blur":
        return _blur(rng.uniform(*params["blur_sigma"]))
    if variant == "bright":
        return _bright(rng.uniform(*params["bright_shift"]), rng.uniform(*params["bright_contrast"]))
    if variant == "jpeg":
        low, high = params["jpeg_quality"]
        return _jpeg(int(rng.integers(low, high + 1)))
    return _occlude(float(params["occlude_frac"]), rng.uniform(0.2, 0.8, size=2))


def _blur(sigma_frac: float) -> Augmenter:
    def apply(frame):
        return cv2.GaussianBlur(frame, (0, 0), sigmaX=max(0.3, sigma_frac * min(frame.shape[:2])))
    return apply


def _bright(shift: float, contrast: float) -> Augmenter:
    # One lookup table for the clip: cv2.LUT is much cheaper per frame than float arithmetic.
    levels = np.arange(256, dtype=np.float32)
    table = np.clip((levels - 128.0) * contrast + 128.0 + shift, 0, 255).round().astype(np.uint8)
    return lambda frame: cv2.LUT(frame, table)


def _jpeg(quality: int) -> Augmenter:
    def apply(frame):
        _, data = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])
    return apply


def _occlude(side_frac: float, centre_frac: np.ndarray) -> Augmenter:
    """A mid-grey square at the same place on every frame, its centre in the middle 60% (where faces mostly are)."""
    def apply(frame):
        h, w = frame.shape[:2]
        side = max(1, round(side_frac * min(h, w)))
        x0 = int(np.clip(centre_frac[0] * w - side / 2, 0, w - side))
        y0 = int(np.clip(centre_frac[1] * h - side / 2, 0, h - side))
        out = frame.copy()
        out[y0:y0 + side, x0:x0 + side] = 128
        return out
    return apply
