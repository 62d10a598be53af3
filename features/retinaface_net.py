"""RetinaFace networks: biubug6's MobileNet-0.25 ("Face-Detector-1MB") and ResNet-50 (Pytorch_Retinaface).

All reuse retinaface-pytorch's blocks (`retinaface.net` conv helpers, FPN, SSH and `retinaface.network`'s
heads and forward). Only the MobileNetV1-0.25 backbone is built here. Each `NetSpec` carries what must match
the training recipe of its weights: anchors and input normalisation.
"""
from __future__ import annotations

import io
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from retinaface.net import FPN, SSH, conv_bn, conv_dw
from retinaface.network import RetinaFace
from torch import nn
from torchvision.models import _utils

from pipelines.weights import fetch


class MobileNetRetinaFace(RetinaFace):
    """biubug6 Face-Detector-1MB `RetinaFace(cfg_mnet)`: same module names as its state dict (300 keys).

    The parent's `__init__` only builds ResNet-50, so it is bypassed; its head builders and forward are reused.
    """

    def __init__(self) -> None:
        nn.Module.__init__(self)
        # MobileNetV1 x0.25; stride-8/16/32 stage outputs with 64/128/256 channels feed the FPN.
        stages = OrderedDict(
            stage1=nn.Sequential(conv_bn(3, 8, 2), conv_dw(8, 16, 1), conv_dw(16, 32, 2), conv_dw(32, 32, 1),
                                 conv_dw(32, 64, 2), conv_dw(64, 64, 1)),
            stage2=nn.Sequential(conv_dw(64, 128, 2), *(conv_dw(128, 128, 1) for _ in range(5))),
            stage3=nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1)),
        )
        self.body = _utils.IntermediateLayerGetter(nn.Sequential(stages), {"stage1": 1, "stage2": 2, "stage3": 3})
        self.fpn = FPN([64, 128, 256], 64)
        self.ssh1, self.ssh2, self.ssh3 = SSH(64, 64), SSH(64, 64), SSH(64, 64)
        self.ClassHead = self._make_class_head(fpn_num=3, in_channels=64, anchor_num=2)
        self.BboxHead = self._make_bbox_head(fpn_num=3, in_channels=64, anchor_num=2)
        self.LandmarkHead = self._make_landmark_head(fpn_num=3, in_channels=64, anchor_num=2)
        # The original net.py computes a leaky slope but always applies plain ReLU. retinaface-pytorch's
        # conv_dw defaults to 0.1 and its FPN/SSH hard-code 0.1 for <= 64 channels: a slope of 0 is exactly ReLU.
        for module in self.modules():
            if isinstance(module, nn.LeakyReLU):
                module.negative_slope = 0.0


def resnet50_retinaface() -> RetinaFace:
    """biubug6's `RetinaFace(cfg_re50)`: retinaface-pytorch (ternaus' port of it) builds the same modules under the
    same names (torchvision resnet50 body cut after layer4, 256-channel FPN/SSH with plain ReLU, 2 anchors/cell)."""
    with warnings.catch_warnings():   # it passes torchvision's deprecated `pretrained=False`; weights come later
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        return RetinaFace(name="Resnet50", pretrained=False, return_layers={"layer2": 1, "layer3": 2, "layer4": 3},
                          in_channels=256, out_channels=256)


@dataclass(frozen=True)
class NetSpec:
    build: Callable[[], nn.Module]
    weights: str                        # pipelines.weights registry name
    min_sizes: tuple[tuple[int, int], ...]
    steps: tuple[int, ...]
    variance: tuple[float, float]
    bgr: bool                           # channel order the network was trained on
    mean: tuple[float, float, float]    # per input channel, in 0..255 pixel units
    std: tuple[float, float, float]


NETS: dict[str, NetSpec] = {
    # biubug6 changed the anchors of its mobile model (README); Pytorch_Retinaface's 16..512 are wrong here.
    "mnet025": NetSpec(MobileNetRetinaFace, "retinaface_mnet025_biubug6", ((10, 20), (32, 64), (128, 256)),
                       (8, 16, 32), (0.1, 0.2), bgr=True, mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0)),
    # Pytorch_Retinaface cfg_re50 and detect.py: BGR minus (104, 117, 123), no scaling.
    "resnet50": NetSpec(resnet50_retinaface, "retinaface_resnet50_biubug6", ((16, 32), (64, 128), (256, 512)),
                        (8, 16, 32), (0.1, 0.2), bgr=True, mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0)),
    # ternaus' retraining (no published sha256): RGB through albumentations' Normalize (ImageNet mean/std on x/255).
    "resnet50_ternaus": NetSpec(resnet50_retinaface, "retinaface_resnet50_ternaus", ((16, 32), (64, 128), (256, 512)),
                                (8, 16, 32), (0.1, 0.2), bgr=False, mean=(123.675, 116.28, 103.53),
                                std=(58.395, 57.12, 57.375)),
}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A torch checkpoint, or the legacy one-file zip around one (ternaus' release asset, as torch.hub reads it),
    with the DataParallel `module.` prefix removed as biubug6's detect.py `load_model` does (Resnet50_Final.pth
    was trained on 4 GPUs and stores every key as `module.<name>`)."""
    state = None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) == 1 and not members[0].is_dir():
                state = torch.load(io.BytesIO(archive.read(members[0])), map_location="cpu", weights_only=True)
    if state is None:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_network(model: str) -> tuple[nn.Module, NetSpec]:
    """The named network in eval mode with its official weights (strict load); raises WeightsUnavailable."""
    if model not in NETS:
        raise ValueError(f"unknown RetinaFace model {model!r}; known: {sorted(NETS)}")
    spec = NETS[model]
    net = spec.build()
    net.load_state_dict(read_state_dict(fetch(spec.weights)), strict=True)
    return net.eval(), spec
