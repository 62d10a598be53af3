"""Active speaker detection: synchrony scores, and the `faces` extractor on generated multi-person clips."""
import json

import numpy as np
import pytest

from conftest import shared_path
from features import active_speaker
from features.faces import FacesExtractor
from pipelines.extractor import full_schema
from pipelines.live.source import WindowMedia
from pipelines.live.speaker import SpeakerMemory
from features.audio_io import Decoded, decode_audio, decode_native
from pipelines.demo import encode
from two_faces import SIDE, SOURCES, compose

import pyarrow as pa


def _faces() -> FacesExtractor:
    ex = FacesExtractor()               # the params.yaml defaults: 5 fps, 68 landmarks
    ex.setup()
    return ex


@pytest.fixture(scope="module")
def extractor():
    return _faces()


def _source(name):
    return shared_path("data", *SOURCES[name].split("/"))


def _row(extractor, path, **extra):
    item = {"clip_id": path.stem, "corpus": "test", "path": path.name, "abspath": str(path), "variant": "clean",
            "content_hash": path.stem, **extra}
    result = extractor.process([item])
    assert not result.failures, result.failures
    pa.Table.from_pylist(result.rows, schema=full_schema(extractor))
    return result.rows[0]


def _centre_x(box):
    return (box[0] + box[2]) / 2


def test_synchrony_follows_the_envelope_and_the_speaker_does_not_flicker():
    sr, times = 16000, np.arange(20) / 5
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * np.arange(4 * sr) / sr)
    signal = (syllables * np.random.default_rng(0).normal(0, 0.1, 4 * sr)).astype(np.float32)
    envelopes = active_speaker.delayed_envelopes(signal, sr, times)
    speaking = 0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * times)                    # opens with the loudness
    listening = 0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * times + np.pi)           # out of phase
    scores = {0: active_speaker.synchrony(listening, envelopes), 1: active_speaker.synchrony(speaking, envelopes)}
    assert scores[1] > 0.7 and scores[0] < 0     # the envelope's slow trend is taken off: part of a 1.3-Hz rhythm too
    assert active_speaker.choose_speaker(scores) == 1
    assert active_speaker.choose_speaker({0: 0.5, 1: 0.55}, previous=0) == 0    # hysteresis keeps the speaker
    assert active_speaker.choose_speaker({0: 0.2, 1: 0.55}, previous=0) == 1
    assert active_speaker.choose_speaker({0: 0.05, 1: np.nan}) is None            # nobody in sync
    assert np.isnan(active_speaker.synchrony(np.full(20, 0.3), envelopes))      # a still mouth: undecidable


@pytest.mark.parametrize("heard", [0, 1])
def test_the_heard_face_of_two_is_the_main_face(extractor, tmp_path, heard):
    path = compose(tmp_path / "two.mp4", [_source("mead_m030"), _source("ravdess_01")], heard)
    row = _row(extractor, path)
    tracks = json.loads(row["speaking_tracks"])
    assert row["n_tracks"] == len(tracks) == 2
    speaking = tracks[str(row["speaking_track"])]
    assert (_centre_x(speaking["box"]) >= SIDE) == (heard == 1)
    assert set(row["track_ids"]) - {-1} == {row["speaking_track"]}          # the embedders' crops are the speaker's
    boxes = np.array(row["boxes"]).reshape(-1, 4)
    assert (_centre_x(np.nanmedian(boxes, axis=0)) >= SIDE) == (heard == 1)
    assert len(row["speaking_track_ids"]) == len(row["frame_times"])
    per_frame = set(row["speaking_track_ids"])      # decided on +-1 s around each frame: noisier than the clip's
    assert per_frame <= {-1, *map(int, tracks)} and row["speaking_track"] in per_frame


@pytest.mark.parametrize("heard", [0, 1])
def test_live_windows_follow_the_heard_face_next_to_a_still_one(tmp_path, heard):
    """Across live windows the speaker keeps one identity; a face that does not move its lips never speaks; the heard
    face is chosen from the first window on (its mouth motion is measured at the video's frame rate)."""
    extractor = _faces()                # a fresh extractor, as `aver live` has
    path = compose(tmp_path / "two.mp4", [_source("mead_m030"), _source("ravdess_01")], heard, still=(1 - heard,))
    memory, decided = SpeakerMemory(), []
    for start in np.arange(0.0, 2.5, 0.5):
        row = _row(extractor, path, start=start, end=start + 1.0, content_hash=f"{start}", speaker_hint=memory.box)
        face = memory.update(row, WindowMedia(decode_native(path, start, start + 1.0), [], True), start)
        assert face is not None and face["n_faces"] == 2
        decided.append((face["face_id"], _centre_x(face["box"]) >= SIDE))
    assert {side for _, side in decided} == {heard == 1} and len({i for i, _ in decided}) == 1


def test_live_memory_keeps_each_frame_and_each_sample_once():
    """Overlapping windows hold the same frames and audio: the history has each once, not a copy per window."""
    sr, fps = 16000, 25
    loudness = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * np.arange(3 * sr) / sr)
    audio = (loudness * np.random.default_rng(0).normal(0, 0.1, 3 * sr)).astype(np.float32)
    frame_times = np.arange(3 * fps) / fps
    motion = 2 + np.sin(2 * np.pi * 3 * frame_times)               # the mouth moves in time with the voice
    memory = SpeakerMemory()
    for start in (0.0, 0.5, 1.0, 1.5, 2.0):
        inside = (frame_times >= start) & (frame_times < start + 1)
        track = {"box": [0, 0, 100, 100], "motion": [[round(t, 4), v] for t, v in
                                                     zip(frame_times[inside], motion[inside])]}
        row = {"frame_times": frame_times[inside][::5].tolist(), "speaking_tracks": json.dumps({"0": track})}
        heard = Decoded(audio[None, round(start * sr):round((start + 1) * sr)], sr, ("FC",))
        face = memory.update(row, WindowMedia(heard, [], True), start)
    (remembered,) = memory.faces.values()
    assert sorted(remembered["motion"]) == pytest.approx(frame_times.tolist())
    assert memory.audio_start == 0.0 and np.array_equal(memory.audio, audio)
    assert face["face_id"] == 0 and face["sync"] > 0.5


def test_one_face_no_face_and_silence(extractor, tmp_path):
    one = compose(tmp_path / "one.mp4", [None, _source("ravdess_01")], 1)
    row = _row(extractor, one)
    assert row["n_tracks"] == 1 and row["speaking_track"] in (-1, 0)
    silent = compose(tmp_path / "silent.mp4", [_source("ravdess_01"), _source("mead_m030")], None)
    row = _row(extractor, silent)                   # digital silence: nobody speaks, the main face is kept
    assert row["speaking_track"] == -1 and set(row["speaking_track_ids"]) == {-1} and row["n_tracks"] == 2
    video_only = shared_path("data", "mead_sample", "dreamtalk_style_clips", "M030_front_angry_level3_001.mp4")
    row = _row(extractor, video_only)
    assert row["speaking_track"] == -1 and json.loads(row["speaking_tracks"])["0"]["sync"] is None
    nobody = tmp_path / "nobody.mp4"            # a voice over an empty picture
    encode(nobody, (np.full((128, 128, 3), 128, np.uint8) for _ in range(20)),
           decode_audio(_source("ravdess_01"), 16000)[:32000], 10, 128, 16000)
    result = extractor.process([{"clip_id": "nobody", "corpus": "test", "path": nobody.name, "abspath": str(nobody),
                                 "variant": "clean", "content_hash": "n"}])
    assert not result.rows and [f["reason"] for f in result.failures] == ["no_face"]
