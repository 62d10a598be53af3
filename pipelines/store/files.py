"""Where the store's files live: a local folder, or an object store given as a URI (`s3://bucket/prefix`, `gs://...`,
with options such as `?endpoint_override=host:port&scheme=http`), both through `pyarrow.fs`. Credentials come only
from the libraries' standard places (AWS_* environment variables, ~/.aws, instance roles; GCP's ADC).

A file is written whole or not at all: locally to a temporary name then renamed; on an object store a PUT (also
multipart) becomes visible only once complete, so there is no temporary name to clean. `create` writes a small file
only if its name is free, atomically against every other writer (the commit log, pipelines/store/commits.py): a
hard link on a local filesystem, a conditional PUT (`If-None-Match: *`, through boto3: pyarrow.fs has no
conditional write) on S3 and S3-compatible servers (SeaweedFS, MinIO, Ceph), an upload with the generation
precondition `ifGenerationMatch=0` on Google Cloud Storage (through google-cloud-storage).

`gs://bucket/prefix?anonymous=true` (which pyarrow's URI parser lacks for GCS, unlike S3) reads and writes without
credentials: a public bucket, or an emulator given with `&endpoint_override=host:port&scheme=http`.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.errors import BadParams
from pipelines.manifest import write_atomic


def is_uri(location) -> bool:
    return "://" in str(location)


class Files:
    def __init__(self, root: str | Path):
        self.uri = str(root)
        self._client = None         # boto3's, made on the first conditional write
        if is_uri(root):
            self.fs, base = self._gcs_anonymous() or pafs.FileSystem.from_uri(self.uri)
            self.root: Path | PurePosixPath = PurePosixPath(base)
            self.local = False
        else:
            self.fs, self.root, self.local = pafs.LocalFileSystem(), Path(root), True
            self.uri = str(Path(root).resolve())

    def _name(self, path) -> str:
        return str(Path(path).absolute()) if self.local else str(path)

    def entries(self, folder) -> list[pafs.FileInfo]:
        infos = self.fs.get_file_info(pafs.FileSelector(self._name(folder), allow_not_found=True))
        return sorted(infos, key=lambda i: i.base_name)

    def subfolders(self, folder) -> list[str]:
        return [i.base_name for i in self.entries(folder) if i.type == pafs.FileType.Directory]

    def read_schema(self, path) -> pa.Schema:
        return pq.read_schema(self._name(path), filesystem=self.fs)

    def read_table(self, path, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self._name(path), columns=columns, filesystem=self.fs)

    def parquet_file(self, path) -> pq.ParquetFile:
        """An open Parquet file, for reading it a batch at a time."""
        return pq.ParquetFile(self.fs.open_input_file(self._name(path)))

    def location(self, path) -> str:
        """`path` (under the root) as a local path or a URI with the root's options."""
        if self.local:
            return self._name(path)
        from pipelines.manifest import media_location
        return media_location(self.uri, str(PurePosixPath(path).relative_to(self.root)))

    def metadata(self, path) -> pq.FileMetaData:
        return pq.read_metadata(self._name(path), filesystem=self.fs)

    def num_rows(self, path) -> int:
        return self.metadata(path).num_rows

    def size(self, path) -> int:
        return self.fs.get_file_info(self._name(path)).size

    def write_table(self, table: pa.Table, path) -> None:
        if self.local:
            write_atomic(table, Path(path))
        else:
            _whole_write_retried(lambda: pq.write_table(table, self._name(path), filesystem=self.fs))

    def delete(self, path) -> None:
        try:
            self.fs.delete_file(self._name(path))
        except FileNotFoundError:
            pass

    def delete_folder(self, path) -> None:
        self.fs.delete_dir(self._name(path))

    def names(self, paths) -> list[str]:
        """Names for pyarrow.dataset with this filesystem."""
        return [self._name(p) for p in paths]

    def read_bytes(self, path) -> bytes:
        with self.fs.open_input_stream(self._name(path)) as f:
            return f.read()

    def write_bytes(self, path, data: bytes) -> None:
        """Write (or replace) a small file whole."""
        if self.local:
            _local_temporary(path, data).replace(path)
        else:
            def put():
                with self.fs.open_output_stream(self._name(path)) as f:
                    f.write(data)
            _whole_write_retried(put)

    def create(self, path, data: bytes) -> bool:
        """Write a small file only if no file has that name; False if one has (another writer won)."""
        if self.local:
            tmp = _local_temporary(path, data)
            try:
                os.link(tmp, path)      # fails if the name exists; the content is complete before it is visible
                return True
            except FileExistsError:
                return False
            finally:
                tmp.unlink()
        if urlparse(self.uri).scheme == "gs":
            return self._gcs_create(str(path), data)
        return self._s3_create(str(path), data)

    def _gcs_anonymous(self):
        """(filesystem, path) for a gs:// URI with `anonymous=true`, else None."""
        url = urlparse(self.uri)
        if url.scheme != "gs" or not self._anonymous():
            return None
        options = {k: v for k, v in self._query().items() if k in ("endpoint_override", "scheme")}
        return pafs.GcsFileSystem(anonymous=True, **options), f"{url.netloc}{url.path}".rstrip("/")

    def _gcs_create(self, name: str, data: bytes) -> bool:
        try:
            from google.api_core.exceptions import PreconditionFailed
            from google.cloud import storage
        except ImportError:
            raise BadParams("a store on gs:// commits with google-cloud-storage: pip install 'aver[gcs]'") from None
        if self._client is None:
            endpoint, anonymous = self.endpoint_url(), self._anonymous()
            if anonymous:
                from google.auth.credentials import AnonymousCredentials
            self._client = storage.Client(
                project=self._query().get("project_id"), credentials=AnonymousCredentials() if anonymous else None,
                client_options={"api_endpoint": endpoint} if endpoint else None)
        bucket, _, key = name.partition("/")
        try:
            self._client.bucket(bucket).blob(key).upload_from_string(data, if_generation_match=0)
            return True
        except PreconditionFailed:      # 412: the name exists
            return False

    def _s3_create(self, name: str, data: bytes) -> bool:
        import botocore.exceptions
        bucket, _, key = name.partition("/")
        try:
            self._s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except botocore.exceptions.ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412):    # 412: the name exists; 409: a concurrent conditional PUT of it is in flight
                return False
            raise

    def _s3_client(self):
        if self._client is None:
            url = urlparse(self.uri)
            if url.scheme != "s3":
                raise BadParams(f"the store's commit log needs a create-if-absent write, which aver does for local "
                                f"folders, s3:// and gs:// only, not {url.scheme}://")
            try:
                import boto3
            except ImportError:
                raise BadParams("a store on s3:// commits with boto3: pip install 'aver[s3]'") from None
            self._client = boto3.client("s3", endpoint_url=self.endpoint_url(), region_name=self._query().get("region"))
        return self._client

    def _query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlparse(self.uri).query).items()}

    def _anonymous(self) -> bool:
        """`?anonymous=true`: no credentials (a public bucket, an emulator)."""
        return self._query().get("anonymous", "").lower() == "true"

    def endpoint_url(self) -> str | None:
        """The endpoint URL the URI names (`?endpoint_override=host:port&scheme=http`), None for the cloud's own."""
        endpoint = self._query().get("endpoint_override")
        if endpoint and "://" not in endpoint:
            endpoint = f"{self._query().get('scheme', 'https')}://{endpoint}"
        return endpoint


WRITE_ATTEMPTS = 4


def _local_temporary(path, data: bytes) -> Path:
    """`data` written beside `path` under a temporary name nobody reads, ready to be renamed or linked to `path`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    return tmp


def _whole_write_retried(write) -> None:
    """An object-store write of a whole file, again after a server-side failure (e.g. S3 `INTERNAL_FAILURE` on a
    part upload, seen from SeaweedFS) with 0.5, 1, 2 s of backoff. Writing the same whole object again is harmless;
    a missing bucket or a refused credential is not retried."""
    for attempt in range(WRITE_ATTEMPTS):
        try:
            return write()
        except (FileNotFoundError, PermissionError):
            raise
        except OSError:
            if attempt == WRITE_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * 2**attempt)

