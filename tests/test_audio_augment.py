"""Audio variants: achieved SNR, noise colour, determinism, and what happens without a noise source."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from features.audio_io import decode_audio, load_audio
from features.augment_audio import parse_variant, pink_noise, variant_rng
from pipelines.extractor import build
from conftest import ROOT, shared_path

EMODB = ["03a01Fa", "08a01Ab", "11a01Wc", "13a01Ea", "16a01Lb"]


def emodb(name):
    return shared_path("data", "emodb", "wav", f"{name}.wav")


def item(variant, name=EMODB[0], seed=0, noise_dir=None):
    path = emodb(name)
    return {"clip_id": f"emodb/{name}", "corpus": "emodb", "path": path.name, "abspath": str(path),
            "variant": variant, "content_hash": "h", "start": None, "end": None,
            "peers": [str(emodb(n)) for n in EMODB if n != name],
            "augment": {"seed": seed, "noise_dir": str(noise_dir) if noise_dir else None}}


def snr_db(clean, mixed):
    noise = mixed.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise ** 2))


@pytest.mark.parametrize("variant", ["white_snr5", "pink_snr10", "babble_snr0", "noise_snr20", "white_snr-5"])
def test_achieved_snr_within_half_a_db(variant):
    noise_dir = shared_path("data", "mead_sample", "evp_audio")
    clean, _ = load_audio(item("clean"), 16000)
    mixed, sr = load_audio(item(variant, noise_dir=noise_dir), 16000)
    assert sr == 16000 and mixed.dtype == np.float32 and mixed.shape == clean.shape
    target = parse_variant(variant)[1]
    assert abs(snr_db(clean, mixed) - target) <= 0.5


def spectral_slope(x, sr=16000):
    """Slope of log10 power vs log10 frequency over 100 Hz - 6 kHz (white 0, pink -1)."""
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / sr)
    band = (f > 100) & (f < 6000)
    # average into log-spaced bins so the many high-frequency bins do not dominate the fit
    edges = np.geomspace(100, 6000, 30)
    idx = np.digitize(f[band], edges)
    centres = [f[band][idx == i].mean() for i in np.unique(idx)]
    powers = [spectrum[band][idx == i].mean() for i in np.unique(idx)]
    return np.polyfit(np.log10(centres), np.log10(powers), 1)[0]


def test_noise_colours():
    clean, _ = load_audio(item("clean"), 16000)
    white = load_audio(item("white_snr0"), 16000)[0] - clean
    pink = load_audio(item("pink_snr0"), 16000)[0] - clean
    assert abs(spectral_slope(white)) < 0.15
    assert abs(spectral_slope(pink) + 1) < 0.15
    assert abs(spectral_slope(pink_noise(1 << 16, np.random.default_rng(1))) + 1) < 0.1


def test_variants_are_deterministic_and_seeded():
    for variant in ("white_snr5", "pink_snr10", "babble_snr0"):
        a, _ = load_audio(item(variant), 16000)
        b, _ = load_audio(item(variant), 16000)
        np.testing.assert_array_equal(a, b)
        other_seed, _ = load_audio(item(variant, seed=1), 16000)
        assert not np.array_equal(a, other_seed)
    assert variant_rng(0, "emodb/y", "white_snr5").integers(1 << 62) != PINNED_DRAW


PINNED_DRAW = 3937964001746409916   # changing the seeding recipe changes every stored variant: bump versions


@pytest.mark.parametrize("hash_seed", ["1", "2"])
def test_variant_rng_is_independent_of_the_process(hash_seed):
    code = ("from features.augment_audio import variant_rng; "
            "print(variant_rng(0, 'emodb/x', 'white_snr5').integers(1 << 62))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": hash_seed},
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert int(out) == PINNED_DRAW == variant_rng(0, "emodb/x", "white_snr5").integers(1 << 62)


def test_babble_is_made_of_the_peers():
    clean, _ = load_audio(item("clean"), 16000)
    babble = load_audio(item("babble_snr0"), 16000)[0] - clean
    white = load_audio(item("white_snr0"), 16000)[0] - clean
    # speech babble is far burstier than Gaussian noise: its short-time energy varies more
    def energy_spread(x):
        frames = x[: len(x) // 400 * 400].reshape(-1, 400)
        e = np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
        return e.std()
    assert energy_spread(babble) > 2 * energy_spread(white)
    # the first three peers are in the mix at a third of the power (correlation ~0.58), a spare candidate and an
    # unrelated clip are not. EmoDB clips are all 2.0 s, so each peer enters as a circular shift of itself.
    def best_circular_correlation(x, y):
        xc = np.fft.irfft(np.fft.rfft(x) * np.conj(np.fft.rfft(y)), len(x))
        return xc.max() / np.sqrt(np.sum(x.astype(np.float64) ** 2) * np.sum(y.astype(np.float64) ** 2))
    talkers, spare = item("clean")["peers"][:3], item("clean")["peers"][3]
    for peer in talkers:
        assert best_circular_correlation(babble, decode_audio(peer, 16000)) > 0.4
    for other in (spare, emodb("03a02Fc")):
        assert best_circular_correlation(babble, decode_audio(other, 16000)) < 0.15


def test_babble_skips_unusable_peers_in_order(tmp_path):
    """A peer with inf samples has infinite power: mixed in, it turned the babble of a healthy clip into NaN.
    Unusable candidates (non-finite, silent, too short, not media) are skipped for the next ones."""
    x, sr = decode_audio(emodb(EMODB[1]), 16000), 16000      # at the mixing rate: no resampler smears the inf
    broken = x.copy()
    broken[100] = np.inf
    sf.write(tmp_path / "inf.wav", broken, sr, subtype="FLOAT")
    sf.write(tmp_path / "silent.wav", np.zeros(sr, np.float32), sr)
    sf.write(tmp_path / "short.wav", x[: sr // 100], sr)      # 10 ms
    (tmp_path / "text.wav").write_text("not audio")
    bad = [str(tmp_path / n) for n in ("inf.wav", "silent.wav", "short.wav", "text.wav")]
    good = item("babble_snr5")["peers"]
    mixed, _ = load_audio({**item("babble_snr5"), "peers": bad[:2] + good[:1] + bad[2:] + good[1:]}, 16000)
    assert np.isfinite(mixed).all()
    np.testing.assert_array_equal(mixed, load_audio(item("babble_snr5"), 16000)[0])


def test_babble_decodes_each_talker_once_for_every_rate(monkeypatch):
    """The feature sets of a clip mix its babble at 16 kHz (openSMILE, logmel) and 32 kHz (EfficientAT): each talker
    (a random clip of the corpus) is decoded once for both, not once per rate, and the mix is the same."""
    import features.audio_io as audio_io
    import features.augment_audio as augment_audio
    expected = {sr: load_audio(item("babble_snr5"), sr)[0] for sr in (16000, 32000)}
    for module in (audio_io, augment_audio):     # start with no clip decoded
        for cached in [f for f in vars(module).values() if hasattr(f, "cache_clear")]:
            cached.cache_clear()
    decoded = []
    decode_native = audio_io.decode_native
    monkeypatch.setattr(audio_io, "decode_native", lambda path, *a: decoded.append(path) or decode_native(path, *a))
    for sr in (32000, 16000):
        np.testing.assert_array_equal(load_audio(item("babble_snr5"), sr)[0], expected[sr])
    talkers = item("babble_snr5")["peers"][:3]
    assert sorted(decoded) == sorted([item("clean")["abspath"], *talkers])


def test_video_variant_leaves_audio_clean():
    clean, _ = load_audio(item("clean"), 16000)
    np.testing.assert_array_equal(load_audio(item("blur"), 16000)[0], clean)


def test_missing_noise_sources_become_ledger_rows(tmp_path):
    few_peers = {**item("babble_snr0"), "peers": [str(emodb(EMODB[1]))]}
    items = [few_peers, item("noise_snr5", noise_dir=tmp_path), item("noise_snr5"), item("hiss_snr5")]
    result = build("logmel").process(items)
    assert result.rows == []
    assert [f["reason"] for f in result.failures] == ["no_noise_source"] * 3 + ["unknown_variant"]
    assert [f["variant"] for f in result.failures] == ["babble_snr0", "noise_snr5", "noise_snr5", "hiss_snr5"]


def test_babble_peers_are_distinct_usable_clips(tmp_path):
    """The planner's candidates: distinct even when the other clips number a multiple of 7 (a stride of 7 used to
    pick one clip three times), only clips with audio long enough, the same on every call."""
    import pyarrow as pa
    from pipelines.manifest import write_manifest
    from pipelines.planning import N_PEERS, PeerPool
    rows = [{"clip_id": f"c/{i}", "path": f"{i}.wav", "has_audio": True, "duration": 1.0} for i in range(15)]
    rows += [{"clip_id": "c/video_only", "path": "v.mp4", "has_audio": False, "duration": 1.0},
             {"clip_id": "c/blip", "path": "blip.wav", "has_audio": True, "duration": 0.01}]
    for n in (8, 15):                       # the clip + 7 others, the clip + 14 others
        write_manifest(pa.Table.from_pylist(rows[:n] + rows[15:]), tmp_path, f"c{n}.parquet")
        pool = PeerPool(tmp_path, f"c{n}", "/c")
        for talker, row in enumerate(rows[:n]):
            peers = pool.peers(talker, row["clip_id"])
            assert len(set(peers)) == len(peers) >= N_PEERS
            assert f"/c/{row['path']}" not in peers and not {"/c/v.mp4", "/c/blip.wav"} & set(peers)
            assert peers == pool.peers(talker, row["clip_id"])
