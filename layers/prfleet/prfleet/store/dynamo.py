"""DynamoDB plumbing the store's StateTable modules share: the table, item (de)serialisation, the test for a
refused condition, a paged Query, and the BatchGetItem a job reads its head with (over several tables)."""

from __future__ import annotations

import random
import time
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from prfleet.config import settings
from prfleet.config.aws import client

# A head's items (its record, its runs, the PR's posting lease) expire this long after they were last written.
RUN_TTL = 30 * 86400
BATCH_ATTEMPTS = 8
_ser = TypeSerializer()
_de = TypeDeserializer()


def state_table() -> str:
    return settings().state_table


def serialize(value: Any) -> dict[str, Any]:
    """One value as a DynamoDB attribute value."""
    return _ser.serialize(value)


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    """Plain values as a DynamoDB item (a None value is left out)."""
    return {k: serialize(v) for k, v in values.items() if v is not None}


def plain(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """A raw DynamoDB item as plain values (numbers as int or float, not Decimal); None stays None."""
    if item is None:
        return None
    out = {k: _de.deserialize(v) for k, v in item.items()}
    for k, v in out.items():
        if hasattr(v, "as_integer_ratio") and not isinstance(v, int | float):  # Decimal -> int/float
            out[k] = int(v) if v == int(v) else float(v)
    return out


def is_conditional(exc: ClientError) -> bool:
    """The request's condition (or its transaction's) was refused: another writer's state stands."""
    return exc.response["Error"]["Code"] in (
        "ConditionalCheckFailedException",
        "TransactionCanceledException",
    )


def query(**kwargs: Any) -> list[dict[str, Any]]:
    """Every page of a StateTable Query, as plain items."""
    out: list[dict[str, Any]] = []
    paginator = client("dynamodb").get_paginator("query")
    for page in paginator.paginate(TableName=state_table(), **kwargs):
        out.extend(plain(i) for i in page.get("Items", []))
    return out


def batch_get(tables: dict[str, dict[str, Any]], *, sleep: Any = None) -> dict[str, list[dict[str, Any]]]:
    """One BatchGetItem for up to 100 keys over several tables ({table: {"Keys": [...], "ConsistentRead": bool}});
    the raw items found, per table (a key not found is absent). DynamoDB may answer part of a batch and name the
    rest in UnprocessedKeys (throughput, or the 16 MB response limit), which is sent again with jittered backoff
    (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html); ConsistentRead is per
    table and is kept on the retry, which carries each table's request as DynamoDB returned it."""
    sleep = time.sleep if sleep is None else sleep
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in tables}
    request = {t: dict(r) for t, r in tables.items() if r.get("Keys")}
    for attempt in range(BATCH_ATTEMPTS):
        if not request:
            return out
        reply = client("dynamodb").batch_get_item(RequestItems=request)
        for table, items in reply.get("Responses", {}).items():
            out.setdefault(table, []).extend(items)
        request = {t: r for t, r in (reply.get("UnprocessedKeys") or {}).items() if r.get("Keys")}
        if request and attempt < BATCH_ATTEMPTS - 1:
            sleep(random.uniform(0, min(1.0, 0.05 * 2**attempt)))
    if request:
        raise RuntimeError(f"BatchGetItem left keys unprocessed after {BATCH_ATTEMPTS} attempts")
    return out
