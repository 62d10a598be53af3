"""Cost of the finite-row check (pipelines/rowcheck.py) on real rows, next to the cost of making the row.

    python benchmarks/rowcheck.py

One EmoDB clip per audio feature set: the row is extracted once (timed), then checked `--repeats` times; prints a
markdown table of milliseconds per row. CPU time of this process, so other jobs on a shared machine do not inflate it.
"""
from __future__ import annotations

import argparse
import time

from _setup import SHARED  # first: sys.path and the model registry

from pipelines.extractor import Result, build
from pipelines.rowcheck import reject_garbage

SETS = {"eGeMAPS functionals": ("opensmile", {}), "ComParE_2016 functionals": ("opensmile", {"feature_set":
                                                                                          "ComParE_2016"}),
        "eGeMAPS LLD": ("opensmile", {"level": "lld"}), "log-mel": ("logmel", {}), "spectral": ("spectral", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    path = SHARED / "data" / "emodb" / "wav" / "03a01Fa.wav"
    item = {"clip_id": "emodb/03a01Fa", "corpus": "emodb", "path": path.name, "abspath": str(path),
            "variant": "clean", "content_hash": "h", "start": None, "end": None, "peers": [], "augment": {}}
    print("| feature set | extract ms/row | check ms/row |\n|---|---|---|")
    for name, (kind, params) in SETS.items():
        extractor = build(kind, params)
        extractor.setup()
        extractor.process([item])                      # warm caches (decoded clip, openSMILE config)
        t0 = time.process_time()
        result = extractor.process([{**item, "content_hash": "h2"}])
        extract_ms = (time.process_time() - t0) * 1000
        assert result.rows, result.failures
        t0 = time.process_time()
        for _ in range(args.repeats):
            checked = reject_garbage(extractor, [item], Result(list(result.rows)))
        check_ms = (time.process_time() - t0) * 1000 / args.repeats
        assert checked.rows
        print(f"| {name} | {extract_ms:.1f} | {check_ms:.2f} |")


if __name__ == "__main__":
    main()
