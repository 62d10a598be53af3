"""Streaming planning: the manifest is planned a slice at a time, units are spooled without upstream rows, and the
worker reads a downstream set's upstream rows by key from the store."""
import failing_extractors
from failing_extractors import N_CLIPS, FlakyDownstream
from pipelines import planning
from pipelines.extractor import LOCAL_KINDS
from pipelines.plan import run_extraction
from pipelines.store import FeatureStore


def test_units_are_planned_per_slice_and_carry_keys_not_upstream_rows(tmp_path, monkeypatch):
    for kind, cls in failing_extractors.KINDS.items():
        monkeypatch.setitem(LOCAL_KINDS, kind, f"failing_extractors:{cls}")
    cfg = failing_extractors.corpus(tmp_path / "corpus", tmp_path / "m")
    params = {"paths": {"manifests": str(tmp_path / "m"), "store": str(tmp_path / "s")}, "corpora": {"c": cfg},
              "engine": {"name": "local", "chunk_size": 2, "retry": {"backoff_s": 0}},
              "features": {"up": {"extractor": "no_speech", "params": {}},
                           "down": {"extractor": "flaky_down", "params": {}}}}
    monkeypatch.setattr(planning, "SLICE_CLIPS", 2)
    spooled, write = [], planning.Spool.write
    monkeypatch.setattr(planning.Spool, "write", lambda self, units: (spooled.append(units), write(self, units))[1])
    assert run_extraction(params, "up", "c", progress=False).extracted == N_CLIPS - 1     # clip 0: a clip fault
    spooled.clear()
    FlakyDownstream.calls.clear()
    down = run_extraction(params, "down", "c", progress=False)
    assert (down.extracted, down.retryable, down.failed) == (N_CLIPS - 1, 0, 1)
    assert [len(units) for units in spooled] == [1, 2, 2]            # three slices of two clips, clip 0 has no input
    assert all("inputs" not in u and u["stored_inputs"] == {"up": "clean"} for units in spooled for u in units)
    store = FeatureStore(tmp_path / "s", tmp_path / "m")
    up = {r["clip_id"]: r["index"] for r in store.read("up", "c").to_pylist()}
    assert {r["clip_id"]: r["index"] for r in store.read("down", "c").to_pylist()} == {c: i + 1 for c, i in up.items()}
    assert store.ledger("down", "c")["reason"].tolist() == ["missing_input:up"]
    assert not (tmp_path / "s" / ".plan").exists()                     # the spool is removed after the pass
