"""A real two-node Ray cluster on loopback with the store on S3 (SeaweedFS): a worker node killed mid-run (its
raylet and worker processes, started by this test) loses nothing and duplicates nothing: the same run completes on
the head node (Ray restarts the lost actor there and resubmits its batches), every key is stored exactly once, no
retryable row, and the rows equal a local-engine run's."""
import copy
import signal
import threading
import time

import psutil
import pytest
import ray
from ray.cluster_utils import Cluster

from pipelines.plan import planned_keys, run_extraction
from pipelines.store import FeatureStore
from test_engines import FS, _rows, corpus  # noqa: F401 - eight EmoDB clips, two variants


def _kill_node(node) -> list[int]:
    """SIGKILL the node's raylet and every process under it (its workers, our actor among them), like a lost host."""
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    procs = [raylet, *raylet.children(recursive=True)]
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in procs]


def _has_actor(node) -> bool:
    """Whether one of the node's worker processes has become an extraction actor (its process title says so)."""
    def title(p):
        try:
            return " ".join(p.cmdline())
        except psutil.Error:
            return ""
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    return any("RayExtractor" in title(p) for p in raylet.children(recursive=True))


@pytest.mark.cluster
def test_worker_node_killed_mid_run_on_s3_the_run_completes_every_row_once(corpus, s3_server, tmp_path):
    tmp, _, params = corpus
    p = copy.deepcopy(params)
    p["paths"]["store"] = s3_server.uri("store-ray-cluster")
    p["engine"] = {"name": "ray", "chunk_size": 4, "ray": {"workers": 2}}
    p["features"][FS]["params"]["resources"] = {"batch_size": 1}       # many small tasks: the kill lands mid-run
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    outcome: dict = {}
    killed: list[int] = []
    try:
        ray.init(address=cluster.address, include_dashboard=False, configure_logging=False, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        run = threading.Thread(target=lambda: outcome.update(s=run_extraction(p, FS, "emo", progress=False)))
        run.start()
        store = FeatureStore(p["paths"]["store"], p["paths"]["manifests"])
        folder = store.dir(FS, "emo")
        deadline = time.time() + 240
        while not (_has_actor(worker) and any(i.base_name.startswith("part-") for i in store.files.entries(folder))):
            assert time.time() < deadline and run.is_alive(), "the worker node never started a batch"
            time.sleep(0.2)
        killed = _kill_node(worker)
        assert run.is_alive(), "the kill should land mid-run"
        run.join(timeout=300)
        assert not run.is_alive(), "the run did not complete on the remaining node"
        first = outcome["s"]
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert killed and not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                              for pid in killed)
    # one run, complete: no retryable row (`aver extract` exits 0), every planned key once
    assert (first.extracted, first.failed, first.retryable) == (16, 0, 0)
    rows = _rows(p)
    keys = [(r["clip_id"], r["variant"]) for r in rows]
    assert sorted(keys) == sorted(planned_keys(p, FS, "emo")) and store.info(FS, "emo")["rows"] == 16
    assert store.read(FS, "emo", "ledger").num_rows == 0 and store.verify(FS, "emo").ok
    ref = copy.deepcopy(params)
    ref["paths"]["store"] = str(tmp_path / "local")
    run_extraction(ref, FS, "emo", progress=False)
    local = {(r["clip_id"], r["variant"]): r for r in _rows(ref)}
    assert rows == [local[k] for k in keys]                     # identical to the local engine's rows
