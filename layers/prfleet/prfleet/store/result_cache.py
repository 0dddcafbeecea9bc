"""Result cache: an unchanged file (same git blob) is never paid for twice by the same agent, model and prompt."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from prfleet.config import settings
from prfleet.config.aws import client

CACHE_TTL = 90 * 86400


def cache_key(blob_sha: str, agent: str, model: str, prompt_version: str) -> str:
    """Keyed by content, not path or head: force-pushes and renames of identical content hit the cache."""
    return hashlib.sha256("|".join([blob_sha, agent, model, prompt_version]).encode()).hexdigest()


def item_key(key: str) -> dict[str, Any]:
    return {"cache_key": {"S": key}}


def get(key: str) -> dict[str, Any] | None:
    reply = client("dynamodb").get_item(TableName=settings().results_table, Key=item_key(key))
    return from_item(reply.get("Item"))


def from_item(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cached result from its raw item (a GetItem's or a BatchGetItem's), None when absent."""
    if not item:
        return None
    return json.loads(item["result"]["S"])


def put(key: str, result: dict[str, Any], *, now: float | None = None) -> None:
    client("dynamodb").put_item(**put_item(key, result, now=now)["Put"])


def put_item(key: str, result: dict[str, Any], *, now: float | None = None) -> dict[str, Any]:
    """The cache's write as a TransactWriteItems item (the runner writes it with the run's outcome)."""
    now = time.time() if now is None else now
    return {
        "Put": {
            "TableName": settings().results_table,
            "Item": {
                "cache_key": {"S": key},
                "result": {"S": json.dumps(result, separators=(",", ":"))},
                "stored_at": {"N": str(int(now))},
                "expires_at": {"N": str(int(now) + CACHE_TTL)},
            },
        }
    }
