"""Missing-modality-robust fusion after VAVL (Goncalves et al. 2023, "Versatile audio-visual learning for handling
single and multi modalities in emotion regression and classification tasks").

Modality-specific frame encoders feed shared layers (the same weights for audio and video, with a residual
connection and LayerNorm), mean-pooled over valid frames into one representation per modality. Three heads: audio,
video and audio-visual (on both representations); each row is answered by the head of the modalities it has.
Training drops one modality of a row with probability `modality_dropout` (so one model serves audio-only,
video-only and audio-visual input) and adds a reconstruction loss: each modality's mean input features are
reconstructed from its shared representation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.models.torch_common import FusionNet, TorchModel
from training.models.torch_inputs import Batch


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mask.unsqueeze(-1).to(h.dtype)
    return (h * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)


def mlp(dim_in: int, hidden: int, dim_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim_out))


class VAVLNet(FusionNet):
    def __init__(self, dims: dict[str, int], n_out: int, p: dict):
        super().__init__(dims, n_out)
        hidden, dropout = int(p["hidden"]), float(p["dropout"])
        self.modality_dropout = float(p["modality_dropout"])
        self.reconstruction_weight = float(p["reconstruction_weight"])
        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
                                       for m, d in dims.items()})
        self.shared = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.shared_norm = nn.LayerNorm(hidden)
        self.heads = nn.ModuleDict({"audio": mlp(hidden, hidden, n_out, dropout),
                                    "video": mlp(hidden, hidden, n_out, dropout),
                                    "both": mlp(2 * hidden, hidden, n_out, dropout)})
        self.reconstruct = nn.ModuleDict({m: mlp(hidden, hidden, d, dropout) for m, d in dims.items()})

    def represent(self, batch: Batch, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(shared representation [B, hidden], mean normalised input [B, D]) of modality m."""
        x = self.inputs(batch, m)
        h = self.encoders[m](x)
        h = self.shared_norm(h + self.shared(h))
        return masked_mean(h, batch.mask[m]), masked_mean(x, batch.mask[m])

    def route(self, reps: dict[str, torch.Tensor], has_a: torch.Tensor, has_v: torch.Tensor) -> torch.Tensor:
        """Each row answered by the head of the modalities it has (video head when it has neither)."""
        both = self.heads["both"](torch.cat([reps["audio"], reps["video"]], dim=1))
        audio, video = self.heads["audio"](reps["audio"]), self.heads["video"](reps["video"])
        return torch.where((has_a & has_v)[:, None], both, torch.where(has_a[:, None], audio, video))

    def forward(self, batch: Batch) -> torch.Tensor:
        reps = {m: self.represent(batch, m)[0] for m in ("audio", "video")}
        return self.route(reps, batch.present["audio"], batch.present["video"])

    def loss(self, batch: Batch, criterion) -> torch.Tensor:
        enc = {m: self.represent(batch, m) for m in ("audio", "video")}
        has_a, has_v = batch.present["audio"], batch.present["video"]
        # modality dropout: a row with both modalities loses one of them (each equally likely) with probability p
        drop = (torch.rand(len(has_a), device=has_a.device) < self.modality_dropout) & has_a & has_v
        drop_audio = drop & (torch.rand(len(has_a), device=has_a.device) < 0.5)
        out = self.route({m: r for m, (r, _) in enc.items()}, has_a & ~drop_audio, has_v & ~(drop & ~drop_audio))
        loss = criterion(out, batch.y)
        for m, (rep, target) in enc.items():
            present = batch.present[m]
            if present.any():
                rec = F.mse_loss(self.reconstruct[m](rep[present]), target[present].detach())
                loss = loss + self.reconstruction_weight * rec
        return loss


class VAVLModel(TorchModel):
    name = "vavl"
    default_features = {"audio": {"audioset_embedding": ["emb"]}, "video": {"fer_embedding": ["emb"]}}
    defaults = {
        "modality_dropout": 0.5,        # probability that a training row loses its audio or its video
        "reconstruction_weight": 0.5,   # weight of the unimodal reconstruction loss
    }

    def build(self, dims: dict[str, int], n_out: int) -> VAVLNet:
        return VAVLNet(dims, n_out, self.params)


def vavl_regressor(params: dict, targets: list[str]) -> VAVLModel:
    """Registry factory for valence/arousal regression (CCC loss)."""
    return VAVLModel({**params, "target": "dims", "dims": list(targets)}, [])
