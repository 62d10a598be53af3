"""`aver predict FILE` and `aver live SOURCE`: emotions of a file, a camera or a stream with a saved model."""
from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer

from pipelines.cli.common import ParamsOpt, app, console
from pipelines.config import load_params
from pipelines.errors import UserError

ModelOpt = typer.Option(None, help="model name, model folder or run folder")


@app.command()
def predict(file: Path = typer.Argument(..., help="video or audio file"),
            model: Optional[str] = ModelOpt,
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
         model: Optional[str] = ModelOpt,
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
