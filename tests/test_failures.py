"""Two kinds of failure: a clip's own fault is a permanent ledger row; anything else is retried with backoff, and
what still fails is recorded as retryable: not cached as done, a non-zero `aver extract`, retried by the next run."""
from pathlib import Path

import pytest
import yaml

import failing_extractors
from test_cli import main as aver_main
from failing_extractors import N_CLIPS, Broken, FlakyDownstream, Transient
from pipelines.engines.retry import RetryPolicy, process_with_retries
from pipelines.extractor import LOCAL_KINDS, RETRYABLE
from pipelines.group import ExtractorGroup
from pipelines.plan import config_fingerprint, run_extraction
from pipelines.store import FeatureStore


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("failures")
    cfg = failing_extractors.corpus(tmp / "corpus", tmp / "manifests")
    return tmp, cfg


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    for kind, cls in failing_extractors.KINDS.items():
        monkeypatch.setitem(LOCAL_KINDS, kind, f"failing_extractors:{cls}")


def _params(tmp: Path, cfg: dict, kind: str, store: str, engine: str = "local", **params) -> dict:
    return {"paths": {"manifests": str(tmp / "manifests"), "store": str(tmp / store)}, "corpora": {"c": cfg},
            "engine": {"name": engine, "chunk_size": 2, "retry": {"attempts": 3, "backoff_s": 0.01},
                       "ray": {"workers": 1}},
            "features": {"f": {"extractor": kind, "params": params}}}


def _store(p: dict) -> FeatureStore:
    return FeatureStore(p["paths"]["store"], p["paths"]["manifests"])


def test_transient_errors_are_retried_until_every_row_is_there(corpus):
    tmp, cfg = corpus
    p = _params(tmp, cfg, "transient", "store_transient")
    Transient.attempts.clear()
    s = run_extraction(p, "f", "c", progress=False)
    assert (s.extracted, s.failed, s.retryable) == (N_CLIPS, 0, 0)
    assert sorted(Transient.attempts.values()) == [1, 1, 1, 2, 2, 2]     # half of them failed once
    assert _store(p).ledger("f", "c").empty


def test_persistent_errors_are_retryable_rows_a_failed_exit_and_retried_next_run(corpus, monkeypatch):
    tmp, cfg = corpus
    p = _params(tmp, cfg, "broken", "store_broken")
    (tmp / "broken.yaml").write_text(yaml.safe_dump(p))
    monkeypatch.setattr(Broken, "broken", True)
    code, output = aver_main(monkeypatch, "extract", "f", "--corpus", "c", "--params", str(tmp / "broken.yaml"))
    assert code == 1, output            # the `aver` entry point's exit status, as DVC and shells see it
    assert f"{N_CLIPS} items failed for reasons that are not their own" in " ".join(output.split())
    store = _store(p)
    ledger = store.ledger("f", "c")
    assert set(ledger["reason"]) == {f"{RETRYABLE}RuntimeError"} and len(ledger) == N_CLIPS
    assert "CUDA error" in ledger["detail"].iloc[0]
    _, fp, _ = config_fingerprint(p, "f", store, "c")
    assert store.done_keys("f", "c", fp) == {}                 # recorded, never counted as done
    assert any("6 items failed for reasons not their own" in m for m in store.verify("f", "c").problems)
    monkeypatch.setattr(Broken, "broken", False)               # the fault is fixed: the next run retries them
    s = run_extraction(p, "f", "c", progress=False)
    assert (s.already_done, s.extracted, s.retryable, s.removed) == (0, N_CLIPS, 0, N_CLIPS)
    assert store.ledger("f", "c").empty and store.verify("f", "c").ok


def test_a_clip_fault_is_permanent(corpus):
    tmp, cfg = corpus
    p = _params(tmp, cfg, "no_speech", "store_clip_fault")
    first = run_extraction(p, "f", "c", progress=False)
    assert (first.extracted, first.failed, first.retryable) == (N_CLIPS - 1, 1, 0)
    again = run_extraction(p, "f", "c", progress=False)
    assert (again.already_done, again.extracted, again.failed) == (N_CLIPS, 0, 0)


@pytest.mark.parametrize("engine", ["local", "beam", "ray"])
def test_engines_treat_errors_alike(corpus, monkeypatch, engine):
    """Beam's DoFn and Ray's actors retry in the worker like the local engine and write the same retryable rows."""
    tmp, cfg = corpus
    monkeypatch.setattr(Broken, "broken", True)
    p = _params(tmp, cfg, "broken", f"store_errors_{engine}", engine=engine)
    p["engine"]["beam"] = {"pipeline_args": ["--direct_running_mode=in_memory"]}
    s = _ray_run(p) if engine == "ray" else run_extraction(p, "f", "c", progress=False)
    assert (s.extracted, s.retryable) == (0, N_CLIPS)
    assert set(_store(p).ledger("f", "c")["reason"]) == {f"{RETRYABLE}RuntimeError"}


def _ray_run(p: dict):
    import ray
    tests = str(Path(__file__).parent)
    ray.shutdown()
    ray.init(num_cpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": ":".join([tests, str(Path(tests).parent)])},
                          "worker_process_setup_hook": "failing_extractors.register"})
    try:
        return run_extraction(p, "f", "c", progress=False)
    finally:
        ray.shutdown()


def test_ray_restarts_a_dead_worker_and_resubmits_its_batch(corpus):
    """A worker killed mid-batch (no exception, like an OOM kill): Ray restarts the actor and reruns the task."""
    tmp, cfg = corpus
    marker = tmp / "died"
    s = _ray_run(_params(tmp, cfg, "dies", "store_dies", engine="ray", marker=str(marker)))
    assert marker.exists(), "the worker should have died once"
    assert (s.extracted, s.failed, s.retryable) == (N_CLIPS, 0, 0)


def test_ray_gives_up_on_a_batch_that_always_kills_its_worker(corpus):
    """Bounded: the batch is tried `attempts` times, then recorded as retryable while the other batches finish; the
    batches that were queued on the dying actor are resubmitted, not lost with it."""
    tmp, cfg = corpus
    tries = tmp / "tries"
    tries.mkdir()
    p = _params(tmp, cfg, "dies", "store_dies_always", engine="ray", resources={"batch_size": 1}, tries=str(tries))
    s = _ray_run(p)
    ledger = _store(p).ledger("f", "c")
    assert len(list(tries.iterdir())) == 3                      # engine.retry.attempts, no more
    assert list(ledger["clip_id"]) == ["c/s1_happy_1"] and list(ledger["reason"]) == [f"{RETRYABLE}lost"]
    assert "died during each of the 3 tries" in ledger["detail"].iloc[0]
    assert (s.extracted, s.retryable) == (N_CLIPS - 1, 1)
    assert sorted(_store(p).read("f", "c").column("clip_id").to_pylist()) == sorted(
        f"c/s{i % 2}_happy_{i}" for i in range(N_CLIPS) if i != 1)


def test_a_retried_downstream_set_gets_the_upstream_row_made_in_the_first_attempt():
    group = ExtractorGroup([("up", "transient", {}), ("down", "flaky_down", {})])
    FlakyDownstream.calls.clear()
    unit = {"clip_id": "c/s1_happy_1", "variant": "clean", "content_hash": "h", "corpus": "c", "path": "1.wav",
            "feature_sets": ["up", "down"], "inputs": {}}
    out = process_with_retries(group, [unit], RetryPolicy(attempts=2, backoff_s=0))
    assert [r["index"] for r in out["up"].rows] == [1]               # the upstream ran once, not again
    assert [r["index"] for r in out["down"].rows] == [2] and not out["down"].errors
    assert FlakyDownstream.calls == [["up"], ["up"]]                  # both attempts had the upstream row


def test_an_io_error_reading_media_is_the_machines_fault_retried_not_a_ledger_row(corpus, monkeypatch):
    """EIO from the disk or a stale network mount, met while opening a real clip, is retried like any infrastructure
    fault; a file that is really missing stays the clip's permanent `unreadable` row."""
    import errno
    tmp, cfg = corpus
    p = _params(tmp, cfg, "logmel", "store_eio")
    real_stat, seen = Path.stat, set()

    def stat_failing_once(path, *args, **kwargs):
        if path.suffix == ".wav" and path not in seen:
            seen.add(path)
            raise OSError(errno.EIO, "Input/output error")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat_failing_once)
    s = run_extraction(p, "f", "c", progress=False)
    assert (s.extracted, s.failed, s.retryable) == (N_CLIPS, 0, 0) and len(seen) == N_CLIPS
    assert _store(p).ledger("f", "c").empty
