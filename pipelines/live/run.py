"""`aver live SOURCE`: emotion of a camera, a network stream, a pipe or a file, window by window, as JSON lines.

The model and its extractors load once (`pipelines.predict.WindowScorer`, the scorer of `aver predict`). A reader
thread decodes the source continuously; each window (`window` s, one every `hop` s) is queued as soon as the
stream has passed its end and scored by the main thread. The queue holds at most `backlog` windows: when the
scorer falls behind a live source, the oldest waiting window is dropped (a `dropped` line says which), and the
faces detector runs on fewer frames (`detect_every` doubled, up to MAX_DETECT_EVERY; a `shed` line says so) until
the latency is back under one hop. A file read without `realtime` is not live: the reader waits for the scorer.
Ctrl-C or the end of the stream stops it with a `summary` line.
"""
from __future__ import annotations

import hashlib
import json
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np

from features.face_stream import FaceStream
from pipelines.config import paths
from pipelines.live.source import IDLE_TIMEOUT_S, Reader, SourceError, describe, open_source
from pipelines.live.speaker import SpeakerMemory
from pipelines.predict import WindowScorer, window_items, windows
from pipelines.saved_models import MODALITIES, PredictError, choose_model, model_summary, usable_modalities

MAX_DETECT_EVERY = 8
RECOVERED_WINDOWS = 3        # windows under half a hop of latency before detection is made denser again


class Emitter:
    """JSON lines to a stream, one writer at a time (the reader reports drops, the scorer windows)."""

    def __init__(self, stream):
        self.stream, self.lock = stream, threading.Lock()

    def __call__(self, record: dict) -> None:
        with self.lock:
            self.stream.write(json.dumps(record) + "\n")
            self.stream.flush()


class Scheduler:
    """Cuts the stream into windows as the reader advances and queues them (bounded; drops the oldest when live)."""

    def __init__(self, reader_ref, window: float, hop: float, backlog: int, drop: bool, emit: Emitter):
        self.window, self.hop, self.drop, self.emit = window, hop, drop, emit
        self.queue: queue.Queue = queue.Queue(maxsize=backlog)
        self.reader_ref = reader_ref
        self.next_index, self.dropped = 0, 0
        self.ended_at: float | None = None

    def span(self, k: int) -> tuple[float, float]:
        return round(k * self.hop, 6), round(k * self.hop + self.window, 6)

    def on_media(self, reached: float) -> None:
        while self.span(self.next_index)[1] <= reached + 1e-6:
            self._enqueue(*self.span(self.next_index))

    def on_end(self) -> None:
        """The stream ended: the last windows end at its end, as `aver predict` cuts a file."""
        buffer = self.reader_ref().buffer
        ends = [e for e in (buffer.audio_end, buffer.video_end) if e is not None]
        if ends:
            duration = max(ends)
            for start, end in windows(duration, self.window, self.hop)[self.next_index:]:
                self._enqueue(start, end)
        self.ended_at = time.monotonic()
        self.queue.put(None)        # never dropped: the scorer drains the queue, then stops

    def _enqueue(self, start: float, end: float) -> None:
        reader = self.reader_ref()
        with reader.lock:
            media = reader.buffer.window(start, end, "video" in reader.streams)
            reader.buffer.forget_before(start + self.hop)
        self.next_index += 1
        self._put({"start": start, "end": end, "media": media, "ready": time.monotonic()})

    def _put(self, job) -> None:
        if not self.drop:
            self.queue.put(job)     # a file read as fast as possible: wait for the scorer
            return
        while True:
            try:
                self.queue.put_nowait(job)
                return
            except queue.Full:
                try:
                    old = self.queue.get_nowait()
                except queue.Empty:
                    continue
                if old is not None:
                    self.dropped += 1
                    self.emit({"event": "dropped", "start": old["start"], "end": old["end"],
                               "reason": "backlog", "detail": "the scorer was behind the stream; newer window kept"})


def run_live(source: str, model: str | Path | None = None, params: dict | None = None, window: float = 1.0,
             hop: float = 0.5, out=None, realtime: bool = False, backlog: int = 1, view=None,
             idle_timeout: float = IDLE_TIMEOUT_S) -> dict:
    """Score `source` window by window until it ends or Ctrl-C; JSON lines go to `out` (a stream, default stdout).
    A network source silent for `idle_timeout` s has ended. Returns the summary. Raises SourceError / PredictError
    (one line) when it cannot start."""
    params = params or {}
    windows(window, window, hop)            # validates window and hop
    emit = Emitter(out or sys.stdout)
    # models load before the source is opened: a live source does not wait for us, and what arrives meanwhile
    # would be a backlog to drop
    saved = choose_model(model, paths(params)["runs"], MODALITIES)
    scorer = WindowScorer(saved, params, saved.modalities)
    container = open_source(source, idle_timeout)
    available = tuple(m for m in MODALITIES if getattr(container.streams, m))
    if not available:
        raise SourceError(f"{source} has no audio or video stream")
    used = usable_modalities(saved, available, source)
    if used != scorer.used:         # the source lacks one of the model's modalities
        scorer = WindowScorer(saved, params, used)
    faces = scorer.plan.get("faces")
    fps = float(faces.params["fps"]) if faces is not None else None
    live = describe(source) != "file" or realtime
    reader = None
    scheduler = Scheduler(lambda: reader, window, hop, max(1, backlog), live, emit)
    reader = Reader(container, tuple(m for m in used if m != "video" or fps), fps, realtime,
                    scheduler.on_media, scheduler.on_end, idle_timeout if describe(source) == "network" else None)
    facts = {"content_hash": hashlib.sha256(source.encode()).hexdigest()[:16], "has_audio": "audio" in used,
             "has_video": "video" in used, "duration": None}
    emit({"event": "start", "source": source, "kind": describe(source), "model": model_summary(saved),
          "modalities_used": list(used), "window": window, "hop": hop, "paced": live})
    started = time.monotonic()
    latencies, stopped, last_output, calm, speakers = [], "end_of_stream", None, 0, SpeakerMemory()
    face_stream = FaceStream()
    configured_every = int(faces.params["detect_every"]) if faces is not None else None
    reader.start()
    try:
        while True:
            job = scheduler.queue.get()
            if job is None:
                break
            (item,) = window_items(Path(source), facts, [(job["start"], job["end"])])
            job["media"].face_stream = face_stream     # faces: only the frames no earlier window scanned
            item.update(media=job["media"], speaker_hint=speakers.box)
            try:
                (entry,) = scorer.score([item])
            except PredictError as e:      # neither modality gave features (no face, silence)
                entry = {"start": job["start"], "end": job["end"], "label": None, "probs": None, "modalities": [],
                         "failures": [{"feature_set": None, "reason": "no_features", "detail": str(e)}]}
            latency = time.monotonic() - job["ready"]
            latencies.append(latency)
            if entry.get("probs") is not None and "faces" in scorer.plan:
                entry["speaking_face"] = speakers.update(scorer.last_faces.get(item["clip_id"]), job["media"],
                                                         job["start"])
            last_output = time.monotonic()
            emit({"event": "window", **entry, "wall_time": time.time(), "latency_s": round(latency, 4),
                  **({"detect_every": int(faces.params["detect_every"])} if faces is not None else {})})
            if view is not None:
                view(entry, job["media"])
            if faces is not None and live:
                calm = _shed(faces, latency, hop, configured_every, calm, emit)
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        reader.stop_requested.set()
    ended = time.monotonic()
    summary = {"event": "summary", "stopped": stopped, "windows": len(latencies), "dropped": scheduler.dropped,
               "latency_p50_s": _percentile(latencies, 50), "latency_p95_s": _percentile(latencies, 95),
               "wall_s": round(ended - started, 3),
               "end_to_last_output_s": round(max(0.0, last_output - scheduler.ended_at), 4)
               if last_output is not None and scheduler.ended_at is not None else None,
               "ended_by": "interrupted" if stopped == "interrupted" else reader.ended_by, "reader_error": reader.error}
    emit(summary)
    return summary


def _shed(faces, latency: float, hop: float, configured: int, calm: int, emit: Emitter) -> int:
    """Detect faces less often while windows take longer than a hop to come out; denser again once calm."""
    every = int(faces.params["detect_every"])
    if latency > hop and every < MAX_DETECT_EVERY:
        faces.params["detect_every"] = min(MAX_DETECT_EVERY, every * 2)
        emit({"event": "shed", "detect_every": faces.params["detect_every"], "latency_s": round(latency, 4),
              "detail": "windows are late: the face detector now runs on fewer frames"})
        return 0
    calm = calm + 1 if latency < hop / 2 else 0
    if calm >= RECOVERED_WINDOWS and every > configured:
        faces.params["detect_every"] = max(configured, every // 2)
        emit({"event": "shed", "detect_every": faces.params["detect_every"], "latency_s": round(latency, 4),
              "detail": "caught up: the face detector runs on more frames again"})
        return 0
    return calm


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None
