"""`speech_emotion_embedding`: a clip's log-mel, window by window, through the pipeline-trained attention CNN.

Input: the clip's `logmel` row (flattened `logmel` + `logmel_shape` [n_mels, frames], `frame_times`). The log-mel is
cut into the windows the network was trained on (checkpoint `window` frames every `hop`, the last window aligned to
the clip's end; a clip shorter than a window is one padded, masked window). `emb_times` is each window's centre.
Output columns: see features.emotion_cnn.CheckpointEmbedding and docs/pretrain.md.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from features.emotion_cnn import MIN_FRAMES, CheckpointEmbedding, logmel_windows, window_mask
from pipelines.extractor import ClipError, column, upstream_row


class SpeechEmotionEmbedding(CheckpointEmbedding):
    kind: ClassVar[str] = "speech_emotion_embedding"
    modality: ClassVar[str] = "audio"
    requires: ClassVar[tuple[str, ...]] = ("logmel",)
    net: ClassVar[str] = "speech"
    input_names: ClassVar[tuple[str, ...]] = ("logmel", "mask")
    defaults: ClassVar[dict] = {**CheckpointEmbedding.defaults, "checkpoint": "models/speech_cnn"}

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        arch = self.info["arch"]
        return torch.zeros(1, arch["n_mels"], arch["window"]), torch.ones(1, arch["window"], dtype=torch.bool)

    def units(self, item: dict) -> tuple[tuple[np.ndarray, ...], list[float]]:
        row = upstream_row(item, "logmel")
        shape = [int(s) for s in column(row, "logmel_shape")]
        values = np.asarray(column(row, "logmel"), np.float32)
        if len(shape) != 2 or shape[0] * shape[1] != values.size:
            raise ClipError("bad_input", f"logmel of {values.size} values does not fit logmel_shape {shape}")
        n_mels, frames = shape
        arch = self.info["arch"]
        if n_mels != arch["n_mels"]:
            raise ClipError("input_mismatch", f"log-mel has {n_mels} mel bands, the checkpoint was trained on "
                                              f"{arch['n_mels']}: extract logmel with the pre-training params")
        if frames < MIN_FRAMES:
            raise ClipError("too_short", f"{frames} log-mel frames, the network needs at least {MIN_FRAMES}")
        if not np.isfinite(values).all():
            raise ClipError("bad_input", "log-mel has non-finite values")
        times = np.asarray(column(row, "frame_times"), np.float64)
        if len(times) != frames:
            raise ClipError("bad_input", f"{len(times)} frame_times for {frames} log-mel frames")
        windows, lengths, starts = logmel_windows(values.reshape(n_mels, frames), arch["window"], arch["hop"])
        centres = (times[starts] + times[starts + lengths - 1]) / 2
        return (windows, lengths), centres.tolist()

    def run_model(self, windows: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return super().run_model(windows, window_mask(lengths, windows.shape[-1]).to(windows.device))
