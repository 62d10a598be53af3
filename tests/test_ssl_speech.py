"""`ssl_speech` on tiny randomly initialised transformers encoders built here from a config (no download): every
family's layers, shapes and frame times; a batched clip equals the clip alone; long audio chunked on one time
axis; deterministic; provenance in the store's metadata."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
import transformers as tf

from features.ssl_speech import SslSpeech
from pipelines.extractor import build

SR = 16000
CONV = {"conv_dim": (16, 16, 16), "conv_stride": (5, 4, 4), "conv_kernel": (10, 8, 8),      # 80 samples = 5 ms
        "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37, **CONV}
FIRST = 185 / 2 / SR     # centre of the first frame: half the conv front end's receptive field (1 + 9 + 7*5 + 7*20)
FAMILIES = {   # name -> (config, feature extractor, frame stride in seconds)
    "wav2vec2": (tf.Wav2Vec2Config(**TINY, feat_extract_norm="layer", do_stable_layer_norm=True),
                 tf.Wav2Vec2FeatureExtractor(return_attention_mask=True), 0.005),
    "wav2vec2_groupnorm": (tf.Wav2Vec2Config(**TINY, feat_extract_norm="group"), tf.Wav2Vec2FeatureExtractor(), 0.005),
    "hubert": (tf.HubertConfig(**TINY, feat_extract_norm="layer", do_stable_layer_norm=True),
               tf.Wav2Vec2FeatureExtractor(return_attention_mask=True), 0.005),
    "wavlm": (tf.WavLMConfig(**TINY, feat_extract_norm="layer", do_stable_layer_norm=True, num_buckets=16,
                             max_bucket_distance=100), tf.Wav2Vec2FeatureExtractor(return_attention_mask=True), 0.005),
    "data2vec_audio": (tf.Data2VecAudioConfig(**{**TINY, "num_conv_pos_embeddings": 5},
                                              num_conv_pos_embedding_layers=2),
                       tf.Wav2Vec2FeatureExtractor(return_attention_mask=True), 0.005),
    "whisper": (tf.WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                                 decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=80,
                                 vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                 decoder_start_token_id=1, max_target_positions=8),
                tf.WhisperFeatureExtractor(feature_size=80), 0.02),
}


def tiny_model(folder: Path, family: str, seed: int = 0) -> Path:
    config, processor, _ = FAMILIES[family]
    torch.manual_seed(seed)
    tf.AutoModel.from_config(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl_models")
    return {f: tiny_model(root / f, f) for f in FAMILIES}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Noisy harmonic 'speech' of a few lengths, written as 16 kHz wavs."""
    root, rng = tmp_path_factory.mktemp("ssl_clips"), np.random.default_rng(0)
    out = {}
    for seconds in (0.6, 1.1, 1.7, 5.3):
        t = np.arange(int(seconds * SR)) / SR
        wave = 0.3 * np.sin(2 * np.pi * 180 * t) * np.sin(2 * np.pi * 3 * t) + 0.05 * rng.standard_normal(len(t))
        out[seconds] = root / f"clip_{seconds}.wav"
        sf.write(out[seconds], wave.astype(np.float32), SR)
    return out


def item(path: Path) -> dict:
    return {"clip_id": f"t/{path.stem}", "corpus": "t", "path": path.name, "abspath": str(path),
            "variant": "clean", "content_hash": path.stem, "start": None, "end": None}


def rows(folder: Path, paths: list[Path], **params) -> list[dict]:
    result = build("ssl_speech", {"model": str(folder), **params}).process([item(p) for p in paths])
    assert not result.failures, result.failures
    return result.rows


@pytest.mark.parametrize("family", FAMILIES)
def test_every_layer_with_shapes_and_times(models, clips, family):
    stride = FAMILIES[family][2]
    row, = rows(models[family], [clips[1.1]], frames=True, pooling="mean+std")
    times = np.asarray(row["frame_times"])
    assert abs(len(times) - 1.1 / stride) <= 2 and row["n_frames"] == len(times)
    assert np.allclose(np.diff(times), stride) and times[-1] <= 1.1 + 1e-6
    assert times[0] == pytest.approx(0.0 if family == "whisper" else FIRST)
    for layer in range(3):                 # embeddings + 2 transformer layers
        frames = np.reshape(row[f"l{layer:02d}_frames"], row[f"l{layer:02d}_frames_shape"])
        assert frames.shape == (len(times), 32) and np.isfinite(frames).all()
        assert np.allclose(row[f"l{layer:02d}_mean"], frames.mean(axis=0), atol=1e-6)
        assert np.allclose(row[f"l{layer:02d}_std"], frames.std(axis=0), atol=1e-6)
    assert "l03_mean" not in row
    assert set(SslSpeech(model=str(models[family]), layers=[2]).schema().names) == {"n_frames", "l02_mean"}


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_clip_equals_clip_alone(models, clips, family):
    paths = [clips[0.6], clips[1.7], clips[1.1]]
    together = rows(models[family], paths, max_batch=3, frames=True)
    for path, batched in zip(paths, together):
        alone, = rows(models[family], [path], frames=True)
        assert batched.keys() == alone.keys()
        for col in alone:
            if col.startswith("l"):
                np.testing.assert_allclose(batched[col], alone[col], atol=1e-4, err_msg=f"{family} {col}")


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_long_audio_is_chunked_on_one_time_axis(models, clips, family):
    whole, = rows(models[family], [clips[5.3]], frames=True, chunk_s=10.0)
    chunked, = rows(models[family], [clips[5.3]], frames=True, chunk_s=2.0, overlap_s=0.6, max_batch=4)
    assert np.array_equal(whole["frame_times"], chunked["frame_times"])
    if family == "wav2vec2":
        # layer 0 sees a few frames on each side only (conv front end + positional conv): stitched from chunks, it
        # equals the whole clip's frame for frame when the chunks are cut on the frame grid and handed over mid-overlap
        np.testing.assert_allclose(chunked["l00_frames"], whole["l00_frames"], atol=1e-4)


def test_whisper_segments_are_at_most_30_s(models, tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, (0.1 * np.sin(np.arange(31 * SR) / 7)).astype(np.float32), SR)
    row, = rows(models["whisper"], [path], frames=True, chunk_s=60.0, overlap_s=4.0)
    assert row["n_frames"] == 31 / 0.02 + 1 and np.allclose(np.diff(row["frame_times"]), 0.02, atol=1e-5)


def test_deterministic_and_too_short_is_ledgered(models, clips, tmp_path):
    first = rows(models["wavlm"], [clips[1.1]])
    assert first == rows(models["wavlm"], [clips[1.1]])
    short = tmp_path / "short.wav"
    sf.write(short, np.full(300, 0.1, np.float32), SR)
    result = build("ssl_speech", {"model": str(models["wavlm"])}).process([item(short), item(clips[0.6])])
    assert [f["reason"] for f in result.failures] == ["too_short"] and len(result.rows) == 1


def test_params_are_checked(models):
    with pytest.raises(ValueError, match="pooling"):
        SslSpeech(model=str(models["hubert"]), pooling="max")
    with pytest.raises(ValueError, match="revision"):
        SslSpeech(model="facebook/wav2vec2-base").schema()
    with pytest.raises(ValueError, match="layers"):
        SslSpeech(model=str(models["hubert"]), layers=[3]).schema()
    with pytest.raises(ValueError, match="GPU"):
        SslSpeech(model=str(models["hubert"]), dtype="float16")


def test_pickled_weights_are_refused(models, tmp_path):
    folder = tmp_path / "bin_only"
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (folder / name).write_bytes((models["hubert"] / name).read_bytes())
    torch.save(tf.AutoModel.from_pretrained(models["hubert"]).state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="safetensors"):
        SslSpeech(model=str(folder)).provenance()


def test_store_records_provenance_and_new_weights_re_extract(models, clips, tmp_path):
    from pipelines.ingest import ingest
    from pipelines.plan import run_extraction
    from pipelines.predict import feature_plan
    from pipelines.saved_models import PredictError, SavedModel
    from pipelines.store import FeatureStore
    from training.run import _feature_configs
    folder = tiny_model(tmp_path / "model", "hubert")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seconds in (0.6, 1.1):
        (corpus / f"s1_angry_{seconds}.wav").symlink_to(clips[seconds])
    params = {"paths": {"manifests": str(tmp_path / "manifests"), "store": str(tmp_path / "store")},
              "corpora": {"c": {"adapter": "generic", "root": str(corpus), "glob": "*.wav",
                                "regex": r"(?P<speaker>s\d+)_(?P<emotion>[a-z]+)_.*"}},
              "engine": {"name": "local", "chunk_size": 8},
              "features": {"ssl": {"extractor": "ssl_speech", "params": {"model": str(folder), "layers": [1, 2]}}}}
    ingest("c", params["corpora"]["c"], Path(params["paths"]["manifests"]), progress=False)
    first = run_extraction(params, "ssl", "c", progress=False)
    part = next((tmp_path / "store").rglob("part-*.parquet"))
    meta = json.loads(pq.read_schema(part).metadata[b"aver"])
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert meta["provenance"]["files"]["model.safetensors"] == sha and meta["provenance"]["model"] == str(folder)
    assert first.extracted == 2 and run_extraction(params, "ssl", "c", progress=False).extracted == 0
    # a model trained on these rows records the weights; `aver predict` refuses features made with other weights
    store = FeatureStore(params["paths"]["store"], params["paths"]["manifests"])
    modalities = {"audio": {"ssl": ["l02_mean"]}}
    configs = _feature_configs(store, {"corpora": ["c"], "modalities": modalities, "models": {}})
    assert configs["ssl"]["provenance"] == meta["provenance"]
    saved = SavedModel("m", tmp_path, {"model_modalities": ["audio"], "modalities": modalities, "params": {},
                                       "feature_configs": configs}, None)
    assert set(feature_plan(saved, params, ("audio",))) == {"ssl"}
    tiny_model(folder, "hubert", seed=1)                        # other weights under the same folder name
    with pytest.raises(PredictError, match="provenance"):
        feature_plan(saved, params, ("audio",))
    again = run_extraction(params, "ssl", "c", progress=False)
    assert again.fingerprint != first.fingerprint and again.extracted == 2


def test_same_rows_on_every_engine(models, clips, tmp_path):
    """max_batch 1: the bytes do not depend on how an engine groups clips into batches."""
    import ray
    from pipelines.ingest import ingest
    from pipelines.plan import run_extraction
    from pipelines.store import FeatureStore
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seconds in (0.6, 1.7, 1.1):
        (corpus / f"s1_angry_{seconds}.wav").symlink_to(clips[seconds])
    out = {}
    for engine in ("local", "ray", "beam"):
        params = {"paths": {"manifests": str(tmp_path / "manifests"), "store": str(tmp_path / engine)},
                  "corpora": {"c": {"adapter": "generic", "root": str(corpus), "glob": "*.wav",
                                    "regex": r"(?P<speaker>s\d+)_(?P<emotion>[a-z]+)_.*"}},
                  "engine": {"name": engine, "chunk_size": 2, "ray": {"workers": 1}, "beam": {"workers": 1}},
                  "features": {"ssl": {"extractor": "ssl_speech", "variants": ["clean", "white_snr10"],
                                       "params": {"model": str(models["wavlm"]), "frames": True}}}}
        if engine == "local":
            ingest("c", params["corpora"]["c"], Path(params["paths"]["manifests"]), progress=False)
        ray.shutdown()
        try:
            assert run_extraction(params, "ssl", "c", progress=False).extracted == 6
        finally:
            ray.shutdown()
        store = FeatureStore(params["paths"]["store"], params["paths"]["manifests"])
        out[engine] = sorted(store.read("ssl", "c").to_pylist(), key=lambda r: (r["clip_id"], r["variant"]))
    assert out["local"] == out["ray"] == out["beam"]
