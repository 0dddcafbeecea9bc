"""`prfleet demo` as a new user meets it: offline whatever is exported, progress while it waits, and `--model-url`
running the whole pipeline against another Messages-API server (here a second offline model in this process, which
stands for a gateway or a recording proxy) with the user's key."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from prfleet_local.model.bill import api_key_id
from prfleet_local.model.server import ModelServer

pytestmark = pytest.mark.e2e


def _demo(*args: str, key: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "PRFLEET_"))}
    env["ANTHROPIC_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "prfleet_local.cli", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        stdin=subprocess.DEVNULL,
    )


def test_model_url_runs_the_demo_against_that_server_with_the_users_key():
    server = ModelServer()
    url = server.start()
    try:
        proc = _demo("--model-url", url, key="sk-gateway-key")
    finally:
        server.stop()
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert f"the Messages-API server at {url} (--model-url, with ANTHROPIC_API_KEY)" in out
    assert "demo passed" in out
    bill = server.bill()
    assert bill and {r.api_key_id for r in bill} == {api_key_id("sk-gateway-key")}
    assert "jobs finished" in out and "s elapsed" in out  # progress while waiting


def test_an_exported_key_alone_keeps_the_demo_offline():
    proc = _demo(key="sk-ant-exported-but-not-asked-for")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "model: the offline model" in proc.stdout and "no cost" in proc.stdout
    assert "real Claude API" not in proc.stdout


def test_a_timeout_says_how_far_it_got_why_and_where_the_logs_are():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket is closed
    proc = _demo("--model-url", dead, "--timeout", "25", key="sk-unused")
    assert proc.returncode == 1
    err = proc.stderr
    assert re.search(r"^timed out: (\d+/\d+ jobs finished|waiting for the planner)$", err, re.M), err
    cause = rf"^(last error logged \(\d+ in all\): .*[Cc]onnection|no error logged: is {dead} reachable\?)"
    assert re.search(cause, err, re.M), err  # the model call's error, or (none logged yet) the URL to check
    assert re.search(r"^function logs: /\S+/functions\.log\.jsonl$", err, re.M), err
    assert "Traceback" not in err + proc.stdout
