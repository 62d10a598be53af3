"""Attention-guided factorized bilinear pooling (Zhang, Wang & Du 2019, "Deep fusion: an attention guided
factorized bilinear pooling for audio-video emotion recognition").

Audio: a time-frequency map (log-mel [n_mels, frames]) through a small CNN; attention pools its time-frequency
cells. Video: per-frame face embeddings through a frame layer; attention pools the frames. Fusion (FBP):
z = SumPool_k(U^T a * V^T v) with o outputs of k factors each, power normalisation sign(z)·sqrt|z|,
L2 normalisation, dropout, then a linear classifier.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.models.torch_common import AttentionPool, FusionNet, TorchModel
from training.models.torch_inputs import Batch


class AudioCNN(nn.Module):
    """3x3 conv blocks over [B, 1, n_mels, T]. Padded frames are zeroed after every block, so a clip's cells are
    the same whatever it is padded to."""

    def __init__(self, channels: list[int]):
        super().__init__()
        ins = [1] + list(channels[:-1])
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for i, o in zip(ins, channels))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # [B, T, F] -> [B, 1, F, T]; channels-last makes CPU max-pooling several times faster
        h = x.transpose(1, 2).unsqueeze(1).contiguous(memory_format=torch.channels_last)
        m = mask[:, None, None, :].to(h.dtype)
        for i, conv in enumerate(self.convs):
            h = torch.relu(conv(h)) * m
            if i < len(self.convs) - 1:
                # ceil_mode keeps an odd last frame; values are >= 0 after ReLU, so a zeroed pad never wins the max
                h = F.max_pool2d(h, 2, ceil_mode=True)
                m = F.max_pool2d(m, (1, 2), ceil_mode=True)
        cells = h.flatten(2).transpose(1, 2)               # [B, F'*T', C]
        cell_mask = m.expand(-1, -1, h.shape[2], -1).flatten(1) > 0
        return cells, cell_mask


class FactorizedBilinearPooling(nn.Module):
    def __init__(self, dim_a: int, dim_v: int, factors: int, out: int, dropout: float):
        super().__init__()
        self.factors, self.out = factors, out
        self.proj_a = nn.Linear(dim_a, factors * out)
        self.proj_v = nn.Linear(dim_v, factors * out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        joint = self.proj_a(a) * self.proj_v(v)
        z = joint.view(-1, self.out, self.factors).sum(dim=2)
        eps = 1e-6      # keeps the square root's gradient finite at 0
        z = torch.sign(z) * (torch.sqrt(z.abs() + eps) - eps ** 0.5)
        return self.dropout(F.normalize(z, dim=1))


class FBPNet(FusionNet):
    def __init__(self, dims: dict[str, int], n_out: int, p: dict):
        super().__init__(dims, n_out)
        hidden, channels = int(p["hidden"]), list(p["channels"])
        self.cnn = AudioCNN(channels)
        self.audio_pool = AttentionPool(channels[-1], hidden)
        self.frame = nn.Sequential(nn.Linear(dims["video"], hidden), nn.ReLU())
        self.video_pool = AttentionPool(hidden, hidden)
        self.fbp = FactorizedBilinearPooling(channels[-1], hidden, int(p["factors"]), int(p["fused"]),
                                             float(p["dropout"]))
        self.classifier = nn.Linear(int(p["fused"]), n_out)

    def forward(self, batch: Batch) -> torch.Tensor:
        cells, cell_mask = self.cnn(self.inputs(batch, "audio"), batch.mask["audio"])
        a = self.audio_pool(cells, cell_mask)
        v = self.video_pool(self.frame(self.inputs(batch, "video")), batch.mask["video"])
        return self.classifier(self.fbp(a, v))


class FBPModel(TorchModel):
    name = "fbp"
    # audio: a spectrogram (frequency x time, through the CNN); video: per-frame face embeddings
    default_features = {"audio": {"logmel": ["logmel"]}, "video": {"fer_embedding": ["emb"]}}
    defaults = {
        "channels": [16, 32, 32],   # audio CNN blocks (2x2 max-pool between blocks)
        "factors": 4,               # k: factors summed per fused output
        "fused": 64,                # o: fused dimension
        "max_frames": 64,           # the CNN dominates the cost; 64 frames of a 2.5 s clip lose no accuracy on the demo
    }

    def build(self, dims: dict[str, int], n_out: int) -> FBPNet:
        return FBPNet(dims, n_out, self.params)
