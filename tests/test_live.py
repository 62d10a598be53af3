"""`aver live`: a real clip served as MPEG-TS over loopback TCP, UDP and HTTP, a slow extractor forcing shedding, bad
sources."""
import io
import json
import math
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import yaml

from conftest import shared_path
from features.face_affect import FaceAffect
from features.face_scan import FaceScan
from features.face_tracking import box_iou
from features.faces import FacesExtractor
from pipelines.live import SourceError, run_live
from pipelines.live.view import make_view
from pipelines.predict import affect_dimensions, predict_file, windows
from pipelines.probe import probe
from test_predict import run  # noqa: F401 - the trained miniature models (module fixture)
from two_faces import send_paced, serve_http, serve_mpegts, serve_rtsp

MELD = ("meld_sample", "train_splits", "dia1_utt0.mp4")
MEAD = ("mead_sample", "eamm", "M030_sad_3_001.mp4")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


@pytest.mark.parametrize("protocol", ["tcp", "udp", "http"])
def test_a_loopback_stream_gives_json_lines_and_stops_at_its_end(run, tmp_path, protocol):  # noqa: F811
    """MPEG-TS over TCP (aver live listens), UDP (datagrams: the end is a silence of `idle_timeout`) or HTTP (aver
    live downloads a stream that a server sends at 1x)."""
    path = shared_path("data", *MELD)
    port, server = _free_port(), None
    if protocol == "tcp":
        sender, source = serve_mpegts(path, f"tcp://127.0.0.1:{port}"), f"tcp://127.0.0.1:{port}?listen=1"
    elif protocol == "udp":
        sender, source = serve_mpegts(path, f"udp://127.0.0.1:{port}?pkt_size=1316"), f"udp://127.0.0.1:{port}"
    else:
        sender = None
        source, server = serve_http(path)
    out = io.StringIO()
    try:
        summary = run_live(source, None, run["params"], window=1.0, hop=0.5, out=out, idle_timeout=2.0)
    finally:
        if server is not None:
            server.shutdown()
    if sender is not None:
        sender.join(10)
    lines = _lines(out)
    assert lines[0]["event"] == "start" and lines[0]["kind"] == "network" and lines[0]["model"]["name"] == "vavl"
    assert lines[-1] == {**summary, "event": "summary"} and summary["stopped"] == "end_of_stream"
    assert summary["ended_by"] == ("idle_timeout" if protocol == "udp" else "end_of_file"), str(summary)
    got = [w for w in lines if w["event"] == "window"]
    duration = probe(path)["duration"]
    expected = windows(duration, 1.0, 0.5)
    dropped = [w for w in lines if w["event"] == "dropped"]      # none on a quiet machine; the test box is shared
    spans = sorted([(w["start"], w["end"]) for w in got + dropped])
    assert [t for s in spans for t in s] == pytest.approx([t for s in expected for t in s], abs=0.05)
    assert summary["windows"] == len(got) >= len(expected) - 1 and summary["dropped"] == len(dropped)
    assert not summary["reader_error"]
    assert summary["latency_p50_s"] <= summary["latency_p95_s"] and summary["end_to_last_output_s"] >= 0
    for w in got:
        assert w["modalities"] == ["audio", "video"] and not w["failures"]
        assert sum(w["probs"].values()) == pytest.approx(1.0, abs=1e-5) and w["latency_s"] > 0
        assert w["wall_time"] > time.time() - 600 and w["detect_every"] in (5, 8)   # 8: shed
        x1, y1, x2, y2 = w["face_box"]
        assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 720
        assert "speaking_face" in w


def test_an_rtsp_camera_stream_is_read_until_it_goes_silent(run):  # noqa: F811
    """RTSP as an IP camera serves it (a real RTSP server: H.264 over RTP/UDP, video only, no end mark): windows of
    the video modality from the first frame on, and the stream's silence ends the run."""
    path = shared_path("data", *MELD)
    url, server = serve_rtsp(path, _free_port(), repeat=2)
    out = io.StringIO()
    try:
        summary = run_live(url, None, run["params"], window=1.0, hop=0.5, out=out, idle_timeout=2.0)
    finally:
        server.stop()
    lines = _lines(out)
    assert lines[0]["event"] == "start" and lines[0]["kind"] == "network"
    assert summary["stopped"] == "end_of_stream" and summary["ended_by"] == "idle_timeout", str(summary)
    assert not summary["reader_error"]
    got = [w for w in lines if w["event"] == "window"]
    dropped = [w for w in lines if w["event"] == "dropped"]
    streamed = 2 * probe(path)["duration"]
    spans = sorted((w["start"], w["end"]) for w in got + dropped)
    expected = windows(streamed, 1.0, 0.5)
    assert len(spans) == len(expected), (spans, expected)
    assert [t for s in spans for t in s] == pytest.approx([t for s in expected for t in s], abs=0.1)
    assert len(got) >= len(spans) - 2        # none dropped on a quiet machine; the test box is shared
    for w in got:
        assert w["modalities"] == ["video"] and not w["failures"]
        x1, y1, x2, y2 = w["face_box"]
        assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 720


def test_a_file_scored_live_matches_predict_on_the_same_windows(run, tmp_path, monkeypatch):  # noqa: F811
    """Same scorer, same windows: the in-memory window media give predict's probabilities. The PNG view shows the
    last window. Overlapping windows share frames: each sampled frame's faces are computed once."""
    path = shared_path("data", *MELD)
    out, scanned, step = io.StringIO(), [], FaceScan.step
    monkeypatch.setattr(FaceScan, "step", lambda self, frame: scanned.append(frame) or step(self, frame))
    run_live(str(path), None, run["params"], window=1.0, hop=0.5, out=out, view=make_view(str(tmp_path / "live.png")))
    monkeypatch.undo()
    live = [w for w in _lines(out) if w["event"] == "window"]
    fps = run["params"]["features"]["faces"]["params"]["fps"]
    assert len(scanned) <= math.ceil(probe(path)["duration"] * fps) + 1
    view = cv2.imread(str(tmp_path / "live.png"))      # the last window's picture, its main face framed (white;
    assert view.shape == (720, 1280, 3) and sorted(p.name for p in tmp_path.iterdir()) == ["live.png"]   # green:
    x1, y1, x2, y2 = (round(v) for v in live[-1]["face_box"])                                           # speaking)
    assert {tuple(view[y1, (x1 + x2) // 2]), tuple(view[(y1 + y2) // 2, x2])} <= {(255, 255, 255), (0, 200, 0)}
    batch = predict_file(path, None, run["params"], window=1.0, hop=0.5, out_dir=tmp_path)["windows"]
    # the stream ends with its last decoded sample, probe's duration is the container's: a few ms apart
    assert [t for w in live for t in (w["start"], w["end"])] == pytest.approx(
        [t for w in batch for t in (w["start"], w["end"])], abs=0.05)
    # live windows continue the previous window's face tracks (features.face_stream), a batch window starts its own:
    # the same face, tracked rather than detected on some frames
    assert live[0]["face_box"] == batch[0]["face_box"]
    for a, b in zip(live[:-1], batch[:-1]):     # the last windows differ by those ms of audio
        assert box_iou(np.array(a["face_box"]), np.array(b["face_box"])) >= 0.8, (a["face_box"], b["face_box"])
        assert list(a["probs"].values()) == pytest.approx(list(b["probs"].values()), abs=0.02)


def test_a_slow_extractor_sheds_work_and_keeps_the_backlog_bounded(run, monkeypatch):  # noqa: F811
    slow = 1.2
    original = FacesExtractor.extract

    def slow_extract(self, item):
        time.sleep(slow)
        return original(self, item)

    monkeypatch.setattr(FacesExtractor, "extract", slow_extract)
    path = shared_path("data", *MEAD)
    out = io.StringIO()
    summary = run_live(str(path), None, run["params"], window=1.0, hop=0.5, out=out, realtime=True, backlog=1)
    lines = _lines(out)
    scored = [w for w in lines if w["event"] == "window"]
    dropped = [w for w in lines if w["event"] == "dropped"]
    shed = [w for w in lines if w["event"] == "shed"]
    total = len(windows(probe(path)["duration"], 1.0, 0.5))
    assert dropped and summary["dropped"] == len(dropped) and len(scored) + len(dropped) == total
    assert all(d["reason"] == "backlog" for d in dropped)
    assert shed and shed[0]["detect_every"] == 8 and scored[-1]["detect_every"] > 5   # the default 5, doubled up to 8
    # at most one window waits while another is scored: no latency beyond two slow windows (+ model work)
    assert max(w["latency_s"] for w in scored) < 2 * slow + 3.0


def test_sources_that_cannot_be_read_give_one_line(run, tmp_path):  # noqa: F811
    with pytest.raises(SourceError, match="no such file, camera or URL"):
        run_live(str(tmp_path / "missing.mp4"), None, run["params"], out=io.StringIO())
    bad = tmp_path / "bad.mp4"
    bad.write_text("not media")
    with pytest.raises(SourceError, match="cannot open"):
        run_live(str(bad), None, run["params"], out=io.StringIO())
    # SRT is not in PyAV's FFmpeg: the line says how to pipe it in
    with pytest.raises(SourceError, match=r"cannot read srt://.*ffmpeg -i srt://127\.0\.0\.1:9 .* \| aver live -"):
        run_live("srt://127.0.0.1:9", None, run["params"], out=io.StringIO())


def test_a_stream_piped_on_stdin(run, tmp_path):  # noqa: F811
    """`ffmpeg ... -f mpegts - | aver live -` through the command line. The stream arrives faster than it is scored
    (all of it at once), so a pipe, being live, drops windows rather than queue them: every window is scored or
    reported dropped, the last one is scored, and the end of the pipe ends the run."""
    path = shared_path("data", *MELD)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(run["params"]))
    stream = io.BytesIO()
    send_paced(path, stream)
    live = subprocess.run([sys.executable, "-m", "pipelines.cli", "live", "-", "--params", str(params)],
                          input=stream.getvalue(), capture_output=True, timeout=300)
    assert live.returncode == 0, live.stderr.decode()[-2000:]
    lines = [json.loads(line) for line in live.stdout.decode().splitlines()]
    summary = lines[-1]
    assert lines[0]["event"] == "start" and lines[0]["kind"] == "pipe" and lines[0]["paced"]
    assert summary["event"] == "summary" and summary["ended_by"] == "end_of_file" and not summary["reader_error"]
    spans = sorted((w["start"], w["end"]) for w in lines if w["event"] in ("window", "dropped"))
    expected = windows(probe(path)["duration"], 1.0, 0.5)
    assert [t for s in spans for t in s] == pytest.approx([t for s in expected for t in s], abs=0.05)
    got = [w for w in lines if w["event"] == "window"]
    assert got[-1]["end"] == pytest.approx(expected[-1][1], abs=0.05)
    assert summary["windows"] == len(got) and summary["dropped"] == len(spans) - len(got)
    assert all(w["modalities"] == ["audio", "video"] and not w["failures"] for w in got)


def test_valence_and_arousal_come_from_the_models_face_affect_set():
    """`aver predict` / `aver live` windows carry the face_affect set's own valence/arousal where the model reads one
    with those heads (the weights are not in ../shared: the set's rows are given here as it writes them)."""
    plan = {"faces": FacesExtractor(), "face_affect": FaceAffect(model="enet_b0_8_va_mtl")}
    rows = {"faces": [{"clip_id": "w@0"}], "face_affect": [{"clip_id": "w@1", "valence_mean": 0.9},
                                                           {"clip_id": "w@0", "valence_mean": 0.31234,
                                                            "arousal_mean": -0.2}]}
    assert affect_dimensions(rows, plan, "w@0") == {"valence": 0.3123, "arousal": -0.2}
    assert affect_dimensions(rows, {"faces": plan["faces"]}, "w@0") == {"valence": None, "arousal": None}
