"""The LedgerTable: its layout and the DynamoDB access the ledger is built on.

Layout (pk `scope`, sk `day`; every item small, so a write costs the same at 10 or 10,000 PRs a day):
  daily       / <day>        the day total: committed (= settled + reserved), reserved, settled, estimated, limit, a80,
                             reconciled
  pr@<day>    / <pr scope>   one PR's total for the day: committed, settled, a80
  res@<day>   / <id>         one open reservation: amount, pr, deadline, model, worst case (wi, wo), at, owner
  end@<day>   / <id>         one closed reservation: how (settled | estimated | released | expired) and what it booked
  use@<hour>  / <model>      tokens per UTC hour and model (exact buckets, and the estimated calls), for reconciliation;
                             the hour is the one the call was RESERVED in (made right after), never the hour it was
                             closed in: a reservation the sweeper books hours later belongs to the bill's hour of its
                             call, and to the budget day the reservation was booked on
  rec@<hour>  / <model>      the reconciliation adjustment applied for that hour and model (applied once)
The day total is one item: its throughput ceiling and the plan beyond it are in docs/architecture.md.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from prfleet.config.aws import client as aws_client
from prfleet.cost.booking import Total, day_end, day_of

RETENTION_DAYS = 100


def new_id() -> str:
    """A reservation id, or a transaction's ClientRequestToken."""
    return uuid.uuid4().hex


def key(pk: str, sk: str) -> dict[str, Any]:
    return {"scope": {"S": pk}, "day": {"S": sk}}


def num(v: Any) -> int:
    """A number attribute's value (0 when absent)."""
    return int(v.get("N", 0)) if isinstance(v, dict) else 0


def text(v: Any) -> str | None:
    """A string attribute's value (None when absent)."""
    return v.get("S") if isinstance(v, dict) else None


def error_code(exc: Exception) -> str | None:
    return getattr(exc, "response", {}).get("Error", {}).get("Code")


def _reasons(exc: Exception) -> list[str]:
    return [str(r.get("Code") or "None") for r in getattr(exc, "response", {}).get("CancellationReasons", [])]


def total_of(item: dict[str, Any] | None) -> Total:
    """A day or PR total item (absent: all zero)."""
    item = item or {}
    return Total(
        committed=num(item.get("committed")),
        reserved=num(item.get("reserved")),
        settled=num(item.get("settled")),
        estimated=num(item.get("estimated")),
        a80="a80" in item,
    )


class LedgerTable:
    """Consistent reads, counter updates and transactions (retried on conflict) on the ledger's table, and the
    budget day every item is keyed by."""

    TRANSACT_ATTEMPTS = 8

    def __init__(self, table: str, *, tz: str = "UTC", client: Any = None, sleep: Any = time.sleep) -> None:
        if client is None:
            client = aws_client("dynamodb")
        ZoneInfo(tz)  # fail fast on a bad time zone name
        self.table = table
        self.tz = tz
        self.ddb = client
        self.sleep = sleep

    def day(self, now: float) -> str:
        """The budget day of `now` (in the configured time zone)."""
        return day_of(now, self.tz)

    def expiry(self, day: str, days: int = RETENTION_DAYS) -> dict[str, str]:
        """The `expires_at` attribute of an item of budget day `day`: `days` after the day ends."""
        return {"N": str(day_end(day, self.tz) + days * 86400)}

    def add(
        self,
        key: dict[str, Any],
        deltas: dict[str, int],
        *,
        expires: dict[str, str],
        condition: str | None = None,
        values: dict[str, Any] | None = None,
        sets: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One transaction Update adding `deltas` to counters (created at 0), with an optional condition."""
        names: dict[str, str] = {}
        vals: dict[str, Any] = {":z": {"N": "0"}, ":exp": expires, **(values or {})}
        parts = []
        for i, (attr, d) in enumerate(deltas.items()):
            names[f"#c{i}"] = attr
            vals[f":d{i}"] = {"N": str(int(d))}
            parts.append(f"#c{i} = if_not_exists(#c{i}, :z) + :d{i}")
        for i, (attr, v) in enumerate((sets or {}).items()):
            names[f"#s{i}"] = attr
            vals[f":s{i}"] = v
            parts.append(f"#s{i} = :s{i}")
        parts.append("expires_at = if_not_exists(expires_at, :exp)")
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": key,
            "UpdateExpression": "SET " + ", ".join(parts),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": vals,
        }
        if condition:
            update["ConditionExpression"] = condition
        return {"Update": update}

    def transact(self, items: list[dict[str, Any]]) -> list[str] | None:
        """Run one transaction; None on success, else the cancellation reasons of a condition that failed.
        Conflicts with another transaction on the same items are retried with jittered backoff."""
        for attempt in range(self.TRANSACT_ATTEMPTS):
            try:
                # A fresh ClientRequestToken per attempt (botocore would generate one too: the parameter is an
                # idempotency token; explicit here because the ledger depends on it): botocore's retry of a
                # transaction whose response was lost (applied, answered 500) returns the first success instead of
                # failing its own conditions, so the caller knows it booked and a reservation is not stranded. A
                # separate repeat (a new call) carries a new token and meets the conditions.
                self.ddb.transact_write_items(TransactItems=items, ClientRequestToken=new_id())
                return None
            except Exception as exc:
                code = error_code(exc)
                if code != "TransactionCanceledException" and code != "TransactionConflictException":
                    raise
                reasons = _reasons(exc)
                if "ConditionalCheckFailed" in reasons:
                    return reasons
                if attempt == self.TRANSACT_ATTEMPTS - 1:
                    raise
                self.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
        raise AssertionError("unreachable")

    def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """One item, read consistently."""
        return self.ddb.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
