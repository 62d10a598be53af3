"""Which saved model `aver predict` and `aver live` use: the model folders the train stage wrote (`model.json`, with
the cross-validated UAR of the run's metrics.json), chosen by folder, run, name or by default."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

MODALITIES = ("audio", "video")
PREFERRED_MODEL = "vavl"        # trained with modality dropout: answers audio-only, video-only and audio-visual


class PredictError(Exception):
    """A reason `aver predict` cannot run, as one line for the user (no traceback)."""


@dataclass
class SavedModel:
    name: str
    directory: Path
    info: dict                  # model.json written by training.models.save_model
    uar: float | None           # mean cross-validated UAR from the run's metrics.json

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.info.get("model_modalities") or MODALITIES)


def load_saved(directory: Path) -> SavedModel:
    """A model folder `<run>/models/<name>/` with its UAR from the run's metrics.json (when present): `<run>/` for a
    `train_and_evaluate` folder, its parent for the DVC layout (`runs/train/models/`, `runs/metrics.json`)."""
    directory = Path(directory)
    found = [p / "metrics.json" for p in directory.resolve().parents[1:3] if (p / "metrics.json").exists()]
    metrics = json.loads(found[0].read_text()) if found else {}
    uar = ((metrics.get("models") or {}).get(directory.name) or {}).get("uar") or {}
    return SavedModel(directory.name, directory, json.loads((directory / "model.json").read_text()), uar.get("mean"))


def saved_models(root: Path) -> list[SavedModel]:
    """Every model saved under `root` (`<run>/models/<name>/model.json`), newest first."""
    infos = sorted(Path(root).rglob("models/*/model.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [load_saved(p.parent) for p in infos]


def choose_model(spec: str | Path | None, runs: Path, available: tuple[str, ...]) -> SavedModel:
    """`spec`: a model folder, a run folder, a model name, or None. A run (or None: the newest run under `runs`)
    gives its `vavl` model, else its best model by UAR among those that read a modality the file has."""
    if spec is not None and (Path(spec) / "model.json").exists():
        return load_saved(Path(spec))
    is_dir = spec is not None and Path(spec).is_dir()
    root = Path(spec) if is_dir else Path(runs)
    models = saved_models(root) if root.is_dir() else []
    if spec is not None and not is_dir:
        named = [m for m in models if m.name == str(spec)]
        if not named:
            raise PredictError(f"no saved model named {str(spec)!r} under {root} "
                               f"(have: {', '.join(sorted({m.name for m in models})) or 'none'})")
        return named[0]
    if not models:
        raise PredictError(f"no trained model under {root}: run `aver train` first, or pass --model DIR")
    newest_run = models[0].directory.parent
    usable = [m for m in models if m.directory.parent == newest_run and set(m.modalities) & set(available)]
    if not usable:
        raise PredictError(f"no model in {newest_run} reads {' or '.join(available)}, the file's modalities")
    preferred = [m for m in usable if m.name == PREFERRED_MODEL]
    return preferred[0] if preferred else max(usable, key=lambda m: -math.inf if m.uar is None else m.uar)


def usable_modalities(saved: SavedModel, available: tuple[str, ...], name: str) -> tuple[str, ...]:
    used = tuple(m for m in saved.modalities if m in available)
    if not used:
        raise PredictError(f"model {saved.name!r} reads {' and '.join(saved.modalities)}; {name} has only "
                           f"{' and '.join(available)}")
    return used


def model_summary(saved: SavedModel) -> dict:
    return {"name": saved.name, "dir": str(saved.directory), "classes": list(saved.info["classes"]),
            "model_modalities": list(saved.modalities), "cv_uar": saved.uar}
