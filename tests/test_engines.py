"""Store + engines on real EmoDB audio: identical rows on every engine, incremental, atomic, resumable."""
import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import yaml

from pipelines.ingest import ingest
from pipelines.plan import planned_keys, run_extraction, run_extractions
from pipelines.store import FeatureStore
from conftest import shared_path

FS = "egemaps"


def _params(tmp: Path, root: Path, **engine) -> dict:
    return {"paths": {"manifests": str(tmp / "manifests"), "store": str(tmp / "store")},
            "corpora": {"emo": {"adapter": "emodb", "root": str(root)}},
            "engine": {"name": "local", "chunk_size": 4, **engine},
            "features": {FS: {"extractor": "opensmile",
                              "params": {"feature_set": "eGeMAPSv02", "level": "functionals"},
                              "variants": ["clean", "white_snr10"]}},
            "augment": {"seed": 0}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Eight EmoDB clips of two speakers (symlinked, never copied) ingested into a manifest."""
    src = shared_path("data", "emodb", "wav")
    root = tmp_path_factory.mktemp("emo") / "emodb"
    (root / "wav").mkdir(parents=True)
    for f in sorted(src.glob("03*.wav"))[:4] + sorted(src.glob("08*.wav"))[:4]:
        (root / "wav" / f.name).symlink_to(f)
    tmp = tmp_path_factory.mktemp("run")
    params = _params(tmp, root)
    ingest("emo", params["corpora"]["emo"], Path(params["paths"]["manifests"]))
    return tmp, root, params


def _rows(params: dict) -> list[dict]:
    store = FeatureStore(params["paths"]["store"], params["paths"]["manifests"])
    return sorted(store.read(FS, "emo").to_pylist(), key=lambda r: (r["clip_id"], r["variant"]))


def _fresh(params: dict, tmp: Path, store: str, **engine) -> dict:
    p = copy.deepcopy(params)
    p["paths"]["store"] = str(tmp / store)
    p["engine"].update(engine)
    shutil.rmtree(p["paths"]["store"], ignore_errors=True)
    return p


def test_local_then_incremental(corpus):
    tmp, _, params = corpus
    p = _fresh(params, tmp, "store_local")
    s = run_extraction(p, FS, "emo", progress=False)
    assert (s.planned, s.extracted, s.failed) == (16, 16, 0)
    again = run_extraction(p, FS, "emo", progress=False)
    assert (again.already_done, again.extracted) == (16, 0)
    store = FeatureStore(p["paths"]["store"], p["paths"]["manifests"])
    assert store.verify(FS, "emo", planned_keys(p, FS, "emo")).ok
    # a changed param re-extracts this feature set, and the old rows are pruned
    p["features"][FS]["variants"] = ["clean"]
    changed = run_extraction(p, FS, "emo", progress=False)
    assert (changed.removed, changed.extracted) == (16, 8)
    assert store.verify(FS, "emo", planned_keys(p, FS, "emo")).ok


# the Ray engine passes nothing Ray 2.60 deprecates (map_batches with max_restarts/max_task_retries did)
@pytest.mark.filterwarnings("error::ray.util.annotations.RayDeprecationWarning")
def test_engines_give_identical_rows(corpus):
    tmp, _, params = corpus
    results = {}
    for engine in ("local", "ray", "beam"):
        p = _fresh(params, tmp, f"store_{engine}", name=engine)
        s = run_extraction(p, FS, "emo", progress=False)
        assert s.extracted == 16, engine
        results[engine] = _rows(p)
    ray.shutdown()   # the local Ray instance must not outlive the test
    assert results["local"] == results["ray"] == results["beam"]
    meta = FeatureStore(tmp / "store_beam", params["paths"]["manifests"]).info(FS, "emo")
    assert meta["kind"] == "opensmile" and meta["rows"] == 16


def test_verify_finds_missing_rows_and_an_uncommitted_copy_is_never_read(corpus):
    tmp, _, params = corpus
    p = _fresh(params, tmp, "store_verify")
    run_extraction(p, FS, "emo", progress=False, limit=10)
    store = FeatureStore(p["paths"]["store"], p["paths"]["manifests"])
    rep = store.verify(FS, "emo", planned_keys(p, FS, "emo"))
    assert any("6 planned rows missing" in m for m in rep.problems)
    # a second copy of a file, as a resubmitted batch or a crashed run leaves it: no commit names it
    part = next(s.path for s in store.shards(FS, "emo") if s.kind == "part")
    shutil.copy(part, part.with_name(f"part-{'0' * 32}.parquet"))
    assert store.verify(FS, "emo", planned_keys(p, FS, "emo")).problems == rep.problems
    assert store.read(FS, "emo").num_rows == 10 and store.info(FS, "emo")["rows"] == 10


@pytest.mark.parametrize("sets", [[FS], [FS, "logmel"]], ids=["one_set", "one_pass_two_sets"])
def test_sigkill_mid_run_resumes_with_every_row_once(corpus, sets):
    tmp, _, params = corpus
    p = _fresh(params, tmp, f"store_kill_{len(sets)}", chunk_size=2)
    p["features"]["logmel"] = {"extractor": "logmel", "variants": ["clean", "white_snr10"]}
    params_file = tmp / "kill.yaml"
    params_file.write_text(yaml.safe_dump(p))
    cmd = [sys.executable, "-m", "pipelines.cli", "extract", *sets, "--corpus", "emo", "--params", str(params_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    store = FeatureStore(p["paths"]["store"], p["paths"]["manifests"])

    def committed() -> int:             # rows of committed parts (a staged part nobody committed is not done)
        return sum(store.files.num_rows(s.path) for s in store.shards(FS, "emo") if s.kind == "part")
    deadline = time.time() + 120
    while time.time() < deadline and not committed():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = committed()
    assert 0 < done_before < 16, "the kill should land mid-run"
    summaries = {s.feature_set: s for s in run_extractions(p, sets, "emo", progress=False)}
    assert summaries[FS].already_done == done_before and summaries[FS].extracted == 16 - done_before
    for fs in sets:
        assert summaries[fs].already_done + summaries[fs].extracted == 16
        assert store.verify(fs, "emo", planned_keys(p, fs, "emo")).ok
        rows = store.read(fs, "emo").to_pylist()
        assert sorted((r["clip_id"], r["variant"]) for r in rows) == sorted(planned_keys(p, fs, "emo"))


@pytest.fixture
def beam_worker_pool(tmp_path):
    """An external SDK worker pool on loopback (importing Beam takes seconds: ready once it listens), stopped by the
    PID this fixture started, with the SDK harnesses it started."""
    from local_server import running
    from s3_server import _free_port
    port = _free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, str(Path(__file__).with_name("beam_worker_pool.py")), str(port)]
    with running(cmd, tmp_path / "pool.log", lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close(),
                 timeout_s=120, env=env):
        yield f"127.0.0.1:{port}", tmp_path / "pool.log"


def test_beam_on_a_portable_runner_with_an_external_worker_pool(corpus, beam_worker_pool):
    """The portable path a Flink/Spark cluster takes: the pipeline goes as protos through a job service to SDK
    harnesses in other processes, started by a worker pool; they write the rows, the driver commits them."""
    tmp, _, params = corpus
    address, log = beam_worker_pool
    local = _fresh(params, tmp, "store_portable_reference")
    run_extraction(local, FS, "emo", progress=False)
    p = _fresh(params, tmp, "store_portable", name="beam",
               beam={"runner": "PortableRunner", "pipeline_args": [
                   "--job_endpoint=embed", "--environment_type=EXTERNAL",
                   f"--environment_config={address}"]})
    s = run_extraction(p, FS, "emo", progress=False)
    assert (s.extracted, s.failed, s.retryable) == (16, 0, 0)
    assert _rows(p) == _rows(local)
    assert "Starting worker" in log.read_text()          # the rows came from the pool's harness processes
