"""`aver store ls | show | verify | compact | versions | vacuum`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pipelines.cli.common import ParamsOpt, console, open_store, store_app, table
from pipelines.config import load_params
from pipelines.errors import UserError


@store_app.command("ls")
def store_ls(params_file: Path = ParamsOpt) -> None:
    """Feature sets × corpora in the store with row and ledger counts."""
    store = open_store(params_file)
    rows = [[i["feature_set"], i["corpus"], i["rows"], i["failed"], i["kind"], i["fingerprint"]]
            for fs in store.feature_sets() for c in store.corpora(fs) for i in [store.info(fs, c)]]
    table("store", ["feature set", "corpus", "rows", "ledger", "extractor", "fingerprint"], rows)


@store_app.command("show")
def store_show(feature_set: str, corpus: str, params_file: Path = ParamsOpt,
               ledger: bool = typer.Option(False, help="print the ledger rows")) -> None:
    """Metadata, columns and (optionally) ledger of one feature set × corpus."""
    store = open_store(params_file)
    if not store.shards(feature_set, corpus):
        raise UserError(f"the store has no {feature_set!r} files for corpus {corpus!r} (see `aver store ls`)")
    console.print_json(json.dumps(store.info(feature_set, corpus), default=str))
    if ledger:
        df = store.ledger(feature_set, corpus)
        table("ledger", ["clip_id", "variant", "reason", "detail"],
               df[["clip_id", "variant", "reason", "detail"]].values.tolist())


@store_app.command("verify")
def store_verify(feature_set: Optional[str] = typer.Argument(None), corpus: list[str] = typer.Option(None, "--corpus"),
                 params_file: Path = ParamsOpt) -> None:
    """Re-check schemas, duplicates, missing rows and stale rows (changed media, code or config) against the
    manifests and params."""
    from pipelines.plan import config_fingerprint, planned_keys
    params = load_params(params_file)
    store = open_store(params_file)
    rows, bad = [], 0
    for fs in [feature_set] if feature_set else store.feature_sets():
        for c in corpus or store.corpora(fs):
            _, fingerprint, _ = config_fingerprint(params, fs, store, c)
            rep = store.verify(fs, c, planned_keys(params, fs, c), fingerprint)
            bad += not rep.ok
            rows.append([fs, c, rep.rows, rep.failed, "ok" if rep.ok else "; ".join(rep.problems)])
    table("verify", ["feature set", "corpus", "rows", "ledger", "status"], rows)
    raise typer.Exit(1 if bad else 0)


@store_app.command("compact")
def store_compact(feature_set: Optional[str] = typer.Argument(None, help="feature set (default: all)"),
                  corpus: list[str] = typer.Option(None, "--corpus", "-c", help="corpus (repeatable)"),
                  target_mb: int = typer.Option(128, help="target file size, MiB"),
                  params_file: Path = ParamsOpt) -> None:
    """Merge small store files into files of about the target size (same rows; readers keep working)."""
    from pipelines.store.compaction import compact
    store = open_store(params_file)
    rows = []
    for fs, c in pairs(store, feature_set, corpus):
        r = compact(store, fs, c, target_mb * 2**20)
        rows.append([fs, c, r.files_before, r.files_after, r.rows])
    table("compact", ["feature set", "corpus", "files before", "files after", "rows rewritten"], rows)


def pairs(store, feature_set: str | None, corpus: list[str] | None) -> list[tuple[str, str]]:
    return [(fs, c) for fs in ([feature_set] if feature_set else store.feature_sets())
            for c in corpus or store.corpora(fs)]


@store_app.command("versions")
def store_versions(feature_set: Optional[str] = typer.Argument(None, help="feature set (default: all)"),
                   corpus: list[str] = typer.Option(None, "--corpus", "-c", help="corpus (repeatable)"),
                   out: Optional[Path] = typer.Option(None, help="write them to this version file"),
                   params_file: Path = ParamsOpt) -> None:
    """The latest version of each feature set x corpus (its commit log's number); `--out` writes a version file
    that `paths.store_versions` or `aver store vacuum --keep` reads."""
    from pipelines.store import versions
    store = open_store(params_file)
    found = versions.current(store, pairs(store, feature_set, corpus))
    if out:
        versions.write(out, found)
    table("versions", ["feature set", "corpus", "version"], [[fs, c, v] for (fs, c), v in found.items()])


@store_app.command("vacuum")
def store_vacuum(feature_set: Optional[str] = typer.Argument(None, help="feature set (default: all)"),
                 corpus: list[str] = typer.Option(None, "--corpus", "-c", help="corpus (repeatable)"),
                 retain_versions: int = typer.Option(1, help="keep what the last N versions read"),
                 retain_hours: float = typer.Option(168, help="keep what the versions of the last H hours read"),
                 keep: list[Path] = typer.Option(None, help="keep the versions this version file (or folder of "
                                                            "them) names (repeatable)"),
                 params_file: Path = ParamsOpt) -> None:
    """Delete the files compaction and prune replaced that no wanted version reads any more."""
    from pipelines.store.versions import vacuum
    store = open_store(params_file)
    rows = []
    for fs, c in pairs(store, feature_set, corpus):
        r = vacuum(store, fs, c, retain_versions, retain_hours, keep or [])
        rows.append([fs, c, r.version, r.deleted, f"{r.bytes / 2**20:.1f}", r.kept])
    table("vacuum", ["feature set", "corpus", "version", "files deleted", "MiB freed", "replaced files kept"], rows)
