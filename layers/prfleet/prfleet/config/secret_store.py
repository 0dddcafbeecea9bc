"""Secrets from Secrets Manager through Powertools Parameters (cached with a max age), failing closed."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities import parameters

from prfleet.config import settings
from prfleet.config.aws import client
from prfleet.observability.redaction import register_secret


class SecretMissing(RuntimeError):
    """A secret is absent or empty: the message says which one to fill in, never its value."""


_provider: parameters.SecretsProvider | None = None


def _secrets_provider() -> parameters.SecretsProvider:
    global _provider
    if _provider is None:
        _provider = parameters.SecretsProvider(boto3_client=client("secretsmanager"))
    return _provider


def reset() -> None:
    """Forget cached secrets and the provider (tests and the local stack change them)."""
    global _provider
    _provider = None


def get_json(secret_id: str, what: str) -> dict[str, Any]:
    """A JSON secret as a dict; raises SecretMissing with the secret's id and what to put there."""
    try:
        raw = _secrets_provider().get(secret_id, max_age=settings().secrets_max_age)
    except parameters.exceptions.GetParameterError as exc:
        raise SecretMissing(
            f"cannot read secret {secret_id} ({what}): {type(exc.__cause__ or exc).__name__}"
        ) from None
    if isinstance(raw, bytes):
        raw = raw.decode()
    raw = (raw or "").strip()
    if not raw:
        raise SecretMissing(f"secret {secret_id} is empty: fill it with {what}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if isinstance(value, str):
        value = {"value": value}
    if not isinstance(value, dict) or not any(v for v in value.values()):
        raise SecretMissing(f"secret {secret_id} has no value: fill it with {what}")
    for v in value.values():
        if isinstance(v, str) and v:
            register_secret(v)
    return value


def webhook_secret() -> bytes:
    value = get_json(settings().webhook_secret_id, "the GitHub webhook secret")
    secret = value.get("value") or value.get("secret") or value.get("webhook_secret")
    if not secret:
        raise SecretMissing(f"secret {settings().webhook_secret_id} has no webhook secret")
    return str(secret).encode()


def github_credentials() -> dict[str, Any]:
    return get_json(
        settings().github_secret_id, '{"app_id": "...", "private_key": "-----BEGIN ..."} or {"token": "..."}'
    )


def anthropic_api_key() -> str:
    value = get_json(settings().anthropic_secret_id, '{"api_key": "sk-ant-..."}')
    key = value.get("api_key") or value.get("value")
    if not key:
        raise SecretMissing(f"secret {settings().anthropic_secret_id} has no api_key")
    return str(key)
