"""What every `aver` verb shares: the typer apps, the console, the params option, tables and the store."""
from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipelines.config import load_params, paths

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="`aver`: one verb per pipeline step.")
corpus_app = typer.Typer(no_args_is_help=True, help="Declare and list corpora (params.yaml `corpora:`).")
store_app = typer.Typer(no_args_is_help=True, help="Inspect, verify, compact and version the feature store.")
app.add_typer(corpus_app, name="corpus")
app.add_typer(store_app, name="store")
console = Console(width=None if sys.stdout.isatty() else 160)   # logs and CI: don't squeeze tables

DEBUG = {"traceback": False}


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="show the traceback of every error, "
                                                               "including mistakes in the input")) -> None:
    DEBUG["traceback"] = debug


ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="params file")


def table(title: str, columns: list[str], rows: list[list]) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(x) for x in r])
    console.print(t)


def open_store(params_file: Path):
    from pipelines.store import FeatureStore
    p = paths(load_params(params_file))
    return FeatureStore(p["store"], p["manifests"])
