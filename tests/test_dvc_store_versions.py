"""A store that lives on S3 (the SeaweedFS server) in a DVC pipeline: the extract stage's output is the small version
file naming the versions it produced, so a git checkout of an older commit (+ `dvc checkout`) reads the older table;
`aver store vacuum --keep` keeps that version readable (the worked example of README.md)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import failing_extractors
import miniature
from pipelines.config import paths
from pipelines.ingest import ingest
from pipelines.store.commits import VersionUnavailable
from pipelines.store.versions import reading_store

GIT = ["git", "-c", "user.name=aver", "-c", "user.email=aver@example.org"]
ROOT = Path(__file__).parent.parent
DVC_YAML = """
stages:
  extract:
    cmd: {python} -m pipelines.cli extract f --corpus c --versions-out versions/f-c.json
    params: [features.f]
    deps: [manifests/c.parquet]
    outs: [versions/f-c.json]
"""


def _run(cwd, *cmd) -> str:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def test_an_older_git_commit_reads_the_older_version_of_an_s3_store(s3_server, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _run(repo, *GIT, "init", "-q")
    _run(repo, sys.executable, "-m", "dvc", "init", "-q")
    cfg = failing_extractors.corpus(tmp_path / "corpus", repo / "manifests")
    params = {"paths": {"manifests": "manifests", "store": s3_server.uri("dvc-pinned-store"),
                        "store_versions": "versions"},
              "corpora": {"c": cfg}, "engine": {"name": "local", "chunk_size": 2, "compact_mb": 1},
              "features": {"f": {"extractor": "logmel", "params": {"resources": {"batch_size": 2}}}}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    (repo / "dvc.yaml").write_text(DVC_YAML.format(python=sys.executable))
    store = lambda: reading_store(paths({"paths": {**params["paths"], "store_versions": str(repo / "versions"),
                                                   "manifests": str(repo / "manifests")}}))

    def commit(message: str) -> str:
        _run(repo, sys.executable, "-m", "dvc", "repro", "-q")
        _run(repo, *GIT, "add", "-A")
        _run(repo, *GIT, "commit", "-qm", message)
        return _run(repo, *GIT, "rev-parse", "HEAD").strip()

    first = commit("6 clips")
    v1 = store().read("f", "c")
    assert v1.num_rows == 6 and store().versions[("f", "c")] >= 1       # compacted: the small files replaced
    miniature.audio(tmp_path / "corpus" / "s0_happy_6.wav")
    ingest("c", cfg, repo / "manifests", progress=False)                # new media: the stage runs again
    second = commit("7 clips")
    assert store().read("f", "c").num_rows == 7

    def checkout(rev: str) -> None:
        _run(repo, *GIT, "checkout", "-q", rev)
        _run(repo, sys.executable, "-m", "dvc", "checkout", "-q")

    checkout(first)                                                      # the older version file is back
    assert store().read("f", "c").equals(v1, check_metadata=True)       # and reads the older table, byte for byte
    checkout(second)
    assert store().read("f", "c").num_rows == 7
    _run(repo, sys.executable, "-m", "dvc", "get", ".", "versions", "--rev", first, "-o", str(tmp_path / "v1"))
    _run(repo, sys.executable, "-m", "pipelines.cli", "store", "vacuum", "--retain-hours", "0",
         "--keep", "versions", "--keep", str(tmp_path / "v1"))
    checkout(first)
    assert store().read("f", "c").equals(v1, check_metadata=True)       # kept: a version file named it
    checkout(second)
    _run(repo, sys.executable, "-m", "pipelines.cli", "store", "vacuum", "--retain-hours", "0", "--keep", "versions")
    checkout(first)
    with pytest.raises(VersionUnavailable, match="vacuumed"):           # no longer wanted: its files are gone
        store().read("f", "c")
