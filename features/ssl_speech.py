"""`ssl_speech`: layer-wise embeddings of a self-supervised speech encoder from Hugging Face `transformers`
(wav2vec2, HuBERT, WavLM, data2vec-audio, Whisper's encoder), pooled per clip and optionally kept frame by frame.

The clip (its audio variant applied by features.audio_io) is decoded at the model's rate (16 kHz), normalised as
the model's feature extractor says, and cut into `chunk_s` segments that overlap by `overlap_s` (a clip up to
`chunk_s` is one segment; Whisper's segments are at most 30 s). Segment starts fall on the encoder's frame grid, so
the frames of every segment share the clip's time axis; two overlapping segments hand over in the middle of their
overlap, so each frame comes from the segment where it has more context on both sides.

Segments of a batch of clips run together, longest first, at most `max_batch` per forward pass, padded with an
attention mask. A model whose padding leaks into the clip's frames (see `SpeechEncoder.pads_safely`) is only
batched with segments of the same length. A batched clip matches the clip alone to 1e-4 (float32; padding
changes the order of sums), never bit for bit: the default `max_batch: 1` keeps the bytes independent of which
clips an engine happens to batch together.

Columns, for each layer l of `layers` (0 = the input of the first transformer layer, n = the last layer's output,
as transformers' `hidden_states`): `lNN_mean` (and `lNN_std` with pooling `mean+std`) over the clip's frames; with
`frames: true`, `lNN_frames` + `lNN_frames_shape` [T, D] and the frames' centres `frame_times` (seconds).
`n_frames` is the clip's frame count. docs/ssl_speech.md has the params, provenance and offline use.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from functools import cached_property
from typing import ClassVar

import numpy as np
import pyarrow as pa
import torch

from features.audio_io import load_audio
from features.hf_audio import DTYPES, SpeechEncoder, model_folder, provenance
from pipelines.extractor import BaseExtractor, ClipError, Result, failure, key_of

F32 = pa.list_(pa.float32())
POOLINGS = ("mean", "mean+std")


class SslSpeech(BaseExtractor):
    kind: ClassVar[str] = "ssl_speech"
    version: ClassVar[str] = "1"
    modality: ClassVar[str] = "audio"
    defaults: ClassVar[dict] = {"model": None, "revision": None, "layers": "all", "pooling": "mean",
                                "frames": False, "chunk_s": 20.0, "overlap_s": 2.0, "max_batch": 1,
                                "dtype": "float32", "device": "cpu"}

    encoder: SpeechEncoder | None = None

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        if not p["model"]:
            raise ValueError(f"{self.kind}: `model` is required: a Hugging Face model id (with `revision`) or a "
                             "local model folder")
        if p["pooling"] not in POOLINGS:
            raise ValueError(f"{self.kind}: pooling must be one of {POOLINGS}, not {p['pooling']!r}")
        if p["dtype"] not in DTYPES:
            raise ValueError(f"{self.kind}: dtype must be one of {sorted(DTYPES)}, not {p['dtype']!r}")
        if p["dtype"] != "float32" and not str(p["device"]).startswith("cuda"):
            raise ValueError(f"{self.kind}: dtype {p['dtype']} is for GPUs (device: cuda); use float32 on CPU")
        if not 0 <= p["overlap_s"] < p["chunk_s"]:
            raise ValueError(f"{self.kind}: need 0 <= overlap_s < chunk_s, got {p['overlap_s']} and {p['chunk_s']}")
        if int(p["max_batch"]) < 1:
            raise ValueError(f"{self.kind}: max_batch must be at least 1")
        if p["layers"] != "all" and not (isinstance(p["layers"], list) and p["layers"]
                                         and all(isinstance(x, int) for x in p["layers"])):
            raise ValueError(f"{self.kind}: layers must be 'all' or a non-empty list of layer numbers")
        if str(p["device"]).startswith("cuda") and not self.resources.num_gpus:
            self.resources = replace(self.resources, num_gpus=1.0)   # so Ray schedules the actor on a GPU

    # ---- what the driver needs without loading the network ------------------------------------------------------
    @cached_property
    def folder(self):
        return model_folder(self.params["model"], self.params["revision"])

    @cached_property
    def num_layers(self) -> int:
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained(self.folder)
        return int(config.encoder_layers if config.model_type == "whisper" else config.num_hidden_layers) + 1

    @cached_property
    def layers(self) -> list[int]:
        wanted = self.params["layers"]
        layers = list(range(self.num_layers)) if wanted == "all" else list(wanted)
        bad = [x for x in layers if not 0 <= x < self.num_layers]
        if bad or len(set(layers)) != len(layers):
            raise ValueError(f"{self.kind}: layers {wanted} must be distinct numbers from 0 to {self.num_layers - 1} "
                             f"({self.params['model']} has {self.num_layers - 1} transformer layers)")
        return layers

    def provenance(self) -> dict:
        """Recorded in the store's metadata and fingerprint (pipelines/plan.py): which weights made the rows."""
        return provenance(self.params["model"], self.params["revision"], self.folder)

    def schema(self) -> pa.Schema:
        fields = [("n_frames", pa.int32())]
        for layer in self.layers:
            fields.append((f"l{layer:02d}_mean", F32))
            if self.params["pooling"] == "mean+std":
                fields.append((f"l{layer:02d}_std", F32))
            if self.params["frames"]:
                fields += [(f"l{layer:02d}_frames", F32), (f"l{layer:02d}_frames_shape", pa.list_(pa.int32()))]
        if self.params["frames"]:
            fields.append(("frame_times", F32))
        return pa.schema(fields)

    # ---- extraction ---------------------------------------------------------------------------------------------
    def setup(self) -> None:
        device = str(self.params["device"])
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"{self.kind}: device {device!r} requested but CUDA is not available")
        self.encoder = SpeechEncoder(self.folder, device, self.params["dtype"])

    def segments(self, n: int) -> list[tuple[int, int]]:
        """(start, end) samples of the chunks of an n-sample clip; starts are whole frames apart."""
        enc, sr = self.encoder, self.encoder.sample_rate
        chunk = round(self.params["chunk_s"] * sr)
        if enc.max_samples:
            chunk = min(chunk, enc.max_samples)
        chunk -= chunk % enc.stride
        step = max(enc.stride, chunk - round(self.params["overlap_s"] * sr) // enc.stride * enc.stride)
        starts = [0]
        while starts[-1] + chunk < n:
            starts.append(starts[-1] + step)
        return [(s, min(s + chunk, n)) for s in starts]

    def process(self, items: list[dict]) -> Result:
        if self.encoder is None:
            self.setup()
        out, clips = Result(), []
        for item in items:
            with self.ledgered(item, out):
                clips.append((item, self.prepare(item)))
        pieces = [(c, s, e, wave[s:e]) for c, (_, (wave, segs)) in enumerate(clips) for s, e in segs]
        states = self.run_batches([p[3] for p in pieces])
        for c, (item, _) in enumerate(clips):
            with self.ledgered(item, out):
                frames, times = self.stitch([(s, e, h) for (cc, s, e, _), h in zip(pieces, states) if cc == c])
                out.rows.append({**key_of(item), **self.columns(frames, times)})
        return out

    @contextmanager
    def ledgered(self, item: dict, out: Result):
        """A clip's own fault becomes its ledger row; the batch goes on."""
        try:
            yield
        except ClipError as e:
            out.failures.append(failure(item, self.kind, e.reason, e.detail))
        except Exception as e:  # noqa: BLE001 - a bad clip must never stop the corpus (as BaseExtractor.process)
            out.failures.append(failure(item, self.kind, f"error:{type(e).__name__}", str(e)))

    def prepare(self, item: dict) -> tuple[np.ndarray, list[tuple[int, int]]]:
        wave = load_audio(item, self.encoder.sample_rate)[0]
        if len(wave) < self.encoder.min_samples:
            raise ClipError("too_short", f"{len(wave)} samples, the encoder needs {self.encoder.min_samples}")
        wave = self.encoder.normalise(np.asarray(wave, np.float32))
        return wave, self.segments(len(wave))

    def run_batches(self, segments: list[np.ndarray]) -> list[np.ndarray]:
        """Hidden states of every segment (selected layers), batched longest first."""
        order = sorted(range(len(segments)), key=lambda i: -len(segments[i]))
        out: list[np.ndarray | None] = [None] * len(segments)
        batch: list[int] = []
        for i in order + [None]:
            full = len(batch) == int(self.params["max_batch"])
            mixed = (i is not None and batch and not self.encoder.pads_safely
                     and len(segments[i]) != len(segments[batch[0]]))
            if batch and (i is None or full or mixed):
                for j, h in zip(batch, self.encoder.hidden_states([segments[j] for j in batch])):
                    out[j] = h[self.layers]
                batch = []
            if i is not None:
                batch.append(i)
        return out

    def stitch(self, pieces: list[tuple[int, int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Segments' frames -> the clip's [layers, T, D] frames and their times. Two overlapping segments hand over
        in the middle of their overlap: each frame comes from the segment where it is farther from an edge."""
        sr, frames, times = self.encoder.sample_rate, [], []
        cuts = [(pieces[k + 1][0] + pieces[k][1]) / 2 / sr for k in range(len(pieces) - 1)]
        for k, (s, e, h) in enumerate(pieces):
            t = s / sr + self.encoder.times(e - s)
            keep = (t >= (cuts[k - 1] if k else -np.inf)) & (t < (cuts[k] if k < len(cuts) else np.inf))
            frames.append(h[:, keep])
            times.append(t[keep])
        return np.concatenate(frames, axis=1), np.concatenate(times)

    def columns(self, frames: np.ndarray, times: np.ndarray) -> dict:
        if frames.shape[1] == 0:
            raise ClipError("too_short", "the encoder gave no frame for this clip")
        if not np.isfinite(frames).all():
            raise ClipError("non_finite_output", f"{self.params['model']} gave non-finite values for this clip")
        row: dict = {"n_frames": frames.shape[1]}
        for layer, h in zip(self.layers, frames):
            row[f"l{layer:02d}_mean"] = h.mean(axis=0, dtype=np.float64).astype(np.float32).tolist()
            if self.params["pooling"] == "mean+std":
                row[f"l{layer:02d}_std"] = h.std(axis=0, dtype=np.float64).astype(np.float32).tolist()
            if self.params["frames"]:
                row[f"l{layer:02d}_frames"] = h.ravel().tolist()
                row[f"l{layer:02d}_frames_shape"] = list(h.shape)
        if self.params["frames"]:
            row["frame_times"] = times.astype(np.float32).tolist()
        return row
