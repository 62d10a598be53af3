import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AVER_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("AVER_MODELS_DIR", str(SHARED / "models"))
os.environ.setdefault("AVER_OFFLINE", "1")


def shared_path(*parts: str) -> Path:
    """Path under ../shared; skips the test when missing, or fails it under AVER_REQUIRE_ASSETS=1."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        msg = f"shared asset missing: {path}"
        if os.environ.get("AVER_REQUIRE_ASSETS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture
def shared():
    return shared_path
