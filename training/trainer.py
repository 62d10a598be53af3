"""The one training loop of aver's torch networks: the fusion models (training/models/torch_common.py) and the
pre-trained emotion CNNs (training/pretrain.py).

AdamW; each epoch a fresh permutation of the training rows from a generator seeded once (`seed`), in batches of
`batch_size` (a last batch of one row is skipped: batch statistics need two); optional gradient clipping; after
each epoch an optional hook (e.g. BatchNorm recalibration) and an optional validation that returns at least
`valid_loss`. The weights of the epoch with the lowest validation loss are kept; training stops after `patience`
epochs without a lower one. Without validation every epoch runs and the last weights are kept.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
from typing import Callable

import numpy as np
import torch
from torch import nn

log = logging.getLogger("aver.trainer")

BatchLoss = Callable[[np.ndarray, np.random.Generator], torch.Tensor]   # (row positions, rng) -> mean loss


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with n torch CPU threads, then restore: tiny ops lose more to thread overhead than they gain."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse class frequency ("balanced") as float32; a class absent from training weighs 0. (Computed in float64
    and rounded once: the same float32 numbers as computing in float32, since a quotient rounded to 53 bits and
    then to 24 is rounded correctly.)"""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weight = np.where(counts > 0, counts.sum() / (max(1, (counts > 0).sum()) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weight, dtype=torch.float32)


def train_loop(net: nn.Module, n_rows: int, batch_loss: BatchLoss, cfg: dict,
               validate: Callable[[], dict] | None = None, after_epoch: Callable[[], None] | None = None,
               clip_grad: float | None = None) -> tuple[list[dict], int]:
    """Train `net` in place (left in eval mode); `cfg` gives epochs, batch_size, lr, weight_decay, patience, seed.
    Returns the per-epoch history ({epoch, train_loss, **validation}) and the epoch whose weights were kept."""
    opt = torch.optim.AdamW(net.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    rng = np.random.default_rng(int(cfg["seed"]))
    size = int(cfg["batch_size"])
    history, best, best_state, best_epoch, stale = [], math.inf, None, 0, 0
    for epoch in range(1, int(cfg["epochs"]) + 1):
        net.train()
        order, total = rng.permutation(n_rows), 0.0
        for start in range(0, n_rows, size):
            idx = order[start:start + size]
            if len(idx) < 2:
                continue
            loss = batch_loss(idx, rng)
            opt.zero_grad()
            loss.backward()
            if clip_grad:
                nn.utils.clip_grad_norm_(net.parameters(), clip_grad)
            opt.step()
            total += loss.item() * len(idx)
        if after_epoch is not None:
            after_epoch()
        row = {"epoch": epoch, "train_loss": total / max(1, n_rows)}
        scores = validate() if validate is not None else None
        if scores is not None:
            row.update(scores)
            if row["valid_loss"] < best - 1e-4:
                best, best_state, best_epoch, stale = row["valid_loss"], copy.deepcopy(net.state_dict()), epoch, 0
            else:
                stale += 1
        history.append(row)
        log.debug("epoch %d: %s", epoch, ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "epoch"))
        if scores is not None and stale >= int(cfg["patience"]):
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return history, best_epoch or len(history)
