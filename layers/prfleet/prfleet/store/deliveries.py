"""Webhook delivery dedupe: one conditional put per delivery id, expiring with TTL."""

from __future__ import annotations

import time
import uuid

from botocore.exceptions import ClientError

from prfleet.config import settings
from prfleet.config.aws import client


def first_seen(delivery_id: str, *, now: float | None = None) -> bool:
    """True the first time a delivery id is seen; False for a redelivery (conditional write).

    Each call writes its own random `claim`: when DynamoDB applied the put but the response was lost (a 500, a
    timeout), botocore retries the same put and the condition fails on our own item. The failed condition returns
    the stored item (ReturnValuesOnConditionCheckFailure, no extra permission), so our claim there means first seen,
    not a redelivery (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_PutItem.html)."""
    now = time.time() if now is None else now
    claim = uuid.uuid4().hex
    try:
        client("dynamodb").put_item(
            TableName=settings().deliveries_table,
            Item={
                "delivery_id": {"S": delivery_id},
                "claim": {"S": claim},
                "received_at": {"N": str(int(now))},
                "expires_at": {"N": str(int(now) + settings().delivery_ttl_days * 86400)},
            },
            ConditionExpression="attribute_not_exists(delivery_id)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            stored = exc.response.get("Item") or {}
            return stored.get("claim", {}).get("S") == claim
        raise
    return True


def forget(delivery_id: str) -> None:
    """Undo first_seen when the job could not be enqueued, so GitHub's redelivery is accepted."""
    client("dynamodb").delete_item(
        TableName=settings().deliveries_table, Key={"delivery_id": {"S": delivery_id}}
    )
