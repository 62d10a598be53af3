"""Media on an object store: a clip's location is a local path or a URI (`s3://bucket/corpus/a.wav?endpoint_...`,
`gs://...`, `file://...`), reached through `pyarrow.fs` like the store (pipelines/store/files.py). Credentials come
only from the libraries' standard places (AWS_* variables, ~/.aws, instance roles; GCP's ADC), never from params.

Decoders (PyAV through FFmpeg) seek back and forth in a file; over HTTP each seek would be a ranged GET. So a worker
fetches an object once, whole, into a bounded local cache (`AVER_MEDIA_CACHE`, default ~/.cache/aver/media, at most
`AVER_MEDIA_CACHE_MB` MiB, default 4096, least recently used first out) and decodes the local copy. A copy is
keyed by the URI, the object's size and its modification time, so a changed object is fetched again.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import os
import uuid
from pathlib import Path, PurePosixPath

import av
import pyarrow.fs as pafs

from pipelines.extractor import ClipError
from pipelines.probe import ffmpeg_problem
from pipelines.store.files import Files, is_uri

CHUNK = 8 * 2**20
# The file itself is missing or closed to us: the clip's fault, for good (until the corpus is mended and re-ingested).
_CLIP_FAULTS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def cache_dir() -> Path:
    return Path(os.environ.get("AVER_MEDIA_CACHE", Path.home() / ".cache" / "aver" / "media"))


def cache_limit() -> int:
    return int(float(os.environ.get("AVER_MEDIA_CACHE_MB", 4096)) * 2**20)


def split(location: str) -> tuple[Files, str]:
    """(the filesystem's `Files` of the bucket, the object's path in it) of a media URI."""
    scheme, _, rest = location.partition("://")
    if scheme == "file":
        return _files("file:///"), pafs.FileSystem.from_uri(location)[1]
    rest, _, options = rest.partition("?")
    bucket, _, key = rest.partition("/")
    files = _files(f"{scheme}://{bucket}" + (f"?{options}" if options else ""))
    return files, str(PurePosixPath(files.root) / key) if key else str(files.root)


@functools.lru_cache(maxsize=16)
def _files(base: str) -> Files:
    return Files(base)         # one filesystem (client, connection pool) per bucket and options, per process


def local(location: str | Path) -> Path:
    """A path a decoder can open: the location itself, or the cached copy of an object. A missing object is the
    clip's fault (`unreadable`); any other failure (network, credentials) is not and propagates: retried."""
    if not is_uri(location):
        return Path(location)
    files, name = split(str(location))
    try:
        info = files.fs.get_file_info(name)
    except FileNotFoundError:
        info = None
    if info is None or info.type != pafs.FileType.File:
        raise ClipError("unreadable", f"no object at {str(location).partition('?')[0]}")
    key = hashlib.sha256(f"{str(location).partition('?')[0]}\0{info.size}\0{info.mtime_ns}".encode()).hexdigest()
    copy = cache_dir() / f"{key[:24]}-{PurePosixPath(name).name}"
    if copy.exists():
        os.utime(copy)          # recently used
        return copy
    copy.parent.mkdir(parents=True, exist_ok=True)
    tmp = copy.with_name(f".{copy.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pafs.copy_files(name, str(tmp), source_filesystem=files.fs, destination_filesystem=pafs.LocalFileSystem(),
                        chunk_size=CHUNK, use_threads=False)
        tmp.replace(copy)
    finally:
        tmp.unlink(missing_ok=True)
    evict(keep=copy)
    return copy


def open_container(location: str | Path) -> av.container.InputContainer:
    """A decoder on a clip's media (an object's cached copy). A missing or forbidden file is the clip's fault
    (`unreadable`), a file FFmpeg cannot parse too (`undecodable`); any other OSError (EIO, a stale NFS handle,
    a timeout, too many open files) is the machine's and propagates, so the item is retried, never stored as done."""
    path = local(location)
    try:
        if path.stat().st_size == 0:
            raise ClipError("empty_file", f"{path.name} has 0 bytes")
        return av.open(str(path))
    except _CLIP_FAULTS as e:
        raise ClipError("unreadable", f"cannot read {path}: {e.strerror}") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ClipError("unreadable", f"cannot read {path}: a symbolic link loop") from e
        raise
    except av.FFmpegError as e:
        raise ClipError("undecodable", f"{path.name}: {ffmpeg_problem(e)}") from e


def evict(keep: Path | None = None) -> None:
    """Delete the least recently used copies until the cache fits its limit (`keep`, just fetched, stays)."""
    entries = []
    for entry in os.scandir(cache_dir()):
        if entry.is_file() and not entry.name.startswith("."):
            st = entry.stat()
            entries.append((st.st_mtime, st.st_size, Path(entry.path)))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= cache_limit():
            break
        if path != keep:
            path.unlink(missing_ok=True)
            total -= size


def listing(root: str) -> list[pafs.FileInfo]:
    """Every object under a URI root (recursive), sorted by path."""
    files, name = split(root)
    infos = files.fs.get_file_info(pafs.FileSelector(name, recursive=True, allow_not_found=True))
    return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)


def relative(info: pafs.FileInfo, root: str) -> str:
    return str(PurePosixPath(info.path).relative_to(split(root)[1]))


def read_bytes(location: str) -> bytes:
    files, name = split(location)
    return files.read_bytes(name)
