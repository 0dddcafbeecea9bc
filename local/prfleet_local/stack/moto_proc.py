"""A moto server in its own process, each request atomic.

moto's in-process mock loses concurrent DynamoDB conditional updates; so does the stock threaded server: its
DynamoDB backend evaluates a ConditionExpression and applies the UpdateExpression in separate steps with no lock,
so concurrent writes to one item interleave (seen on moto 5.2.5: a ledger limit passed, settled spend short of the
sum of the costs). Real DynamoDB applies each conditional single-item write atomically. So by default the server
runs moto's own WSGI app behind a request lock: clients stay fully concurrent (many connections, any interleaving
of requests) and each request is atomic, as in DynamoDB. `serialized=False` runs the stock server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

# The child ends itself when its parent goes, however the parent ended (SIGKILL, a crash, a closed terminal):
# a reparented process sees a different getppid(). Without this a killed `prfleet` leaves moto running.
_ORPHAN_WATCH = """
import os, threading, time

def _orphan_watch(parent=int(os.environ.get("PRFLEET_PARENT_PID") or 0)):
    while parent:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.5)

threading.Thread(target=_orphan_watch, daemon=True).start()
"""

_STOCK_SERVER = (
    _ORPHAN_WATCH
    + """
import runpy, sys
sys.argv = ["moto_server", "-H", "127.0.0.1", "-p", sys.argv[1]]
runpy.run_module("moto.server", run_name="__main__")
"""
)

_SERIALIZED_SERVER = (
    _ORPHAN_WATCH
    + """
import sys, threading
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()

def serialized(environ, start_response):
    with lock:
        return list(app(environ, start_response))

run_simple("127.0.0.1", int(sys.argv[1]), serialized, threaded=True, use_reloader=False)
"""
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoProcess:
    """`python -m moto.server` on a free loopback port; `endpoint` is what AWS_ENDPOINT_URL should be."""

    def __init__(
        self, *, log_path: Path | None = None, port: int | None = None, serialized: bool = True
    ) -> None:
        self.serialized = serialized
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> str:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "MOTO_CALL_RESET_API": "false", "PRFLEET_PARENT_PID": str(os.getpid())}
        script = _SERIALIZED_SERVER if self.serialized else _STOCK_SERVER
        cmd = [sys.executable, "-c", script, str(self.port)]
        self._proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=out,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._proc.returncode}")
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()  # noqa: S310 - loopback
                return self.endpoint
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint} within {timeout} s")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def moto_server(timeout: float = 30.0, *, serialized: bool = True) -> Iterator[str]:
    """A moto server for the length of a `with` block; yields its endpoint URL."""
    proc = MotoProcess(serialized=serialized)
    try:
        yield proc.start(timeout)
    finally:
        proc.stop()
