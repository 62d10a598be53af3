"""Store reader: join on (clip_id, variant), variant fallback by modality, missing modality as nulls, projected
reads; compaction."""
import hashlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipelines.extractor import variant_modality
from pipelines.manifest import MANIFEST_SCHEMA, to_table
from pipelines.store import FeatureStore, compaction
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
    compaction.publish(store, "faces", "c", group[0])          # killed here: merged file live, small ones still there
    assert _content(store) == before and len(store.shards("faces", "c")) == 2
    compaction.retire(store, group[0])
    assert _content(store) == before and not any(s.path.exists() for s in listed_early if s.kind == "part")
    assert _content(store, "ledger") == ledger and store.verify("faces", "c").ok


def test_readers_keep_working_while_compaction_runs(tmp_path):
    store = _store(tmp_path)
    for i in range(40):
        store.write_part("faces", "c", pa.table({"clip_id": [f"c/{i:02d}"], "variant": ["clean"],
                                                 "content_hash": ["h"], "x": [float(i)]}),
                         {"kind": "faces", "fingerprint": "f"})
    before = _content(store)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(compaction.compact, store, "faces", "c", 4000)   # a few merged files
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


def test_two_writers_at_once_lose_nothing_and_duplicate_nothing(tmp_path):
    import failing_extractors
    cfg = failing_extractors.corpus(tmp_path / "corpus", tmp_path / "manifests")
    params = {"paths": {"manifests": str(tmp_path / "manifests"), "store": str(tmp_path / "store")},
              "corpora": {"c": cfg}, "engine": {"name": "local", "chunk_size": 1},
              "features": {"f": {"extractor": "slow", "params": {"seconds": 0.3}}}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    tests = Path(__file__).parent
    code = ("import sys, yaml, failing_extractors\nfailing_extractors.register()\n"
            "from pipelines.plan import run_extraction\n"
            "run_extraction(yaml.safe_load(open(sys.argv[1])), 'f', 'c', progress=False)\n")
    env = {**os.environ, "PYTHONPATH": f"{tests}:{tests.parent}"}
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "p.yaml")], env=env) for _ in range(2)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    store = FeatureStore(tmp_path / "store", tmp_path / "manifests")
    assert store.info("f", "c")["rows"] > failing_extractors.N_CLIPS, "the two runs should have overlapped"
    rows = store.read("f", "c").to_pylist()
    assert sorted(r["clip_id"] for r in rows) == sorted(f"c/s{i % 2}_happy_{i}" for i in range(6))   # each once
    compaction.compact(store, "f", "c")
    assert store.verify("f", "c").ok and store.read("f", "c").to_pylist() == sorted(rows, key=lambda r: r["clip_id"])


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


def test_a_key_stored_twice_is_read_once_and_no_other_row_is_lost():
    """Ray may store a resubmitted batch twice: the reader keeps each key's first row, in file order."""
    from pipelines.store.reader import first_of_each_key
    table = pa.table({"clip_id": ["c/0", "c/1", "c/2", "c/1", "c/3"], "variant": ["clean"] * 5, "x": [0, 1, 2, 9, 3]})
    assert first_of_each_key(table).to_pydict() == {"clip_id": ["c/0", "c/1", "c/2", "c/3"],
                                                    "variant": ["clean"] * 4, "x": [0, 1, 2, 3]}
