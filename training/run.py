"""The train stage: every configured model on every speaker-independent fold, from the store only.

`train(cfg, store, out_dir)` takes the `train:` section of params.yaml (see docs/training.md) and writes into
`out_dir` what the models did, and no metrics (training/evaluate.py computes them all, once, from these files):
  run.json                corpora, split, classes, clip / fold / excluded counts
  folds.json              per fold: train / validation / test speakers and sizes
  predictions.parquet     clip_id, corpus, speaker, fold, model, variant, true, pred, probs
  regression.parquet      (when `regression:` is configured) clip_id, fold, model, target, true, pred
  ledger.parquet          clips left out: no emotion label, or no features in any configured modality
  models/<name>/          each model refitted on all clips, for prediction (training/models save_model)
`train_and_evaluate` runs both steps into one folder (plus `metrics.json` and `plots/`).
Training rows are the training clips in every `train_variants` variant; test rows are the test clips, clean, and
in each `robustness_variants` variant for the robustness evaluation.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.errors import BadParams
from pipelines.manifest import LEDGER_SCHEMA, ledger_row, to_table, write_atomic
from training.data import Frame, columns_to_read
from training.evaluate import write_evaluation
from training.models import MODALITIES, build, build_regressor, model_modalities, save_model
from training.splits import Fold, make_fold, make_folds, resolve_labels, select_labels, with_inner_validation

log = logging.getLogger("aver.train")

DEFAULTS = {
    "corpora": ["emodb"],
    "labels": "four_class",
    "label_sets": {},
    "split": {"kind": "loso"},
    "class_weight": "balanced",
    "train_variants": ["clean"],
    "robustness_variants": [],
    "modalities": {"audio": {"egemaps_functionals": ["*"]}},
    "models": {"lgbm_audio": {}},
    "regression": None,
    "feature_sets": [],
    "save_models": True,
    "exclude_speakers": [],     # e.g. the pre-training speakers of in-pipeline embedders (training/pretrain.py)
    "missing_modality": [],     # models also evaluated audio-only and video-only (e.g. vavl, fusion_avg)
}


def train(cfg: dict, store, out_dir: Path) -> dict:
    """Fit and predict every fold, refit the final models; returns the run's description (`run.json`)."""
    cfg = {**DEFAULTS, **cfg}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models_cfg = expand_members(cfg["models"])
    test_variants = _unique(["clean", *cfg["robustness_variants"]])
    train_variants = _unique(cfg["train_variants"])
    sets = sorted(needed_feature_sets(cfg))
    df = store.load(feature_sets=sets, corpora=list(cfg["corpora"]),
                    variants=tuple(_unique(test_variants + train_variants)),
                    columns=columns_to_read(store, sets, list(cfg["corpora"]), cfg))
    df = df[~df["speaker"].isin(cfg["exclude_speakers"])]
    if df.empty:
        raise BadParams(f"the store has no rows for corpora {cfg['corpora']}")
    frame, clips, ledger = _labelled_frame(df, cfg)
    folds = make_folds(clips, cfg["split"], _clip_labels(frame, clips))
    log.info("%d clips, %d classes, %d folds (%s)", len(clips), len(frame.classes), len(folds),
             cfg["split"].get("kind", "loso"))

    preds, details, reg_rows = [], [], []
    for fold in folds:
        train, valid, tests = _fold_frames(frame, clips, fold, train_variants, test_variants)
        detail = {"fold": fold.name, "train_speakers": sorted(fold.train_speakers),
                  "test_speakers": sorted(fold.test_speakers), "valid_speakers": sorted(fold.valid_speakers),
                  "n_train_rows": len(train), "n_test_clips": len(fold.test)}
        for name, params in models_cfg.items():
            model = build(name, params, frame.classes)
            model.fit(train, valid)
            # Missing-modality evaluation: the same fitted model on clean tests with one modality removed.
            conditions = [(v, t, MODALITIES) for v, t in tests.items()] + \
                [(f"{m}_only", tests["clean"], (m,)) for m in MODALITIES if name in cfg["missing_modality"]]
            for variant, test, modalities in conditions:
                preds.append(_prediction_rows(test, model.predict_proba(test, modalities=modalities), fold.name,
                                              name, variant))
            log.info("%s: %s fitted and predicted", fold.name, name)
        if cfg["regression"]:
            skipped = _regression_fold(cfg["regression"], train, valid, tests["clean"], fold, reg_rows)
            if skipped:
                detail["regression"] = {"skipped": skipped}
        details.append(detail)

    run = {"corpora": list(cfg["corpora"]), "split": cfg["split"].get("kind", "loso"), "classes": frame.classes,
           "n_clips": int(len(clips)), "n_folds": len(folds), "train_variants": list(cfg["train_variants"]),
           "n_excluded": len(ledger), "regression": bool(cfg["regression"])}
    _write_outputs(out_dir, run, details, pd.concat(preds, ignore_index=True), reg_rows, ledger)
    if cfg["save_models"]:
        _final_fit(cfg, frame, clips, models_cfg, train_variants, out_dir / "models", _feature_configs(store, cfg))
    return run


def train_and_evaluate(cfg: dict, store, out_dir: Path) -> dict:
    """`train` then `training.evaluate.write_evaluation` into the same folder: `metrics.json` and `plots/`."""
    train(cfg, store, out_dir)
    return write_evaluation(Path(out_dir), Path(out_dir) / "metrics.json", Path(out_dir))


# ---- configuration ---------------------------------------------------------------------------------------------
def expand_members(models: dict) -> dict:
    """Fusion `members` given as names of other configured models get those models' params."""
    out = {}
    for name, params in models.items():
        params = dict(params or {})
        if isinstance(params.get("members"), list):
            params["members"] = dict(_member(m, models) for m in params["members"])
        out[name] = params
    return out


def _member(member: str | dict, models: dict) -> tuple[str, dict]:
    if isinstance(member, str):
        return member, dict(models.get(member) or {})
    (name, params), = member.items()
    return name, dict(params or {})


def needed_feature_sets(cfg: dict) -> set[str]:
    """Feature sets named by the modalities, by any model's `features`/`feature_set(s)` params, or `feature_sets`."""
    sets = {fs for spec in cfg["modalities"].values() for fs in spec} | set(cfg.get("feature_sets") or [])

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "features" and isinstance(v, dict):
                    sets.update(fs for spec in v.values() if isinstance(spec, dict) for fs in spec)
                elif k == "feature_set" and isinstance(v, str):
                    sets.add(v)
                elif k == "feature_sets" and isinstance(v, list):
                    sets.update(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(cfg["models"])
    walk(cfg.get("regression") or {})
    return sets


def _unique(items) -> list[str]:
    return list(dict.fromkeys(items))


# ---- data ------------------------------------------------------------------------------------------------------
def _labelled_frame(df: pd.DataFrame, cfg: dict) -> tuple[Frame, pd.DataFrame, list[dict]]:
    """The frame of the chosen label set, its clip table (clean rows of usable clips) and ledger rows."""
    clean = df[df["variant"] == "clean"]
    ledger = [ledger_row(r.corpus, "", "train", "no_label", "the manifest has no emotion label for this clip",
                         clip_id=r.clip_id, variant="clean") for r in clean[clean["emotion"].isna()].itertuples()]
    classes = resolve_labels(cfg["labels"], clean["emotion"], cfg["label_sets"])
    frame = Frame(select_labels(df, classes), classes, cfg["modalities"], cfg["class_weight"])
    has_any = np.zeros(len(frame), bool)
    for modality in cfg["modalities"]:
        try:
            has_any |= frame.available(frame.layout(modality))
        except ValueError:          # a modality these corpora lack entirely: models needing it fail on their own
            log.warning("no %s features in %s", modality, cfg["corpora"])
    clean_rows = frame.variants == "clean"
    for r in frame.df[clean_rows & ~has_any].itertuples():
        ledger.append(ledger_row(r.corpus, "", "train", "no_features",
                                 f"no values in any configured modality ({', '.join(cfg['modalities'])})",
                                 clip_id=r.clip_id, variant="clean"))
    clips = frame.df[clean_rows & has_any].drop_duplicates("clip_id").reset_index(drop=True)
    if clips.empty:
        raise BadParams(f"no labelled clips with features for classes {classes} in {cfg['corpora']}")
    return frame, clips, ledger


def _clip_labels(frame: Frame, clips: pd.DataFrame) -> np.ndarray:
    index = {c: i for i, c in enumerate(frame.classes)}
    return clips["emotion"].map(index).to_numpy(np.int64)


def _rows(frame: Frame, clips: pd.DataFrame, positions: np.ndarray, variants: list[str]) -> Frame:
    ids = set(clips["clip_id"].iloc[positions])
    return frame.subset(frame.df["clip_id"].isin(ids).to_numpy() & np.isin(frame.variants, variants))


def _fold_frames(frame: Frame, clips: pd.DataFrame, fold: Fold, train_variants, test_variants):
    train = _rows(frame, clips, fold.train, train_variants)
    valid = _rows(frame, clips, fold.valid, ["clean"]) if fold.valid is not None else None
    tests = {v: _rows(frame, clips, fold.test, [v]) for v in test_variants}
    return train, valid, tests


def _prediction_rows(test: Frame, proba: np.ndarray, fold: str, model: str, variant: str) -> pd.DataFrame:
    classes = np.asarray(test.classes)
    return pd.DataFrame({"clip_id": test.clip_ids, "corpus": test.df["corpus"].to_numpy(),
                         "speaker": test.speakers, "fold": fold, "model": model, "variant": variant,
                         "true": classes[test.y], "pred": classes[proba.argmax(1)],
                         "probs": [p.astype(np.float32) for p in proba]})


def _regression_fold(rcfg: dict, train: Frame, valid: Frame | None, test: Frame, fold: Fold,
                     rows: list[pd.DataFrame]) -> str | None:
    """Each regressor's predictions on the fold's clean test clips (into `rows`); the reason when it is skipped."""
    targets = list(rcfg.get("targets", ["valence", "arousal"]))
    targets = [t for t in targets if np.isfinite(train.target(t)).any() and np.isfinite(test.target(t)).any()]
    if not targets:
        return "no dimensional labels in this fold"
    for name, params in (rcfg.get("models") or {"lgbm_reg_audio": {}}).items():
        model = build_regressor(name, params, targets)
        model.fit(train, valid)
        pred = model.predict(test)
        for i, t in enumerate(targets):
            rows.append(pd.DataFrame({"clip_id": test.clip_ids, "fold": fold.name, "model": name, "target": t,
                                      "true": test.target(t), "pred": pred[:, i]}))
    return None


# ---- outputs ---------------------------------------------------------------------------------------------------
def _write_outputs(out_dir: Path, run: dict, details, predictions, reg_rows, ledger) -> None:
    (out_dir / "run.json").write_text(json.dumps(run, indent=2))
    (out_dir / "folds.json").write_text(json.dumps(details, indent=2))
    write_atomic(pa.Table.from_pandas(predictions, preserve_index=False), out_dir / "predictions.parquet")
    if reg_rows:
        write_atomic(pa.Table.from_pandas(pd.concat(reg_rows, ignore_index=True), preserve_index=False),
                     out_dir / "regression.parquet")
    write_atomic(to_table(ledger, LEDGER_SCHEMA), out_dir / "ledger.parquet")


def _provenance(info: dict) -> dict:
    """The weights behind a feature set's rows, when its extractor records them (ssl_speech)."""
    return {"provenance": info["provenance"]} if info.get("provenance") else {}


def _feature_configs(store, cfg: dict) -> dict:
    """Feature set -> the extractor configuration its stored rows were made with (kind, version, params, and the
    weights' provenance when recorded), so that `aver predict` can refuse to feed a model features made differently."""
    out = {}
    for fs in sorted(needed_feature_sets(cfg)):
        configs = [{k: info[k] for k in ("kind", "version", "params")} | _provenance(info)
                   for info in (store.info(fs, c) for c in cfg["corpora"]) if info.get("kind")]
        if configs and all(c == configs[0] for c in configs):     # corpora made differently: nothing to check
            out[fs] = configs[0]
    return out


def _final_fit(cfg, frame: Frame, clips: pd.DataFrame, models_cfg: dict, train_variants, model_dir: Path,
               feature_configs: dict) -> None:
    """Refit every model on all clips (inner validation as configured) and save it for prediction."""
    speakers = clips["speaker"].astype(str).to_numpy()
    everything = make_fold("final", speakers, np.arange(len(clips)), np.array([], int))
    fold = with_inner_validation(everything, _clip_labels(frame, clips), speakers,
                                 float(cfg["split"].get("inner_valid", 0) or 0), int(cfg["split"].get("seed", 0)))
    train = _rows(frame, clips, fold.train, train_variants)
    valid = _rows(frame, clips, fold.valid, ["clean"]) if fold.valid is not None else None
    for name, params in models_cfg.items():
        model = build(name, params, frame.classes)
        model.fit(train, valid)
        save_model(model, model_dir / name, {
            "name": name, "classes": frame.classes, "params": params, "modalities": cfg["modalities"],
            "model_modalities": list(model_modalities(model)), "class_weight": cfg["class_weight"],
            "labels": cfg["labels"], "train_variants": list(train_variants), "n_clips": int(len(clips)),
            "feature_configs": feature_configs})
        log.info("saved final %s (%d rows)", name, len(train))
