"""Video variants: each degrades the frame the way it says, deterministically per (seed, clip, variant)."""
import cv2
import numpy as np
import pytest

from features.augment_video import VIDEO_VARIANTS, frame_augmenter


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    # Smooth gradient plus texture: blur and JPEG have detail to remove, brightness has room both ways.
    ramp = np.linspace(60, 190, 160, dtype=np.float32)[None, :, None]
    texture = rng.normal(0, 20, (120, 160, 3)).astype(np.float32)
    return np.clip(ramp + texture, 0, 255).astype(np.uint8)


def sharpness(image):
    return cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()


@pytest.mark.parametrize("variant", VIDEO_VARIANTS)
def test_variants_are_deterministic_and_change_the_frame(frame, variant):
    a = frame_augmenter(variant, "crema_d/1001_DFA_ANG_XX", {"seed": 7})(frame)
    b = frame_augmenter(variant, "crema_d/1001_DFA_ANG_XX", {"seed": 7})(frame)
    assert a.shape == frame.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, frame)


@pytest.mark.parametrize("variant", ["bright", "jpeg", "occlude", "blur"])
def test_draws_depend_on_clip_and_seed(frame, variant):
    base = frame_augmenter(variant, "c/1", {"seed": 7})(frame)
    others = [frame_augmenter(variant, "c/2", {"seed": 7})(frame), frame_augmenter(variant, "c/1", {"seed": 8})(frame)]
    assert any(not np.array_equal(base, other) for other in others)


def test_non_video_variants_leave_frames_alone(frame):
    for variant in ("clean", "white_snr5", "babble_snr0"):
        assert frame_augmenter(variant, "c/1", {"seed": 1})(frame) is frame


def test_blur_and_jpeg_remove_detail(frame):
    assert sharpness(frame_augmenter("blur", "c/1", {})(frame)) < 0.3 * sharpness(frame)
    jpeg = frame_augmenter("jpeg", "c/1", {})(frame)
    assert sharpness(jpeg) < sharpness(frame) and np.abs(jpeg.astype(int) - frame).mean() < 30


def test_bright_follows_params(frame):
    brighter = frame_augmenter("bright", "c/1", {"video": {"bright_shift": [40, 40], "bright_contrast": [1, 1]}})
    assert brighter(frame).astype(float).mean() == pytest.approx(frame.astype(float).mean() + 40, abs=3)


def test_occlude_puts_one_grey_square_at_a_fixed_place(frame):
    occlude = frame_augmenter("occlude", "c/1", {"video": {"occlude_frac": 0.25}})
    a, b = occlude(frame), occlude(frame)
    changed = np.any(a != frame, axis=2)
    ys, xs = np.nonzero(changed)
    side = round(0.25 * 120)
    assert ys.max() - ys.min() + 1 <= side and xs.max() - xs.min() + 1 <= side
    assert (a[ys.min():ys.min() + side, xs.min():xs.min() + side] == 128).all()
    assert np.array_equal(a, b)
