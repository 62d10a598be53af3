"""`face_emotion_embedding`: every face crop of a clip through the pipeline-trained face emotion CNN.

Input: the clip's `faces` row (`crops`: aligned RGB crops, PNG/JPEG, empty bytes where no face; `frame_times`,
`face_found`). Each face crop is resized and scaled exactly as in pre-training (features.emotion_cnn.face_array);
frames without a face are skipped, not zero-filled. Output columns: see features.emotion_cnn.CheckpointEmbedding
and docs/pretrain.md.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from features.alignment import face_crops
from features.emotion_cnn import CheckpointEmbedding, face_array


class FaceEmotionEmbedding(CheckpointEmbedding):
    kind: ClassVar[str] = "face_emotion_embedding"
    modality: ClassVar[str] = "video"
    requires: ClassVar[tuple[str, ...]] = ("faces",)
    net: ClassVar[str] = "face"
    input_names: ClassVar[tuple[str, ...]] = ("face",)
    defaults: ClassVar[dict] = {**CheckpointEmbedding.defaults, "checkpoint": "models/face_cnn"}

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        arch = self.info["arch"]
        return (torch.zeros(1, 1 if arch["grayscale"] else 3, arch["input_size"], arch["input_size"]),)

    def units(self, item: dict) -> tuple[tuple[np.ndarray, ...], list[float]]:
        arch = self.info["arch"]
        faces, face_times = face_crops(item, lambda crop: face_array(crop, arch["input_size"], arch["grayscale"]))
        return (faces,), face_times
