"""Versions of the store: reading it as of a version, the small files that name versions, and vacuum.

A feature set x corpus's version is the number of its latest commit record (pipelines/store/commits.py). A
*version file* names the versions a run produced, `{"versions": {"<feature set>/<corpus>": <version>}}` (JSON,
sorted keys: the same store state gives the same bytes, so DVC sees no change when a run added nothing). It is what a
DVC stage tracks for a store that lives on an object store: checking out an older git commit brings back the older
version file, and a store pinned to it (`pinned`, `paths.store_versions` for training) reads those versions.

Commits never delete the files they replace (compaction, prune): they stay as tombstones until `vacuum` deletes
those no wanted version reads, where wanted = the last `retain_versions` versions, the versions that were the latest
within the last `retain_hours` (as Delta Lake's VACUUM), and every version named in the `keep` version files.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import BadParams, MissingFile
from pipelines.store.table import FeatureStore

Pins = dict[tuple[str, str], int]


def current(store: FeatureStore, pairs: list[tuple[str, str]] | None = None) -> Pins:
    """(feature set, corpus) -> its latest version, for `pairs` (default: every one in the store) with a commit."""
    if pairs is None:
        pairs = [(fs, c) for fs in store.feature_sets() for c in store.corpora(fs)]
    found = {pair: store.log(*pair).snapshot().version for pair in pairs}
    return {pair: v for pair, v in sorted(found.items()) if v >= 0}


def encode(versions: Pins) -> bytes:
    return (json.dumps({"versions": {f"{fs}/{c}": v for (fs, c), v in versions.items()}}, sort_keys=True,
                       indent=1) + "\n").encode()


def write(path: str | Path, versions: Pins) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(versions))


def _files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        return sorted(path.glob("*.json"))
    if not path.exists():
        raise MissingFile(f"version file {path} does not exist")
    return [path]


def _one(path: Path) -> Pins:
    try:
        entries = json.loads(path.read_text())["versions"]
        return {tuple(name.split("/", 1)): int(v) for name, v in entries.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadParams(f"{path} is not a version file ({{\"versions\": {{\"<feature set>/<corpus>\": N}}}}): "
                        f"{e}") from None


def read(path: str | Path) -> Pins:
    """The versions named by a version file, or by every `*.json` of a folder (one per DVC stage)."""
    pins: Pins = {}
    for f in _files(path):
        for pair, v in _one(f).items():
            if pins.setdefault(pair, v) != v:
                raise BadParams(f"{path}: two version files name different versions of {'/'.join(pair)}")
    return pins


def pinned(store: FeatureStore, versions: str | Path | Pins) -> FeatureStore:
    """The same store, its reads pinned to `versions` (a version file or folder, or a mapping)."""
    pins = versions if isinstance(versions, dict) else read(versions)
    return FeatureStore(store.files.uri, store.manifest_dir, {**store.versions, **pins})


def reading_store(paths: dict) -> FeatureStore:
    """The store training reads: pinned to `paths.store_versions` when params.yaml names version files."""
    pins = read(paths["store_versions"]) if paths.get("store_versions") else None
    return FeatureStore(paths["store"], paths["manifests"], pins)


@dataclass
class VacuumReport:
    feature_set: str
    corpus: str
    version: int = -1
    deleted: int = 0
    bytes: int = 0
    kept: int = 0       # replaced files a wanted version still reads


def vacuum(store: FeatureStore, feature_set: str, corpus: str, retain_versions: int = 1, retain_hours: float = 168,
           keep: list[str | Path] = ()) -> VacuumReport:
    """Delete the replaced files no wanted version reads (see the module's docstring), after a commit that forgets
    them; then the files no commit ever named (`clean_temporaries`)."""
    if retain_versions < 1:
        raise BadParams("--retain-versions must be at least 1 (the latest version)")
    snap = store.log(feature_set, corpus).snapshot()
    report = VacuumReport(feature_set, corpus, snap.version)
    kept_versions = {v for f in keep for path in _files(f) for pair, v in _one(path).items()
                     if pair == (feature_set, corpus)}
    oldest = snap.version - retain_versions + 1
    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=retain_hours)

    def wanted(t: dict) -> bool:        # the tombstone is read by versions [t["version"], t["removed"])
        return (t["removed"] > oldest or dt.datetime.fromisoformat(t["removed_at"]) > cutoff
                or any(t.get("version", 0) <= k < t["removed"] for k in kept_versions))
    gone = sorted(n for n, t in snap.removed.items() if not wanted(t))
    report.kept = len(snap.removed) - len(gone)
    if gone:
        store.commit(feature_set, corpus, [], op="vacuum", forget=gone)
        for name in gone:
            report.bytes += snap.removed[name].get("bytes") or 0
            store.files.delete(store.dir(feature_set, corpus) / name)
        report.deleted = len(gone)
    store.clean_temporaries(feature_set, corpus)
    return report
