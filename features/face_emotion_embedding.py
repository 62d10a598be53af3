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
from features.onnx_runtime import OnnxNet, check_runtime, exported, uses_onnx


class FaceEmotionEmbedding(CheckpointEmbedding):
    kind: ClassVar[str] = "face_emotion_embedding"
    modality: ClassVar[str] = "video"
    requires: ClassVar[tuple[str, ...]] = ("faces",)
    net: ClassVar[str] = "face"
    defaults: ClassVar[dict] = {**CheckpointEmbedding.defaults, "checkpoint": "models/face_cnn", "runtime": "auto"}

    def __init__(self, **params):
        check_runtime(self.kind, params.get("runtime", "auto"))     # before the checkpoint is looked for
        super().__init__(**params)
        self.onnx: OnnxNet | None = None

    def setup(self) -> None:
        """The checkpoint's network, and on CPU its ONNX export (features.onnx_runtime), keyed by the checkpoint's
        fingerprint (the sha256 of its weights)."""
        super().setup()
        if uses_onnx(self.params["runtime"], self.params["device"]):
            arch = self.info["arch"]
            example = torch.zeros(1, 1 if arch["grayscale"] else 3, arch["input_size"], arch["input_size"])
            axes = {"face": {0: "batch"}, "logits": {0: "batch"}, "embedding": {0: "batch"}}
            path = exported("face_emotion_cnn", self.info["fingerprint"], self.model, (example,), ["face"],
                            ["logits", "embedding"], axes)
            self.onnx = OnnxNet(path, self.resources.num_cpus, self.kind, self.params["device"])

    def run_model(self, *inputs):
        return self.onnx(*inputs) if self.onnx is not None else self.model(*inputs)

    def units(self, item: dict) -> tuple[tuple[np.ndarray, ...], list[float]]:
        arch = self.info["arch"]
        faces, face_times = face_crops(item, lambda crop: face_array(crop, arch["input_size"], arch["grayscale"]))
        return (faces,), face_times
