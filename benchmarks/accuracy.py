"""Speaker-independent accuracy on EmoDB: leave-one-speaker-out UAR of each model, clean and at 5 dB SNR.

    python benchmarks/accuracy.py                       # 7 classes and four_class, all experiments
    python benchmarks/accuracy.py --labels four_class --experiments clean
    python benchmarks/accuracy.py --work /tmp/aver-bench --shared ../shared
    python benchmarks/accuracy.py --features ssl.yaml     # any feature sets instead of the openSMILE ones

Runs the real pipeline: ingest ../shared/data/emodb (the `emodb` adapter), extract eGeMAPSv02 and ComParE_2016
functionals with the local engine for the variants clean, white_snr5 and babble_snr5 (incremental: a second run
reuses the store under --work), then `training.run.train_and_evaluate` per experiment:
  clean       models trained on clean clips; tested on clean and on both noisy variants of the test speaker
  augmented   the same models trained on clean + white_snr5 + babble_snr5 variants of the training speakers
Prints one markdown table per label set and writes every run's metrics.json under --work/runs.

`--features` (a YAML file, or inline YAML) replaces the eGeMAPS/ComParE sets with any feature sets, written as
params.yaml `features:` entries plus `columns`, the store columns the models read (globs select scalar columns; a
list column such as `l06_mean` is named exactly). Default variants: clean plus the noisy ones. Those sets are
then scored with LightGBM and a linear SVM, both with per-speaker normalisation, e.g. (docs/ssl_speech.md):
    wavlm6: {extractor: ssl_speech, columns: [l06_mean],
             params: {model: /models/wavlm-base-plus, layers: [6], pooling: mean}}
Note: the shared EmoDB copy is cut or zero-padded to exactly 2.0 s per file, so figures are not directly
comparable with papers using the full-length utterances.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import yaml

from _setup import ROOT  # noqa: E402  (first: sys.path and the model registry)

from pipelines.ingest import ingest  # noqa: E402
from pipelines.manifest import manifest_path  # noqa: E402
from pipelines.plan import run_extraction  # noqa: E402
from pipelines.store import FeatureStore  # noqa: E402
from training.run import train_and_evaluate  # noqa: E402

NOISY = ["white_snr5", "babble_snr5"]
EGEMAPS = {"audio": {"egemaps_functionals": ["*"]}}
COMPARE = {"audio": {"compare_functionals": ["*"]}}
BOTH = {"audio": {"egemaps_functionals": ["*"], "compare_functionals": ["*"]}}
LGBM = {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 8,
        "colsample_bytree": 0.5, "subsample": 0.8, "subsample_freq": 1}

# name -> model params. `normalize: speaker` z-scores features per speaker (unsupervised speaker adaptation).
# Linear SVMs on ComParE: C in 0.001..0.1 gave identical LOSO results (the classes are separable).
MODELS = {
    "lgbm_egemaps": {"model": "lgbm_audio", **LGBM},
    "lgbm_egemaps_spk": {"model": "lgbm_audio", **LGBM, "normalize": "speaker"},
    "svm_egemaps_spk": {"model": "svm_audio", "C": 0.01, "normalize": "speaker"},
    "svm_compare_spk": {"model": "svm_audio", "C": 0.001, "features": COMPARE, "normalize": "speaker"},
    "svm_both_spk": {"model": "svm_audio", "C": 0.001, "features": BOTH, "normalize": "speaker"},
    "fusion_avg": {"members": ["svm_compare_spk", "lgbm_egemaps_spk"]},
}


def custom_models(features: dict) -> dict:
    """Models on the `--features` sets: LightGBM and a linear SVM, each with per-speaker normalisation."""
    use = {"audio": {fs: cfg.get("columns", ["*"]) for fs, cfg in features.items()}}
    return {"lgbm_spk": {"model": "lgbm_audio", **LGBM, "features": use, "normalize": "speaker"},
            "svm_spk": {"model": "svm_audio", "C": 0.01, "features": use, "normalize": "speaker"}}


def read_features(spec: str) -> dict:
    """`--features`: a YAML file or inline YAML, {feature set: {extractor, params, variants, columns}}."""
    text = Path(spec).read_text() if Path(spec).is_file() else spec
    features = yaml.safe_load(text)
    if not isinstance(features, dict) or not all(isinstance(v, dict) and "extractor" in v for v in features.values()):
        sys.exit("--features: expected {feature set: {extractor: KIND, params: {...}, columns: [...]}}")
    return {fs: {"variants": ["clean", *NOISY], "params": {}, **cfg} for fs, cfg in features.items()}


def pipeline_params(work: Path, emodb: Path, custom: dict | None = None) -> dict:
    functionals = {"variants": ["clean", *NOISY]}
    features = {fs: {k: v for k, v in cfg.items() if k != "columns"} for fs, cfg in custom.items()} if custom else {
        "egemaps_functionals": {"extractor": "opensmile", **functionals,
                                "params": {"feature_set": "eGeMAPSv02", "level": "functionals"}},
        "compare_functionals": {"extractor": "opensmile", **functionals,
                                "params": {"feature_set": "ComParE_2016", "level": "functionals"}},
    }
    return {
        "paths": {"manifests": str(work / "manifests"), "store": str(work / "store")},
        "corpora": {"emodb": {"adapter": "emodb", "root": str(emodb)}},
        "engine": {"name": "local", "chunk_size": 64},
        "augment": {"seed": 0, "noise_dir": None},
        "features": features,
    }


def prepare(work: Path, emodb: Path, custom: dict | None = None) -> FeatureStore:
    params = pipeline_params(work, emodb, custom)
    manifests = Path(params["paths"]["manifests"])
    if not manifest_path(manifests, "emodb").exists():
        print(ingest("emodb", params["corpora"]["emodb"], manifests, progress=False))
    for fs in params["features"]:
        s = run_extraction(params, fs, "emodb", progress=False)
        print(f"{fs}: {s.extracted} extracted, {s.already_done} already in the store, {s.failed} failed "
              f"({s.seconds:.0f} s)")
    return FeatureStore(params["paths"]["store"], manifests)


def experiment(labels: str, train_variants: list[str], custom: dict | None = None) -> dict:
    models = custom_models(custom) if custom else MODELS
    modalities = next(iter(models.values()))["features"] if custom else EGEMAPS
    return {"corpora": ["emodb"], "labels": labels, "split": {"kind": "loso"}, "modalities": modalities,
            "train_variants": train_variants, "robustness_variants": NOISY, "models": models, "save_models": False}


def fmt(m: dict) -> str:
    return f"{m['mean']:.3f} ± {m['std']:.3f}"


def table(results: dict[str, dict]) -> str:
    lines = ["| model | training | UAR (mean ± std over speakers) | pooled UAR | WA | UAR white 5 dB | UAR babble 5 dB |",
             "|---|---|---|---|---|---|---|"]
    for exp, metrics in results.items():
        for name, m in metrics["models"].items():
            r = m["robustness"]
            lines.append(f"| {name} | {exp} | {fmt(m['uar'])} | {m['pooled']['uar']:.3f} | {m['wa']['mean']:.3f} | "
                         f"{r['white_snr5']['uar']['mean']:.3f} | {r['babble_snr5']['uar']['mean']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("AVER_SHARED", ROOT.parent / "shared")))
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("AVER_CACHE", Path.home() / ".cache/aver"))
                    / "bench" / "emodb")
    ap.add_argument("--labels", nargs="+", default=["all", "four_class"])
    ap.add_argument("--experiments", nargs="+", default=["clean", "augmented"], choices=["clean", "augmented"])
    ap.add_argument("--features", help="YAML file or inline YAML: feature sets to score instead of openSMILE's")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    custom = read_features(args.features) if args.features else None
    store = prepare(args.work, args.shared / "data" / "emodb", custom)
    variants = {"clean": ["clean"], "augmented": ["clean", *NOISY]}
    for labels in args.labels:
        results = {}
        for exp in args.experiments:
            t0 = time.perf_counter()
            results[exp] = train_and_evaluate(experiment(labels, variants[exp], custom), store,
                                              args.work / "runs" / f"{labels}-{exp}")
            print(f"[{labels} / {exp}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr)
        n = results[args.experiments[0]]
        print(f"\n### EmoDB LOSO, {labels} ({len(n['classes'])} classes, {n['n_clips']} clips, {n['n_folds']} "
              f"speakers)\n\n{table(results)}\n")
        (args.work / "runs" / f"{labels}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
