"""Where the store's files live: a local folder, or an object store given as a URI (`s3://bucket/prefix`, `gs://...`,
with options such as `?endpoint_override=host:port&scheme=http`), both through `pyarrow.fs`. Credentials come only
from the libraries' standard places (AWS_* environment variables, ~/.aws, instance roles; GCP's ADC).

A file is written whole or not at all: locally to a temporary name then renamed; on an object store a PUT (also
multipart) becomes visible only once complete, so there is no temporary name to clean.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.manifest import write_atomic


def is_uri(location) -> bool:
    return "://" in str(location)


class Files:
    def __init__(self, root: str | Path):
        self.uri = str(root)
        if is_uri(root):
            self.fs, base = pafs.FileSystem.from_uri(self.uri)
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

    def write_table(self, table: pa.Table, path) -> None:
        if self.local:
            write_atomic(table, Path(path))
        else:
            pq.write_table(table, self._name(path), filesystem=self.fs)

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
