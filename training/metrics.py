"""Evaluation metrics for categorical emotions (WA, UAR, macro-F1, per-class recall, confusion) and dimensions (CCC).

Conventions: labels are integer indices into `classes`. UAR averages recall over the classes present in `y_true`
(a LOSO fold may lack a class); macro-F1 averages over classes present in `y_true` or `y_pred`. Fold summaries are
mean and sample standard deviation (ddof=1; 0 for a single fold).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

SUMMARY_KEYS = ("wa", "uar", "f1")


def classification(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """{n, wa, uar, f1, recall: {class: recall or None when absent}, confusion: [[...]] rows=true, cols=pred}."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = len(classes)
    cm = confusion_matrix(y_true, y_pred, labels=list(range(k)))
    support = cm.sum(axis=1)
    recall = np.divide(np.diag(cm), support, out=np.full(k, np.nan), where=support > 0)
    present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    return {
        "n": int(len(y_true)),
        "wa": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan"),
        "uar": float(np.nanmean(recall)) if support.any() else float("nan"),
        "f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)) if present
        else float("nan"),
        "recall": {c: (None if np.isnan(r) else float(r)) for c, r in zip(classes, recall)},
        "confusion": cm.tolist(),
    }


def ccc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lin's concordance correlation coefficient: 2·cov / (var_t + var_p + (mean_t - mean_p)²), population moments."""
    t, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    if len(t) < 2:
        return float("nan")
    cov = np.mean((t - t.mean()) * (p - p.mean()))
    denom = t.var() + p.var() + (t.mean() - p.mean()) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def mean_std(values) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not len(v):
        return {"mean": None, "std": None}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def summarize(per_fold: list[dict], keys=SUMMARY_KEYS) -> dict:
    """Mean ± std over folds of each key, plus per-class recall means."""
    out = {k: mean_std([m[k] for m in per_fold]) for k in keys}
    classes = list(per_fold[0]["recall"]) if per_fold and "recall" in per_fold[0] else []
    if classes:
        out["recall"] = {c: mean_std([m["recall"][c] for m in per_fold])["mean"] for c in classes}
    return out
