"""`aver live`: real-time emotion of a camera, a stream, a pipe or a file (see pipelines/live/run.py)."""
from pipelines.live.run import run_live
from pipelines.live.source import SourceError

__all__ = ["run_live", "SourceError"]
