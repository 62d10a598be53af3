"""Pre-training of the emotion CNNs (features/emotion_cnn.py) on a declared set of speakers, from the store only.

`pretrain(params, "face" | "speech")` reads the `pretrain.face_cnn` / `pretrain.speech_cnn` block of params.yaml
(see docs/pretrain.md), loads the upstream feature set (`faces` crops or `logmel`) of the declared corpora, keeps the
declared speakers ONLY, holds out whole speakers for validation, trains with a class-weighted loss and early
stopping on the validation loss, and writes the checkpoint directory (`out`) that the embedding extractors read.

Leakage guard: a speaker the CNN saw must never be a test (or validation) speaker of the evaluation. Before
training, `check_pretrain_leakage` builds the evaluation folds from the `train:` block exactly as the train stage
does (training.splits.make_folds over the labelled manifest clips) and raises `SpeakerOverlapError` on any overlap.
With leave-one-speaker-out on the pre-training corpus, the evaluation must list the pre-training speakers under
`train.exclude_speakers` (it then uses only the other speakers of that corpus); `without_excluded_speakers` is that
filter, for the train stage to apply to its table (docs/pretrain.md).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from features.emotion_cnn import build_net, read_checkpoint_info, save_checkpoint, window_mask
from pipelines.config import load_params, paths
from pipelines.errors import BadParams, UnknownName
from pipelines.manifest import read_manifest
from pipelines.store.versions import reading_store
from training.trainer import class_weights, torch_threads, train_loop
from training.pretrain_samples import (Samples, augment_faces, face_samples, load_clips, logmel_statistics,
                                       speech_samples, split_speakers)
from training.splits import Fold, SpeakerOverlapError, assert_disjoint, make_folds, resolve_labels, select_labels

log = logging.getLogger("aver.pretrain")

SECTIONS = {"face": "face_cnn", "speech": "speech_cnn"}
COMMON = {
    "corpora": [],              # corpora whose store rows are read
    "speakers": None,           # "<corpus>/<speaker>" list; null = every speaker of `corpora`
    "labels": "all",            # label set (as train.labels): all | four_class | a list
    "epochs": 15, "lr": 1e-3, "batch_size": 32, "seed": 0, "weight_decay": 1e-4,
    "patience": 4,              # epochs without a lower validation loss before stopping
    "valid_speakers": 1,        # whole speakers held out for early stopping (0 = none: train all epochs)
    "embed_dim": 128, "width": 16, "dropout": 0.3,
    "threads": 2,               # torch CPU threads while training
}
DEFAULTS = {
    "face": {**COMMON, "feature_set": "faces", "input_size": 64, "grayscale": True, "frames_per_clip": 8,
             "out": "models/face_cnn"},
    "speech": {**COMMON, "feature_set": "logmel", "window": 100, "hop": 50, "out": "models/speech_cnn"},
}


# ---- configuration -------------------------------------------------------------------------------------------
def pretrain_config(params: dict, which: str) -> dict:
    if which not in SECTIONS:
        raise BadParams(f"pretrain: choose 'face' or 'speech', not {which!r}")
    section = SECTIONS[which]
    cfg = (params.get("pretrain") or {}).get(section)
    if cfg is None:
        raise UnknownName(f"params.yaml has no pretrain.{section} block")
    unknown = set(cfg) - set(DEFAULTS[which])
    if unknown:
        raise BadParams(f"pretrain.{section}: unknown keys {sorted(unknown)}; known: {sorted(DEFAULTS[which])}")
    cfg = {**DEFAULTS[which], **cfg}
    if not cfg["corpora"]:
        raise BadParams(f"pretrain.{section}: list the pre-training corpora under `corpora`")
    if cfg["speakers"] is not None:
        foreign = [s for s in cfg["speakers"] if s.split("/", 1)[0] not in cfg["corpora"]]
        if foreign:
            raise BadParams(f"pretrain.{section}: speakers {foreign} are not of the corpora {cfg['corpora']} "
                             "(speakers are named '<corpus>/<speaker>')")
    return cfg


def declared_speakers(cfg: dict, manifests: Path) -> list[str]:
    """The pre-training speakers: the declared list, or every speaker of the pre-training corpora."""
    if cfg["speakers"] is not None:
        return sorted(set(cfg["speakers"]))
    return sorted({s for c in cfg["corpora"] for s in read_manifest(manifests, c).column("speaker").to_pylist()
                   if s is not None})


# ---- leakage guard ------------------------------------------------------------------------------------------
def without_excluded_speakers(df: pd.DataFrame, eval_cfg: dict) -> pd.DataFrame:
    """Rows of speakers not listed in the evaluation's `exclude_speakers` (the pre-training speakers)."""
    excluded = set(eval_cfg.get("exclude_speakers") or [])
    return df[~df["speaker"].isin(excluded)].reset_index(drop=True)


def evaluation_config(eval_cfg: dict) -> dict:
    """The `train:` block with the train stage's own defaults filled in (corpora, labels, split)."""
    from training.run import DEFAULTS as TRAIN_DEFAULTS     # imported here: it pulls in every model family
    return {**TRAIN_DEFAULTS, **eval_cfg}


def evaluation_clips(eval_cfg: dict, manifests: Path) -> tuple[pd.DataFrame, list[str]]:
    """The labelled clips the train stage would evaluate (one row per clip, from the manifests) and the classes."""
    cfg = evaluation_config(eval_cfg)
    columns = ["clip_id", "corpus", "speaker", "emotion", "split"]
    df = pd.concat([read_manifest(manifests, c).select(columns).to_pandas() for c in cfg["corpora"]],
                   ignore_index=True)
    df = without_excluded_speakers(df, cfg)
    classes = resolve_labels(cfg["labels"], df["emotion"], cfg["label_sets"])
    return select_labels(df, classes), classes


def check_pretrain_leakage(pretrain_speakers, eval_cfg: dict, manifests: Path) -> list[Fold]:
    """Build the evaluation folds as the train stage does; raise `SpeakerOverlapError` if a pre-training speaker
    is a test or validation speaker of any fold. Returns the folds (empty when nothing would be evaluated)."""
    cfg = evaluation_config(eval_cfg)
    clips, classes = evaluation_clips(cfg, Path(manifests))
    if clips.empty:
        return []
    folds = make_folds(clips, cfg["split"], clips["emotion"].map({c: i for i, c in enumerate(classes)}).to_numpy())
    try:
        assert_disjoint(pretrain_speakers, folds)
    except SpeakerOverlapError as e:
        evaluated = set().union(*(f.test_speakers | f.valid_speakers for f in folds))
        shared = sorted(set(map(str, pretrain_speakers)) & evaluated)
        raise SpeakerOverlapError(
            f"pre-training leakage: the CNN pre-training speakers {shared} would be evaluated (test or validation) "
            f"by the train stage (split {cfg['split'].get('kind', 'loso')} on {list(cfg['corpora'])}). Add them to "
            "train.exclude_speakers, so the evaluation uses only the other speakers, or pre-train on other "
            "speakers or corpora.") from e
    return folds


def forward(net: nn.Module, samples: Samples, idx: np.ndarray, x: np.ndarray | None = None):
    """(logits, embeddings) of the samples `idx` (inputs `x` replace theirs, e.g. augmented faces)."""
    x = torch.from_numpy(np.ascontiguousarray(samples.x[idx] if x is None else x))
    if samples.lengths is None:
        return net(x)
    return net(x, window_mask(samples.lengths[idx], x.shape[-1]))


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, samples: Samples, batch_size: int) -> None:
    """BatchNorm running statistics recomputed for the current weights over the training samples ("precise BN"):
    with a few steps per epoch, the moving averages lag behind fast-changing weights and eval mode mispredicts."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None           # cumulative average over this pass
    net.train()
    for start in range(0, len(samples.y), batch_size):
        forward(net, samples, np.arange(start, min(start + batch_size, len(samples.y))))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


@torch.no_grad()
def evaluate(net: nn.Module, samples: Samples, criterion) -> tuple[float, float]:
    """(loss, UAR over the classes present) of the samples, in eval mode."""
    net.eval()
    logits = torch.cat([forward(net, samples, np.arange(i, min(i + 256, len(samples.y))))[0]
                        for i in range(0, len(samples.y), 256)])
    pred = logits.argmax(1).numpy()
    recalls = [np.mean(pred[samples.y == c] == c) for c in np.unique(samples.y)]
    return float(criterion(logits, torch.from_numpy(samples.y))), float(np.mean(recalls))


def train_net(net: nn.Module, train: Samples, valid: Samples | None, cfg: dict,
              n_classes: int) -> tuple[list[dict], int]:
    """Class-weighted cross-entropy with the shared loop (training/trainer.py): faces are augmented per batch, and
    BatchNorm statistics recomputed after every epoch. (history, best epoch)"""
    criterion = nn.CrossEntropyLoss(weight=class_weights(train.y, n_classes))

    def batch_loss(idx: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        x = augment_faces(train.x[idx], rng) if train.lengths is None else None
        return criterion(forward(net, train, idx, x)[0], torch.from_numpy(train.y[idx]))

    def validate() -> dict:
        return dict(zip(("valid_loss", "valid_uar"), evaluate(net, valid, criterion)))

    return train_loop(net, len(train.y), batch_loss, cfg, validate if valid is not None else None,
                      after_epoch=lambda: recalibrate_batchnorm(net, train, int(cfg["batch_size"])))


def architecture(which: str, cfg: dict, n_classes: int, samples: Samples) -> dict:
    arch = {"net": which, "n_classes": n_classes, "embed_dim": int(cfg["embed_dim"]), "width": int(cfg["width"]),
            "dropout": float(cfg["dropout"])}
    if which == "face":
        return {**arch, "input_size": int(cfg["input_size"]), "grayscale": bool(cfg["grayscale"])}
    return {**arch, "n_mels": int(samples.x.shape[1]), "window": int(cfg["window"]), "hop": int(cfg["hop"])}


# ---- the stage ----------------------------------------------------------------------------------------------
def pretrain(params: dict, which: str) -> Path:
    """Train the `which` ("face" | "speech") CNN on its declared pre-training speakers; returns the checkpoint dir."""
    cfg = pretrain_config(params, which)
    p = paths(params)
    speakers = declared_speakers(cfg, p["manifests"])
    if params.get("train") is not None:
        check_pretrain_leakage(speakers, params["train"], p["manifests"])
    store = reading_store(p)
    df, classes = load_clips(store, cfg, which, speakers, (params.get("train") or {}).get("label_sets") or {})
    y = df["emotion"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    make = face_samples if which == "face" else speech_samples
    samples = make(df, cfg["feature_set"], cfg, y)
    train_speakers, valid_speakers = split_speakers(sorted(set(df["speaker"])), int(cfg["valid_speakers"]),
                                                    int(cfg["seed"]))
    train = samples.take(np.flatnonzero(np.isin(samples.speakers, train_speakers)))
    valid = samples.take(np.flatnonzero(np.isin(samples.speakers, valid_speakers))) if valid_speakers else None
    arch = architecture(which, cfg, len(classes), samples)
    log.info("pretrain %s: %d clips, %d samples (%d train, %d valid), classes %s", which, len(df), len(samples.y),
             len(train.y), 0 if valid is None else len(valid.y), classes)
    with torch.random.fork_rng(devices=[]), torch_threads(cfg["threads"]):
        torch.manual_seed(int(cfg["seed"]))
        net = build_net(arch)
        if which == "speech":
            net.set_normalisation(*logmel_statistics(train))
        history, best_epoch = train_net(net, train, valid, cfg, len(classes))
    log.info("pretrain %s: kept epoch %d of %d (%s)", which, best_epoch, len(history),
             ", ".join(f"{k} {v:.3f}" for k, v in history[best_epoch - 1].items() if k != "epoch"))
    upstream = {c: store.info(cfg["feature_set"], c) for c in cfg["corpora"]}
    clip_ids = sorted(df["clip_id"])
    info = {
        "arch": arch, "classes": classes, "params": cfg,
        "pretrain_speakers": speakers, "train_speakers": train_speakers, "valid_speakers": valid_speakers,
        "n_clips": {"train": int(df["speaker"].isin(train_speakers).sum()),
                    "valid": int(df["speaker"].isin(valid_speakers).sum())},
        "n_samples": {"train": len(train.y), "valid": 0 if valid is None else len(valid.y)},
        "history": history, "best_epoch": best_epoch,
        "upstream": {"feature_set": cfg["feature_set"],
                     "fingerprints": {c: i["fingerprint"] for c, i in upstream.items()},
                     "params": {c: i["params"] for c, i in upstream.items()}},
        # what the network was trained on: the clips and the exact upstream feature configuration
        "data_fingerprint": hashlib.sha256(json.dumps(
            [clip_ids, {c: i["fingerprint"] for c, i in upstream.items()}]).encode()).hexdigest()[:16],
    }
    return save_checkpoint(Path(cfg["out"]), net, info)


def pretrain_command(which: str, params_file: str | Path = "params.yaml") -> str:
    """What `aver pretrain face|speech` runs: train, then a one-line summary of the checkpoint."""
    out = pretrain(load_params(params_file), which)
    info = read_checkpoint_info(out)
    best = info["history"][info["best_epoch"] - 1]
    score = f", valid UAR {best['valid_uar']:.3f}" if "valid_uar" in best else ""
    return (f"{which} CNN -> {out} (fingerprint {info['fingerprint'][:12]}, {len(info['classes'])} classes, "
            f"best epoch {info['best_epoch']}/{len(info['history'])}{score})")
