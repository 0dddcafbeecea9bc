"""A moto server in its own process, for tests that need real concurrency.

Why not stock `python -m moto.server`: moto's DynamoDB backend evaluates a ConditionExpression and then
applies the UpdateExpression in separate steps, in place, with no lock, and the werkzeug server is
threaded. Concurrent writes to one item then interleave: lost updates and conditions passed on stale
values (seen on moto 5.2.5: a ledger limit passed and settled spend short of the sum of the costs).
Real DynamoDB applies each conditional single-item write atomically. So by default the server here runs
moto's own WSGI app behind a request lock (`serialized=True`): clients stay fully concurrent (many
connections, arbitrary interleavings of requests), and each request is atomic as in DynamoDB.
Pass `serialized=False` to run the stock threaded server. (moto's TransactWriteItems is not isolated
either: it snapshots whole tables and restores them on failure.)
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

_SERIALIZED_SERVER = """
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(timeout: float = 30.0, *, serialized: bool = True) -> Iterator[str]:
    """Start a moto server on 127.0.0.1 and a free port in a child process; yield its endpoint URL;
    always stop it."""
    port = _free_port()
    env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    if serialized:
        cmd = [sys.executable, "-c", _SERIALIZED_SERVER, str(port)]
    else:
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode}")
            try:
                urllib.request.urlopen(url + "/moto-api/data.json", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
