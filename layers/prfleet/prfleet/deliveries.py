"""Webhook delivery dedupe: one conditional put per delivery id, expiring with TTL."""

from __future__ import annotations

import time

from botocore.exceptions import ClientError

from prfleet.aws import client
from prfleet.config import settings


def first_seen(delivery_id: str, *, now: float | None = None) -> bool:
    """True the first time a delivery id is seen; False for a redelivery (conditional write)."""
    now = time.time() if now is None else now
    try:
        client("dynamodb").put_item(
            TableName=settings().deliveries_table,
            Item={
                "delivery_id": {"S": delivery_id},
                "received_at": {"N": str(int(now))},
                "expires_at": {"N": str(int(now) + settings().delivery_ttl_days * 86400)},
            },
            ConditionExpression="attribute_not_exists(delivery_id)",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True


def forget(delivery_id: str) -> None:
    """Undo first_seen when the job could not be enqueued, so GitHub's redelivery is accepted."""
    client("dynamodb").delete_item(
        TableName=settings().deliveries_table, Key={"delivery_id": {"S": delivery_id}}
    )
