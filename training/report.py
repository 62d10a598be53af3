"""`aver report`: one static HTML page (`<runs>/report/index.html`, images embedded) summarising a pipeline run.

Sections: clips / speakers / labels per corpus (manifests); ledger rows by reason (ingest ledgers, every store
ledger, train ledgers); feature coverage per feature set x corpus (store rows / planned keys); and per training
run found under `paths.runs` (a folder with `metrics.json`, see training/evaluate.py): model comparison (UAR mean ± std
over folds), metrics per model and per fold, confusion matrices and per-class recall (pooled over folds, clean
test clips). A missing piece (nothing ingested, no training run yet) shows a note instead.
"""
from __future__ import annotations

import base64
import datetime as dt
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from jinja2 import Environment, FileSystemLoader, select_autoescape

from pipelines.config import paths
from pipelines.manifest import read_corpus_root
from pipelines.store import FeatureStore
from pipelines.store.versions import reading_store

TEMPLATES = Path(__file__).parent / "templates"
SKIPPED_RUN_DIRS = {"report", "predict"}


# ---- data ---------------------------------------------------------------------------------------------------------
def manifest_corpora(manifest_dir: Path) -> list[str]:
    return sorted(p.stem for p in Path(manifest_dir).glob("*.parquet") if not p.name.endswith(".ledger.parquet"))


def corpus_counts(manifest_dir: Path) -> list[dict]:
    """Per corpus: clips, speakers, clips with audio / video, hours, and clips per label."""
    out = []
    for corpus in manifest_corpora(manifest_dir):
        t = pq.read_table(Path(manifest_dir) / f"{corpus}.parquet",
                          columns=["speaker", "emotion", "has_audio", "has_video", "duration"]).to_pydict()
        out.append({"corpus": corpus, "root": str(read_corpus_root(manifest_dir, corpus)),
                    "clips": len(t["speaker"]), "speakers": len(set(t["speaker"])),
                    "audio": sum(map(bool, t["has_audio"])), "video": sum(map(bool, t["has_video"])),
                    "hours": sum(d or 0.0 for d in t["duration"]) / 3600,
                    "labels": dict(sorted(Counter(e or "(none)" for e in t["emotion"]).items()))})
    return out


def _reason_rows(source: str, corpus: str, ledger: dict) -> list[dict]:
    by_reason: dict[str, list[str]] = {}
    for reason, detail in zip(ledger["reason"], ledger["detail"]):
        by_reason.setdefault(reason, []).append(detail.splitlines()[0] if detail else "")
    return [{"source": source, "corpus": corpus, "reason": r, "count": len(d), "example": d[0]}
            for r, d in sorted(by_reason.items())]


def ledger_summary(manifest_dir: Path, store: FeatureStore, runs: list[Path]) -> list[dict]:
    """Ledger rows by (source, corpus, reason): source is `ingest`, a feature set, or `train (<run>)`."""
    rows = []
    for path in sorted(Path(manifest_dir).glob("*.ledger.parquet")):
        rows += _reason_rows("ingest", path.name[:-len(".ledger.parquet")], pq.read_table(path).to_pydict())
    for feature_set in store.feature_sets():
        for corpus in store.corpora(feature_set):
            rows += _reason_rows(feature_set, corpus, store.read(feature_set, corpus, "ledger").to_pydict())
    for run in runs:
        path = train_outputs(run) / "ledger.parquet"
        if path.exists():
            ledger = pq.read_table(path).to_pydict()
            for corpus in sorted(set(ledger["corpus"])):
                mine = [i for i, c in enumerate(ledger["corpus"]) if c == corpus]
                rows += _reason_rows("train" if len(runs) == 1 else f"train ({run.name})", corpus,
                                     {k: [ledger[k][i] for i in mine] for k in ("reason", "detail")})
    return rows


def coverage(params: dict, store: FeatureStore, manifest_dir: Path) -> dict:
    """Feature set x corpus cells {rows, failed, planned (None when the plan cannot be made)} for every pair in the
    store or in params.yaml `extract:`."""
    from pipelines.plan import planned_keys
    pairs = {(fs, c) for fs in store.feature_sets() for c in store.corpora(fs)}
    pairs |= {(t["feature_set"], t["corpus"]) for t in (params.get("extract") or {}).values()}
    have_manifest = set(manifest_corpora(manifest_dir))
    cells = {}
    for fs, corpus in sorted(pairs):
        info = store.info(fs, corpus)
        planned, note = None, ""
        if corpus not in have_manifest:
            note = "no manifest"
        elif fs not in (params.get("features") or {}):
            note = "not declared under features:"
        else:
            try:
                planned = len(planned_keys(params, fs, corpus))
            except (KeyError, ValueError, ImportError, OSError) as e:   # a broken entry is reported, not fatal
                note = f"cannot plan: {e}"
        cells[fs, corpus] = {"rows": info["rows"], "failed": info["failed"], "planned": planned, "note": note}
    return {"feature_sets": sorted({fs for fs, _ in pairs}), "corpora": sorted({c for _, c in pairs}),
            "cells": cells}


def is_training_metrics(path: Path) -> bool:
    """A run's metrics.json (training/evaluate.py: classes + per-model mean/std blocks), not some other JSON file
    of that name."""
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    models = metrics.get("models") if isinstance(metrics, dict) else None
    return "classes" in metrics and isinstance(models, dict) and all(
        isinstance(m, dict) and isinstance(m.get("uar"), dict) for m in models.values())


def train_outputs(run: Path) -> Path:
    """The train step's folder of an evaluated run: the run itself (`train_and_evaluate`), or `<run>/train` (the
    DVC layout: `runs/metrics.json` evaluates `runs/train/`)."""
    return run if (run / "run.json").exists() else run / "train"


def find_runs(runs_dir: Path) -> list[Path]:
    """Evaluated training runs (folders holding a run's metrics.json) under `runs_dir`, itself included."""
    if not Path(runs_dir).is_dir():
        return []
    return sorted(p.parent for p in Path(runs_dir).rglob("metrics.json")
                  if not SKIPPED_RUN_DIRS & set(p.relative_to(runs_dir).parts) and is_training_metrics(p))


def pooled_confusion(folds: list[dict], model: str, variant: str = "clean") -> np.ndarray | None:
    """Sum over folds of a model's confusion matrix (rows true, columns predicted)."""
    mats = [np.asarray(f["models"][model][variant]["confusion"]) for f in folds
            if variant in (f.get("models", {}).get(model) or {})]
    return np.sum(mats, axis=0) if mats else None


# ---- figures ------------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=85)
    _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def comparison_chart(models: dict, n_classes: int) -> str:
    """Horizontal bars of UAR mean ± std over folds per model, chance level dashed."""
    plt = _pyplot()
    names = sorted(models, key=lambda m: models[m]["uar"]["mean"] or 0)
    means = [models[m]["uar"]["mean"] or 0 for m in names]
    stds = [models[m]["uar"]["std"] or 0 for m in names]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2), constrained_layout=True)
    ax.barh(names, means, xerr=stds, color="#4c78a8", capsize=3)
    ax.axvline(1 / n_classes, color="grey", ls="--", lw=1, label=f"chance ({1 / n_classes:.2f})")
    ax.set(xlim=(0, 1), xlabel="UAR (mean ± std over folds)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


def model_figure(name: str, confusion: np.ndarray, classes: list[str]) -> str:
    """Confusion matrix (row-normalised colour, counts written) beside per-class recall, pooled over folds."""
    plt = _pyplot()
    support = confusion.sum(axis=1)
    recall = np.divide(np.diag(confusion), support, out=np.full(len(classes), np.nan), where=support > 0)
    rates = confusion / np.maximum(support[:, None], 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(7, 3.4), constrained_layout=True,
                                      gridspec_kw={"width_ratios": [1.15, 1]})
    fig.suptitle(name, fontweight="bold")
    left.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(confusion.shape):
        left.text(j, i, str(int(confusion[i, j])), ha="center", va="center",
                  color="white" if rates[i, j] > 0.6 else "black", fontsize=9)
    left.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true",
             title="confusion (clips)")
    left.set_xticklabels(classes, rotation=45, ha="right")
    left.set_yticklabels(classes)
    right.barh(classes, np.nan_to_num(recall), color="#f58518")
    for k, r in enumerate(np.nan_to_num(recall)):     # the value inside long bars, after short ones
        inside = r >= 0.25
        right.text(r - 0.02 if inside else r + 0.02, k, fmt(float(recall[k]), 2), va="center", fontsize=9,
                   ha="right" if inside else "left", color="white" if inside else "black")
    right.invert_yaxis()
    right.set(xlim=(0, 1), xlabel="recall", title="per-class recall")
    return _png(fig)


# ---- training runs ------------------------------------------------------------------------------------------------
def run_summary(run: Path, runs_dir: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    folds = metrics.get("folds") or []
    models = metrics.get("models") or {}
    classes = list(metrics.get("classes") or [])
    figures = []
    for name in sorted(models):
        confusion = pooled_confusion(folds, name)
        if confusion is not None and classes:
            figures.append({"model": name, "png": model_figure(name, confusion, classes)})
    variants = sorted({v for m in models.values() for v in (m.get("robustness") or {})})
    return {
        "name": str(run.relative_to(runs_dir)) if run != runs_dir else run.name, "path": str(run),
        "metrics": metrics, "models": dict(sorted(models.items())), "classes": classes, "folds": folds,
        "variants": variants, "regression": metrics.get("regression") or {},
        "comparison": comparison_chart(models, len(classes)) if models and classes else None,
        "figures": figures, "has_folds": bool(folds),
    }


# ---- page -----------------------------------------------------------------------------------------------------------
def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def mean_std(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    return f"{stat['mean']:.3f} ± {stat.get('std') or 0:.3f}"


def render(context: dict) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=fmt, mean_std=mean_std)
    return env.get_template("report.html.j2").render(**context)


def write_report(params: dict) -> Path:
    """Write `<paths.runs>/report/index.html` from whatever the pipeline has produced so far; returns its path."""
    p = paths(params)
    store = reading_store(p)
    runs = find_runs(p["runs"])
    context = {
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "paths": {k: str(v) for k, v in p.items()},
        "corpora": corpus_counts(p["manifests"]),
        "ledger": ledger_summary(p["manifests"], store, runs),
        "coverage": coverage(params, store, p["manifests"]),
        "runs": [run_summary(r, p["runs"]) for r in runs],
    }
    out = p["runs"] / "report" / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render(context), encoding="utf-8")
    tmp.replace(out)
    return out
