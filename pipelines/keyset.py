"""A set of row keys held as sorted 16-byte digests: what the planner keeps of a corpus while it streams.

Planning a million clips x five variants needs to ask "is this key done / planned / stored upstream?" without
holding the keys as Python tuples (~200 bytes each). A `KeySet` keeps 16 bytes per key (a BLAKE2b digest of the
key's fields; a collision among 10^7 keys has a probability around 10^-25) and answers membership for a whole
batch at once with a binary search.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np

DIGEST = "S16"


def digests(*columns: Sequence[str | None]) -> np.ndarray:
    """One digest per position of the given equally long columns (e.g. clip ids, variants, content hashes)."""
    out = [hashlib.blake2b("\0".join("" if v is None else v for v in fields).encode(), digest_size=16).digest()
           for fields in zip(*columns)]
    return np.array(out, dtype=DIGEST)


class KeySet:
    def __init__(self, chunks: Iterable[np.ndarray] = ()):
        chunks = [c for c in chunks if len(c)]
        self.sorted = np.unique(np.concatenate(chunks)) if chunks else np.empty(0, dtype=DIGEST)

    @classmethod
    def of(cls, batches: Iterable[Sequence[Sequence[str | None]]]) -> "KeySet":
        """From batches of columns, e.g. `[(clip_ids, variants), ...]`."""
        return cls(digests(*columns) for columns in batches)

    def __len__(self) -> int:
        return len(self.sorted)

    def contains(self, *columns: Sequence[str | None]) -> np.ndarray:
        """A boolean per position: is that key in the set."""
        return self.has(digests(*columns))

    def has(self, wanted: np.ndarray) -> np.ndarray:
        """`contains`, for keys already digested."""
        if not len(self.sorted) or not len(wanted):
            return np.zeros(len(wanted), dtype=bool)
        at = np.minimum(np.searchsorted(self.sorted, wanted), len(self.sorted) - 1)
        return self.sorted[at] == wanted
