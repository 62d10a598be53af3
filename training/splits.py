"""Speaker-independent evaluation splits, label-set selection and the speaker-leak guards.

Folds index a clip table (one row per clip, e.g. the clean rows of `FeatureStore.load`); the train stage maps them
to every variant of those clips. Every way of making folds ends in `assert_speaker_disjoint`: a speaker never
appears in two of a fold's train / valid / test parts.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from pipelines.errors import BadParams, UnknownName

FOUR_CLASS = ["happy", "angry", "sad", "neutral"]
OFFICIAL_PARTS = {"train": ["train"], "valid": ["dev", "valid", "validation", "val"], "test": ["test"]}


class SpeakerOverlapError(ValueError):
    """A speaker is on both sides of a split: results would not be speaker-independent."""


@dataclass(frozen=True)
class Fold:
    name: str
    train: np.ndarray                      # positions in the clip table
    test: np.ndarray
    valid: np.ndarray | None = None
    train_speakers: frozenset[str] = frozenset()
    test_speakers: frozenset[str] = frozenset()
    valid_speakers: frozenset[str] = frozenset()


def make_fold(name: str, speakers: np.ndarray, train, test, valid=None) -> Fold:
    train, test = np.asarray(train, int), np.asarray(test, int)
    valid = None if valid is None else np.asarray(valid, int)
    return Fold(name, train, test, valid, frozenset(speakers[train]), frozenset(speakers[test]),
                frozenset(speakers[valid]) if valid is not None else frozenset())


# ---- label sets -----------------------------------------------------------------------------------------------
def resolve_labels(spec: str | list[str], present: Iterable[str | None],
                   label_sets: dict[str, list[str]] | None = None) -> list[str]:
    """The class list: a named set (`four_class`, or one from `label_sets`), `all` (sorted labels present), or a list."""
    sets = {"four_class": FOUR_CLASS, **(label_sets or {})}
    if isinstance(spec, str) and spec == "all":
        return sorted({p for p in present if isinstance(p, str)})
    if isinstance(spec, str):
        if spec not in sets:
            raise UnknownName(f"unknown label set {spec!r}; known: all, {sorted(sets)} or a list of emotions")
        return list(sets[spec])
    return list(spec)


def select_labels(df: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Rows whose `emotion` is one of `classes` (others, and unlabeled rows, are dropped)."""
    return df[df["emotion"].isin(classes)].reset_index(drop=True)


# ---- fold makers ------------------------------------------------------------------------------------------------
def leave_one_speaker_out(speakers: np.ndarray) -> list[Fold]:
    speakers = np.asarray(speakers).astype(str)
    folds = []
    for s in sorted(set(speakers)):
        test = np.flatnonzero(speakers == s)
        folds.append(make_fold(f"loso:{s}", speakers, np.flatnonzero(speakers != s), test))
    return folds


def speaker_kfold(y: np.ndarray, speakers: np.ndarray, n_splits: int = 5, seed: int = 0) -> list[Fold]:
    """k folds of whole speakers, with class proportions kept as close as speakers allow."""
    speakers = np.asarray(speakers).astype(str)
    n_speakers = len(set(speakers))
    if n_speakers < n_splits:
        raise BadParams(f"speaker k-fold needs at least n_splits={n_splits} speakers, the data has {n_speakers}")
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [make_fold(f"kfold:{i}", speakers, tr, te)
            for i, (tr, te) in enumerate(cv.split(np.zeros(len(y)), y, speakers))]


def official_split(split: np.ndarray, speakers: np.ndarray, parts: dict[str, list[str]] | None = None) -> list[Fold]:
    """One fold from the manifest's `split` column (train / dev / test names configurable)."""
    parts = {**OFFICIAL_PARTS, **(parts or {})}
    split = pd.Series(split).astype("string").str.lower().fillna("").to_numpy()
    speakers = np.asarray(speakers).astype(str)
    idx = {k: np.flatnonzero(np.isin(split, [p.lower() for p in names])) for k, names in parts.items()}
    if not len(idx["train"]) or not len(idx["test"]):
        raise BadParams(f"official split needs rows in both {parts['train']} and {parts['test']}; "
                         f"split values present: {sorted(set(split))}")
    return [make_fold("official", speakers, idx["train"], idx["test"], idx["valid"] if len(idx["valid"]) else None)]


def cross_corpus(corpora: np.ndarray, train_corpora: list[str], test_corpora: list[str],
                 speakers: np.ndarray) -> list[Fold]:
    corpora = np.asarray(corpora).astype(str)
    train, test = np.flatnonzero(np.isin(corpora, train_corpora)), np.flatnonzero(np.isin(corpora, test_corpora))
    if not len(train) or not len(test):
        raise BadParams(f"cross-corpus split: no rows for train {train_corpora} or test {test_corpora} "
                         f"(corpora present: {sorted(set(corpora))})")
    name = f"cross:{'+'.join(train_corpora)}->{'+'.join(test_corpora)}"
    return [make_fold(name, np.asarray(speakers).astype(str), train, test)]


def with_inner_validation(fold: Fold, y: np.ndarray, speakers: np.ndarray, fraction: float, seed: int = 0) -> Fold:
    """Move about `fraction` of the fold's training speakers into a validation part (whole speakers)."""
    if fold.valid is not None or fraction <= 0:
        return fold
    speakers = np.asarray(speakers).astype(str)
    train_speakers = speakers[fold.train]
    n_splits = max(2, round(1 / fraction))
    if len(set(train_speakers)) < n_splits:
        raise BadParams(f"{fold.name}: inner validation of {fraction:.0%} needs {n_splits} training speakers, "
                         f"have {len(set(train_speakers))}")
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    tr, va = next(cv.split(np.zeros(len(fold.train)), y[fold.train], train_speakers))
    return make_fold(fold.name, speakers, fold.train[tr], fold.test, fold.train[va])


def make_folds(clips: pd.DataFrame, cfg: dict, y: np.ndarray) -> list[Fold]:
    """Folds for a clip table (columns speaker, corpus, split) from the `split:` params block.

    kind: loso | kfold | official | cross_corpus; n_splits, seed, inner_valid (fraction of training speakers
    held out for validation, 0 = none), official_parts, train_corpora / test_corpora.
    """
    kind = cfg.get("kind", "loso")
    speakers = clips["speaker"].astype(str).to_numpy()
    seed = int(cfg.get("seed", 0))
    if kind == "loso":
        folds = leave_one_speaker_out(speakers)
    elif kind == "kfold":
        folds = speaker_kfold(y, speakers, int(cfg.get("n_splits", 5)), seed)
    elif kind == "official":
        folds = official_split(clips["split"].to_numpy(), speakers, cfg.get("official_parts"))
    elif kind == "cross_corpus":
        folds = cross_corpus(clips["corpus"].to_numpy(), list(cfg["train_corpora"]), list(cfg["test_corpora"]),
                             speakers)
    else:
        raise BadParams(f"unknown split kind {kind!r}; use loso, kfold, official or cross_corpus")
    fraction = float(cfg.get("inner_valid", 0) or 0)
    folds = [with_inner_validation(f, y, speakers, fraction, seed) for f in folds]
    assert_speaker_disjoint(folds)
    return folds


# ---- guards -----------------------------------------------------------------------------------------------------
def assert_speaker_disjoint(folds: list[Fold]) -> None:
    """Raise `SpeakerOverlapError` if any fold shares a speaker between its train, valid and test parts."""
    for f in folds:
        for a, b, sa, sb in [("train", "test", f.train_speakers, f.test_speakers),
                             ("train", "valid", f.train_speakers, f.valid_speakers),
                             ("valid", "test", f.valid_speakers, f.test_speakers)]:
            if shared := sa & sb:
                raise SpeakerOverlapError(f"fold {f.name}: speakers in both {a} and {b}: {sorted(shared)[:5]}")


def assert_disjoint(pretrain_speakers: Iterable[str], folds: list[Fold]) -> None:
    """For trained embedders: no speaker used to pre-train may be a test (or validation) speaker of any fold."""
    pre = frozenset(map(str, pretrain_speakers))
    for f in folds:
        if shared := pre & (f.test_speakers | f.valid_speakers):
            raise SpeakerOverlapError(f"fold {f.name}: pre-training speakers also evaluated: {sorted(shared)[:5]}")
