"""Reading the store as of a version (its commit log number), version files, and vacuum: on a folder, on a real S3
server (SeaweedFS, the `s3_server` fixture) and on a GCS emulator (fake-gcs-server, `gcs_server`)."""
import json

import pyarrow as pa
import pytest
import yaml

from pipelines.config import paths
from pipelines.store import FeatureStore, compaction, versions
from pipelines.store.commits import VersionUnavailable
from test_store import _store

META = {"kind": "faces", "fingerprint": "f"}


def _rows(ids: range, x: float) -> pa.Table:
    return pa.table({"clip_id": [f"c/{i}" for i in ids], "variant": ["clean"] * len(ids),
                     "content_hash": ["h"] * len(ids), "x": [x] * len(ids)})


@pytest.fixture(params=["folder", "s3", "gcs"])
def store(request, tmp_path):
    """The test store's manifest (clips c/0-c/2) with its `video` rows, on a folder or in an S3 or GCS bucket."""
    local = _store(tmp_path)
    if request.param == "folder":
        return local
    server = request.getfixturevalue(f"{request.param}_server")
    return FeatureStore(server.uri(f"versions-{request.node.originalname}"), tmp_path / "m")


def _history(store: FeatureStore, tmp_path):
    """Three small commits (version 2 written to a version file), a compaction, one more row, another compaction."""
    for i in range(3):
        store.write_part("faces", "c", _rows(range(i, i + 1), float(i)), META)
    versions.write(tmp_path / "v2.json", versions.current(store, [("faces", "c")]))
    old = store.read("faces", "c")
    compaction.compact(store, "faces", "c")                                 # version 3: one merged file
    store.write_part("faces", "c", _rows(range(3, 4), 3.0), META)          # version 4
    compaction.compact(store, "faces", "c")                                 # version 5
    return old


def test_an_old_version_reads_its_rows_after_compactions_and_new_rows(store, tmp_path):
    old = _history(store, tmp_path)
    assert (tmp_path / "v2.json").read_bytes() == b'{\n "versions": {\n  "faces/c": 2\n }\n}\n'
    assert store.log("faces", "c").snapshot().version == 5 and len(store.shards("faces", "c")) == 1
    assert store.read("faces", "c", version=2).equals(old, check_metadata=True)      # the same rows, the same bytes
    assert store.read("faces", "c").num_rows == 4
    pinned = versions.pinned(store, tmp_path / "v2.json")
    assert pinned.read("faces", "c").equals(old, check_metadata=True)
    df = store.load(["faces"], ["c"], versions=tmp_path / "v2.json")
    assert sorted(df["faces.x"].dropna()) == [0.0, 1.0, 2.0]
    assert sorted(store.load(["faces"], ["c"])["faces.x"].dropna()) == [0.0, 1.0, 2.0]      # c/3: not in the manifest
    assert store.read("faces", "c", version=0).column("clip_id").to_pylist() == ["c/0"]
    with pytest.raises(VersionUnavailable, match="no version 9"):
        store.read("faces", "c", version=9)
    with pytest.raises(RuntimeError, match="read-only"):
        pinned.write_part("faces", "c", _rows(range(5, 6), 5.0), META)


def test_vacuum_deletes_what_no_wanted_version_reads(store, tmp_path):
    old = _history(store, tmp_path)
    folder = store.dir("faces", "c")
    files = lambda: sorted(i.base_name for i in store.files.entries(folder) if i.base_name.endswith(".parquet"))
    assert len(files()) == 6                            # 3 small + merged + 1 more + merged again: all kept
    kept = versions.vacuum(store, "faces", "c", retain_hours=0, keep=[tmp_path / "v2.json"])
    assert (kept.deleted, kept.kept) == (2, 3)          # version 3's merged file and version 4's row: nobody reads them
    assert store.read("faces", "c", version=2).equals(old, check_metadata=True)
    with pytest.raises(VersionUnavailable, match="vacuumed"):
        store.read("faces", "c", version=4)
    store.clean_temporaries("faces", "c", older_than_s=0)      # a replaced file still wanted is no leftover
    assert store.read("faces", "c", version=2).equals(old, check_metadata=True)

    within = versions.vacuum(store, "faces", "c")              # the default: a week of versions, nothing goes
    assert (within.deleted, within.kept) == (0, 3)
    gone = versions.vacuum(store, "faces", "c", retain_hours=0)
    assert gone.deleted == 3 and files() == [s.path.name for s in store.shards("faces", "c")]
    with pytest.raises(VersionUnavailable, match="vacuumed"):
        store.read("faces", "c", version=2)
    assert sorted(store.read("faces", "c").column("x").to_pylist()) == [0.0, 1.0, 2.0, 3.0]


def test_the_last_versions_are_retained_and_a_fresh_reader_sees_the_same_tombstones(tmp_path, monkeypatch):
    from pipelines.store import commits
    monkeypatch.setattr(commits, "CHECKPOINT_EVERY", 2)        # checkpoints carry the tombstones
    store = _store(tmp_path)
    _history(store, tmp_path)
    fresh = FeatureStore(tmp_path / "s", tmp_path / "m")
    assert fresh.log("faces", "c").snapshot() == store.log("faces", "c").snapshot()
    assert versions.vacuum(fresh, "faces", "c", retain_versions=4, retain_hours=0).deleted == 0   # 2-5 read all
    assert versions.vacuum(fresh, "faces", "c", retain_versions=2, retain_hours=0).deleted == 3   # those of 0-2
    assert sorted(fresh.read("faces", "c", version=4).column("x").to_pylist()) == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(VersionUnavailable):
        fresh.read("faces", "c", version=2)


def test_training_reads_the_versions_params_pins(tmp_path):
    store = _store(tmp_path)
    old = _history(store, tmp_path)
    (tmp_path / "pins").mkdir()                                 # one version file per DVC stage, in one folder
    versions.write(tmp_path / "pins" / "faces-c.json", {("faces", "c"): 2})
    versions.write(tmp_path / "pins" / "video-c.json", versions.current(store, [("video", "c")]))
    params = {"paths": {"store": str(tmp_path / "s"), "manifests": str(tmp_path / "m"),
                        "store_versions": str(tmp_path / "pins")}}
    reading = versions.reading_store(paths(params))
    assert reading.versions == {("faces", "c"): 2, ("video", "c"): 0}
    assert reading.read("faces", "c").equals(old, check_metadata=True)
    versions.write(tmp_path / "pins" / "more.json", {("faces", "c"): 3})
    with pytest.raises(ValueError, match="different versions of faces/c"):
        versions.reading_store(paths(params))


def test_store_versions_and_vacuum_commands(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app
    store = _store(tmp_path)
    old = _history(store, tmp_path)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"paths": {"store": str(tmp_path / "s"),
                                                               "manifests": str(tmp_path / "m")}}))
    run = lambda *args: CliRunner().invoke(app, ["store", *args, "--params", str(tmp_path / "p.yaml")])
    out = run("versions", "--out", str(tmp_path / "all.json"))
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "all.json").read_text()) == {"versions": {"audio/c": 0, "faces/c": 5, "video/c": 0}}
    out = run("vacuum", "faces", "--retain-hours", "0", "--keep", str(tmp_path / "v2.json"))
    assert out.exit_code == 0 and "faces" in out.output, out.output
    assert store.read("faces", "c", version=2).equals(old, check_metadata=True)
    assert run("vacuum", "--retain-hours", "0").exit_code == 0
    with pytest.raises(VersionUnavailable):
        store.read("faces", "c", version=2)
