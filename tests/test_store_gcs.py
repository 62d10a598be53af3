"""The store on Google Cloud Storage (the fake-gcs-server emulator, `gcs_server` fixture): commits are uploads with
the precondition ifGenerationMatch=0, so of two writers committing one version exactly one succeeds."""
import pyarrow.fs as pafs

from pipelines.store.files import Files


def test_a_commit_record_is_created_once(gcs_server):
    files = Files(gcs_server.uri("create-once"))
    name = files.root / "_commits" / f"{0:020d}.json"
    assert files.create(name, b"first") and not files.create(name, b"second")
    assert files.read_bytes(name) == b"first"


def test_two_writers_at_once_on_gcs(gcs_server, tmp_path):
    """Two processes extract into one gs:// store at once, each committing row by row: every key stored once."""
    from test_store import two_writers_at_once
    store = two_writers_at_once(tmp_path, gcs_server.uri("two-writers"))
    log = [i.base_name for i in store.files.fs.get_file_info(pafs.FileSelector("aver/two-writers/f/c/_commits"))]
    assert len(log) >= 6 and store.log("f", "c").snapshot().version == len(log) - 1
