"""A server process a test starts on loopback: in its own process group, its output to a log file (a pipe nobody
reads blocks a server once full), ready when a probe stops failing, and stopped by the PID started (SIGTERM to its
group, SIGKILL if it is still there 10 s later): never by name."""
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable


@contextmanager
def running(cmd: list[str], log: Path, ready: Callable[[], object], timeout_s: float,
            retry_on: tuple[type[BaseException], ...] = (OSError,), poll_s: float = 0.2, env: dict | None = None):
    """Start `cmd`, call `ready()` until it stops raising `retry_on` (within `timeout_s`, while the server lives),
    yield the process, then stop it and its children."""
    with open(log, "wb") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                ready()
                break
            except retry_on:
                assert time.time() < deadline and server.poll() is None, log.read_text()[-2000:]
                time.sleep(poll_s)
        yield server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:       # a graceful shutdown can take long: nothing to keep
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
