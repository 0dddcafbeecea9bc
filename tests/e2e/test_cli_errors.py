"""Every user mistake the front-door issue lists: one line on stderr, a non-zero exit, no traceback, and no process
left behind, whatever way the command ends (a busy port, Ctrl-C, SIGTERM, being killed outright).

"No process left behind" is checked through the environment: each command runs with a unique marker variable,
which every child inherits (the moto server is started with the parent's environment), and afterwards no process
on the machine may still carry it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

MARK = "PRFLEET_TEST_MARK"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANTHROPIC_", "PRFLEET_"))}
    env.update(
        {
            MARK: uuid.uuid4().hex,
            "PRFLEET_LOCAL_STATE": str(tmp_path / "local-stack.json"),
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "HOME": str(tmp_path),
        }
    )
    env.update(extra)
    return env


def marked(mark: str) -> list[int]:
    """Pids of live processes whose environment holds the marker."""
    needle = f"{MARK}={mark}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                stat = (entry / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":  # zombies hold nothing
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def assert_none_left(env: dict[str, str], within: float = 0.0) -> None:
    deadline = time.monotonic() + within
    while True:
        left = marked(env[MARK])
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    for pid in left:  # clean up before failing, so a failure does not leave them either
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


def run(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prfleet_local.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    err = proc.stderr
    assert proc.returncode != 0, (proc.returncode, proc.stdout, err)
    assert "Traceback" not in err + proc.stdout, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), repr(err)
    for needle in needles:
        assert needle in err, err


def _busy_port() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


def test_serve_on_a_busy_port_says_so_and_leaves_nothing_running(tmp_path):
    sock, port = _busy_port()
    env = _env(tmp_path, PRFLEET_WEBHOOK_SECRET="s")
    try:
        proc = run(env, "local", "serve", "--port", str(port), "--workdir", str(tmp_path / "w"))
    finally:
        sock.close()
    assert_one_line(proc, f"port {port} is in use", "--port")
    assert_none_left(env)


CASES = [
    # (arguments, extra environment, what the line must name)
    (["local", "serve", "--port", "0"], {}, ["PRFLEET_WEBHOOK_SECRET"]),
    (
        ["local", "serve", "--port", "0"],
        {"PRFLEET_WEBHOOK_SECRET": "s"},
        ["--port must be between 1 and 65535"],
    ),
    (
        ["local", "serve", "--port", "{free}"],
        {"PRFLEET_WEBHOOK_SECRET": "s", "PRFLEET_LOCAL_ALARM_INTERVAL_S": "0"},
        ["PRFLEET_LOCAL_ALARM_INTERVAL_S must be a number of seconds above 0"],
    ),
    (
        ["local", "send", "--payload", "{good_json}", "--port", "0"],
        {"PRFLEET_WEBHOOK_SECRET": "s"},
        ["--port must be between 1 and 65535, got 0"],
    ),
    (
        ["local", "send", "--payload", "{good_json}", "--port", "65536"],
        {"PRFLEET_WEBHOOK_SECRET": "s"},
        ["--port must be between 1 and 65535, got 65536"],
    ),
    (["local", "send", "--payload", "{missing}"], {"PRFLEET_WEBHOOK_SECRET": "s"}, ["no such file"]),
    (["local", "send", "--payload", "{bad_json}"], {"PRFLEET_WEBHOOK_SECRET": "s"}, ["is not JSON"]),
    (
        ["local", "send", "--payload", "{good_json}", "--port", "{free}"],
        {"PRFLEET_WEBHOOK_SECRET": "s"},
        ["no webhook answers", "prfleet local serve"],
    ),
    (["demo", "--workdir", "{good_json}"], {}, ["is a file, not a directory"]),
    (["demo", "--real"], {}, ["ANTHROPIC_API_KEY", "spend money"]),
    (["demo", "--model-url", "localhost:4000"], {}, ["--model-url must be an http(s) URL"]),
    (
        ["cost", "estimate", "--model", "claude-sonnet-5-5", "--input-tokens", "-5"],
        {},
        ["--input-tokens", "0 or more"],
    ),
    (["cost", "estimate", "--input-price", "-3", "--output-price", "15"], {}, ["--input-price", "0 or more"]),
    (
        ["cost", "estimate", "--model", "claude-sonnet-5-5", "--files"],
        {},
        ["--files", "expected one argument"],
    ),
    (
        ["cost", "estimate", "--model", "claude-sonnet-5-5", "--agents", "three"],
        {},
        ["'three' is not a whole number"],
    ),
    (["cost", "estimate", "--model", "gpt-4o"], {}, ["unknown model 'gpt-4o'", "claude-sonnet-5-5"]),
    (["cost", "report"], {}, ["--stack NAME", "--local"]),
    (["cost", "report", "--local"], {}, ["no local stack is running", "prfleet local serve"]),
    (["cost", "report", "--local"], {"_STATE": "not json"}, ["cannot read the local stack's state file"]),
    (
        ["cost", "report", "--local"],
        {"_STATE": '{"pid": 999999999, "endpoint_url": "http://127.0.0.1:1", "resources": {}}'},
        ["is gone (pid 999999999)"],
    ),
    (["alarms", "--stack", "prfleet"], {}, ["no AWS region", "--region"]),
    (["alarms", "--stack", "prfleet", "--region", "eu-west-1"], {}, ["no AWS credentials"]),
    (["cost", "report", "--stack", "prfleet", "--local"], {}, ["not allowed with argument"]),
    (["config", "check", "{missing}"], {}, ["no such file"]),
    (["config", "check", "{bad_toml}"], {}, ["not valid TOML"]),
    (["review", "{tmp}"], {}, ["is not a git repository"]),
    (["github-app", "manifest", "--webhook-url", "not-a-url"], {}, ["--webhook-url must be an https URL"]),
]


@pytest.mark.parametrize(("argv", "extra", "needles"), CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_each_user_mistake_is_one_line_and_a_non_zero_exit(tmp_path, argv, extra, needles):
    files = {
        "missing": str(tmp_path / "missing.json"),
        "bad_json": str(tmp_path / "bad.json"),
        "good_json": str(tmp_path / "good.json"),
        "bad_toml": str(tmp_path / "bad.toml"),
        "tmp": str(tmp_path),
        "free": str(_free_port()),
    }
    Path(files["bad_json"]).write_text("{not json")
    Path(files["good_json"]).write_text(json.dumps({"zen": "hi"}))
    Path(files["bad_toml"]).write_text("disabled = [")
    extra = dict(extra)
    state = extra.pop("_STATE", None)
    env = _env(tmp_path, **extra)
    if state is not None:
        Path(env["PRFLEET_LOCAL_STATE"]).write_text(state)
    proc = run(env, *[a.format(**files) for a in argv])
    assert_one_line(proc, *needles)
    assert_none_left(env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_serve(tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = _env(tmp_path, PRFLEET_WEBHOOK_SECRET="s")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prfleet_local.cli",
            "local",
            "serve",
            "--port",
            str(_free_port()),
            "--workdir",
            str(tmp_path / "w"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "Ctrl-C" in line or not line:
            break
    assert proc.poll() is None, proc.stderr.read()
    assert len(marked(env[MARK])) >= 2  # serve and its moto server: the check below can see children
    return proc, env


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "killed"])
def test_serve_leaves_no_process_however_it_ends(tmp_path, how):
    proc, env = _start_serve(tmp_path)
    state = Path(env["PRFLEET_LOCAL_STATE"])
    assert state.exists()
    sig = {"ctrl-c": signal.SIGINT, "sigterm": signal.SIGTERM, "killed": signal.SIGKILL}[how]
    proc.send_signal(sig)
    # communicate, not wait: both pipes are drained while it stops (a child blocked on a full pipe never exits).
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()  # the failure is that it did not stop; the test itself leaves no process behind
        proc.communicate()
        raise
    assert "Traceback" not in err, err
    if how == "killed":
        assert_none_left(env, within=5)  # the moto server notices its parent is gone
    else:
        assert proc.returncode == 0, err
        assert not state.exists()  # serve removes what it recorded
        assert_none_left(env)
        assert out.rstrip().endswith("local serve: stopped"), out


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """`prfleet ... | head -1`: the reader has gone before the output is written; a Unix filter stops quietly."""
    env = _env(tmp_path)
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait(timeout=30)  # the pipe's only read end is gone: every write now fails with EPIPE
    argv = ["github-app", "manifest", "--webhook-url", "https://x.example/webhook"]
    writer = subprocess.Popen(
        [sys.executable, "-m", "prfleet_local.cli", *argv],
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    reader.stdin.close()
    _, err = writer.communicate(timeout=60)
    assert err == "" and writer.returncode == 141, (writer.returncode, err)
    assert_none_left(env)
