"""`face_emotion_embedding`: every face crop of a clip through the pipeline-trained face emotion CNN.

Input: the clip's `faces` row (`crops`: aligned RGB crops, PNG/JPEG, empty bytes where no face; `frame_times`,
`face_found`). Each face crop is resized and scaled exactly as in pre-training (features.emotion_cnn.face_array);
frames without a face are skipped, not zero-filled. Output columns: see features.emotion_cnn.CheckpointEmbedding
and docs/pretrain.md.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from features.emotion_cnn import CheckpointEmbedding, column, face_array, upstream_row
from pipelines.extractor import ClipError


class FaceEmotionEmbedding(CheckpointEmbedding):
    kind: ClassVar[str] = "face_emotion_embedding"
    modality: ClassVar[str] = "video"
    requires: ClassVar[tuple[str, ...]] = ("faces",)
    net: ClassVar[str] = "face"
    defaults: ClassVar[dict] = {**CheckpointEmbedding.defaults, "checkpoint": "models/face_cnn"}

    def units(self, item: dict) -> tuple[tuple[np.ndarray, ...], list[float]]:
        row = upstream_row(item, "faces")
        crops, times, found = (column(row, name) for name in ("crops", "frame_times", "face_found"))
        if not (len(crops) == len(times) == len(found)):
            raise ClipError("bad_input", f"faces row has {len(crops)} crops, {len(times)} frame_times and "
                                         f"{len(found)} face_found values")
        arch = self.info["arch"]
        faces, face_times = [], []
        for i, (crop, t, ok) in enumerate(zip(crops, times, found)):
            if not ok or crop is None or len(crop) == 0:
                continue
            face = face_array(bytes(crop), arch["input_size"], arch["grayscale"])
            if face is None:
                raise ClipError("bad_face_crop", f"face crop of frame {i} (t={t:.3f} s) is not a decodable image")
            faces.append(face)
            face_times.append(float(t))
        if not faces:
            raise ClipError("no_face_crops", f"none of the {len(crops)} sampled frames has a face crop")
        return (np.stack(faces),), face_times
