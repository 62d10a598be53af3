"""`aver corpus add | list | identities`: declare corpora, see their ingest state, check speakers against faces."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pipelines.cli.common import ParamsOpt, console, corpus_app, open_store, table
from pipelines.config import load_params, paths
from pipelines.errors import UserError


@corpus_app.command("add")
def corpus_add(name: str, root: Path = typer.Option(..., help="corpus root folder"),
               glob: str = typer.Option("**/*.wav", help="files to take, relative to root"),
               regex: str = typer.Option(..., help="filename regex with named groups (speaker, emotion, ...)"),
               label: list[str] = typer.Option(None, help="label map entry CODE=canonical (repeatable)"),
               metadata_csv: Optional[Path] = typer.Option(None, help="CSV joined on a regex group"),
               join_on: Optional[str] = typer.Option(None, help="column/group to join the CSV on"),
               speaker: Optional[str] = typer.Option(None, help="fixed speaker of every clip (single-speaker "
                                                                "corpora), used where the regex and CSV give none"),
               params_file: Path = ParamsOpt) -> None:
    """Declare a new corpus with the generic adapter (no code needed)."""
    from pipelines.corpora.generic import add_corpus_entry
    if bad := [x for x in label or [] if "=" not in x]:
        raise UserError(f"--label takes CODE=emotion (e.g. W=angry), not {bad}")
    label_map = dict(x.split("=", 1) for x in label or [])
    add_corpus_entry(params_file, name, root=str(root), glob=glob, regex=regex, label_map=label_map,
                     metadata_csv=str(metadata_csv) if metadata_csv else None, join_on=join_on, speaker=speaker)
    console.print(f"added corpus {name!r} to {params_file}; run `aver ingest {name}`")


@corpus_app.command("list")
def corpus_list(params_file: Path = ParamsOpt) -> None:
    """Corpora declared in params.yaml and their ingest state."""
    from pipelines.manifest import manifest_file
    params = load_params(params_file)
    mdir = paths(params)["manifests"]
    rows = []
    for name, cfg in params.get("corpora", {}).items():
        try:
            clips = manifest_file(mdir, name).metadata.num_rows
        except FileNotFoundError:
            clips = "-"
        rows.append([name, cfg.get("adapter"), cfg.get("root"), clips])
    table("corpora", ["corpus", "adapter", "root", "clips"], rows)


@corpus_app.command("identities")
def corpus_identities(corpus: str, feature_set: str = typer.Option("faces", help="faces feature set with identity"),
                      threshold: float = typer.Option(0.55, help="clustering distance (dlib descriptors)"),
                      json_out: Optional[Path] = typer.Option(None, "--json", help="also write the report here"),
                      params_file: Path = ParamsOpt) -> None:
    """Cluster the corpus's faces: clusters spanning several declared speakers, speakers spanning several clusters."""
    from features.face_identity import corpus_identities as report_of
    report = report_of(open_store(params_file), feature_set, corpus, threshold)
    if json_out:
        json_out.write_text(json.dumps(report, indent=1))
    console.print(f"{report['clips']} clips in {report['clusters']} identity clusters "
                  f"({report['clips_without_identity_or_speaker']} without identity or speaker)")
    table("clusters with several speakers", ["cluster", "speakers (clips)", "clips"],
           [[c["cluster"], c["speakers"], " ".join(c["clips"])] for c in report["mixed_clusters"]])
    table("speakers in several clusters", ["speaker", "clusters (clips)"],
           [[s["speaker"], s["clusters"]] for s in report["split_speakers"]])
