"""Secrets fail closed (against moto's Secrets Manager, read through Powertools Parameters as in Lambda).

The template creates the GitHub and Anthropic secrets as "{}" and the webhook secret generated; until an operator
fills them in (docs/deploy.md), every function must refuse to work and say which secret to fill, never its value.
The webhook in particular must answer 500 (so GitHub shows the failed delivery and redelivers later) and never
accept an unsigned or wrongly signed delivery, whatever the state of the secret.
"""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from prfleet_local.stack import template as tpl
from tests.conftest import load_payload

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
WEBHOOK_ID = "prfleet/WebhookSecret"
GITHUB_ID = "prfleet/GitHubSecret"
ANTHROPIC_ID = "prfleet/AnthropicSecret"


class Context:
    function_name = "prfleet-WebhookFunction"
    memory_limit_in_mb = 256
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:prfleet-WebhookFunction"
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/prfleet-WebhookFunction"

    def get_remaining_time_in_millis(self) -> int:
        return 8000


def _reset_caches() -> None:
    from prfleet import config, github
    from prfleet.config import aws, secret_store

    config.settings.cache_clear()
    aws.client.cache_clear()
    secret_store.reset()
    github.reset_clients()


@pytest.fixture
def aws(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "DELIVERIES_TABLE": "prfleet-DeliveriesTable",
        "STATE_TABLE": "prfleet-StateTable",
        "RESULTS_TABLE": "prfleet-ResultsTable",
        "LEDGER_TABLE": "prfleet-LedgerTable",
        "PR_QUEUE_URL": f"https://sqs.{REGION}.amazonaws.com/123456789012/prfleet-PrQueue",
        "JOBS_QUEUE_URL": f"https://sqs.{REGION}.amazonaws.com/123456789012/prfleet-JobsQueue",
        "ALERT_TOPIC_ARN": f"arn:aws:sns:{REGION}:123456789012:prfleet-AlertTopic",
        "WEBHOOK_SECRET_ID": WEBHOOK_ID,
        "GITHUB_SECRET_ID": GITHUB_ID,
        "ANTHROPIC_SECRET_ID": ANTHROPIC_ID,
        "POWERTOOLS_SERVICE_NAME": "prfleet",
        "POWERTOOLS_METRICS_NAMESPACE": "prfleet",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        _reset_caches()
        yield boto3.client("secretsmanager", region_name=REGION)
    _reset_caches()


def _initial_value(logical: str) -> str:
    """The value the template gives a secret at deploy time (what an operator has not replaced yet)."""
    return tpl.load()["Resources"][logical]["Properties"]["SecretString"]


def _webhook() -> Any:
    spec = importlib.util.spec_from_file_location(
        f"prfleet_fn_webhook_{uuid.uuid4().hex}", ROOT / "functions" / "webhook" / "app.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _delivery(secret: bytes | None) -> dict[str, Any]:
    from prfleet.pipeline.webhook import signature_for

    body = json.dumps(load_payload("pull_request.opened.payload.json"))
    headers = {
        "content-type": "application/json",
        "x-github-event": "pull_request",
        "x-github-delivery": "d-1",
    }
    if secret is not None:
        headers["x-hub-signature-256"] = signature_for(secret, body.encode())
    return {"headers": headers, "body": body, "isBase64Encoded": False}


def _logs(out: str) -> list[dict[str, Any]]:
    lines = []
    for line in out.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def _call(event: dict[str, Any], capsys) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    reply = _webhook().lambda_handler(event, Context())
    return reply["statusCode"], json.loads(reply["body"]), _logs(capsys.readouterr().out)


@pytest.mark.parametrize(
    "state",
    ["missing", "empty string", "empty JSON object", "blank value"],
)
def test_webhook_answers_500_and_says_what_to_fill_when_its_secret_is_not_set(aws, capsys, state):
    if state == "empty string":
        aws.create_secret(Name=WEBHOOK_ID, SecretString=" ")
    elif state == "empty JSON object":
        aws.create_secret(Name=WEBHOOK_ID, SecretString="{}")
    elif state == "blank value":
        aws.create_secret(Name=WEBHOOK_ID, SecretString='{"value": ""}')
    for secret in (None, b"", b"guess"):  # unsigned, signed with an empty key, signed with a guess
        status, body, logs = _call(_delivery(secret), capsys)
        assert status == 500, body
        assert body == {"error": "webhook is not configured"}
        errors = [line for line in logs if line.get("level") == "ERROR"]
        assert errors, logs
        assert "fill it in Secrets Manager" in errors[0]["message"]
        assert WEBHOOK_ID in errors[0]["reason"]
        metrics = [line for line in logs if "_aws" in line]
        assert any(m.get("WebhookErrors") == [1.0] or m.get("WebhookErrors") == 1.0 for m in metrics), metrics


def test_a_filled_secret_is_enforced_unsigned_and_wrongly_signed_deliveries_are_refused(aws, capsys):
    aws.create_secret(Name=WEBHOOK_ID, SecretString="s3cret-from-the-github-app")
    status, body, _ = _call(_delivery(None), capsys)
    assert (status, body) == (401, {"error": "missing signature"})
    status, body, _ = _call(_delivery(b"not-the-secret"), capsys)
    assert (status, body) == (401, {"error": "signature does not match"})
    status, body, _ = _call(_delivery(b""), capsys)
    assert status == 401


def test_the_secret_value_never_reaches_the_logs(aws, capsys):
    value = "a-long-webhook-secret-value-0123456789"
    aws.create_secret(Name=WEBHOOK_ID, SecretString=value)
    _, _, logs = _call(_delivery(b"wrong"), capsys)
    assert value not in json.dumps(logs)


@pytest.mark.parametrize(
    "reader, secret_id, logical, hint",
    [
        ("github_credentials", GITHUB_ID, "GitHubSecret", '"private_key"'),
        ("anthropic_api_key", ANTHROPIC_ID, "AnthropicSecret", '"api_key"'),
    ],
)
def test_github_and_anthropic_secrets_as_deployed_fail_closed_with_what_to_fill(
    aws, reader, secret_id, logical, hint
):
    from prfleet.config import secret_store

    aws.create_secret(Name=secret_id, SecretString=_initial_value(logical))
    with pytest.raises(secret_store.SecretMissing) as exc:
        getattr(secret_store, reader)()
    assert secret_id in str(exc.value) and hint in str(exc.value)


def test_missing_anthropic_key_fails_the_agent_record_not_the_batch_silently(aws):
    """The agent's model client reads the key lazily: a missing key is a failed record (retried, then DLQ)."""
    from prfleet.config import secret_store

    spec = importlib.util.spec_from_file_location("prfleet_fn_agent_secret", ROOT / "functions/agent/app.py")
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    with pytest.raises(secret_store.SecretMissing, match=ANTHROPIC_ID):
        agent.model_client()


def test_filling_the_secret_takes_effect_once_the_cache_expires(aws, monkeypatch):
    """docs/deploy.md: after put-secret-value the functions pick the value up within SECRETS_MAX_AGE seconds."""
    from prfleet import config
    from prfleet.config import secret_store

    monkeypatch.setenv("SECRETS_MAX_AGE", "0")
    config.settings.cache_clear()
    aws.create_secret(Name=ANTHROPIC_ID, SecretString=_initial_value("AnthropicSecret"))
    with pytest.raises(secret_store.SecretMissing):
        secret_store.anthropic_api_key()
    aws.put_secret_value(
        SecretId=ANTHROPIC_ID, SecretString=json.dumps({"api_key": "sk-ant-test-0123456789"})
    )
    assert secret_store.anthropic_api_key() == "sk-ant-test-0123456789"
