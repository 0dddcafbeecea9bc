"""The deferred queue: jobs the budget refused, kept in StateTable (DEFERRED / <ts>#<job id>, oldest first) until
the sweeper re-queues them after the reset or once the spend-limit circuit has closed."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from prfleet.config import now as config_now
from prfleet.config.aws import client
from prfleet.jobs import FileJob
from prfleet.store.dynamo import is_conditional, plain, state_table, to_item


def defer(job: FileJob, *, day: str, reason: str, now: float | None = None, until: str = "day") -> None:
    """Keep a job the budget refused; the sweeper re-queues it after the reset (oldest first), or, with
    until="circuit", once the spend-limit circuit has closed again."""
    now = config_now() if now is None else now
    client("dynamodb").put_item(
        TableName=state_table(),
        Item=to_item(
            {
                "pk": "DEFERRED",
                "sk": f"{now:017.6f}#{job.job_id}",
                "job": job.to_message(),
                "day": day,
                "reason": reason,
                "until": until,
                "repo": job.repo,
                "path": job.path,
                "agent": job.agent,
                "created_at": int(now),
            }
        ),
    )


def deferred_jobs(limit: int = 100) -> list[dict[str, Any]]:
    """The oldest `limit` deferred entries, oldest first (the sweeper re-queues in that order)."""
    reply = client("dynamodb").query(
        TableName=state_table(),
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "DEFERRED"}},
        Limit=limit,
        ScanIndexForward=True,
    )
    return [plain(i) for i in reply.get("Items", [])]


def drop_deferred(sk: str) -> bool:
    """Remove a deferred entry once; False if another sweeper already took it."""
    try:
        client("dynamodb").delete_item(
            TableName=state_table(),
            Key=to_item({"pk": "DEFERRED", "sk": sk}),
            ConditionExpression="attribute_exists(pk)",
        )
    except ClientError as exc:
        if is_conditional(exc):
            return False
        raise
    return True
