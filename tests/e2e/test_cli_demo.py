"""`prfleet demo` as a new user meets it: offline whatever is exported, progress while it waits, and `--model-url`
running the whole pipeline against another Messages-API server (here a second offline model in this process, which
stands for a gateway or a recording proxy) with the user's key."""

from __future__ import annotations

import os
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
