"""A local store kept in DVC with an S3 remote (the SeaweedFS server): `dvc add` + `dvc push` on one machine, `git
clone` + `dvc pull` on another gives the same store, commit log included (the worked example of README.md)."""
import subprocess
import sys

import failing_extractors
from pipelines.extractor import LOCAL_KINDS
from pipelines.plan import run_extraction
from pipelines.store import FeatureStore

GIT = ["git", "-c", "user.name=aver", "-c", "user.email=aver@example.org"]


def _run(cwd, *cmd):
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def dvc(cwd, *args):
    return _run(cwd, sys.executable, "-m", "dvc", *args)


def test_store_pushed_to_an_s3_remote_and_pulled_elsewhere(s3_server, tmp_path, monkeypatch):
    monkeypatch.setitem(LOCAL_KINDS, "no_speech", "failing_extractors:NoSpeech")
    repo = tmp_path / "repo"
    repo.mkdir()
    _run(repo, *GIT, "init", "-q")
    dvc(repo, "init", "-q")
    cfg = failing_extractors.corpus(tmp_path / "corpus", repo / "manifests")
    params = {"paths": {"manifests": str(repo / "manifests"), "store": str(repo / "store")}, "corpora": {"c": cfg},
              "engine": {"name": "local", "chunk_size": 2}, "features": {"f": {"extractor": "no_speech"}}}
    run_extraction(params, "f", "c", progress=False)
    dvc(repo, "add", "-q", "store", "manifests")
    dvc(repo, "remote", "add", "-d", "storage", "s3://aver/dvc-remote")
    dvc(repo, "remote", "modify", "storage", "endpointurl", s3_server.url)     # credentials: AWS_* environment
    _run(repo, *GIT, "add", "-A")
    _run(repo, *GIT, "commit", "-qm", "store v1")
    dvc(repo, "push", "-q")

    other = tmp_path / "other"                   # another machine: the git repository, then the data from S3
    _run(tmp_path, *GIT, "clone", "-q", str(repo), str(other))
    assert not (other / "store").exists()
    dvc(other, "pull", "-q")
    mine, theirs = FeatureStore(repo / "store", repo / "manifests"), FeatureStore(other / "store", other / "manifests")
    assert theirs.read("f", "c").to_pylist() == mine.read("f", "c").to_pylist() and theirs.read("f", "c").num_rows == 5
    assert theirs.ledger("f", "c").equals(mine.ledger("f", "c"))
    assert theirs.log("f", "c").snapshot() == mine.log("f", "c").snapshot()
    assert "storage" in dvc(other, "remote", "list") and "Data and pipelines are up to date" in dvc(other, "status")
