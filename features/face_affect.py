"""`face_affect`: AffectNet emotion probabilities, valence / arousal and embeddings of every face crop of a clip, from
an HSEmotion (Savchenko) EfficientNet in its official ONNX export.

Input: the clip's `faces` row (`crops`: aligned RGB crops, PNG/JPEG, empty bytes where no face; `frame_times`,
`face_found`). Pre-processing is the original's (hsemotion-onnx `HSEmotionRecognizer.preprocess`): the RGB crop is
resized to 224x224 (B0) or 260x260 (B2) with OpenCV's default bilinear interpolation, scaled to [0, 1], normalised
with the ImageNet mean / std per RGB channel, laid out NCHW float32. The network's last node is the classifier (a
Gemm); its input, the penultimate layer (1280-d for B0, 1408-d for B2), is added as a second graph output, so one
run gives logits and embedding (as EmotiEffLib's `extract_features` reads it). Class probabilities are the softmax
of the class logits; `*_va_mtl` models give two more outputs, valence and arousal, which are kept as they are.
"""
from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np
import pyarrow as pa

from features.alignment import decode_image, face_crops
from features.onnx_runtime import session
from pipelines.extractor import BaseExtractor, ClipError
from pipelines.weights import HSEMOTION_VARIANTS, fetch

CLASSES_8 = ("anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
CLASSES_7 = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
F32 = pa.list_(pa.float32())


def model_spec(variant: str) -> tuple[int, tuple[str, ...], bool]:
    """(input size, class names in output order, whether valence and arousal follow the class logits)."""
    if variant not in HSEMOTION_VARIANTS:
        raise ValueError(f"face_affect: unknown model {variant!r}; known: {list(HSEMOTION_VARIANTS)}")
    return (224 if "_b0_" in variant else 260), (CLASSES_7 if "_7" in variant else CLASSES_8), "_mtl" in variant


def preprocess(rgb: np.ndarray, size: int) -> np.ndarray:
    """One RGB uint8 face crop -> (3, size, size) float32 network input, as the original prepares it."""
    x = cv2.resize(rgb, (size, size)).astype(np.float32) / 255.0
    return ((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def _rgb(encoded: bytes) -> np.ndarray | None:
    try:
        return decode_image(encoded)
    except ValueError:
        return None


def with_embedding_output(model_bytes: bytes) -> tuple[bytes, str]:
    """The ONNX model with its classifier's input added as a graph output, and that output's name."""
    import onnx
    model = onnx.load_from_string(model_bytes)
    last = model.graph.node[-1]
    if last.op_type != "Gemm" or last.output[0] != model.graph.output[0].name:
        raise ValueError(f"face_affect: expected the model to end in its classifier Gemm, found {last.op_type}")
    model.graph.output.append(onnx.helper.make_tensor_value_info(last.input[0], onnx.TensorProto.FLOAT, None))
    return model.SerializeToString(), last.input[0]


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class FaceAffect(BaseExtractor):
    kind: ClassVar[str] = "face_affect"
    version: ClassVar[str] = "1"
    modality: ClassVar[str] = "video"
    requires: ClassVar[tuple[str, ...]] = ("faces",)
    defaults: ClassVar[dict] = {"model": "enet_b0_8_best_vgaf", "weights_sha256": None, "device": "cpu",
                                "max_batch": 64}

    def __init__(self, **params):
        super().__init__(**params)
        self.size, self.classes, self.has_va = model_spec(self.params["model"])
        self.session = None

    def schema(self) -> pa.Schema:
        i32 = pa.list_(pa.int32())
        fields = [("emb", F32), ("emb_shape", i32), ("emb_times", F32), ("probs", F32), ("probs_shape", i32),
                  ("emb_mean", F32), ("emb_max", F32), *((f"affect_{c}", pa.float32()) for c in self.classes)]
        if self.has_va:
            fields += [("valence", F32), ("arousal", F32), ("valence_mean", pa.float32()),
                       ("arousal_mean", pa.float32())]
        return pa.schema(fields)

    def setup(self) -> None:
        path = fetch(f"hsemotion_{self.params['model']}", self.params["weights_sha256"])
        model, self.emb_name = with_embedding_output(path.read_bytes())
        self.session = session(model, self.resources.num_cpus, self.params["device"], self.kind)
        self.input_name = self.session.get_inputs()[0].name
        self.logits_name = self.session.get_outputs()[0].name

    def infer(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N, H, W, 3] RGB uint8 crops -> (logits [N, classes (+2)], embeddings [N, D]), in `max_batch` chunks."""
        logits, embs = [], []
        for start in range(0, len(faces), int(self.params["max_batch"])):
            batch = np.stack([preprocess(f, self.size) for f in faces[start:start + int(self.params["max_batch"])]])
            out, emb = self.session.run([self.logits_name, self.emb_name], {self.input_name: batch})
            logits.append(out)
            embs.append(emb.reshape(len(batch), -1))
        logits, embs = np.concatenate(logits).astype(np.float32), np.concatenate(embs).astype(np.float32)
        expected = len(self.classes) + 2 * self.has_va
        if logits.shape[1] != expected:
            raise ValueError(f"{self.kind}: model {self.params['model']} gave {logits.shape[1]} outputs, "
                             f"expected {expected}")
        return logits, embs

    def extract(self, item: dict) -> dict:
        if self.session is None:
            self.setup()
        faces, times = face_crops(item, _rgb)
        logits, emb = self.infer(faces)
        if not (np.isfinite(logits).all() and np.isfinite(emb).all()):
            raise ClipError("non_finite_output", f"{self.params['model']} gave NaN or infinite values")
        n_classes = len(self.classes)
        probs = softmax(logits[:, :n_classes])
        mean_probs = probs.mean(axis=0)
        out = {
            "emb": emb.ravel().tolist(), "emb_shape": list(emb.shape), "emb_times": times,
            "probs": probs.ravel().tolist(), "probs_shape": [len(probs), n_classes],
            "emb_mean": emb.mean(axis=0).tolist(), "emb_max": emb.max(axis=0).tolist(),
            **{f"affect_{c}": float(p) for c, p in zip(self.classes, mean_probs)},
        }
        if self.has_va:
            valence, arousal = logits[:, n_classes], logits[:, n_classes + 1]
            out.update({"valence": valence.tolist(), "arousal": arousal.tolist(),
                        "valence_mean": float(valence.mean()), "arousal_mean": float(arousal.mean())})
        return out
