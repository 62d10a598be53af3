"""Imported first by every benchmark script: puts the repository on sys.path and finds ../shared (or $AVER_SHARED),
whose models folder serves the model registry offline."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AVER_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("AVER_MODELS_DIR", str(SHARED / "models"))
os.environ.setdefault("AVER_OFFLINE", "1")
sys.path.insert(0, str(ROOT))
