"""`aver`: one verb per pipeline step (steps.py), predict and live (prediction.py), `aver corpus` (corpus.py) and
`aver store` (store.py). Heavy imports stay inside the commands so `aver --help` is instant."""
from __future__ import annotations

import logging
import sys

import click
from rich.markup import escape

# importing a verb module registers its commands, in the order `aver --help` lists them
from pipelines.cli import steps  # noqa: F401  isort: skip
from pipelines.cli import prediction  # noqa: F401  isort: skip
from pipelines.cli import corpus, store  # noqa: F401  isort: skip
from pipelines.cli import common
from pipelines.cli.common import app, console
from pipelines.errors import UserError

__all__ = ["app", "main"]


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
        if common.DEBUG["traceback"]:
            raise
        console.print(f"[red]error:[/] {escape(str(e))}")
        sys.exit(2)
