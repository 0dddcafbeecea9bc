"""The deferred queue: jobs the budget or the spend-limit circuit refused, kept in StateTable until the sweeper
re-queues them, keyed so that one Query returns exactly the entries that are due:

  DEFERRED#DAY / <due>#<ts>#<job id>   deferred to the next budget day; <due> is when its budget day ends (the
                                      next day's start in BUDGET_TIMEZONE), as 10-digit epoch seconds, so the
                                      entries due by `now` are the sort keys below `due_bound(now)`
  DEFERRED#CIRCUIT / <ts>#<job id>    waiting for the spend-limit circuit: all due once it has closed, read only
                                      then (oldest first)
  DEFERRED / <ts>#<job id>            the layout before issue 26 (both kinds in one partition, oldest first):
                                      written by a deployment still running the old code; the sweeper moves each
                                      entry into the layout above (move_legacy), so none is lost across a deploy

A Query returns one partition's items in sort-key order (UTF-8 bytes for a string key; fixed-width digits sort as
numbers) and stops at 1 MB or `Limit` items with a LastEvaluatedKey to go on from
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Query.KeyConditionExpressions.html,
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Query.Pagination.html): `waiting` reads one
page at a time, only as far as its caller consumes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from prfleet.config import now as config_now
from prfleet.config import settings
from prfleet.config.aws import client
from prfleet.cost.booking import day_end
from prfleet.jobs import FileJob
from prfleet.store.dynamo import is_conditional, plain, state_table, to_item

DAY_PK = "DEFERRED#DAY"
CIRCUIT_PK = "DEFERRED#CIRCUIT"
LEGACY_PK = "DEFERRED"
PAGE = 100  # entries per Query page (a page is also cut at 1 MB: an entry is ~1 KB)
DUE_DIGITS = 10  # epoch seconds until the year 2286


def due_at(day: str, tz: str) -> int:
    """When a job deferred on budget day `day` is due: the end of that day, i.e. the next day's start in `tz`."""
    return day_end(day, tz)


def due_bound(now: float) -> str:
    """The sort key every entry due by `now` is below: `<due>#...` < `<floor(now) + 1>` exactly when due <= now
    (equal-width digits compare as numbers; a longer string with the same prefix sorts after it)."""
    return f"{int(now) + 1:0{DUE_DIGITS}d}"


def entry_key(*, until: str, created: float, job_id: str, due: int | None = None) -> dict[str, str]:
    """The (pk, sk) of a deferred entry: a circuit waiter in its own partition, oldest first; a job deferred to
    the next budget day by its due time, then by when it was deferred."""
    stamp = f"{created:017.6f}#{job_id}"
    if until == "circuit":
        return {"pk": CIRCUIT_PK, "sk": stamp}
    if due is None:
        raise ValueError("a day deferral needs its due time")
    return {"pk": DAY_PK, "sk": f"{int(due):0{DUE_DIGITS}d}#{stamp}"}


def relocated(entry: dict[str, Any], tz: str) -> dict[str, Any]:
    """A legacy entry (DEFERRED / <ts>#<job id>) as it is kept now: same attributes, its new key and due time.
    An entry without `until` predates circuit waiters: it waits for its day."""
    created, job_id = entry["sk"].split("#", 1)
    until = entry.get("until") or "day"
    due = due_at(entry["day"], tz) if until != "circuit" else None
    key = entry_key(until=until, created=float(created), job_id=job_id, due=due)
    return {**entry, **key, "until": until, "due": due}


def defer(job: FileJob, *, day: str, reason: str, now: float | None = None, until: str = "day") -> None:
    """Keep a job the budget refused; the sweeper re-queues it once its budget day `day` has ended, or, with
    until="circuit", once the spend-limit circuit has closed again."""
    now = config_now() if now is None else now
    due = due_at(day, settings().budget_timezone) if until != "circuit" else None
    key = entry_key(until=until, created=now, job_id=job.job_id, due=due)
    client("dynamodb").put_item(
        TableName=state_table(),
        Item=to_item(
            {
                **key,
                "job": job.to_message(),
                "day": day,
                "due": due,
                "reason": reason,
                "until": until,
                "repo": job.repo,
                "path": job.path,
                "agent": job.agent,
                "created_at": int(now),
            }
        ),
    )


def waiting(pk: str, *, below: str | None = None, page: int = PAGE) -> Iterator[dict[str, Any]]:
    """One partition's entries in sort-key order (only those with a sort key below `below`, if given), a Query
    page at a time as the caller consumes them: a caller that stops early reads no further page."""
    condition, values = "pk = :pk", {":pk": {"S": pk}}
    if below is not None:
        condition, values[":below"] = "pk = :pk AND sk < :below", {"S": below}
    start: dict[str, Any] | None = None
    while True:
        extra = {"ExclusiveStartKey": start} if start else {}
        reply = client("dynamodb").query(
            TableName=state_table(),
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            Limit=page,
            ScanIndexForward=True,
            ConsistentRead=True,
            **extra,
        )
        for item in reply.get("Items", []):
            yield plain(item)
        start = reply.get("LastEvaluatedKey")
        if not start:
            return


def due_jobs(now: float, *, circuit_closed: bool) -> Iterator[dict[str, Any]]:
    """The entries due at `now`: next-day deferrals whose day has ended (earliest due first), then, only while the
    circuit is closed, the circuit waiters (oldest first). Lazy: see `waiting`."""
    yield from waiting(DAY_PK, below=due_bound(now))
    if circuit_closed:
        yield from waiting(CIRCUIT_PK)


def deferred_jobs() -> list[dict[str, Any]]:
    """Every waiting entry, due or not, in either layout (for inspection and tests: the sweeper reads `due_jobs`)."""
    return [e for pk in (LEGACY_PK, DAY_PK, CIRCUIT_PK) for e in waiting(pk)]


def move_legacy(entry: dict[str, Any]) -> bool:
    """Move one legacy entry to its new key, in one transaction: the new item is created (UpdateItem creates an
    item that does not exist) only if the old one is still there, and the old one is deleted; False if another
    sweeper moved or took it. A fresh ClientRequestToken per call: botocore's retry of a transaction whose
    response was lost carries the same one and gets the first success back (valid 10 minutes;
    https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html); a later call is
    refused by the conditions, the same outcome as another sweeper's move. Both writes are authorized by their own actions, UpdateItem and
    DeleteItem, which the sweeper already holds
    (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html)."""
    new = relocated(entry, settings().budget_timezone)
    fields = {k: v for k, v in new.items() if k not in ("pk", "sk") and v is not None}
    names = {f"#a{i}": k for i, k in enumerate(fields)}
    update = {
        "TableName": state_table(),
        "Key": to_item({"pk": new["pk"], "sk": new["sk"]}),
        "UpdateExpression": "SET " + ", ".join(f"{n} = :v{i}" for i, n in enumerate(names)),
        "ConditionExpression": "attribute_not_exists(pk)",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": to_item({f":v{i}": v for i, v in enumerate(fields.values())}),
    }
    delete = {
        "TableName": state_table(),
        "Key": to_item({"pk": LEGACY_PK, "sk": entry["sk"]}),
        "ConditionExpression": "attribute_exists(pk)",
    }
    try:
        client("dynamodb").transact_write_items(
            TransactItems=[{"Update": update}, {"Delete": delete}], ClientRequestToken=uuid.uuid4().hex
        )
    except ClientError as exc:
        if is_conditional(exc) or exc.response["Error"]["Code"] == "TransactionConflictException":
            return False
        raise
    return True


def drop_deferred(entry: dict[str, Any]) -> bool:
    """Remove a deferred entry once (the sweeper's claim on it); False if another sweeper already took it."""
    try:
        client("dynamodb").delete_item(
            TableName=state_table(),
            Key=to_item({"pk": entry["pk"], "sk": entry["sk"]}),
            ConditionExpression="attribute_exists(pk)",
        )
    except ClientError as exc:
        if is_conditional(exc):
            return False
        raise
    return True
