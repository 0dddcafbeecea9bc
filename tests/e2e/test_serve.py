"""`prfleet local serve` as the README describes it: a webhook on the given port until interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from prfleet.pipeline.webhook import signature_for
from prfleet_local.demo.run import post
from prfleet_local.stack.moto_proc import free_port
from tests.conftest import load_payload

pytestmark = pytest.mark.e2e


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "prfleet_local.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_serve_refuses_to_start_without_a_secret():
    env = {k: v for k, v in os.environ.items() if k != "PRFLEET_WEBHOOK_SECRET"}
    proc = _cli("local", "serve", "--port", str(free_port()), env=env)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "PRFLEET_WEBHOOK_SECRET" in out


def test_serve_answers_signed_deliveries_and_reviews_the_sample_pr(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PRFLEET_WEBHOOK_SECRET": "serve-secret",
        "PRFLEET_LOCAL_STATE": str(tmp_path / "local-stack.json"),
    }
    env.pop("ANTHROPIC_API_KEY", None)
    proc = _cli("local", "serve", "--port", str(port), "--workdir", str(tmp_path), env=env)
    try:
        lines = _read_until(proc, "Ctrl-C")
        assert f"http://127.0.0.1:{port}/webhook" in "".join(lines), lines
        body = json.dumps(load_payload("ping.payload.json")).encode()
        headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "serve-1"}
        signed = {**headers, "X-Hub-Signature-256": signature_for(b"serve-secret", body)}
        url = f"http://127.0.0.1:{port}/webhook"
        assert post(url, body, signed)[0] == 200
        assert post(url, body, headers)[0] == 401

        # The README / deploy guide rehearsal: the printed `prfleet local send` command gets the sample PR reviewed.
        (try_line,) = [line for line in lines if line.startswith("try:")]
        send_args = try_line.split("prfleet ", 1)[1].split()
        sent = subprocess.run(
            [sys.executable, "-m", "prfleet_local.cli", *send_args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0 and sent.stdout.startswith("202"), sent.stdout + sent.stderr
        (done,) = _read_until(proc, " check prfleet on ")[-1:]
        assert "1 review(s)" in done and "inline comment(s)" in done, done

        # the review page serve printed answers with the PR's page
        (page_line,) = [line for line in lines if line.startswith("review:")]
        page = page_line.split()[1]
        assert page in done  # the check line names the page too
        with urllib.request.urlopen(page) as reply:  # noqa: S310 - loopback
            assert reply.status == 200 and b"Files changed" in reply.read()

        # --local: the commands find the stack serve recorded
        report = _prfleet(env, "cost", "report", "--local", "--json", "--days", "1")
        assert report.returncode == 0, report.stderr
        spend = json.loads(report.stdout)
        assert spend["runs"] > 0 and sum(spend["by_agent"].values()) > 0
        assert sum(v["settled"] for v in spend["by_day"].values()) == sum(spend["runs_by_day"].values())
        alarms = _prfleet(env, "alarms", "--local")
        assert alarms.returncode == 0, alarms.stderr
        rows = [line.split()[0] for line in alarms.stdout.splitlines()[1:] if line.startswith("prfleet-")]
        assert (
            rows and all(r.startswith("prfleet-local-") for r in rows) and "ErrorRateAlarm" in " ".join(rows)
        )

        # a wrong secret: the webhook refuses it, and send says why in one line
        wrong = _prfleet({**env, "PRFLEET_WEBHOOK_SECRET": "not-it"}, *send_args)
        assert wrong.returncode == 1 and wrong.stdout.startswith("401")
        assert len(wrong.stderr.splitlines()) == 1 and "PRFLEET_WEBHOOK_SECRET" in wrong.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert not (tmp_path / "local-stack.json").exists()  # serve removes what it recorded


def test_serve_with_model_url_names_that_server_and_every_call_reaches_it(tmp_path):
    """`prfleet local serve --model-url URL`: the model line names the server (and the placeholder key), no
    offline model of serve's own answers, and the sample PR's review is made of calls to that server."""
    from prfleet_local.demo.model_choice import PLACEHOLDER_KEY
    from prfleet_local.model.server import ModelServer

    port = free_port()
    env = {
        **os.environ,
        "PRFLEET_WEBHOOK_SECRET": "serve-secret",
        "PRFLEET_LOCAL_STATE": str(tmp_path / "local-stack.json"),
    }
    env.pop("ANTHROPIC_API_KEY", None)
    env.pop("ANTHROPIC_BASE_URL", None)
    with ModelServer() as other:  # stands in for a gateway or a recording proxy: not serve's own server
        url = other.url
        proc = _cli(
            "local", "serve", "--port", str(port), "--workdir", str(tmp_path), "--model-url", url, env=env
        )
        try:
            lines = _read_until(proc, "Ctrl-C")
            (model_line,) = [line for line in lines if line.startswith("model:")]
            assert f"the Messages-API server at {url} (--model-url, with a placeholder key)" in model_line
            assert "offline model" not in model_line
            (try_line,) = [line for line in lines if line.startswith("try:")]
            sent = _prfleet(env, *try_line.split("prfleet ", 1)[1].split())
            assert sent.returncode == 0 and sent.stdout.startswith("202"), sent.stdout + sent.stderr
            (done,) = _read_until(proc, " check prfleet on ")[-1:]
            assert "1 review(s)" in done, done
            bill = other.bill()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert proc.returncode == 0
    # Every call of the review went to that server, with the placeholder key, and it thought (a real turn loop).
    assert bill and {r.api_key_id for r in bill} == {ModelServer.api_key_id(PLACEHOLDER_KEY)}
    assert sum(r.thinking_tokens for r in bill) > 0 and len(other.requests) >= len(bill)


def _prfleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prfleet_local.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 120) -> list[str]:
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if marker in line or proc.poll() is not None:
            break
    return lines


def test_serve_prints_alarm_transitions_as_they_happen_and_alarms_local_agrees(tmp_path):
    """While serve runs, its local CloudWatch evaluates the alarms (every 2 s here, through the test-only
    PRFLEET_LOCAL_ALARM_INTERVAL_S; CloudWatch's minute otherwise) and serve prints each state change as one line.
    The cause is the runbook's WebhookErrorsAlarm case: the webhook secret is emptied in (local) Secrets Manager, the
    webhook fails closed with a 500, and API Gateway's 5xx pages at the first evaluation after that minute.
    `prfleet alarms --local` then shows the same state, and `prfleet cost reconcile --local` works against the
    same session (and says in one line what it lacks without an Admin key)."""
    import re
    import threading

    import boto3

    port = free_port()
    state_file = tmp_path / "local-stack.json"
    env = {
        **os.environ,
        "PRFLEET_WEBHOOK_SECRET": "serve-secret",
        "PRFLEET_LOCAL_STATE": str(state_file),
        "PRFLEET_LOCAL_ALARM_INTERVAL_S": "2",
    }
    for key in ("ANTHROPIC_API_KEY", "ANTHROPIC_ADMIN_KEY", "ANTHROPIC_BASE_URL"):
        env.pop(key, None)
    proc = _cli("local", "serve", "--port", str(port), "--workdir", str(tmp_path), env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()

    def wait_for(pattern: str, timeout: float = 150) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(lines):
                if re.search(pattern, line):
                    return line
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.2)
        raise AssertionError(f"serve never printed {pattern!r}:\n{''.join(lines)}")

    try:
        wait_for("Ctrl-C")
        # The first evaluation: every alarm that treats missing data as not breaching leaves INSUFFICIENT_DATA.
        first = wait_for(r"alarm prfleet-local-ErrorRateAlarm: INSUFFICIENT_DATA -> OK", timeout=60)
        assert re.match(r"^\d\d:\d\d:\d\d alarm ", first), first
        endpoint = wait_for(r"^AWS: ").split()[1]
        recorded = json.loads(state_file.read_text())
        secret_id = recorded["resources"]["WebhookSecret"][1]
        sm = boto3.client(
            "secretsmanager",
            endpoint_url=endpoint,
            region_name=recorded["region"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        sm.put_secret_value(SecretId=secret_id, SecretString=json.dumps({"value": ""}))

        body = json.dumps(load_payload("ping.payload.json")).encode()
        headers = {
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": "serve-alarm-1",
            "X-Hub-Signature-256": signature_for(b"serve-secret", body),
        }
        status, reply = post(f"http://127.0.0.1:{port}/webhook", body, headers)
        assert (status, reply) == (500, {"error": "webhook is not configured"})

        paged = wait_for(
            r"alarm prfleet-local-WebhookErrorsAlarm: OK -> ALARM: Threshold Crossed", timeout=150
        )
        assert "1 out of the last 1 datapoint" in paged, paged

        # The alarm stays in ALARM for the evaluation range (3 x 5 minutes), so this read cannot race its return.
        alarms = _prfleet(env, "alarms", "--local")
        assert alarms.returncode == 0, alarms.stderr
        (row,) = [x for x in alarms.stdout.splitlines() if x.startswith("prfleet-local-WebhookErrorsAlarm ")]
        assert row.split()[1] == "ALARM", row
        assert "firing: WebhookErrorsAlarm" in alarms.stdout, alarms.stdout
        others = [x.split()[1] for x in alarms.stdout.splitlines() if x.startswith("prfleet-local-")]
        assert others.count("ALARM") == 1, alarms.stdout

        # cost reconcile --local: without an Admin key, one line and a non-zero exit ...
        day = time.strftime("%Y-%m-%d", time.gmtime())
        no_key = _prfleet(env, "cost", "reconcile", "--local", "--day", day)
        assert no_key.returncode == 2, (no_key.stdout, no_key.stderr)
        assert len(no_key.stderr.splitlines()) == 1 and "no Admin API key" in no_key.stderr, no_key.stderr
        assert "ANTHROPIC_ADMIN_KEY" in no_key.stderr and "Traceback" not in no_key.stderr
        # ... with one, against the offline model's Usage and Cost API: nothing billed, nothing booked, no drift.
        model_url = re.search(r"the offline model at (\S+)", wait_for(r"^model: ")).group(1)
        keyed = {**env, "ANTHROPIC_ADMIN_KEY": "sk-ant-admin01-local"}
        rec = _prfleet(keyed, "cost", "reconcile", "--local", "--day", day, "--api-url", model_url)
        assert rec.returncode == 0, rec.stderr
        assert "LedgerDriftPercent 0.00 %" in rec.stdout, rec.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=10)
    assert proc.returncode == 0, "".join(lines)
    assert "local serve: stopped" in "".join(lines)
    assert not state_file.exists()
