"""`aver`: one verb per pipeline step. Heavy imports stay inside the commands so `aver --help` is instant."""
from __future__ import annotations

import json
import logging
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipelines.config import corpus_config, load_params, paths
from pipelines.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False)
corpus_app = typer.Typer(no_args_is_help=True, help="Declare and list corpora (params.yaml `corpora:`).")
store_app = typer.Typer(no_args_is_help=True, help="Inspect and verify the feature store.")
app.add_typer(corpus_app, name="corpus")
app.add_typer(store_app, name="store")
console = Console(width=None if sys.stdout.isatty() else 160)   # logs and CI: don't squeeze tables

DEBUG = {"traceback": False}


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="show the traceback of every error, "
                                                               "including mistakes in the input")) -> None:
    DEBUG["traceback"] = debug


ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="params file")


def _table(title: str, columns: list[str], rows: list[list]) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(x) for x in r])
    console.print(t)


@app.command()
def ingest(corpora: list[str] = typer.Argument(None, help="corpus names (default: all in params.yaml)"),
           params_file: Path = ParamsOpt) -> None:
    """Scan and probe corpora into manifests (+ a ledger of unusable files)."""
    from pipelines.ingest import ingest as run_ingest
    params = load_params(params_file)
    rows = []
    for name in corpora or list(params.get("corpora", {})):
        s = run_ingest(name, corpus_config(params, name), paths(params)["manifests"])
        rows.append([name, s.clips, s.speakers, s.failed])
    _table("ingest", ["corpus", "clips", "speakers", "ledger rows"], rows)


def _extract_targets(params: dict, feature_sets: list[str], corpora: list[str]) -> dict[str, list[str]]:
    """corpus -> feature sets: the given sets x the given corpora, else the extract/embed entries naming either."""
    entries = {**params.get("extract", {}), **params.get("embed", {}), **params.get("embed_trained", {})}
    targets = [(t["feature_set"], t["corpus"]) for t in entries.values()]
    if feature_sets and corpora:
        targets = [(fs, c) for c in corpora for fs in feature_sets]
    elif feature_sets or corpora:
        targets = [t for t in targets if t[0] in feature_sets or t[1] in corpora]
    grouped: dict[str, list[str]] = {}
    for fs, corpus in targets:
        grouped.setdefault(corpus, []).append(fs)
    return grouped


@app.command()
def extract(feature_sets: list[str] = typer.Argument(None, help="feature sets (default: every `extract:` and "
                                                                 "`embed:` entry)"),
            corpus: list[str] = typer.Option(None, "--corpus", "-c", help="corpus (repeatable)"),
            engine: Optional[str] = typer.Option(None, help="local | ray | beam (default: params engine.name)"),
            workers: Optional[int] = typer.Option(None, help="Ray actors / Beam workers"),
            ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster address"),
            runner: Optional[str] = typer.Option(None, help="Beam runner, e.g. FlinkRunner"),
            pipeline_arg: list[str] = typer.Option(None, help="extra Beam pipeline option (repeatable)"),
            limit: Optional[int] = typer.Option(None, help="extract at most N new items per feature set (smoke runs)"),
            compact_mb: Optional[int] = typer.Option(None, help="at the end, merge small store files into files "
                                                                "of about this size (MiB)"),
            versions_out: Optional[Path] = typer.Option(None, help="write the store versions the run produced to "
                                                                   "this version file (a DVC output)"),
            params_file: Path = ParamsOpt) -> None:
    """Extract feature sets into the store (incremental: only new or changed clips). The feature sets of a corpus
    run together: one worker pool, each clip decoded once."""
    from pipelines.plan import run_extractions
    params = load_params(params_file)
    options = {k: v for k, v in {"workers": workers, "address": ray_address, "runner": runner,
                                 "pipeline_args": pipeline_arg or None, "compact_mb": compact_mb}.items() if v}
    targets = _extract_targets(params, feature_sets or [], corpus or [])
    if not targets:
        raise UserError("nothing to extract: name a feature set and --corpus, or add `extract:` entries to params")
    rows, retryable = [], 0
    for c, fss in targets.items():
        for s in run_extractions(params, fss, c, engine=engine, engine_options=options, limit=limit):
            retryable += s.retryable
            rows.append([s.feature_set, c, s.engine, s.planned, s.already_done, s.extracted, s.failed,
                         s.retryable, s.removed, f"{s.seconds:.1f}"])
    _table("extract", ["feature set", "corpus", "engine", "planned", "cached", "new rows", "new ledger",
                       "retryable", "pruned", "seconds"], rows)
    if versions_out:
        from pipelines.store import versions
        versions.write(versions_out, versions.current(_store(params_file), [(fs, c) for c, fss in targets.items()
                                                                            for fs in fss]))
    if retryable:
        console.print(f"[red]{retryable} items failed for reasons that are not their own[/] (worker lost, I/O or "
                      "unexpected error; `aver store show FS CORPUS --ledger` says which): they are not cached, "
                      "run `aver extract` again to retry them")
        raise typer.Exit(1)


@app.command()
def train(params_file: Path = ParamsOpt) -> None:
    """Train the configured models on cached features (cross-validated + final fit)."""
    from training.stages import train_stage
    train_stage(load_params(params_file))


@app.command()
def evaluate(params_file: Path = ParamsOpt) -> None:
    """Compute every metric and the plot data from the training predictions (`<runs>/metrics.json`)."""
    from training.stages import evaluate_stage
    _metrics_table(evaluate_stage(load_params(params_file)))


@app.command()
def metrics(params_file: Path = ParamsOpt) -> None:
    """Print the evaluate stage's metrics as a table (one row per model)."""
    path = paths(load_params(params_file))["runs"] / "metrics.json"
    if not path.exists():
        raise UserError(f"{path} does not exist yet: run `dvc repro` (or `aver train && aver evaluate`)")
    _metrics_table(json.loads(path.read_text()))


def _metrics_table(m: dict) -> None:
    """UAR mean ± std, WA, macro-F1 and the UAR of every robustness variant, per model."""
    extra = sorted({v for model in m["models"].values() for v in model.get("robustness") or {}})

    def num(block: dict | None, key: str = "mean") -> str:
        value = (block or {}).get(key)
        return "-" if value is None else f"{value:.3f}"
    rows = [[name, f"{num(v['uar'])} ± {num(v['uar'], 'std')}", num(v["wa"]), num(v["f1"]),
             *[num((v.get("robustness") or {}).get(k, {}).get("uar")) for k in extra]]
            for name, v in m["models"].items()]
    _table(f"{m['split']} over {m['n_folds']} folds, {m['n_clips']} clips", ["model", "UAR", "WA", "macro-F1",
           *[f"UAR {k}" for k in extra]], rows)


@app.command()
def report(params_file: Path = ParamsOpt) -> None:
    """Write the static HTML run report."""
    from training.report import write_report
    console.print(f"report: {write_report(load_params(params_file))}")


@app.command()
def pretrain(which: str = typer.Argument(..., help="face | speech"), params_file: Path = ParamsOpt) -> None:
    """Train an emotion CNN on the declared pre-training speakers (params `pretrain:`), for the embedding extractors."""
    from training.pretrain import pretrain_command
    console.print(pretrain_command(which, params_file))


@app.command()
def predict(file: Path = typer.Argument(..., help="video or audio file"),
            model: Optional[str] = typer.Option(None, help="model name, model folder or run folder"),
            window: float = typer.Option(2.0, help="window length, seconds"),
            hop: float = typer.Option(1.0, help="window hop, seconds"),
            out: Optional[Path] = typer.Option(None, help="output folder (default <runs>/predict/<stem>)"),
            plot: bool = typer.Option(False, help="also write a PNG of the timeline"),
            params_file: Path = ParamsOpt) -> None:
    """Emotion timeline of one file: the same extractors in-process, a trained model, CSV + JSON (+ PNG)."""
    from pipelines.predict import predict_file
    from pipelines.saved_models import PredictError
    try:
        result = predict_file(file, model, load_params(params_file), window=window, hop=hop, out_dir=out, plot=plot)
    except PredictError as e:
        raise UserError(str(e)) from None
    overall = result.get("overall", {})
    console.print(f"{file}: {overall.get('label')} ({len(result.get('windows', []))} windows)")
    for name, path in result.get("outputs", {}).items():
        console.print(f"  {name}: {path}")


@app.command()
def live(source: str = typer.Argument(..., help="/dev/videoN, a URL FFmpeg reads (rtsp://, udp://, ...), - or a file"),
         model: Optional[str] = typer.Option(None, help="model name, model folder or run folder"),
         window: float = typer.Option(1.0, help="window length, seconds"),
         hop: float = typer.Option(0.5, help="window hop, seconds"),
         out: Optional[Path] = typer.Option(None, help="JSON lines file (default: stdout)"),
         realtime: bool = typer.Option(False, help="read a file at 1x pace, as if it were live"),
         backlog: int = typer.Option(1, help="windows that may wait for the scorer before the oldest is dropped"),
         view: Optional[str] = typer.Option(None, help="'-': a line per window on stderr; a .png path: the latest "
                                                       "frame with the speaking face and the probabilities"),
         idle_timeout: float = typer.Option(10.0, help="a network source silent this long (s) has ended"),
         params_file: Path = ParamsOpt) -> None:
    """Real-time emotion of a camera, stream, pipe or file: one JSON line per window, a summary at the end."""
    from pipelines.live import SourceError, run_live
    from pipelines.live.view import make_view
    from pipelines.saved_models import PredictError
    try:
        with (open(out, "w") if out else nullcontext(sys.stdout)) as stream:
            run_live(source, model, load_params(params_file), window=window, hop=hop, out=stream,
                     realtime=realtime, backlog=backlog, view=make_view(view), idle_timeout=idle_timeout)
    except (PredictError, SourceError) as e:
        raise UserError(str(e)) from None


@app.command()
def demo(out: Path = typer.Option(Path("data/demo"), help="where to write the demo corpus"),
         seed: int = typer.Option(0), params_file: Path = ParamsOpt) -> None:
    """Generate the embedded synthetic talking-face demo corpus."""
    from pipelines.demo import generate
    cfg = load_params(params_file).get("demo", {}) if params_file.exists() else {}
    cfg = {**cfg, "seed": seed}
    console.print(f"demo corpus: {generate(out, **cfg)}")


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
    _table("corpora", ["corpus", "adapter", "root", "clips"], rows)


@corpus_app.command("identities")
def corpus_identities(corpus: str, feature_set: str = typer.Option("faces", help="faces feature set with identity"),
                      threshold: float = typer.Option(0.55, help="clustering distance (dlib descriptors)"),
                      json_out: Optional[Path] = typer.Option(None, "--json", help="also write the report here"),
                      params_file: Path = ParamsOpt) -> None:
    """Cluster the corpus's faces: clusters spanning several declared speakers, speakers spanning several clusters."""
    from features.face_identity import corpus_identities as report_of
    report = report_of(_store(params_file), feature_set, corpus, threshold)
    if json_out:
        json_out.write_text(json.dumps(report, indent=1))
    console.print(f"{report['clips']} clips in {report['clusters']} identity clusters "
                  f"({report['clips_without_identity_or_speaker']} without identity or speaker)")
    _table("clusters with several speakers", ["cluster", "speakers (clips)", "clips"],
           [[c["cluster"], c["speakers"], " ".join(c["clips"])] for c in report["mixed_clusters"]])
    _table("speakers in several clusters", ["speaker", "clusters (clips)"],
           [[s["speaker"], s["clusters"]] for s in report["split_speakers"]])


def _store(params_file: Path):
    from pipelines.store import FeatureStore
    p = paths(load_params(params_file))
    return FeatureStore(p["store"], p["manifests"])


@store_app.command("ls")
def store_ls(params_file: Path = ParamsOpt) -> None:
    """Feature sets × corpora in the store with row and ledger counts."""
    store = _store(params_file)
    rows = [[i["feature_set"], i["corpus"], i["rows"], i["failed"], i["kind"], i["fingerprint"]]
            for fs in store.feature_sets() for c in store.corpora(fs) for i in [store.info(fs, c)]]
    _table("store", ["feature set", "corpus", "rows", "ledger", "extractor", "fingerprint"], rows)


@store_app.command("show")
def store_show(feature_set: str, corpus: str, params_file: Path = ParamsOpt,
               ledger: bool = typer.Option(False, help="print the ledger rows")) -> None:
    """Metadata, columns and (optionally) ledger of one feature set × corpus."""
    store = _store(params_file)
    if not store.shards(feature_set, corpus):
        raise UserError(f"the store has no {feature_set!r} files for corpus {corpus!r} (see `aver store ls`)")
    console.print_json(json.dumps(store.info(feature_set, corpus), default=str))
    if ledger:
        df = store.ledger(feature_set, corpus)
        _table("ledger", ["clip_id", "variant", "reason", "detail"],
               df[["clip_id", "variant", "reason", "detail"]].values.tolist())


@store_app.command("verify")
def store_verify(feature_set: Optional[str] = typer.Argument(None), corpus: list[str] = typer.Option(None, "--corpus"),
                 params_file: Path = ParamsOpt) -> None:
    """Re-check schemas, duplicates, missing rows and stale rows (changed media, code or config) against the
    manifests and params."""
    from pipelines.plan import config_fingerprint, planned_keys
    params = load_params(params_file)
    store = _store(params_file)
    rows, bad = [], 0
    for fs in [feature_set] if feature_set else store.feature_sets():
        for c in corpus or store.corpora(fs):
            _, fingerprint, _ = config_fingerprint(params, fs, store, c)
            rep = store.verify(fs, c, planned_keys(params, fs, c), fingerprint)
            bad += not rep.ok
            rows.append([fs, c, rep.rows, rep.failed, "ok" if rep.ok else "; ".join(rep.problems)])
    _table("verify", ["feature set", "corpus", "rows", "ledger", "status"], rows)
    raise typer.Exit(1 if bad else 0)


@store_app.command("compact")
def store_compact(feature_set: Optional[str] = typer.Argument(None, help="feature set (default: all)"),
                  corpus: list[str] = typer.Option(None, "--corpus", "-c", help="corpus (repeatable)"),
                  target_mb: int = typer.Option(128, help="target file size, MiB"),
                  params_file: Path = ParamsOpt) -> None:
    """Merge small store files into files of about the target size (same rows; readers keep working)."""
    from pipelines.store.compaction import compact
    store = _store(params_file)
    rows = []
    for fs, c in _pairs(store, feature_set, corpus):
        r = compact(store, fs, c, target_mb * 2**20)
        rows.append([fs, c, r.files_before, r.files_after, r.rows])
    _table("compact", ["feature set", "corpus", "files before", "files after", "rows rewritten"], rows)


def _pairs(store, feature_set: str | None, corpus: list[str] | None) -> list[tuple[str, str]]:
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
    store = _store(params_file)
    found = versions.current(store, _pairs(store, feature_set, corpus))
    if out:
        versions.write(out, found)
    _table("versions", ["feature set", "corpus", "version"], [[fs, c, v] for (fs, c), v in found.items()])


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
    store = _store(params_file)
    rows = []
    for fs, c in _pairs(store, feature_set, corpus):
        r = vacuum(store, fs, c, retain_versions, retain_hours, keep or [])
        rows.append([fs, c, r.version, r.deleted, f"{r.bytes / 2**20:.1f}", r.kept])
    _table("vacuum", ["feature set", "corpus", "version", "files deleted", "MiB freed", "replaced files kept"], rows)


def main() -> None:
    from rich.logging import RichHandler

    from pipelines.weights import WeightsUnavailable
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console)])
    for noisy in ("ray", "apache_beam", "numba", "matplotlib", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        # without standalone mode click returns a command's `typer.Exit(code)` instead of exiting with it
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (UserError, WeightsUnavailable) as e:    # the user's to fix: one line; anything else is a bug: traceback
        if DEBUG["traceback"]:
            raise
        console.print(f"[red]error:[/] {escape(str(e))}")
        sys.exit(2)


if __name__ == "__main__":
    main()
