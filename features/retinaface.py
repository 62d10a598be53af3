"""Batched RetinaFace face detection: boxes, scores and 5 landmarks per frame, in original frame pixels.

Pre- and post-processing follow biubug6's detect.py: optional OpenCV bilinear resize of the float image,
per-model normalisation, prior decoding with retinaface-pytorch's `priorbox`/`decode`/`decode_landm`,
then score > 0.02, top 5000, NMS, keep 750, and finally score >= `score_threshold`.
"""
from __future__ import annotations

from collections import defaultdict

import cv2
import numpy as np
import torch
from retinaface.box_utils import decode, decode_landm
from retinaface.prior_box import priorbox
from torchvision.ops import nms

from features.onnx_runtime import OnnxNet, check_runtime, exported, uses_onnx
from features.retinaface_net import load_network
from pipelines.weights import fetch, sha256_of

# detect.py's candidate filtering before the user's score threshold (confidence_threshold, top_k, keep_top_k).
PRE_NMS_SCORE = 0.02
PRE_NMS_TOP_K = 5000
POST_NMS_KEEP = 750
COLUMNS = ["x1", "y1", "x2", "y2", "score"] + [f"l{a}{k}" for k in range(1, 6) for a in "xy"]


class RetinaFaceDetector:
    def __init__(self, model: str = "mnet025", device: str = "cpu", score_threshold: float = 0.5,
                 nms_threshold: float = 0.4, max_side: int | None = 640, batch_size: int = 16,
                 runtime: str = "auto", num_threads: int | None = None):
        """`runtime`: features.onnx_runtime (auto = ONNX Runtime on CPU); `num_threads`: ORT's intra-op threads
        (default: torch's, which the engines pin to the worker's CPU share)."""
        check_runtime("retinaface", runtime)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
        if (max_side is not None and max_side < 1) or batch_size < 1:
            raise ValueError(f"max_side must be None or >= 1 and batch_size >= 1 (got {max_side}, {batch_size})")
        self.model, self.score_threshold, self.nms_threshold = model, score_threshold, nms_threshold
        self.max_side, self.batch_size = max_side, batch_size
        self.device = torch.device(device)
        net, self.spec = load_network(model)
        self.net = net.to(self.device)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        self._priors: dict[tuple[int, int], torch.Tensor] = {}
        self.forward = self.net
        if uses_onnx(runtime, device):
            axes = {"image": {0: "batch", 2: "height", 3: "width"},
                    **{name: {0: "batch", 1: "anchors"} for name in ("loc", "conf", "landms")}}
            path = exported(f"retinaface_{model}", sha256_of(fetch(self.spec.weights)), self.net,
                            (torch.zeros(1, 3, 64, 64),), ["image"], ["loc", "conf", "landms"], axes)
            self.forward = OnnxNet(path, num_threads or torch.get_num_threads(), "retinaface", device)

    def detect(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """frames: RGB uint8 HxWx3 (any sizes; float 0..255 is accepted too). Returns per frame an (n, 15)
        float32 array [x1, y1, x2, y2, score, lx1, ly1, ..., lx5, ly5] in ORIGINAL frame pixels, sorted by
        score desc."""
        for i, frame in enumerate(frames):
            if frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
                raise ValueError(f"frame {i}: expected an RGB HxWx3 array, got shape {frame.shape}")
        # Frames of one size share a forward pass; sizes are never padded together (batching = float rounding only).
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, frame in enumerate(frames):
            by_size[frame.shape[:2]].append(i)
        results: list[np.ndarray] = [None] * len(frames)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                scale = self._scale(frames[chunk[0]].shape[:2])
                images = np.stack([self._resized(frames[i], scale) for i in chunk])
                for i, detections in zip(chunk, self._detect_batch(images, scale)):
                    results[i] = detections
        return results

    def _scale(self, size: tuple[int, int]) -> float:
        long_side = max(size)
        return self.max_side / long_side if self.max_side is not None and long_side > self.max_side else 1.0

    @staticmethod
    def _resized(frame: np.ndarray, scale: float) -> np.ndarray:
        # detect.py resizes the float image (no uint8 rounding), exactly as done here.
        image = frame.astype(np.float32)
        return image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale,
                                                     interpolation=cv2.INTER_LINEAR)

    def _detect_batch(self, images: np.ndarray, scale: float) -> list[np.ndarray]:
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2)
        if self.spec.bgr:
            x = x.flip(1)
        x = (x - self._mean) / self._std
        with torch.inference_mode():
            loc, logits, landms = self.forward(x)
        scores = logits.softmax(-1)[..., 1]
        height, width = images.shape[1:3]
        priors = self._priors_for(height, width)
        to_frame = torch.tensor([width, height] * 5, dtype=torch.float32, device=self.device)
        return [self._postprocess(loc[k], scores[k], landms[k], priors, to_frame, scale) for k in range(len(images))]

    def _priors_for(self, height: int, width: int) -> torch.Tensor:
        if (height, width) not in self._priors:
            self._priors[height, width] = priorbox([list(m) for m in self.spec.min_sizes], list(self.spec.steps),
                                                   clip=False, image_size=(height, width)).to(self.device)
        return self._priors[height, width]

    def _postprocess(self, loc: torch.Tensor, scores: torch.Tensor, landms: torch.Tensor, priors: torch.Tensor,
                     to_frame: torch.Tensor, scale: float) -> np.ndarray:
        """detect.py's filtering; only the candidates (score > PRE_NMS_SCORE, a few hundred of the tens of
        thousands of anchors) are decoded: the same element-wise arithmetic, so the same bytes, at a fraction of
        the cost (decoding every anchor cost more CPU than the network itself)."""
        candidates = torch.nonzero(scores > PRE_NMS_SCORE).squeeze(1)
        candidates = candidates[scores[candidates].topk(min(PRE_NMS_TOP_K, len(candidates))).indices]
        boxes = decode(loc[candidates], priors[candidates], self.spec.variance) * to_frame[:4] / scale
        keep = nms(boxes, scores[candidates], self.nms_threshold)[:POST_NMS_KEEP]
        keep = keep[scores[candidates[keep]] >= self.score_threshold]
        kept = candidates[keep]         # anchor indices of the faces kept
        marks = decode_landm(landms[kept], priors[kept], self.spec.variance) * to_frame / scale
        return torch.cat([boxes[keep], scores[kept, None], marks], dim=1).cpu().numpy()
