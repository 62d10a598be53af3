"""`fer_embedding`: mini-Xception FER2013 embeddings and emotion probabilities of every face crop of a clip.

Input: the clip's row of the `faces` feature set (`item["inputs"]["faces"]`): `crops` (PNG or JPEG, aligned RGB,
empty bytes where no face), `frame_times`, `face_found`. Each face crop goes gray -> 64x64 (OpenCV bilinear, as the
`fer` package and the model's training code resize) -> [-1, 1], and all face frames of the clip run through the
network in one batch (split into `max_batch` chunks). Frames without a face are skipped, not zero-filled.
"""
from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np
import pyarrow as pa
import torch

from features.alignment import face_crops
from features.mini_xception import CLASSES, EMBED_DIM, INPUT_SIZE, MiniXception, load_model, preprocess
from features.onnx_runtime import OnnxNet, check_runtime, exported, uses_onnx
from pipelines.extractor import BaseExtractor
from pipelines.weights import fetch, sha256_of

WEIGHTS = "fer_mini_xception_fer2013"
F32 = pa.list_(pa.float32())


def gray64(encoded: bytes) -> np.ndarray | None:
    """A PNG/JPEG crop as the model's 64x64 uint8 grayscale input (None when the bytes do not decode)."""
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)   # BGR, like fer's frames
    if image is None:
        return None
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(gray, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)


class FerEmbedding(BaseExtractor):
    kind: ClassVar[str] = "fer_embedding"
    version: ClassVar[str] = "1"
    modality: ClassVar[str] = "video"
    requires: ClassVar[tuple[str, ...]] = ("faces",)
    defaults: ClassVar[dict] = {"device": "cpu", "max_batch": 512, "runtime": "auto"}

    model: MiniXception | None = None

    def __init__(self, **params):
        super().__init__(**params)
        check_runtime(self.kind, self.params["runtime"])

    def schema(self) -> pa.Schema:
        return pa.schema([
            ("emb", F32), ("emb_shape", pa.list_(pa.int32())), ("emb_times", F32),
            ("probs", F32), ("probs_shape", pa.list_(pa.int32())),
            ("emb_mean", F32), ("emb_max", F32),
            *((f"fer_{c}", pa.float32()) for c in CLASSES),
        ])

    def setup(self) -> None:
        device = self.params["device"]
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"{self.kind}: device {device!r} requested but CUDA is not available")
        self.model = self.forward = load_model(fetch(WEIGHTS), device)
        if uses_onnx(self.params["runtime"], device):
            path = exported("fer_mini_xception", sha256_of(fetch(WEIGHTS)), self.model,
                            (torch.zeros(1, 1, INPUT_SIZE, INPUT_SIZE),), ["face"], ["logits", "embedding"],
                            {"face": {0: "batch"}, "logits": {0: "batch"}, "embedding": {0: "batch"}})
            self.forward = OnnxNet(path, self.resources.num_cpus, self.kind, device)

    @torch.inference_mode()
    def embed(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N,64,64] uint8 faces -> (embeddings [N,128], probabilities [N,7]), batched on the model's device."""
        device = next(self.model.parameters()).device
        embs, probs = [], []
        for start in range(0, len(faces), self.params["max_batch"]):
            logits, emb = self.forward(preprocess(faces[start:start + self.params["max_batch"]]).to(device))
            embs.append(emb.float().cpu())
            probs.append(torch.softmax(logits, dim=1).float().cpu())
        return torch.cat(embs).numpy(), torch.cat(probs).numpy()

    def extract(self, item: dict) -> dict:
        if self.model is None:
            self.setup()
        faces, times = face_crops(item, gray64)
        emb, probs = self.embed(faces)
        mean_probs = probs.mean(axis=0)
        return {
            "emb": emb.ravel().tolist(), "emb_shape": [len(emb), EMBED_DIM], "emb_times": times,
            "probs": probs.ravel().tolist(), "probs_shape": [len(probs), len(CLASSES)],
            "emb_mean": emb.mean(axis=0).tolist(), "emb_max": emb.max(axis=0).tolist(),
            **{f"fer_{c}": float(p) for c, p in zip(CLASSES, mean_probs)},
        }
