"""mini-Xception (Arriaga et al. 2017) FER2013 emotion classifier in PyTorch, with weights read from the Keras h5.

The Keras 2 model (`fer_mini_xception_fer2013`, 58,423 params) takes a 64x64 grayscale face scaled to [-1, 1] and
outputs 7 softmax probabilities (`CLASSES`). The h5 is read with h5py only (no TensorFlow): `load_keras_h5` turns its
kernels into a PyTorch state dict. Two TensorFlow details matter for parity: BatchNorm eps is 1e-3, and a "same"
max-pool pads bottom/right first when the total pad is odd (`MaxPoolSame`).

Embedding: `forward` also returns the global average of the last residual module's output (`add_4`, 128 channels at
4x4), i.e. the features that the classifier conv (`conv2d_7`) reads: the last tensor before the 7-way head.
"""
from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
EMBED_DIM = 128
INPUT_SIZE = 64
BN_EPS = 1e-3   # Keras default, not PyTorch's 1e-5


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MaxPoolSame(nn.Module):
    """TensorFlow 'same' max-pool: output ceil(size/stride), extra padding (with -inf) at the bottom/right."""

    def __init__(self, kernel: int = 3, stride: int = 2):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def _pads(self, size: int) -> tuple[int, int]:
        total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pads(x.shape[-2])
        left, right = self._pads(x.shape[-1])
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)


class SeparableConv(nn.Sequential):
    """Keras SeparableConv2D (3x3 'same', no bias): depthwise 3x3 then pointwise 1x1, nothing in between."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)


class ResidualModule(nn.Module):
    """sep-BN-ReLU-sep-BN-maxpool, plus a 1x1 stride-2 conv-BN shortcut from the module input."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.sep1, self.bn1 = SeparableConv(cin, cout), _bn(cout)
        self.sep2, self.bn2 = SeparableConv(cout, cout), _bn(cout)
        self.pool = MaxPoolSame(3, 2)
        # 1x1 stride 2 'same' needs no padding: it reads pixels 0, 2, 4, ...
        self.shortcut, self.shortcut_bn = nn.Conv2d(cin, cout, 1, stride=2, bias=False), _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.pool(self.bn2(self.sep2(y)))
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """Input [N,1,64,64] in [-1,1] -> (logits [N,7] before softmax, embedding [N,128])."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), _bn(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), _bn(8)
        self.blocks = nn.ModuleList(ResidualModule(cin, cout) for cin, cout in [(8, 16), (16, 32), (32, 64), (64, 128)])
        self.head = nn.Conv2d(128, len(CLASSES), 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for module in self.blocks:
            x = module(x)
        embedding = x.mean(dim=(2, 3))
        logits = self.head(x).mean(dim=(2, 3))
        return logits, embedding


def keras_layer_map() -> dict[str, tuple[str, str]]:
    """Keras layer name -> (torch module prefix, layer kind). Keras numbers BatchNorms in creation order, where each
    residual module k (1-based) creates its shortcut BN (3k) before its two main-path BNs (3k+1, 3k+2)."""
    mapping = {"conv2d_1": ("conv1", "conv"), "batch_normalization_1": ("bn1", "bn"),
               "conv2d_2": ("conv2", "conv"), "batch_normalization_2": ("bn2", "bn"),
               "conv2d_7": ("head", "conv")}
    for k in range(1, 5):
        prefix = f"blocks.{k - 1}"
        mapping[f"separable_conv2d_{2 * k - 1}"] = (f"{prefix}.sep1", "separable")
        mapping[f"separable_conv2d_{2 * k}"] = (f"{prefix}.sep2", "separable")
        mapping[f"batch_normalization_{3 * k + 1}"] = (f"{prefix}.bn1", "bn")
        mapping[f"batch_normalization_{3 * k + 2}"] = (f"{prefix}.bn2", "bn")
        mapping[f"conv2d_{k + 2}"] = (f"{prefix}.shortcut", "conv")
        mapping[f"batch_normalization_{3 * k}"] = (f"{prefix}.shortcut_bn", "bn")
    return mapping


# Keras weight name -> (torch suffix, axes permutation from Keras layout to PyTorch layout).
_CONVERSIONS = {
    "conv": {"kernel": ("weight", (3, 2, 0, 1)), "bias": ("bias", None)},                 # HWIO -> OIHW
    "separable": {"depthwise_kernel": ("depthwise.weight", (2, 3, 0, 1)),                 # [kh,kw,in,1] -> [in,1,kh,kw]
                  "pointwise_kernel": ("pointwise.weight", (3, 2, 0, 1))},                # [1,1,in,out] -> [out,in,1,1]
    "bn": {"gamma": ("weight", None), "beta": ("bias", None),
           "moving_mean": ("running_mean", None), "moving_variance": ("running_var", None)},
}


def load_keras_h5(path: Path) -> dict[str, torch.Tensor]:
    """Read the Keras h5's `model_weights` into a state dict for `MiniXception` (load it with strict=True)."""
    state: dict[str, torch.Tensor] = {}
    mapping = keras_layer_map()
    with h5py.File(path, "r") as f:
        weights = f["model_weights"]
        for layer in (n.decode() if isinstance(n, bytes) else n for n in weights.attrs["layer_names"]):
            names = [n.decode() if isinstance(n, bytes) else n for n in weights[layer].attrs["weight_names"]]
            if not names:
                continue   # input, activation, pooling, add layers carry no weights
            if layer not in mapping:
                raise ValueError(f"{path}: unexpected weighted layer {layer!r}: not a mini-Xception h5")
            prefix, kind = mapping[layer]
            for name in names:
                short = name.rsplit("/", 1)[-1].split(":")[0]
                suffix, axes = _CONVERSIONS[kind][short]
                array = np.asarray(weights[layer][name], dtype=np.float32)
                array = np.ascontiguousarray(array.transpose(axes)) if axes else array
                state[f"{prefix}.{suffix}"] = torch.from_numpy(array)
            if kind == "bn":
                state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)
    return state


def load_model(path: Path, device: str = "cpu") -> MiniXception:
    """A ready-to-run (eval mode) network with the h5's weights, loaded strictly."""
    model = MiniXception()
    model.load_state_dict(load_keras_h5(path), strict=True)
    return model.eval().to(device)


def preprocess(gray_uint8: np.ndarray) -> torch.Tensor:
    """[N,64,64] uint8 grayscale faces -> [N,1,64,64] float32 in [-1,1] (x/255 - 0.5) * 2, as in training."""
    x = torch.from_numpy(np.ascontiguousarray(gray_uint8)).float().div(255.0)
    return ((x - 0.5) * 2.0).unsqueeze(1)
