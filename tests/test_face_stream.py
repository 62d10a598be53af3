"""`aver live`'s incremental faces (features/face_stream.py): overlapping windows of real clips scan each frame once
and stay within the stated tolerance of each window computed alone (docs/live.md "Incremental faces")."""
import av
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from conftest import shared_path
from features.face_scan import FaceScan
from features.face_stream import FaceStream
from features.faces import FacesExtractor
from features.video_io import sample_frames
from pipelines.live.source import MediaBuffer, WindowMedia
from pipelines.live.speaker import SpeakerMemory
from pipelines.predict import windows
from pipelines.probe import probe
from test_fast_path import CLIPS, iod
from two_faces import SIDE, SOURCES, compose

CLIPS = {name: CLIPS[name] for name in ("meld", "crema", "mead", "ravdess")}


@pytest.fixture(scope="module")
def extractor():
    ex = FacesExtractor()
    ex.setup()
    return ex


def live_windows(parts, window=1.0, hop=0.5):
    """The clip's live windows (1 s every 0.5 s), each with its frames sampled at 5 fps, as the live reader cuts them."""
    path = shared_path("data", *parts)
    frames = list(sample_frames(str(path), 5.0))
    return [[(t, f) for t, f in frames if start - 1e-6 <= t < end]
            for start, end in windows(probe(path)["duration"], window, hop)]


def window(frames, stream=None):
    return {"clip_id": "test/window", "corpus": "test", "path": "window", "variant": "clean", "content_hash": "h",
            "start": frames[0][0], "end": frames[-1][0] + 0.2,
            "media": WindowMedia(audio=None, frames=frames, has_video=True, face_stream=stream)}


def rows(row, column, width):
    return np.reshape(row[column], (-1, width))


@pytest.mark.parametrize("clip", list(CLIPS))
def test_live_windows_stay_within_tolerance_of_each_window_computed_alone(extractor, clip):
    stream, ious = FaceStream(), []
    for frames in live_windows(CLIPS[clip]):
        alone = extractor.process([window(frames)]).rows[0]
        live = extractor.process([window(frames, stream)]).rows[0]
        assert live["frame_times"] == alone["frame_times"] and live["face_found"] == alone["face_found"]
        found = np.array(live["face_found"])
        ious += box_iou(*(torch.from_numpy(rows(r, "boxes", 4)[found]) for r in (live, alone))).diagonal().tolist()
        unit = iod(rows(alone, "landmarks5", 10)[found])
        points = (rows(live, "landmarks68", 136) - rows(alone, "landmarks68", 136))[found].reshape(-1, 68, 2)
        assert (np.linalg.norm(points, axis=2).mean(axis=1) / unit).max() <= 0.15
        # the same person: descriptors of one face lie within ~0.4, the tracker's identity gate is 0.6
        assert np.linalg.norm(np.subtract(live["identity"], alone["identity"])) <= 0.4
    assert min(ious) >= 0.75 and np.median(ious) >= 0.9


def test_each_frame_is_scanned_once_and_the_stream_stays_bounded(extractor, monkeypatch):
    scanned, described = [], []
    step, describe = FaceScan.step, extractor.describer.__class__.__call__

    def counted_step(self, frame):
        scanned.append(frame.ctypes.data)
        return step(self, frame)

    def counted_describe(self, *args):
        out = describe(self, *args)
        described.append(len(out))
        return out

    monkeypatch.setattr(FaceScan, "step", counted_step)
    monkeypatch.setattr(extractor.describer.__class__, "__call__", counted_describe)
    spans = live_windows(CLIPS["mead"])
    stream = FaceStream()
    for frames in spans:
        extractor.process([window(frames, stream)])
        assert len(stream.seen) <= len(frames) and len(stream.scan.tracker.tracks) == 1
    distinct = {f.ctypes.data for frames in spans for _, f in frames}
    assert sorted(scanned) == sorted(distinct)              # every frame once, none twice
    live_descriptors = sum(described)
    scanned.clear(), described.clear()
    for frames in spans:
        extractor.process([window(frames)])
    assert len(scanned) == sum(len(frames) for frames in spans) > len(distinct)
    assert sum(described) == len(spans) > live_descriptors      # alone: every window describes its new track


def test_a_window_that_does_not_continue_the_stream_starts_a_new_scan(extractor):
    spans = live_windows(CLIPS["ravdess"])
    stream = FaceStream()
    extractor.process([window(spans[0], stream)])
    first = stream.scan
    extractor.process([window(spans[1], stream)])
    assert stream.scan is first
    later = next(frames for frames in spans if frames[0][0] > spans[1][-1][0] + 1.0)   # after a long drop
    live, alone = (extractor.process([window(later, s)]).rows[0] for s in (stream, None))
    assert stream.scan is not first and live["boxes"] == alone["boxes"] and live["crops"] == alone["crops"]


def cut_like_the_live_reader(path, fps=5.0, window=1.0, hop=0.5) -> list[WindowMedia]:
    """A file's windows with their media as `aver live` buffers them (pipelines.live.source.MediaBuffer)."""
    buffer = MediaBuffer(fps)
    with av.open(str(path)) as container:
        origin = (container.start_time or 0) / av.time_base
        for packet in container.demux(container.streams.audio[0], container.streams.video[0]):
            for frame in packet.decode():
                add = buffer.add_audio if packet.stream.type == "audio" else buffer.add_video
                add(frame.time - origin, frame)
    return [buffer.window(start, end, True) for start, end in windows(buffer.video_end, window, hop)]


@pytest.mark.parametrize("heard", [0, 1])
def test_live_windows_with_the_face_stream_follow_the_heard_face(extractor, tmp_path, heard):
    """Two talking faces, one heard: with tracks carried from window to window, the live speaker stays the heard one
    (features.active_speaker on the window's tracks, pipelines.live.speaker across windows)."""
    sources = [shared_path("data", *SOURCES[name].split("/")) for name in ("mead_m030", "ravdess_01")]
    path = compose(tmp_path / "two.mp4", sources, heard)
    stream, memory, decided = FaceStream(), SpeakerMemory(), []
    for media in cut_like_the_live_reader(path):
        media.face_stream = stream
        item = window(media.frames) | {"media": media, "speaker_hint": memory.box}
        face = memory.update(extractor.process([item]).rows[0], media, item["start"])
        decided.append(face is not None and ((face["box"][0] + face["box"][2]) / 2 >= SIDE) == (heard == 1))
    assert all(decided) and len(stream.scan.tracker.tracks) == 2
