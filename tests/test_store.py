"""Store reader: join on (clip_id, variant), variant fallback by modality, missing modality as nulls."""
import hashlib

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.extractor import variant_modality
from pipelines.manifest import MANIFEST_SCHEMA, to_table
from pipelines.store import FeatureStore


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
    results would be clean results); an audio variant uses the clean faces."""
    from pipelines.plan import _StoredRows
    rows = _StoredRows(_store(tmp_path), "c")
    assert rows.get("video", {"clip_id": "c/0", "variant": "blur"})["variant"] == "blur"
    assert rows.get("video", {"clip_id": "c/1", "variant": "blur"}) is None
    assert rows.get("video", {"clip_id": "c/1", "variant": "white_snr5"})["variant"] == "clean"
    assert rows.get("audio", {"clip_id": "c/1", "variant": "white_snr5"}) is None
    assert rows.get("audio", {"clip_id": "c/1", "variant": "blur"})["variant"] == "clean"


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
