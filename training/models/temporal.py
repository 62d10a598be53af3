"""Recurrent model-level fusion (after Schoneveld, Othmani & Abdelkawy 2021, "Leveraging recent advances in deep
learning for audio-visual emotion recognition"): one GRU per modality over its per-frame / per-window embeddings,
each summarised by attention over its states (or its final states), concatenated, then an MLP.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipelines.errors import BadParams
from training.models.torch_common import AttentionPool, FusionNet, TorchModel
from training.models.torch_inputs import Batch


class GRUEncoder(nn.Module):
    """A (bi)GRU over the valid frames only (packed), pooled to one vector; zeros for a missing modality."""

    def __init__(self, dim: int, hidden: int, layers: int, bidirectional: bool, pooling: str, dropout: float):
        super().__init__()
        if pooling not in ("attention", "last"):
            raise BadParams(f"pooling must be 'attention' or 'last', not {pooling!r}")
        self.gru = nn.GRU(dim, hidden, layers, batch_first=True, bidirectional=bidirectional,
                          dropout=dropout if layers > 1 else 0.0)
        self.directions = 2 if bidirectional else 1
        self.out_dim = hidden * self.directions
        self.pool = AttentionPool(self.out_dim, hidden) if pooling == "attention" else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed, h_n = self.gru(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        if self.pool is not None:
            states, _ = pad_packed_sequence(packed, batch_first=True, total_length=x.shape[1])
            pooled = self.pool(states, mask)
        else:   # last layer's final state of each direction
            pooled = h_n[-self.directions:].transpose(0, 1).reshape(x.shape[0], -1)
        return pooled * mask.any(dim=1, keepdim=True)


class TemporalNet(FusionNet):
    def __init__(self, dims: dict[str, int], n_out: int, p: dict):
        super().__init__(dims, n_out)
        hidden, dropout = int(p["hidden"]), float(p["dropout"])
        self.encoders = nn.ModuleDict({m: GRUEncoder(d, hidden, int(p["layers"]), bool(p["bidirectional"]),
                                                     p["pooling"], dropout) for m, d in dims.items()})
        width = sum(e.out_dim for e in self.encoders.values())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, n_out))

    def forward(self, batch: Batch) -> torch.Tensor:
        states = [enc(self.inputs(batch, m), batch.mask[m]) for m, enc in self.encoders.items()]
        return self.head(torch.cat(states, dim=1))


class TemporalModel(TorchModel):
    name = "temporal"
    # per-window audio embeddings, per-frame face embeddings; either modality alone works too
    default_features = {"audio": {"audioset_embedding": ["emb"]}, "video": {"fer_embedding": ["emb"]}}
    required = ()
    defaults = {
        "layers": 1,
        "bidirectional": True,
        "pooling": "attention",     # or "last": the GRUs' final states
    }

    def build(self, dims: dict[str, int], n_out: int) -> TemporalNet:
        return TemporalNet(dims, n_out, self.params)


def temporal_regressor(params: dict, targets: list[str]) -> TemporalModel:
    """Registry factory for valence/arousal regression (CCC loss)."""
    return TemporalModel({**params, "target": "dims", "dims": list(targets)}, [])
