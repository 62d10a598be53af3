"""Throughput of the pretrained embedders on real data; prints a markdown table.

    python benchmarks/embeddings.py [--threads 2] [--device cpu] [--clips 24] [--faces 2048] [--only ssl]
        [--speech-checkpoint models/speech_cnn]

EfficientAT: EmoDB wavs (2.0 s, 22.05 kHz) through the `audioset_embedding` extractor (decode, resampy, mel, one
whole-clip pass + the 1 s windows), then the network alone on batches of 1 s mel windows. mini-Xception: the
fixture face crops repeated, through the `fer_embedding` extractor (112x112 PNG decode, gray, resize, network) in
clips of 100 frames, then the network alone on batches of preprocessed 64x64 crops. ssl_speech: the same EmoDB
wavs through the extractor (all layers, mean pooling) with two randomly initialised encoders of real sizes, built
from a config (no download; speed does not depend on the weights): wav2vec2-base / WavLM-base shape (12 layers of
768, 95 M parameters) alone and in batches of 8, and the Whisper-tiny encoder (4 layers of 384; every segment
padded to 30 s). Speech emotion CNN (`speech_emotion_embedding`, the checkpoint `aver pretrain speech` writes): the
EmoDB wavs' log-mel rows through the extractor with `runtime: torch` and `runtime: onnx`, in windows per CPU second
of this process (the machine's other load does not count). Each figure is the best of several timed runs after a
warm-up.
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from _setup import SHARED  # noqa: E402  (first: sys.path and the model registry)

from features.mini_xception import preprocess  # noqa: E402
from pipelines.extractor import build  # noqa: E402


def timed(fn, repeat: int = 3, clock=time.perf_counter) -> float:
    """Best of `repeat` runs after a warm-up (first-shape kernels, resampy's numba JIT): the least disturbed by
    other processes on the same cores."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best


def audio_rows(args) -> list[tuple]:
    ex = build("audioset_embedding", {"device": args.device})
    ex.setup()
    wavs = sorted((SHARED / "data" / "emodb" / "wav").glob("*.wav"))[:args.clips]
    items = [{"clip_id": f"emodb/{p.stem}", "corpus": "emodb", "path": p.name, "variant": "clean",
              "content_hash": "", "abspath": str(p), "audio_rate": 22050} for p in wavs]
    windows = sum(r["emb_shape"][0] for r in ex.process(items).rows)
    seconds = timed(lambda: ex.process(items))
    batch = torch.randn(args.batch, 1, 128, 100, device=args.device)
    with torch.inference_mode():
        net = timed(lambda: ex.forward(batch), repeat=10)     # the runtime in use (torch or ONNX Runtime)
    return [("EfficientAT mn04", f"extractor, {len(items)} EmoDB clips ({windows} windows of 1 s)", windows / seconds,
             "windows/s"),
            ("EfficientAT mn04", f"network only, batch {args.batch} x 1 s mel", args.batch / net, "windows/s")]


def face_rows(args) -> list[tuple]:
    ex = build("fer_embedding", {"device": args.device})
    ex.setup()
    crops = np.load(SHARED / "fixtures" / "mini_xception_inputs_uint8_gray64.npz")
    gray = np.stack([crops[k] for k in crops.files])
    faces = gray[np.arange(args.faces) % len(gray)]
    pngs = [cv2.imencode(".png", cv2.cvtColor(cv2.resize(g, (112, 112)), cv2.COLOR_GRAY2RGB))[1].tobytes()
            for g in gray]
    per_clip = 100
    items = [{"clip_id": f"bench/{i}", "corpus": "bench", "path": "", "variant": "clean", "content_hash": "",
              "inputs": {"faces": {"crops": [pngs[j % len(pngs)] for j in range(per_clip)],
                                   "frame_times": [j / 25 for j in range(per_clip)], "face_found": [True] * per_clip}}}
             for i in range(max(1, args.faces // per_clip))]
    seconds = timed(lambda: ex.process(items))
    x = preprocess(faces[:args.batch * 4]).to(args.device)
    with torch.inference_mode():
        net = timed(lambda: [ex.forward(x[i:i + args.batch]) for i in range(0, len(x), args.batch)], repeat=5)
    return [("mini-Xception FER", f"extractor, {len(items)} clips x {per_clip} 112 px PNG crops",
             len(items) * per_clip / seconds, "faces/s"),
            ("mini-Xception FER", f"network only, batch {args.batch} x 64x64", len(x) / net, "faces/s")]


def speech_cnn_rows(args) -> list[tuple]:
    from pathlib import Path
    if not (Path(args.speech_checkpoint) / "weights.pt").exists():
        print(f"speech CNN: no checkpoint at {args.speech_checkpoint} (`aver pretrain speech` writes one): skipped")
        return []
    wavs = sorted((SHARED / "data" / "emodb" / "wav").glob("*.wav"))[:args.clips]
    mel = build("logmel", {})
    items = [{"clip_id": f"emodb/{p.stem}", "corpus": "emodb", "path": p.name, "variant": "clean",
              "content_hash": "", "inputs": {"logmel": mel.extract({"clip_id": p.stem, "corpus": "emodb", "path": p.name,
                                                "abspath": str(p), "variant": "clean", "content_hash": ""})}}
             for p in wavs]
    rows = []
    for runtime in ("torch", "onnx"):
        ex = build("speech_emotion_embedding", {"checkpoint": args.speech_checkpoint, "runtime": runtime,
                                                "device": args.device, "skip_pretrain_speakers": False})
        ex.setup()
        windows = sum(r["emb_shape"][0] for r in ex.process(items).rows)
        cpu = timed(lambda: ex.process(items), clock=time.process_time)
        rows.append(("speech emotion CNN", f"extractor, runtime {runtime}, {len(items)} EmoDB clips ({windows} "
                     "windows of 1 s)", windows / cpu, "windows/CPU s"))
    return rows


def ssl_rows(args) -> list[tuple]:
    import tempfile
    import transformers as tf
    wavs = sorted((SHARED / "data" / "emodb" / "wav").glob("*.wav"))[:args.clips]
    items = [{"clip_id": f"emodb/{p.stem}", "corpus": "emodb", "path": p.name, "variant": "clean",
              "content_hash": "", "abspath": str(p)} for p in wavs]
    encoders = {
        "wav2vec2-base shape (random)": (tf.Wav2Vec2Config(), tf.Wav2Vec2FeatureExtractor(), [1, 8]),
        "Whisper-tiny encoder (random)": (tf.WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6,
                                                           encoder_ffn_dim=1536, decoder_layers=1),
                                          tf.WhisperFeatureExtractor(), [1]),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (config, processor, batches) in encoders.items():
            torch.manual_seed(0)
            tf.AutoModel.from_config(config).save_pretrained(tmp)
            processor.save_pretrained(tmp)
            for max_batch in batches:
                ex = build("ssl_speech", {"model": tmp, "device": args.device, "max_batch": max_batch})
                ex.setup()
                seconds = timed(lambda: ex.process(items), repeat=2)
                rows.append((f"ssl_speech {name}", f"extractor, {len(items)} EmoDB clips of 2 s, max_batch "
                             f"{max_batch}", len(items) * 2.0 / seconds, "s of audio/s"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clips", type=int, default=24, help="EmoDB clips for the EfficientAT extractor")
    parser.add_argument("--faces", type=int, default=2000, help="face crops for the mini-Xception extractor")
    parser.add_argument("--batch", type=int, default=64, help="batch size of the network-only rows")
    parser.add_argument("--speech-checkpoint", default="models/speech_cnn", help="for the speech emotion CNN rows")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES), default=sorted(BENCHES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [row for name in args.only for row in BENCHES[name](args)]
    print(f"\nEmbeddings per second, device {args.device}, {args.threads} torch threads, torch {torch.__version__}\n")
    print("| embedder | what is timed | embeddings/s |\n|---|---|---|")
    for name, what, rate, unit in rows:
        figure = f"{rate:,.0f}" if rate >= 100 else f"{rate:.2f}"      # ssl_speech on CPU: about 1 s of audio/s
        print(f"| {name} | {what} | {figure} {unit} |")


BENCHES = {"efficientat": audio_rows, "fer": face_rows, "ssl": ssl_rows, "speech_cnn": speech_cnn_rows}


if __name__ == "__main__":
    main()
