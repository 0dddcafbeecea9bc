"""Secret redaction: no log line or error text carries a secret, whether registered when loaded or shaped like one.

Why here, below everything: every module that logs or stores an error text (the Emitter, the SQS parser, the
handlers, the runner) redacts through this one place, and `config.secret_store` registers each secret it loads.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 8  # shorter values (an app id, "true") would blank out ordinary text everywhere
MAX_TEXT = 2000  # a log field's longest string; longer ones are cut

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys (RSA, EC, OPENSSH, PKCS#8, encrypted), also when cut off before the END line.
    (
        re.compile(
            r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.DOTALL
        ),
        "[REDACTED PRIVATE KEY]",
    ),
    (re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"), REDACTED),  # Anthropic API / admin keys
    (re.compile(r"github_pat_[A-Za-z0-9_]{20,}"), REDACTED),  # fine-grained GitHub tokens
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), REDACTED),  # classic, OAuth, user/server, refresh tokens
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),  # AWS access key ids (long-term and STS)
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 " + REDACTED),  # Authorization: Bearer
    (  # aws_secret_access_key = ... in config dumps
        re.compile(r"(?i)(aws_secret_access_key\W{0,3})[A-Za-z0-9/+=]{40}"),
        r"\1" + REDACTED,
    ),
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Remember a secret value (called when a secret is loaded) so that no log line ever carries it."""
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        return
    variants = {value, value.strip()}
    escaped = json.dumps(value)[1:-1]  # how it looks inside a JSON string (a PEM key's newlines become \n)
    variants.add(escaped)
    with _secrets_lock:
        _secrets.update(v for v in variants if len(v) >= MIN_SECRET_LENGTH)


def forget_secrets() -> None:
    """Drop every registered secret (tests; a Lambda container never needs this)."""
    with _secrets_lock:
        _secrets.clear()


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` without the given secrets, the registered ones, and anything shaped like a key or token."""
    if not text:
        return text
    with _secrets_lock:
        values = set(_secrets)
    if secrets is not None:
        values.update(s for s in secrets if isinstance(s, str) and s)
    for value in sorted(values, key=len, reverse=True):  # longest first: a secret may contain another
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def scrub(value: Any) -> Any:
    """A log field's value as it may be logged: strings redacted and cut at MAX_TEXT, also inside lists and
    dicts; anything that is not JSON-shaped becomes its (redacted) string."""
    if isinstance(value, str):
        text = redact(value)
        return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "...[truncated]"
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): scrub(v) for k, v in value.items()}
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return scrub(str(value))
