"""Store reader: join on (clip_id, variant), variant fallback by modality, missing modality as nulls, projected
reads; compaction."""
import hashlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipelines.extractor import variant_modality
from pipelines.keyset import KeySet
from pipelines.manifest import MANIFEST_SCHEMA, to_table
from pipelines.store import FeatureStore, compaction, versions
from training.data import columns_to_read


def _store(tmp_path) -> FeatureStore:
    rows = [{"clip_id": f"c/{i}", "corpus": "c", "path": f"{i}.mp4", "speaker": f"c/s{i % 2}", "emotion": "sad",
             "has_audio": True, "has_video": True, "content_hash": hashlib.sha256(bytes([i])).hexdigest()}
            for i in range(3)]
    table = to_table(rows, MANIFEST_SCHEMA)
    (tmp_path / "m").mkdir()
    pq.write_table(table.replace_schema_metadata({b"aver.root": str(tmp_path).encode()}), tmp_path / "m" / "c.parquet")
    store = FeatureStore(tmp_path / "s", tmp_path / "m")

    def part(fs, kind, keys, value):
        store.write_part(fs, "c", pa.table({"clip_id": [k[0] for k in keys], "variant": [k[1] for k in keys],
                                            "content_hash": ["h"] * len(keys), "x": [value] * len(keys)}),
                         {"kind": kind, "fingerprint": "f"})
    part("audio", "logmel", [("c/0", "clean"), ("c/1", "clean"), ("c/0", "white_snr5")], 1.0)
    part("video", "faces", [("c/0", "clean"), ("c/1", "clean"), ("c/0", "blur")], 2.0)
    return store


def test_variant_modality_names():
    assert variant_modality("clean") is None
    assert variant_modality("white_snr5") == variant_modality("babble_snr-5") == "audio"
    assert variant_modality("blur") == variant_modality("jpeg") == "video"


def test_load_falls_back_to_clean_only_across_modalities(tmp_path):
    df = _store(tmp_path).load(["audio", "video"], ["c"], ("clean", "white_snr5", "blur")).set_index(
        ["clip_id", "variant"])
    assert len(df) == 9                                     # every manifest clip x requested variant
    assert df.loc[("c/0", "white_snr5"), "video.x"] == 2.0   # noisy audio keeps clean video
    assert df.loc[("c/1", "white_snr5"), "audio.x"] != df.loc[("c/1", "white_snr5"), "audio.x"]  # not extracted: NaN
    assert df.loc[("c/1", "blur"), "audio.x"] == 1.0         # blurred video keeps clean audio
    assert df.loc[("c/1", "blur"), "video.x"] != df.loc[("c/1", "blur"), "video.x"]
    assert df.loc[("c/2", "clean")][["audio.x", "video.x"]].isna().all()   # missing clip: nulls, row kept
    assert df.loc[("c/0", "clean"), "speaker"] == "c/s0"


def test_feature_sets_of_unregistered_extractors_always_fall_back(tmp_path):
    store = _store(tmp_path)
    store.write_part("other", "c", pa.table({"clip_id": ["c/0"], "variant": ["clean"], "content_hash": ["h"],
                                             "y": [3.0]}), {"kind": "external_tool", "fingerprint": "f"})
    df = store.load(["other"], ["c"], ("clean", "white_snr5")).set_index(["clip_id", "variant"])
    assert df.loc[("c/0", "white_snr5"), "other.y"] == 3.0


def test_verify_reports_stored_rows_with_non_finite_features(tmp_path):
    """`aver store verify` calls a store with garbage rows (NaN/inf where numbers are promised) not ok; NaN is
    fine only in columns an extractor documents as nullable (a faces frame without a face), inf never."""
    store = _store(tmp_path)

    def part(fs, kind, values, variant="clean"):
        store.write_part(fs, "c", pa.table({"clip_id": [f"c/{i}" for i in range(len(values))],
                                            "variant": [variant] * len(values), "content_hash": ["h"] * len(values),
                                            "boxes": values}), {"kind": kind, "fingerprint": "f"})
    part("mel", "logmel", [[1.0, 2.0], [1.0, float("nan")]])
    part("face", "faces", [[1.0, float("nan")], [2.0, 3.0]])
    report = store.verify("mel", "c")
    assert not report.ok and "1 rows with non-finite features, e.g. c/1 [clean]" in report.problems[0]
    assert store.verify("face", "c").ok
    part("face", "faces", [[float("-inf")], [0.9]], "blur")
    assert [p.split(": ", 1)[1] for p in store.verify("face", "c").problems] == [
        "1 rows with non-finite features, e.g. c/0 [blur]"]


def test_upstream_rows_fall_back_to_clean_only_across_modalities(tmp_path):
    """A video variant whose faces row is missing must not be computed from the clean crops (its robustness
    results would be clean results); an audio variant uses the clean faces. The planner decides from the stored
    keys; the worker reads the row it names by key."""
    from pipelines.group import ExtractorGroup
    from pipelines.plan import _upstream_variants
    store = _store(tmp_path)

    def choose(fs, modality, clip, variant):
        return _upstream_variants(store.key_set(fs, "c", kind="part"), modality, [clip], [variant])[0]
    assert choose("video", "video", "c/0", "blur") == "blur"
    assert choose("video", "video", "c/1", "blur") is None
    assert choose("video", "video", "c/1", "white_snr5") == "clean"
    assert choose("audio", "audio", "c/1", "white_snr5") is None
    assert choose("audio", "audio", "c/1", "blur") == "clean"
    group = ExtractorGroup([("logmel", "logmel", {})], str(tmp_path / "s"))
    units = [{"clip_id": "c/1", "variant": "white_snr5", "corpus": "c", "stored_inputs": {"video": "clean"}},
             {"clip_id": "c/0", "variant": "blur", "corpus": "c", "stored_inputs": {"video": "blur", "audio": "clean"}}]
    inputs = [u["inputs"] for u in group.with_stored_inputs(units)]
    assert [(i["video"]["clip_id"], i["video"]["variant"], i["video"]["x"]) for i in inputs] == [
        ("c/1", "clean", 2.0), ("c/0", "blur", 2.0)]
    assert inputs[1]["audio"]["variant"] == "clean" and "audio" not in inputs[0]


def test_rows_are_checked_where_a_worker_accepts_them():
    """The same promise on an extractor's row dicts: a faces frame without the face is NaN (allowed in the columns
    faces documents as nullable), inf never is, and a NaN elsewhere sends the row to the ledger."""
    from pipelines.extractor import Result, build
    from pipelines.rowcheck import reject_garbage
    faces = build("faces", {"landmarks68": False})
    filler = {pa.float32(): 0.5, pa.int32(): 1, pa.string(): "[]", pa.list_(pa.float32()): [0.5],
              pa.list_(pa.int32()): [1], pa.list_(pa.bool_()): [True], pa.list_(pa.binary()): [b""]}
    item = {"clip_id": "c/0", "corpus": "c", "path": "0.mp4", "content_hash": "h"}
    rows = [{**item, "variant": v, **{f.name: filler[f.type] for f in faces.schema()}, **change}
            for v, change in [("clean", {"boxes": [float("nan")] * 4}), ("blur", {"scores": [float("inf")]}),
                              ("jpeg", {"face_fraction": float("nan")})]]
    out = reject_garbage(faces, [{**item, "variant": r["variant"]} for r in rows], Result(rows))
    assert [r["variant"] for r in out.rows] == ["clean"]
    assert [(f["variant"], f["reason"]) for f in out.failures] == [("blur", "non_finite_features"),
                                                                    ("jpeg", "non_finite_features")]
    assert out.failures[0]["detail"].endswith("where numbers are due: scores")


def _bytes_read() -> int:
    """Bytes this process has read through read syscalls so far (Linux /proc/self/io `rchar`, every thread)."""
    return int(next(line.split()[1] for line in open("/proc/self/io") if line.startswith("rchar")))


def _big_store(tmp_path) -> FeatureStore:
    """Two parts of the `faces` set, one per variant, each with ~4 MB of incompressible crops and a scalar."""
    store = _store(tmp_path)
    rng = np.random.default_rng(0)
    for variant in ("clean", "blur"):
        store.write_part("faces", "c", pa.table({
            "clip_id": [f"c/{i}" for i in range(3)], "variant": [variant] * 3, "content_hash": ["h"] * 3,
            "face_fraction": [0.5] * 3, "crops": [rng.bytes(1_400_000) for _ in range(3)]}),
            {"kind": "faces", "fingerprint": "f"})
    return store


def test_load_reads_only_the_requested_columns_and_rows(tmp_path):
    store = _big_store(tmp_path)
    store.load(["faces"], ["c"], ("clean",), columns={"faces": ["face_fraction"]})    # imports done before counting
    start = _bytes_read()
    df = store.load(["faces"], ["c"], ("clean",), columns={"faces": ["face_fraction"]})
    projected = _bytes_read() - start
    assert list(df["faces.face_fraction"]) == [0.5] * 3 and "faces.crops" not in df
    assert projected < 1_500_000, projected           # footers only: neither crops column (4.2 MB each) read
    start = _bytes_read()
    df = store.load(["faces"], ["c"], ("clean",), columns={"faces": ["crops"]})
    one_variant = _bytes_read() - start
    assert df["faces.crops"].map(len).tolist() == [1_400_000] * 3
    assert 4_200_000 < one_variant < 6_000_000, one_variant   # the blur part is skipped by its statistics
    only_s1 = store.load(["faces"], ["c"], ("clean", "blur"), columns={"faces": ["face_fraction"]},
                         speakers=["c/s1"])
    assert sorted(only_s1["clip_id"]) == ["c/1", "c/1"]


def _content(store: FeatureStore, kind: str = "part") -> list[dict]:
    return sorted(store.read("faces", "c", kind).to_pylist(), key=lambda r: (r["clip_id"], r["variant"]))


def test_compaction_keeps_the_content_and_readers_never_see_a_half_state(tmp_path):
    store = _store(tmp_path)
    for i in range(6):
        store.write_part("faces", "c", pa.table({"clip_id": [f"c/{i}"], "variant": ["clean"], "content_hash": ["h"],
                                                 "x": [float(i)]}), {"kind": "faces", "fingerprint": "f"})
    store.write_ledger("faces", "c", [{"corpus": "c", "clip_id": "c/9", "variant": "clean", "path": "9.mp4",
                                       "stage": "faces", "reason": "no_face", "content_hash": "h"}],
                       {"kind": "faces", "fingerprint": "f"})
    before, ledger = _content(store), _content(store, "ledger")
    listed_early = store.shards("faces", "c")                  # a reader that listed before the compaction
    group = compaction.plan_groups(store.shards("faces", "c"), compaction.TARGET_BYTES)
    assert [len(g) for g in group] == [6]                      # the single ledger file is left alone
    compaction.publish(store, "faces", "c", group[0])          # the merged file live, small ones kept for old versions
    assert _content(store) == before and len(store.shards("faces", "c")) == 2
    assert all(s.path.exists() for s in listed_early)
    versions.vacuum(store, "faces", "c", retain_hours=0)       # no older version wanted: the small files go
    assert _content(store) == before and not any(s.path.exists() for s in listed_early if s.kind == "part")
    assert _content(store, "ledger") == ledger and store.verify("faces", "c").ok


def test_readers_keep_working_while_compaction_runs(tmp_path):
    store = _store(tmp_path)
    for i in range(40):
        store.write_part("faces", "c", pa.table({"clip_id": [f"c/{i:02d}"], "variant": ["clean"],
                                                 "content_hash": ["h"], "x": [float(i)]}),
                         {"kind": "faces", "fingerprint": "f"})
    before = _content(store)
    def compact_and_vacuum():                                  # the replaced files deleted while readers read
        report = compaction.compact(store, "faces", "c", 4000)             # a few merged files
        versions.vacuum(store, "faces", "c", retain_hours=0)
        return report
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(compact_and_vacuum)
        reads = 0
        while not running.done() or reads < 3:
            assert _content(store) == before
            reads += 1
        report = running.result()
    assert report.files_before == 40 and report.files_after < 40 and _content(store) == before
    again = compaction.compact(store, "faces", "c")
    assert again.files_after == 1 and _content(store) == before


def test_training_reads_face_crops_only_when_a_model_names_them(tmp_path):
    store = _big_store(tmp_path)
    store.write_ledger("faces", "c", [{"corpus": "c", "clip_id": "c/9", "variant": "clean", "path": "9.mp4",
                                       "stage": "faces", "reason": "no_face", "content_hash": "h"}], {"kind": "faces"})
    cfg = {"modalities": {"video": {"faces": ["face_fraction"]}}, "models": {"lgbm_video": {}}}
    assert columns_to_read(store, ["faces"], ["c"], cfg) == {"faces": ["clip_id", "variant", "content_hash",
                                                                       "face_fraction"]}
    cfg["models"]["cnn"] = {"features": {"video": {"faces": ["crops"]}}}
    assert "crops" in columns_to_read(store, ["faces"], ["c"], cfg)["faces"]


def test_torch_dataset_restores_shapes_and_pads_series(tmp_path):
    from torch.utils.data import DataLoader, Subset

    from pipelines.store.torch_dataset import StoreDataset, collate
    store = _store(tmp_path)
    store.write_part("mel", "c", pa.table({
        "clip_id": ["c/0", "c/1"], "variant": ["clean"] * 2, "content_hash": ["h"] * 2, "energy": [1.0, 2.0],
        "mel": [list(range(2 * 3)), list(range(2 * 5))], "mel_shape": [[2, 3], [2, 5]]}),
        {"kind": "logmel", "fingerprint": "f"})
    ds = StoreDataset(store, ["mel"], ["c"], time_axis={"mel.mel": 1})
    assert ds[0]["mel.mel"].shape == (3, 2) and ds[0]["mel.mel"][1, 0] == 1.0   # [2, 3] restored, time first
    assert ds[2]["mel.mel"] is None and ds.classes == ["sad"]                  # c/2 has no row
    batch = next(iter(DataLoader(Subset(ds, [0, 1]), batch_size=2, collate_fn=collate)))
    assert batch["mel.mel"].shape == (2, 5, 2) and batch["mel.mel.length"].tolist() == [3, 5]
    assert batch["mel.energy"].tolist() == [1.0, 2.0] and batch["label"].tolist() == [0, 0]


def two_writers_at_once(tmp_path, store_uri: str) -> FeatureStore:
    """Two processes extracting the same feature set into one store at once (each commits one row at a time)."""
    import failing_extractors
    cfg = failing_extractors.corpus(tmp_path / "corpus", tmp_path / "manifests")
    params = {"paths": {"manifests": str(tmp_path / "manifests"), "store": store_uri},
              "corpora": {"c": cfg}, "engine": {"name": "local", "chunk_size": 1},
              "features": {"f": {"extractor": "slow",
                                 "params": {"seconds": 0.3, "resources": {"batch_size": 1}}}}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    tests = Path(__file__).parent
    code = ("import sys, yaml, failing_extractors\nfailing_extractors.register()\n"
            "from pipelines.plan import run_extraction\n"
            "s = run_extraction(yaml.safe_load(open(sys.argv[1])), 'f', 'c', progress=False)\n"
            "print('TODO', s.planned - s.already_done)\n")
    env = {**os.environ, "PYTHONPATH": f"{tests}:{tests.parent}"}
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "p.yaml")], env=env,
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=180)[0] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], outs
    todo = [int(line.split()[1]) for out in outs for line in out.splitlines() if line.startswith("TODO")]
    assert sum(todo) > failing_extractors.N_CLIPS, f"the two runs should have overlapped: {outs}"
    store = FeatureStore(store_uri, tmp_path / "manifests")
    # every key once in the committed files themselves: no reader deduplicates
    assert store.info("f", "c")["rows"] + store.info("f", "c")["failed"] == failing_extractors.N_CLIPS
    rows = store.read("f", "c").to_pylist() + store.read("f", "c", "ledger").to_pylist()
    assert sorted(r["clip_id"] for r in rows) == sorted(f"c/s{i % 2}_happy_{i}" for i in range(6))
    assert store.verify("f", "c").ok
    compaction.compact(store, "f", "c")
    assert sorted(r["clip_id"] for r in store.read("f", "c").to_pylist() + store.read("f", "c", "ledger").to_pylist()
                  ) == sorted(r["clip_id"] for r in rows)
    return store


def test_two_writers_at_once_lose_nothing_and_duplicate_nothing(tmp_path):
    two_writers_at_once(tmp_path, str(tmp_path / "store"))


def test_store_compact_command(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app
    store = _store(tmp_path)
    store.write_part("audio", "c", pa.table({"clip_id": ["c/1"], "variant": ["white_snr5"], "content_hash": ["h"],
                                             "x": [1.0]}), {"kind": "logmel", "fingerprint": "f"})
    before = {fs: store.read(fs, "c").to_pylist() for fs in ("audio", "video")}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"paths": {"store": str(tmp_path / "s"),
                                                               "manifests": str(tmp_path / "m")}}))
    out = CliRunner().invoke(app, ["store", "compact", "audio", "-c", "c", "--params", str(tmp_path / "p.yaml")])
    assert out.exit_code == 0, out.output
    assert len(store.shards("audio", "c")) == 1 and len(store.shards("video", "c")) == 1     # only `audio` merged
    assert sorted(store.read("audio", "c").to_pylist(), key=str) == sorted(before["audio"], key=str)


def _one_row(i: int, x: float = 0.0) -> pa.Table:
    return pa.table({"clip_id": [f"c/{i}"], "variant": ["clean"], "content_hash": ["h"], "x": [x]})


def test_only_committed_files_are_read_and_a_resubmitted_batch_is_stored_once(tmp_path):
    store = _store(tmp_path)
    lost = store.stage("part", "video", "c", _one_row(7), {"kind": "faces", "fingerprint": "f"})      # its worker died: never committed
    assert store.read("video", "c").num_rows == 3 and (store.dir("video", "c") / lost.name).exists()
    again = store.stage("part", "video", "c", _one_row(7), {"kind": "faces", "fingerprint": "f"})     # the batch resubmitted
    twice = store.stage("part", "video", "c", pa.concat_tables([_one_row(7), _one_row(8)]), {"kind": "faces", "fingerprint": "f"})
    store.commit("video", "c", [again, twice])              # e.g. a Beam bundle retried after its first try wrote
    rows = store.read("video", "c").to_pylist()
    assert sorted(r["clip_id"] for r in rows) == ["c/0", "c/0", "c/1", "c/7", "c/8"]   # c/0: clean and blur
    store.clean_temporaries("video", "c", older_than_s=0)  # the lost file and the rewritten one are deleted
    names = {p.name for p in store.dir("video", "c").glob("part-*")}
    assert names == {s.path.name for s in store.shards("video", "c")} and lost.name not in names


def test_a_compaction_never_brings_back_rows_a_concurrent_prune_removed(tmp_path):
    store = _store(tmp_path)
    for i in range(3, 6):
        store.write_part("video", "c", _one_row(i), {"kind": "faces", "fingerprint": "f"})
    group = compaction.plan_groups(store.shards("video", "c"), compaction.TARGET_BYTES)[0]
    keys = [(f"c/{i}", v) for i in range(5) for v in ("clean", "blur")]              # c/5 left the manifest
    valid = KeySet.of([([c for c, _ in keys], [v for _, v in keys], ["h"] * len(keys))])
    commit = store.commit

    def prune_first(*args, **kwargs):     # a prune commits after the compaction read the files, before it commits
        if kwargs.get("op") == "compact":
            assert store.prune("video", "c", "f", valid) == 1
        return commit(*args, **kwargs)
    store.commit = prune_first
    assert compaction.publish(store, "video", "c", group) is None                     # Conflict: nothing published
    store.commit = commit
    assert "c/5" not in store.read("video", "c").column("clip_id").to_pylist()
    compaction.compact(store, "video", "c")                 # the next compaction merges what prune left
    assert sorted(store.read("video", "c").column("clip_id").to_pylist()) == ["c/0", "c/0", "c/1", "c/3", "c/4"]
    assert len(store.shards("video", "c")) == 1


def test_a_store_written_before_the_commit_log_keeps_its_rows(tmp_path):
    part = _store(tmp_path).shards("video", "c")[0].path.read_bytes()     # 3 rows
    old = tmp_path / "old" / "video" / "c"
    old.mkdir(parents=True)
    (old / "part-0123456789ab.parquet").write_bytes(part)                 # named as an older aver named its files
    (old / f"part-{'f' * 32}.parquet").write_bytes(part)                   # a file no commit names
    legacy = FeatureStore(tmp_path / "old", tmp_path / "m")
    assert legacy.read("video", "c").num_rows == 3                         # the old file, not the uncommitted one
    legacy.write_part("video", "c", _one_row(4), {"kind": "faces", "fingerprint": "f"})      # the first commit adopts it
    assert sorted(legacy.read("video", "c").column("clip_id").to_pylist()) == ["c/0", "c/0", "c/1", "c/4"]


def test_a_prune_as_the_first_commit_of_an_older_store_removes_what_it_replaces(tmp_path):
    part = _store(tmp_path).shards("video", "c")[0].path.read_bytes()     # c/0 clean, c/1 clean, c/0 blur
    old = tmp_path / "old" / "video" / "c"
    old.mkdir(parents=True)
    (old / "part-0123456789ab.parquet").write_bytes(part)
    legacy = FeatureStore(tmp_path / "old", tmp_path / "m")
    assert legacy.prune("video", "c", "f", KeySet.of([(["c/0", "c/1"], ["clean", "clean"], ["h", "h"])])) == 1
    assert sorted(legacy.read("video", "c").column("variant").to_pylist()) == ["clean", "clean"]


def test_a_reader_starts_from_the_latest_checkpoint(tmp_path, monkeypatch):
    from pipelines.store import commits
    monkeypatch.setattr(commits, "CHECKPOINT_EVERY", 2)
    store = _store(tmp_path)                                # video: commit 0
    for i in range(3, 7):                                   # commits 1-4: checkpoints at 2 and 4
        store.write_part("video", "c", _one_row(i), {"kind": "faces", "fingerprint": "f"})
    log = store.dir("video", "c") / commits.LOG
    assert sorted(p.name for p in log.glob("*.checkpoint.json")) == [f"{2:020d}.checkpoint.json",
                                                                     f"{4:020d}.checkpoint.json"]
    (log / f"{1:020d}.json").unlink()                       # not needed any more: the checkpoint at 4 holds it
    fresh = FeatureStore(tmp_path / "s", tmp_path / "m")
    assert fresh.log("video", "c").snapshot() == store.log("video", "c").snapshot()
    assert sorted(fresh.read("video", "c").column("clip_id").to_pylist()) == ["c/0", "c/0", "c/1", "c/3", "c/4",
                                                                             "c/5", "c/6"]


def test_the_committers_key_view_follows_other_writers_compactions(tmp_path, monkeypatch):
    from pipelines.store import commits
    monkeypatch.setattr(commits, "MERGE_KEYS", 0)            # the recent keys merged into the digest set each commit
    store = _store(tmp_path)
    for i in range(3, 6):
        store.write_part("video", "c", _one_row(i), {"kind": "faces", "fingerprint": "f"})
    other = FeatureStore(tmp_path / "s", tmp_path / "m")     # another process compacts, prunes c/5, adds c/6
    compaction.compact(other, "video", "c")
    keys = [(f"c/{i}", v) for i in range(5) for v in ("clean", "blur")]
    assert other.prune("video", "c", "f", KeySet.of([([c for c, _ in keys], [v for _, v in keys], ["h"] * 10)])) == 1
    other.write_part("video", "c", _one_row(6), {"kind": "faces", "fingerprint": "f"})
    again = pa.concat_tables([_one_row(i) for i in (0, 4, 5, 6, 7)])   # c/0, c/4, c/6 are live; c/5 is not any more
    store.write_part("video", "c", again, {"kind": "faces", "fingerprint": "f"})
    ids = store.read("video", "c").column("clip_id").to_pylist()
    assert sorted(ids) == ["c/0", "c/0", "c/1", "c/3", "c/4", "c/5", "c/6", "c/7"] and store.verify("video", "c").ok


def test_each_store_file_s_keys_are_read_once_per_process_within_a_bound(tmp_path, monkeypatch):
    """The planner and the committer ask for the store's keys several times a run: a file (never changed once
    written) is read once; the cache is bounded by rows, least recently used first out."""
    from pipelines.store import file_cache as key_cache
    from pipelines.store.files import Files
    monkeypatch.setattr(key_cache, "_cache", type(key_cache._cache)())
    monkeypatch.setattr(key_cache, "_rows", 0)
    store = _store(tmp_path)
    for i in range(4):
        store.write_part("faces", "c", pa.table({"clip_id": [f"c/{i}"], "variant": ["clean"], "content_hash": ["h"],
                                                 "x": [float(i)]}), {"kind": "faces", "fingerprint": "f"})
    reads = []
    real = Files.read_table
    monkeypatch.setattr(Files, "read_table", lambda self, path, columns=None: (reads.append(str(path)),
                                                                               real(self, path, columns))[1])
    files = len(store.shards("faces", "c"))
    first = store.key_set("faces", "c")
    assert len(reads) == files and len(first) == 4
    for _ in range(3):
        assert store.key_set("faces", "c").sorted.tolist() == first.sorted.tolist()
        assert store.done_keys("faces", "c", "f")
    assert len(reads) == files                                  # the later passes read nothing
    monkeypatch.setenv("AVER_KEY_CACHE_ROWS", "2")              # a bound below the store's rows: reads again, stays small
    key_cache._cache.clear()
    monkeypatch.setattr(key_cache, "_rows", 0)
    store.key_set("faces", "c")
    assert 0 < key_cache._rows <= 2
    store.key_set("faces", "c")
    assert len(reads) == 3 * files and key_cache._rows <= 2     # a scan through a too-small cache reads every file


def test_an_object_store_write_is_retried_after_a_server_failure_but_not_a_refusal(monkeypatch):
    from pipelines.store import files
    monkeypatch.setattr(files.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append("put")
        if len(calls) == 1:
            raise OSError("AWS Error INTERNAL_FAILURE during UploadPart operation: please try again")

    files._whole_write_retried(flaky)
    assert calls == ["put", "put"]

    def refused():
        calls.append("refused")
        raise PermissionError("AWS Error ACCESS_DENIED")

    with pytest.raises(PermissionError):
        files._whole_write_retried(refused)
    assert calls.count("refused") == 1
