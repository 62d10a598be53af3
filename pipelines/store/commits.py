"""The commit log of one feature set x corpus: which data files are live, so that every key is read exactly once.

Workers write data files under unique names; none is read until a commit names it. A commit is a small JSON record
`<dir>/_commits/<version>.json` (20 digits, from 0) written with a create-if-absent write (Files.create), so of two
writers committing at once exactly one gets each version; the other reads the records it missed and tries the next
one. A record adds files and removes files (compaction, prune); the live files are those added and not removed,
replayed from the latest checkpoint (`<version>.checkpoint.json`, the live files at that version, written every
CHECKPOINT_EVERY versions so a reader does not read every record). A file no commit names (a batch whose worker
died and was resubmitted, a crashed run) is never read; `clean_temporaries` deletes such files once they are old.

Versions (time travel): the files live at any version are found the same way, replaying up to that version. A file a
commit removes is not deleted: it stays a *tombstone* (which versions read it, when it was removed) until `aver
store vacuum` (pipelines/store/versions.py) deletes the tombstones no wanted version reads and commits a record that
forgets them. Checkpoints hold the tombstones too.

Exactly once: an append commit never adds a key that is already live. Before each attempt the writer brings its
view of the live keys up to date (records it has not seen) and rewrites a file whose keys another writer committed
first without those rows. A compaction or prune commit names the files it replaces; if another commit removed one of
them first it fails with `Conflict` and the caller plans again (so a compaction and a prune never undo each other).
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipelines.errors import UserError
from pipelines.keyset import DIGEST, KeySet, digests
from pipelines.manifest import now
from pipelines.store.file_cache import read_keys

if TYPE_CHECKING:
    from pipelines.store.table import FeatureStore

LOG = "_commits"
CHECKPOINT_EVERY = 100
ATTEMPTS = 1000
MERGE_KEYS = 2**16      # the keys committed since the key view was built are merged into it past this many (+1/4)
# Files of a store written before the commit log (12 hex digits; Beam's were numbered shards): adopted by the
# first commit, so an older store keeps its rows. Files written since have 32 hex digits.
LEGACY = re.compile(r"^(part|ledger)-[0-9a-f]{12}(-\d{5}-of-\d{5})?\.parquet$")


class Conflict(Exception):
    """Another commit removed a file this one replaces: plan again from a fresh snapshot."""


class VersionUnavailable(UserError):
    """A version asked for that the log does not have, or whose files a vacuum deleted."""


@dataclass
class Staged:
    """A data file written but not yet committed; `keys` are its (clip_id, variant) keys, read from it if None."""
    name: str
    rows: int
    bytes: int
    keys: list[tuple[str, str]] | None = None

    @classmethod
    def of(cls, record: dict) -> "Staged":
        """From its JSON form (`dataclasses.asdict`, keys as lists)."""
        return cls(**{**record, "keys": [tuple(k) for k in record["keys"]]})

    def entry(self) -> dict:
        return {"name": self.name, "rows": self.rows, "bytes": self.bytes}


@dataclass
class Snapshot:
    version: int                                            # -1: no commit yet
    files: dict[str, dict] = field(default_factory=dict)    # live file name -> {"rows", "bytes", "version": added at}
    removed: dict[str, dict] = field(default_factory=dict)  # tombstones: name -> its entry + "removed" (version) and
                                                            # "removed_at" (time): read by versions [version, removed)

    def apply(self, record: dict) -> None:
        if record["version"] == 0:      # the first record names every file it adopts from an older store
            self.files, self.removed = {}, {}
        for name in record["remove"]:
            if name in self.files:
                self.removed[name] = {**self.files.pop(name), "removed": record["version"],
                                      "removed_at": record["created_at"]}
        for e in record["add"]:
            self.files[e["name"]] = {"rows": e.get("rows"), "bytes": e.get("bytes"), "version": record["version"]}
        for name in record.get("vacuum", ()):
            self.removed.pop(name, None)
        self.version = record["version"]

    def checkpoint(self) -> bytes:
        return json.dumps({"live": self.files, "removed": self.removed}, sort_keys=True).encode()

    @classmethod
    def of_checkpoint(cls, version: int, data: dict) -> "Snapshot":
        if "live" not in data:          # written before tombstones: the live files only
            return cls(version, {n: {"version": 0, **e} for n, e in data.items()})
        return cls(version, dict(data["live"]), dict(data["removed"]))


class CommitLog:
    def __init__(self, store: "FeatureStore", feature_set: str, corpus: str):
        self.store, self.files = store, store.files
        self.dir = store.dir(feature_set, corpus)
        self.folder = self.dir / LOG
        self.live: KeySet | None = None     # the live keys' digests, built on the first append (16 bytes a key)
        self.recent: set[bytes] = set()     # digests of keys committed since `live` was built
        self.started = False                # `seen` read once: from then on, only the records after it
        self.seen = Snapshot(-1)
        self.cache: dict[str, dict] = {}

    # ---- reading ----------------------------------------------------------------------------------------
    def snapshot(self, version: int | None = None) -> Snapshot:
        """The live files at `version` (default: the latest; before any commit: the files of an older store, see
        LEGACY), replayed from the latest checkpoint at or before it."""
        for _ in range(ATTEMPTS):
            names = [i.base_name for i in self.files.entries(self.folder)]
            records = sorted(int(n[:20]) for n in names if re.fullmatch(r"\d{20}\.json", n))
            if not records and version is None:
                return Snapshot(-1, self._legacy())
            last = records[-1] if version is None else version
            if not records or not 0 <= last <= records[-1]:
                raise VersionUnavailable(f"{self.dir}: no version {version} (the log has "
                                         f"{f'0 to {records[-1]}' if records else 'none'})")
            checkpoints = [int(n[:20]) for n in names if re.fullmatch(r"\d{20}\.checkpoint\.json", n)]
            base = max((c for c in checkpoints if c in records and c <= last), default=None)
            snap = Snapshot(-1) if base is None else Snapshot.of_checkpoint(
                base, self._read(f"{base:020d}.checkpoint.json"))
            todo = [v for v in records if snap.version < v <= last]
            if todo != list(range(snap.version + 1, last + 1)):
                if version is None:
                    continue                # a listing that missed a record: list again
                raise VersionUnavailable(f"{self.dir}: version {version} can no longer be replayed (records of "
                                         "the log before it were deleted)")
            for v in todo:
                snap.apply(self._read(f"{v:020d}.json"))
            return snap
        raise RuntimeError(f"{self.folder}: the commit log kept changing under {ATTEMPTS} listings")

    def _read(self, name: str) -> dict:
        """A record or checkpoint, read once: neither ever changes once written."""
        if name not in self.cache:
            self.cache[name] = json.loads(self.files.read_bytes(self.folder / name))
        return self.cache[name]

    def _legacy(self) -> dict[str, dict]:
        infos = [i for i in self.files.entries(self.dir) if LEGACY.match(i.base_name)]
        metas = {i.base_name: self.store._meta(self.dir / i.base_name) for i in infos}
        replaced = {n for m in metas.values() for n in m.get("replaces", [])}
        return {i.base_name: {"rows": None, "bytes": i.size} for i in infos if i.base_name not in replaced}

    # ---- committing -------------------------------------------------------------------------------------
    def commit(self, add: list[Staged], remove: list[str] = (), op: str = "append", forget: list[str] = ()
               ) -> list[str]:
        """Make `add` live and `remove` not, in one atomic step; returns the names committed. An append drops the
        rows whose key is already live (rewriting that file); any other op raises Conflict if a file it removes is
        no longer live. `forget`: tombstones a vacuum deletes."""
        add = [s for s in add if s.rows]
        if not add and not remove and not forget:
            return []
        for _ in range(ATTEMPTS):
            self._catch_up(need_keys=op == "append")
            missing = [n for n in remove if n not in self.seen.files]
            if missing:
                raise Conflict(f"{missing[:3]} were replaced by another commit")
            if op == "append":
                claimed: set = set()        # keys of the files before in this commit (a retried Beam bundle's)
                add = [s for s in (self._without_live_keys(s, claimed) for s in add) if s is not None]
                if not add and not remove:
                    return []
            version = self.seen.version + 1
            record = {"version": version, "op": op, "created_at": now(), "remove": sorted(remove),
                      "add": [s.entry() for s in add]}
            if forget:
                record["vacuum"] = sorted(forget)
            if version == 0:    # the first commit adopts the files of an older store
                record["add"] += [{"name": n, **e} for n, e in self.seen.files.items() if n not in remove]
            if self.files.create(self.folder / f"{version:020d}.json", json.dumps(record, sort_keys=True).encode()):
                self._advance(record, {s.name: s.keys for s in add})
                if version and version % CHECKPOINT_EVERY == 0:
                    self.files.write_bytes(self.folder / f"{version:020d}.checkpoint.json", self.seen.checkpoint())
                return [s.name for s in add]
        raise RuntimeError(f"{self.folder}: could not commit in {ATTEMPTS} attempts")

    def _catch_up(self, need_keys: bool) -> None:
        """Bring `seen` (and, for an append, the live keys) to the latest version. After the first snapshot only the
        records after `seen` are read, one by one until the first that does not exist yet (no listing of the log,
        which grows with every commit). The keys are read from the live files when first needed, and again after
        a commit removed files (compaction, prune: rare, and a file's keys are not kept to subtract them)."""
        if not self.started:
            self.seen, self.started = self.snapshot(), True
        else:
            while True:
                try:
                    record = self._read(f"{self.seen.version + 1:020d}.json")
                except FileNotFoundError:
                    break
                self._advance(record, {})
        if need_keys and self.live is None:
            self.live, self.recent = KeySet.of(self._file_keys(n, columns=True) for n in self.seen.files), set()

    def _advance(self, record: dict, keys: dict[str, list | None]) -> None:
        """Apply one record to `seen` and to the live keys."""
        self.seen.apply(record)
        if self.live is None:
            return
        if record["remove"]:
            self.live = None
            return
        for e in record["add"]:
            self.recent.update(_digests(keys.get(e["name"]) or self._file_keys(e["name"])).tolist())
        if len(self.recent) > MERGE_KEYS + len(self.live) // 4:      # merged now and then: amortised
            self.live = KeySet([self.live.sorted, np.array(sorted(self.recent), dtype=DIGEST)])
            self.recent = set()

    def _file_keys(self, name: str, columns: bool = False):
        """A file's (clip_id, variant) keys, or its two key columns."""
        t = read_keys(self.files, self.dir / name, name.split("-", 1)[0])    # the planner's read of it
        ids, variants = t.column(0).to_pylist(), t.column(1).to_pylist()
        return (ids, variants) if columns else list(zip(ids, variants))

    def _without_live_keys(self, staged: Staged, claimed: set) -> Staged | None:
        """The staged file, or a copy without the rows whose key is live or `claimed` (None if no row is left);
        adds the keys it keeps to `claimed`."""
        keys = staged.keys if staged.keys is not None else self._file_keys(staged.name)
        staged.keys = keys
        found = _digests(keys)
        live = self.live.has(found)
        keep = [not was and d not in self.recent and d not in claimed for was, d in zip(live, found.tolist())]
        claimed.update(d for d, kept in zip(found.tolist(), keep) if kept)
        if all(keep):
            return staged
        old = self.dir / staged.name
        table = self.files.read_table(old).filter(pa.array(keep))
        self.files.delete(old)
        if not table.num_rows:
            return None
        kind = staged.name.split("-", 1)[0]
        fresh = self.store.stage_table(kind, self.dir, table)
        fresh.keys = [k for k, kept in zip(keys, keep) if kept]
        return fresh


def _digests(keys: list[tuple[str, str]]) -> np.ndarray:
    return digests([c for c, _ in keys], [v for _, v in keys])


def new_name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}.parquet"

