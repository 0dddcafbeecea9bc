"""The cost ledger: reserve a call's worst case before the call, settle to what it cost (or may have cost) after.

A reservation is ONE TransactWriteItems (day total + PR total, each with its limit in the condition, + the
reservation item), so committed spend never passes either limit whatever the concurrency. A settle or release is
one transaction that moves the reservation item to its closure item (conditional on both), so a settle applied
twice (lost response, botocore retry, redelivery) books once: the second one finds the closure and does nothing.
The items are laid out in prfleet.cost.ledger_table; the rules applied here are prfleet.cost.booking's.

Billing rules (prfleet.cost.billing): a call that may have been billed is booked `estimated` at its worst case; a
reservation stranded past its deadline (a Lambda that died, a settle that could not be written) is booked
`expired` by the sweeper, also at its worst case, never released: the call may have been made. A late exact settle
replaces an estimate. Reconciliation (prfleet.cost.reconcile) later moves the day total onto the bill.

A refusal names its cause: `spent` when settled spend alone leaves no room (defer to the next budget day),
`reserved` when open reservations do (retry after a short delay).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prfleet.cost.booking import (
    DAILY,
    Closed,
    Move,
    attribution,
    ceiling_for,
    close,
    hour_of,
    refusal_cause,
    usage_changes,
)
from prfleet.cost.ledger_table import LedgerTable, key, new_id, num, text, total_of
from prfleet.cost.spend_status import SpendStatus, StatusCache, spend_status

CLOSURE_DAYS = 15  # closures outlive any redelivery (SQS keeps a message at most 14 days)
SWEEP_LOOKBACK_DAYS = 3


class BudgetExceeded(Exception):
    """A reservation was refused. `cause` is "spent" (defer to the next day) or "reserved" (retry soon)."""

    def __init__(self, scope: str, needed: int, available: int, cause: str = "spent") -> None:
        super().__init__(
            f"budget exceeded for {scope}: need {needed} micro-USD, {available} available"
            + (" (held by open reservations)" if cause == "reserved" else "")
        )
        self.scope = scope
        self.needed = needed
        self.available = available
        self.cause = cause


@dataclass(frozen=True)
class Reservation:
    id: str
    amount: int
    scopes: tuple[tuple[str, str], ...]  # ((scope, day), ...): "daily" first, then the PR scope
    expires_at: int
    at: float = 0.0  # when it was reserved (just before the call): the usage hour the bill puts the call in
    owner: tuple[str, str, str] | None = None  # (table, pk, sk) of the run item that carries what it books

    @property
    def day(self) -> str:
        return self.scopes[0][1]

    @property
    def pr_scope(self) -> str | None:
        return self.scopes[1][0] if len(self.scopes) > 1 else None


def _stored(item: dict[str, Any], day: str) -> Reservation:
    """An open reservation as its `res@<day>` item holds it."""
    pr = text(item.get("pr")) or None
    owner = [p.get("S", "") for p in item.get("owner", {}).get("L", [])]
    return Reservation(
        item["day"]["S"],
        num(item.get("amount")),
        ((DAILY, day),) + (((pr, day),) if pr else ()),
        num(item.get("deadline")),
        float(num(item.get("at"))),
        (owner[0], owner[1], owner[2]) if len(owner) == 3 else None,
    )


class Ledger(LedgerTable):
    """The ledger over its DynamoDB table: booking (reserve, settle, release), sweeping (release_expired), the
    day's status, and what reconciliation reads and adjusts (usage, adjust)."""

    def __init__(
        self,
        table: str,
        *,
        daily_limit_micros: int,
        pr_limit_micros: int,
        tz: str = "UTC",
        client: Any = None,
        sleep: Any = time.sleep,
        monotonic: Any = time.monotonic,
    ) -> None:
        super().__init__(table, tz=tz, client=client, sleep=sleep)
        self.daily_limit = int(daily_limit_micros)
        self.pr_limit = int(pr_limit_micros)
        self.monotonic = monotonic  # the status cache's clock (spend_status.STATUS_EVERY_S)
        self.statuses = StatusCache(self, monotonic=monotonic)

    @classmethod
    def from_settings(cls, settings: Any, client: Any = None) -> Ledger:
        """The one way to build the ledger: from prfleet.config.Settings (USD limits -> micro-dollars)."""
        return cls(
            settings.ledger_table,
            daily_limit_micros=round(settings.daily_budget_usd * 1_000_000),
            pr_limit_micros=round(settings.pr_budget_usd * 1_000_000),
            tz=settings.budget_timezone,
            client=client,
        )

    # -- booking

    def reserve(
        self,
        pr_scope: str | None,
        amount: int,
        *,
        now: float,
        ttl: int = 900,
        model: str | None = None,
        worst_tokens: tuple[int, int] = (0, 0),
        owner: tuple[str, str, str] | None = None,
    ) -> Reservation:
        """Reserve `amount` on the day and on the PR in ONE transaction, or raise BudgetExceeded with its cause.
        `model` and `worst_tokens` (input, output) let the sweeper book a stranded reservation under its model;
        `owner` (table, pk, sk): the run item that every booking of this reservation is written to, in the same
        transaction as the booking (so a run holds what it cost, also when the sweeper books it)."""
        amount = int(amount)
        if amount < 0:
            raise ValueError("amount must be >= 0")
        pr, day, rid = pr_scope or None, self.day(now), new_id()
        deadline = int(now) + int(ttl)
        exp = self.expiry(day)
        scopes = [(DAILY, key(DAILY, day), self.daily_limit)]
        if pr is not None:
            scopes.append((pr, key(f"pr@{day}", pr), self.pr_limit))
        items = []
        for scope, scope_key, limit in scopes:
            if amount > limit:
                raise self._refusal(scope, scope_key, amount, limit)
            items.append(
                self.add(
                    scope_key,
                    {"committed": amount, "reserved": amount, "settled": 0, "estimated": 0},
                    expires=exp,
                    condition="attribute_not_exists(committed) OR committed <= :max",
                    values={":max": {"N": str(ceiling_for(limit, amount))}},
                    sets={"limit": {"N": str(limit)}},
                )
            )
        res = {
            **key(f"res@{day}", rid),
            "amount": {"N": str(amount)},
            "pr": {"S": pr or ""},
            "deadline": {"N": str(deadline)},
            "model": {"S": model or ""},
            "wi": {"N": str(int(worst_tokens[0]))},
            "wo": {"N": str(int(worst_tokens[1]))},
            "at": {"N": str(int(now))},
            **({"owner": {"L": [{"S": p} for p in owner]}} if owner else {}),
            "expires_at": exp,
        }
        items.append(self._put_new(res))
        sent = self.monotonic()
        failed = self.transact(items)
        if failed:
            for (scope, scope_key, limit), code in zip(scopes, failed, strict=False):
                if code == "ConditionalCheckFailed":
                    raise self._refusal(scope, scope_key, amount, limit)
            raise BudgetExceeded(DAILY, amount, 0, "reserved")
        self.statuses.project(day, pr, sent, committed=amount, reserved=amount)
        return Reservation(
            rid, amount, ((DAILY, day),) + (((pr, day),) if pr else ()), deadline, float(now), owner
        )

    def _refusal(self, scope: str, scope_key: dict[str, Any], amount: int, limit: int) -> BudgetExceeded:
        t = total_of(self.get(scope_key))
        cause = refusal_cause(t.settled, t.committed, amount, limit) or "reserved"
        return BudgetExceeded(scope, amount, max(0, limit - t.committed), cause)

    def settle(
        self,
        r: Reservation,
        actual: int,
        *,
        now: float,
        estimated: bool = False,
        model: str | None = None,
        tokens: Any = None,
        worst_tokens: tuple[int, int] = (0, 0),
    ) -> SpendStatus:
        """Close `r` at `actual` (exact, or `estimated`: may have been billed) once, however often it is called.
        Returns the daily status with the PR's in `others` when the PR may have reached 80 % of its limit
        (crossed_80 set once per scope per day; see StatusCache.after_settle): read at most every STATUS_EVERY_S
        per process, between reads the last read plus this process's own bookings since (a lower bound)."""
        how = "estimated" if estimated else "settled"
        sent = self.monotonic()
        move = self._close(r, how, int(actual), now=now, model=model, tokens=tokens, worst=worst_tokens)
        if move is not None:
            self.statuses.project(
                r.day,
                r.pr_scope,
                sent,
                committed=move.committed,
                reserved=move.reserved,
                settled=move.settled,
            )
        return self.statuses.after_settle(
            r.day, r.pr_scope, move is not None, daily_limit=self.daily_limit, pr_limit=self.pr_limit
        )

    def release(self, r: Reservation, *, now: float) -> bool:
        """Give back the reservation of a call that was certainly not billed (no-op if already closed)."""
        sent = self.monotonic()
        move = self._close(r, "released", 0, now=now)
        if move is not None:
            self.statuses.project(r.day, r.pr_scope, sent, committed=move.committed, reserved=move.reserved)
        return move is not None

    def _close(
        self,
        r: Reservation,
        how: str,
        cost: int,
        *,
        now: float,
        model: str | None = None,
        tokens: Any = None,
        worst: tuple[int, int] = (0, 0),
    ) -> Move | None:
        """Close the reservation once; the Move it booked, or None when there was nothing to book (a repeat)."""
        is_open, prior = True, None
        # The model and worst case the closure being replaced booked its usage under.
        replaced = (model, worst)
        for _ in range(3):
            move = close(r.amount, prior, is_open, how, cost)
            if move is None:
                return None
            items = self._closure_items(r, move, is_open, now=now, model=model, worst=worst)
            items += self._total_items(
                r, move, now=now, model=model, tokens=tokens, worst=worst, replaced=replaced
            )
            if self.transact(items) is None:
                return move
            # Closed meanwhile (a repeat, the sweeper, or another worker): decide again from the closure.
            item = self.get(key(f"end@{r.day}", r.id))
            is_open = item is None and self.get(key(f"res@{r.day}", r.id)) is not None
            prior = Closed(text(item.get("how")) or "", num(item.get("cost"))) if item else None
            if item:
                replaced = (
                    text(item.get("model")) or model,
                    (num(item.get("wi")), num(item.get("wo"))) if "wi" in item else worst,
                )
        raise RuntimeError(f"reservation {r.id} kept changing while being closed")

    def _closure_items(
        self,
        r: Reservation,
        move: Move,
        is_open: bool,
        *,
        now: float,
        model: str | None,
        worst: tuple[int, int],
    ) -> list[dict[str, Any]]:
        """Delete the open reservation (when it is open) and write its closure: new, or conditional on the one it
        replaces, so two closers never both book."""
        items: list[dict[str, Any]] = []
        if is_open:
            items.append(
                {
                    "Delete": {
                        "TableName": self.table,
                        "Key": key(f"res@{r.day}", r.id),
                        "ConditionExpression": "attribute_exists(#s)",
                        "ExpressionAttributeNames": {"#s": "scope"},
                    }
                }
            )
        end = {
            **key(f"end@{r.day}", r.id),
            "how": {"S": move.closure.how},
            "cost": {"N": str(move.closure.cost)},
            "amount": {"N": str(r.amount)},
            "pr": {"S": r.pr_scope or ""},
            "model": {"S": model or ""},
            "wi": {"N": str(int(worst[0]))},
            "wo": {"N": str(int(worst[1]))},
            # its cost is on the owner run too (a release writes nothing there)
            **({"owned": {"BOOL": True}} if r.owner and move.closure.how != "released" else {}),
            "expires_at": {"N": str(int(now) + CLOSURE_DAYS * 86400)},
        }
        if move.replaces is None:
            items.append(self._put_new(end))
        else:
            replaces = {
                "ConditionExpression": "#h = :h AND #c = :c",
                "ExpressionAttributeNames": {"#h": "how", "#c": "cost"},
                "ExpressionAttributeValues": {
                    ":h": {"S": move.replaces.how},
                    ":c": {"N": str(move.replaces.cost)},
                },
            }
            items.append({"Put": {"TableName": self.table, "Item": end, **replaces}})
        return items

    def _total_items(
        self,
        r: Reservation,
        move: Move,
        *,
        now: float,
        model: str | None,
        tokens: Any,
        worst: tuple[int, int],
        replaced: tuple[str | None, tuple[int, int]],
    ) -> list[dict[str, Any]]:
        """What `move` adds to the day and PR totals, to the usage items of the call's hour, and to its run."""
        deltas = {
            "committed": move.committed,
            "reserved": move.reserved,
            "settled": move.settled,
            "estimated": move.estimated,
        }
        exp = self.expiry(r.day)
        items = [self.add(key(DAILY, r.day), deltas, expires=exp)]
        if r.pr_scope:
            pr_deltas = {k: deltas[k] for k in ("committed", "settled")}
            items.append(self.add(key(f"pr@{r.day}", r.pr_scope), pr_deltas, expires=exp))
        hour = hour_of(r.at or now)
        for use_model, use in usage_changes(move, tokens, worst, model, *replaced):
            items.append(self.add(key(f"use@{hour}", use_model), use, expires=exp))
        if r.owner and move.closure.how != "released":
            items.append(attribution(r.owner, r.id, move.closure.cost))
        return items

    def _put_new(self, item: dict[str, Any]) -> dict[str, Any]:
        """A transaction Put that fails when the item exists."""
        return {
            "Put": {
                "TableName": self.table,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(#s)",
                "ExpressionAttributeNames": {"#s": "scope"},
            }
        }

    # -- sweeping

    def release_expired(self, *, now: float) -> int:
        """For the sweeper: book reservations past their deadline at their worst case (`expired`), never release
        them: the Lambda that held one may have made a billed call before it died or failed to settle."""
        n = 0
        for day, item in list(self._open_reservations(now)):
            r = _stored(item, day)
            if r.expires_at > now:
                continue
            worst = (num(item.get("wi")), num(item.get("wo")))
            model = text(item.get("model")) or None
            n += None is not self._close(r, "expired", r.amount, now=now, model=model, worst=worst)
        return n

    def _open_reservations(self, now: float) -> Iterator[tuple[str, dict[str, Any]]]:
        """(budget day, item) of every open reservation of the last SWEEP_LOOKBACK_DAYS days and today."""
        for back in range(SWEEP_LOOKBACK_DAYS + 1):
            day = self.day(now - back * 86400)
            kwargs: dict[str, Any] = dict(
                TableName=self.table,
                ConsistentRead=True,
                KeyConditionExpression="#s = :s",
                ExpressionAttributeNames={"#s": "scope"},
                ExpressionAttributeValues={":s": {"S": f"res@{day}"}},
            )
            while True:
                page = self.ddb.query(**kwargs)
                for item in page.get("Items", []):
                    yield day, item
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- the day's status

    def status(self, scope: str = DAILY, *, now: float) -> SpendStatus:
        """The status of the day (or of one PR's scope) at `now`, read now."""
        day = self.day(now)
        scope_key = key(DAILY, day) if scope == DAILY else key(f"pr@{day}", scope)
        limit = self.daily_limit if scope == DAILY else self.pr_limit
        return spend_status(total_of(self.get(scope_key)), scope, day, limit)

    # -- reconciliation

    def usage(self, hour: str) -> dict[str, dict[str, int]]:
        """The ledger's usage items of one UTC hour, by model (for reconciliation)."""
        page = self.ddb.query(
            TableName=self.table,
            ConsistentRead=True,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "scope"},
            ExpressionAttributeValues={":s": {"S": f"use@{hour}"}},
        )
        return {
            i["day"]["S"]: {k: num(v) for k, v in i.items() if k not in ("scope", "day", "expires_at")}
            for i in page.get("Items", [])
        }

    def adjust(self, day: str, hour: str, model: str, want: int, *, now: float) -> int:
        """Reconciliation: make the adjustment booked for (hour, model) equal `want`, once however often it runs
        (a marker item holds what was applied); returns the micro-dollars added to the day total now."""
        marker_key = key(f"rec@{hour}", model)
        for _ in range(5):
            prev_item = self.get(marker_key)
            prev = num(prev_item.get("applied")) if prev_item else None
            delta = int(want) - (prev or 0)
            if delta == 0:
                return 0
            marker = {
                **marker_key,
                "applied": {"N": str(int(want))},
                "budget_day": {"S": day},
                "expires_at": self.expiry(day),
            }
            if prev is None:
                put = self._put_new(marker)
            else:
                put = {
                    "Put": {
                        "TableName": self.table,
                        "Item": marker,
                        "ConditionExpression": "applied = :p",
                        "ExpressionAttributeValues": {":p": {"N": str(prev)}},
                    }
                }
            day_total = self.add(
                key(DAILY, day),
                {"committed": delta, "settled": delta, "reconciled": delta},
                expires=self.expiry(day),
            )
            if self.transact([put, day_total]) is None:
                return delta
        raise RuntimeError(f"reconciliation marker {hour}/{model} kept changing")
