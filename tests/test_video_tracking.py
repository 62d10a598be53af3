"""Tracking on synthetic box sequences: crossing faces, dropouts, main-track choice."""
import numpy as np

from features.tracking import Tracker, confirmed, pick_main


def det(cx, cy, size, score=0.99):
    """A detector row [x1, y1, x2, y2, score, 5 landmarks] for a square face centred at (cx, cy)."""
    half = size / 2
    landmarks = [cx - size * 0.2, cy - size * 0.1, cx + size * 0.2, cy - size * 0.1, cx, cy + size * 0.05,
                 cx - size * 0.15, cy + size * 0.25, cx + size * 0.15, cy + size * 0.25]
    return np.array([cx - half, cy - half, cx + half, cy + half, score, *landmarks], np.float32)


def run(tracker, frames):
    """Feed frames (lists of rows) in order; returns, per frame, the track id of each row in the given order."""
    return [tracker.update(i, np.stack(rows) if rows else np.zeros((0, 15), np.float32))
            for i, rows in enumerate(frames)]


def test_two_faces_crossing_keep_their_ids():
    # A walks right, B walks left, same size and height: at frame 5 they coincide exactly.
    frames, truth = [], []
    rng = np.random.default_rng(0)
    for i in range(11):
        rows = [("A", det(100 + 20 * i, 200, 60)), ("B", det(300 - 20 * i, 200, 60))]
        rng.shuffle(rows)                    # detector order carries no identity
        frames.append([r for _, r in rows])
        truth.append([name for name, _ in rows])
    ids = run(Tracker(), frames)
    id_of = {}
    for names, frame_ids in zip(truth, ids):
        for name, track_id in zip(names, frame_ids):
            assert id_of.setdefault(name, track_id) == track_id
    assert len(set(id_of.values())) == 2


def test_dropout_frames_keep_the_id_within_max_gap():
    frames = [[det(200 + 3 * i, 150, 80)] if i not in (3, 4) else [] for i in range(10)]
    tracker = Tracker(max_gap=5)
    ids = run(tracker, frames)
    assert {i for frame in ids for i in frame} == {0}
    assert tracker.tracks[0].frames == [0, 1, 2, 5, 6, 7, 8, 9]


def test_long_absence_starts_a_new_track():
    frames = [[det(200, 150, 80)] if i < 3 or i > 9 else [] for i in range(12)]
    ids = run(Tracker(max_gap=5), frames)
    assert ids[0] == [0] and ids[10] == [1]


def test_far_jump_or_size_change_is_a_different_face():
    ids = run(Tracker(), [[det(100, 100, 60)], [det(500, 100, 60)], [det(500, 100, 200)]])
    assert ids == [[0], [1], [2]]


def test_main_track_is_persistent_large_and_central():
    width, height = 640, 360
    frames = []
    for i in range(10):
        rows = [det(320 + i, 180, 120)]                      # central, large, always there
        rows.append(det(40, 40, 40))                         # small face in a corner
        if i in (4, 5):
            rows.append(det(600, 300, 160, score=0.6))       # a big false positive on two frames only
        frames.append(rows)
    tracker = Tracker()
    run(tracker, frames)
    main = pick_main(confirmed(tracker.tracks), tracker.n_detected_frames, width, height)
    assert main.track_id == 0 and len(main.frames) == 10


def test_confirmed_drops_one_frame_tracks_unless_nothing_else():
    tracker = Tracker()
    run(tracker, [[det(100, 100, 50)], [det(100, 100, 50), det(400, 300, 50)], [det(100, 100, 50)]])
    assert [t.track_id for t in confirmed(tracker.tracks)] == [0]
    lone = Tracker()
    run(lone, [[det(100, 100, 50)]])
    assert [t.track_id for t in confirmed(lone.tracks)] == [0]
