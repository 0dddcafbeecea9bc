"""The cost ledger: reserve a call's worst-case cost before the call, settle to the actual cost after it.

Design (single item, one conditional UpdateItem per reserve):
  Every day of the deployment has ONE ledger item, key (scope="daily", day="YYYY-MM-DD" in the configured
  time zone). It holds the daily counters (`committed` = `settled` + `reserved`, micro-dollars), the
  per-PR counters in maps keyed by PR scope (`prc` committed, `prs` settled), the open reservations in
  the map `res` ({id: {a: amount, p: pr scope, x: deadline}}) and the 80 % markers in `a80`.
  Because both the daily scope and the PR scope live in the same item, a reservation is ONE conditional
  UpdateItem whose condition checks both limits; DynamoDB applies it atomically, so committed spend can
  never pass either limit whatever the concurrency (no transaction needed; moto's transactions are also
  not isolated under concurrency, single-item updates are). The per-PR cap is per PR per day.
  A Lambda that dies between reserve and settle leaves an entry in `res` with its deadline; the sweeper
  calls `release_expired`, which finds those entries in the recent day items and releases them.
  The item's `expires_at` (table TTL) is the end of the day plus RETENTION_DAYS, for `prfleet cost report`.

Pure core: the arithmetic and decisions (`fits`, `settle_delta`, `reaches_80`, the DayState transitions)
and `Book`, an in-memory ledger with exactly the Ledger's protocol (used by the property tests and usable
by local tools). Adapter: `Ledger` over DynamoDB.
"""

from __future__ import annotations

import datetime as _dt
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

DAILY = "daily"
ALERT_PERCENT = 80
RETENTION_DAYS = 100
SWEEP_LOOKBACK_DAYS = 3


class BudgetExceeded(Exception):
    """A reservation was refused: the caller defers the job (it is kept, not failed)."""

    def __init__(self, scope: str, needed: int, available: int) -> None:
        super().__init__(f"budget exceeded for {scope}: need {needed} micro-USD, {available} available")
        self.scope = scope
        self.needed = needed
        self.available = available


@dataclass(frozen=True)
class Reservation:
    id: str
    amount: int
    scopes: tuple[tuple[str, str], ...]  # ((scope, day), ...): "daily" first, then the PR scope
    expires_at: int

    @property
    def day(self) -> str:
        return self.scopes[0][1]

    @property
    def pr_scope(self) -> str | None:
        return self.scopes[1][0] if len(self.scopes) > 1 else None


@dataclass(frozen=True)
class SpendStatus:
    day: str
    scope: str
    limit: int
    settled: int
    reserved: int
    percent: float  # settled / limit x 100 (actual spend, what the metric and alarm use)
    crossed_80: bool  # true exactly once per scope per day: publish one notice
    others: tuple[SpendStatus, ...] = ()  # settle(): the PR scope's status next to the daily one

    @property
    def committed(self) -> int:
        return self.settled + self.reserved


# ----------------------------------------------------------------------------------------------- pure core


def fits(committed: int, amount: int, limit: int) -> bool:
    """May `amount` be reserved on a scope that has `committed` of `limit`?"""
    return amount >= 0 and committed + amount <= limit


def ceiling_for(limit: int, amount: int) -> int:
    """The largest committed value that still admits `amount` (the conditional write's bound)."""
    return limit - amount


def settle_delta(amount: int, actual: int) -> int:
    """Change of `committed` when a reservation of `amount` settles at `actual`."""
    return actual - amount


def percent(settled: int, limit: int) -> float:
    return 100.0 if limit <= 0 else round(settled * 100 / limit, 4)


def reaches_80(settled: int, limit: int) -> bool:
    """Integer test of settled >= 80 % of limit."""
    return limit > 0 and settled * 100 >= ALERT_PERCENT * limit


def day_of(now: float, tz: str = "UTC") -> str:
    """The budget day of an epoch time in the configured IANA time zone."""
    return _dt.datetime.fromtimestamp(now, ZoneInfo(tz)).date().isoformat()


def day_end(day: str, tz: str = "UTC") -> int:
    """Epoch seconds at which `day` ends in `tz` (DST-aware)."""
    d = _dt.date.fromisoformat(day) + _dt.timedelta(days=1)
    return int(_dt.datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(tz)).timestamp())


@dataclass
class ResEntry:
    amount: int
    pr: str | None
    deadline: int


@dataclass
class DayState:
    """One day of the ledger (the in-memory twin of the DynamoDB day item)."""

    committed: int = 0
    reserved: int = 0
    settled: int = 0
    prc: dict[str, int] = field(default_factory=dict)
    prs: dict[str, int] = field(default_factory=dict)
    res: dict[str, ResEntry] = field(default_factory=dict)
    a80: set[str] = field(default_factory=set)

    def refusal(self, pr: str | None, amount: int, daily_limit: int, pr_limit: int) -> BudgetExceeded | None:
        """Why a reservation would be refused, or None if it fits both scopes."""
        if not fits(self.committed, amount, daily_limit):
            return BudgetExceeded(DAILY, amount, max(0, daily_limit - self.committed))
        if pr is not None and not fits(self.prc.get(pr, 0), amount, pr_limit):
            return BudgetExceeded(pr, amount, max(0, pr_limit - self.prc.get(pr, 0)))
        return None

    def reserve(
        self, rid: str, pr: str | None, amount: int, deadline: int, daily_limit: int, pr_limit: int
    ) -> None:
        refused = self.refusal(pr, amount, daily_limit, pr_limit)
        if refused:
            raise refused
        self.committed += amount
        self.reserved += amount
        if pr is not None:
            self.prc[pr] = self.prc.get(pr, 0) + amount
        self.res[rid] = ResEntry(amount, pr, deadline)

    def settle(self, rid: str, pr: str | None, actual: int) -> bool:
        """Release the reservation and add the actual cost; False if it had already been released (swept),
        in which case the actual cost is still recorded: the money was spent."""
        entry = self.res.pop(rid, None)
        if entry is None:
            delta, amount = actual, 0
        else:
            delta, amount, pr = settle_delta(entry.amount, actual), entry.amount, entry.pr
        self.committed += delta
        self.reserved -= amount
        self.settled += actual
        if pr is not None:
            self.prc[pr] = self.prc.get(pr, 0) + delta
            self.prs[pr] = self.prs.get(pr, 0) + actual
        return entry is not None

    def release(self, rid: str) -> bool:
        entry = self.res.pop(rid, None)
        if entry is None:
            return False
        self.committed -= entry.amount
        self.reserved -= entry.amount
        if entry.pr is not None:
            self.prc[entry.pr] -= entry.amount
        return True

    def expired(self, now: float) -> list[str]:
        return [rid for rid, e in self.res.items() if e.deadline <= now]

    def mark_80(self, scope: str) -> bool:
        """The conditional write: True only the first time for this scope and day."""
        if scope in self.a80:
            return False
        self.a80.add(scope)
        return True

    def status(self, scope: str, day: str, limit: int, crossed: bool = False) -> SpendStatus:
        if scope == DAILY:
            settled, reserved = self.settled, self.reserved
        else:
            settled = self.prs.get(scope, 0)
            reserved = self.prc.get(scope, 0) - settled
        return SpendStatus(day, scope, limit, settled, reserved, percent(settled, limit), crossed)


def _new_id() -> str:
    return uuid.uuid4().hex


class Book:
    """In-memory ledger with the Ledger's exact protocol (thread-safe; pure apart from the lock)."""

    def __init__(self, *, daily_limit_micros: int, pr_limit_micros: int, tz: str = "UTC") -> None:
        self.daily_limit = daily_limit_micros
        self.pr_limit = pr_limit_micros
        self.tz = tz
        self.days: dict[str, DayState] = {}
        self._lock = threading.Lock()

    def day(self, now: float) -> str:
        return day_of(now, self.tz)

    def _state(self, day: str) -> DayState:
        return self.days.setdefault(day, DayState())

    def reserve(self, pr_scope: str | None, amount: int, *, now: float, ttl: int = 900) -> Reservation:
        day = self.day(now)
        rid = _new_id()
        with self._lock:
            self._state(day).reserve(
                rid, pr_scope or None, amount, int(now) + ttl, self.daily_limit, self.pr_limit
            )
        scopes = ((DAILY, day),) + (((pr_scope, day),) if pr_scope else ())
        return Reservation(rid, amount, scopes, int(now) + ttl)

    def settle(self, r: Reservation, actual: int, *, now: float) -> SpendStatus:
        with self._lock:
            st = self._state(r.day)
            st.settle(r.id, r.pr_scope, actual)
            return _statuses(st, r.day, r.pr_scope, self.daily_limit, self.pr_limit, st.mark_80)

    def release(self, r: Reservation, *, now: float) -> None:
        with self._lock:
            self._state(r.day).release(r.id)

    def release_expired(self, *, now: float) -> int:
        n = 0
        with self._lock:
            for st in self.days.values():
                for rid in st.expired(now):
                    n += st.release(rid)
        return n

    def status(self, scope: str = DAILY, *, now: float) -> SpendStatus:
        day = self.day(now)
        with self._lock:
            st = self._state(day)
            return st.status(scope, day, self.daily_limit if scope == DAILY else self.pr_limit)


def _statuses(
    st: DayState, day: str, pr: str | None, daily_limit: int, pr_limit: int, mark: Any
) -> SpendStatus:
    """Daily status (with the PR status in `others`), crossing 80 % at most once per scope per day."""
    out = []
    for scope, limit in ((DAILY, daily_limit), (pr, pr_limit)):
        if scope is None:
            continue
        s = st.status(scope, day, limit)
        crossed = reaches_80(s.settled, limit) and scope not in st.a80 and mark(scope)
        out.append(st.status(scope, day, limit, bool(crossed)))
    return SpendStatus(**{**out[0].__dict__, "others": tuple(out[1:])})


# ----------------------------------------------------------------------------------------- DynamoDB adapter


def _n(v: Any) -> int:
    return int(v.get("N", 0)) if isinstance(v, dict) else 0


def _state_from_item(item: dict[str, Any]) -> DayState:
    """Decode a low-level DynamoDB day item into the core DayState."""

    def nmap(name: str) -> dict[str, int]:
        return {k: _n(v) for k, v in item.get(name, {}).get("M", {}).items()}

    res = {}
    for rid, v in item.get("res", {}).get("M", {}).items():
        m = v.get("M", {})
        pr = m.get("p", {}).get("S") or None
        res[rid] = ResEntry(_n(m.get("a")), pr, _n(m.get("x")))
    return DayState(
        committed=_n(item.get("committed")),
        reserved=_n(item.get("reserved")),
        settled=_n(item.get("settled")),
        prc=nmap("prc"),
        prs=nmap("prs"),
        res=res,
        a80=set(item.get("a80", {}).get("M", {}).keys()),
    )


def _is(exc: Exception, code: str) -> bool:
    return getattr(exc, "response", {}).get("Error", {}).get("Code") == code


class Ledger:
    """The ledger over DynamoDB (table: pk `scope`, sk `day`, TTL `expires_at`); see the module doc."""

    def __init__(
        self,
        table: str,
        *,
        daily_limit_micros: int,
        pr_limit_micros: int,
        tz: str = "UTC",
        client: Any = None,
    ) -> None:
        if client is None:
            from prfleet.aws import client as aws_client

            client = aws_client("dynamodb")
        ZoneInfo(tz)  # fail fast on a bad time zone name
        self.table = table
        self.daily_limit = int(daily_limit_micros)
        self.pr_limit = int(pr_limit_micros)
        self.tz = tz
        self.ddb = client

    @classmethod
    def from_settings(cls, settings: Any, client: Any = None) -> Ledger:
        """Build from prfleet.config.Settings (USD limits -> micro-dollars)."""
        return cls(
            settings.ledger_table,
            daily_limit_micros=round(settings.daily_budget_usd * 1_000_000),
            pr_limit_micros=round(settings.pr_budget_usd * 1_000_000),
            tz=settings.budget_timezone,
            client=client,
        )

    def day(self, now: float) -> str:
        return day_of(now, self.tz)

    def _key(self, day: str) -> dict[str, Any]:
        return {"scope": {"S": DAILY}, "day": {"S": day}}

    def _init_day(self, day: str) -> None:
        """Create the day item's counters and maps if absent (idempotent)."""
        empty = {"M": {}}
        zero = {"N": "0"}
        self.ddb.update_item(
            TableName=self.table,
            Key=self._key(day),
            UpdateExpression=(
                "SET committed = if_not_exists(committed, :z), reserved = if_not_exists(reserved, :z), "
                "settled = if_not_exists(settled, :z), prc = if_not_exists(prc, :m), "
                "prs = if_not_exists(prs, :m), res = if_not_exists(res, :m), a80 = if_not_exists(a80, :m), "
                "expires_at = if_not_exists(expires_at, :exp)"
            ),
            ExpressionAttributeValues={
                ":z": zero,
                ":m": empty,
                ":exp": {"N": str(day_end(day, self.tz) + RETENTION_DAYS * 86400)},
            },
        )

    def _get_state(self, day: str) -> DayState:
        item = self.ddb.get_item(TableName=self.table, Key=self._key(day), ConsistentRead=True).get("Item")
        return _state_from_item(item or {})

    def reserve(self, pr_scope: str | None, amount: int, *, now: float, ttl: int = 900) -> Reservation:
        """Reserve `amount` on the day and on the PR with ONE conditional UpdateItem, or raise
        BudgetExceeded (the caller defers the job)."""
        amount = int(amount)
        if amount < 0:
            raise ValueError("amount must be >= 0")
        pr = pr_scope or None
        day = self.day(now)
        rid = _new_id()
        deadline = int(now) + int(ttl)
        if amount > self.daily_limit or (pr is not None and amount > self.pr_limit):
            raise self._get_state(day).refusal(pr, amount, self.daily_limit, self.pr_limit) or BudgetExceeded(
                DAILY, amount, 0
            )
        names = {"#r": rid, "#lim": "limit"}
        values: dict[str, Any] = {
            ":a": {"N": str(amount)},
            ":dmax": {"N": str(ceiling_for(self.daily_limit, amount))},
            ":lim": {"N": str(self.daily_limit)},
            ":e": {"M": {"a": {"N": str(amount)}, "x": {"N": str(deadline)}, "p": {"S": pr or ""}}},
        }
        update = "SET committed = committed + :a, reserved = reserved + :a, res.#r = :e, #lim = :lim"
        condition = "committed <= :dmax"
        if pr is not None:
            names["#p"] = pr
            values[":pmax"] = {"N": str(ceiling_for(self.pr_limit, amount))}
            values[":z"] = {"N": "0"}
            update += ", prc.#p = if_not_exists(prc.#p, :z) + :a"
            condition += " AND (attribute_not_exists(prc.#p) OR prc.#p <= :pmax)"
        for attempt in range(3):
            try:
                self.ddb.update_item(
                    TableName=self.table,
                    Key=self._key(day),
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                break
            except Exception as exc:
                if _is(exc, "ConditionalCheckFailedException"):
                    item = getattr(exc, "response", {}).get("Item")
                    if item and "committed" in item and "prc" in item:
                        refused = _state_from_item(item).refusal(pr, amount, self.daily_limit, self.pr_limit)
                        raise refused or BudgetExceeded(DAILY, amount, 0) from None
                elif not _is(exc, "ValidationException"):  # maps missing on a brand-new item
                    raise
                if attempt == 2:
                    raise
                self._init_day(day)
        scopes = ((DAILY, day),) + (((pr, day),) if pr else ())
        return Reservation(rid, amount, scopes, deadline)

    def settle(self, r: Reservation, actual: int, *, now: float) -> SpendStatus:
        """Release `r` and add the actual cost (one UpdateItem); returns the daily status with the PR's
        in `others`, each with crossed_80 set once per scope per day."""
        actual = int(actual)
        day, pr = r.day, r.pr_scope
        names: dict[str, str] = {"#r": r.id}
        values: dict[str, Any] = {
            ":d": {"N": str(settle_delta(r.amount, actual))},
            ":a": {"N": str(r.amount)},
            ":c": {"N": str(actual)},
        }
        update = "SET committed = committed + :d, reserved = reserved - :a, settled = settled + :c"
        if pr is not None:
            names["#p"] = pr
            values[":z"] = {"N": "0"}
            update += ", prc.#p = prc.#p + :d, prs.#p = if_not_exists(prs.#p, :z) + :c"
        try:
            new = self.ddb.update_item(
                TableName=self.table,
                Key=self._key(day),
                UpdateExpression=update + " REMOVE res.#r",
                ConditionExpression="attribute_exists(res.#r)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except Exception as exc:
            if not _is(exc, "ConditionalCheckFailedException"):
                raise
            # Swept already (the call outlived its ttl): the money was still spent, record it.
            names.pop("#r")
            values.pop(":d")
            values.pop(":a")
            update = "SET committed = committed + :c, settled = settled + :c"
            if pr is not None:
                update += ", prc.#p = if_not_exists(prc.#p, :z) + :c, prs.#p = if_not_exists(prs.#p, :z) + :c"
            kwargs: dict[str, Any] = dict(
                TableName=self.table,
                Key=self._key(day),
                UpdateExpression=update,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
            if names:
                kwargs["ExpressionAttributeNames"] = names
            new = self.ddb.update_item(**kwargs)["Attributes"]
        return _statuses(
            _state_from_item(new),
            day,
            pr,
            self.daily_limit,
            self.pr_limit,
            lambda scope: self._mark_80(day, scope),
        )

    def _mark_80(self, day: str, scope: str) -> bool:
        """Conditional write: succeeds once per scope per day, so exactly one caller sends the notice."""
        try:
            self.ddb.update_item(
                TableName=self.table,
                Key=self._key(day),
                UpdateExpression="SET a80.#s = :t",
                ConditionExpression="attribute_not_exists(a80.#s)",
                ExpressionAttributeNames={"#s": scope},
                ExpressionAttributeValues={":t": {"BOOL": True}},
            )
            return True
        except Exception as exc:
            if _is(exc, "ConditionalCheckFailedException"):
                return False
            raise

    def release(self, r: Reservation, *, now: float) -> None:
        """Give back the reservation of a call that failed (no-op if already released)."""
        self._release(r.day, r.id, r.pr_scope, r.amount)

    def _release(self, day: str, rid: str, pr: str | None, amount: int) -> bool:
        names = {"#r": rid}
        values = {":a": {"N": str(amount)}}
        update = "SET committed = committed - :a, reserved = reserved - :a"
        if pr is not None:
            names["#p"] = pr
            update += ", prc.#p = prc.#p - :a"
        try:
            self.ddb.update_item(
                TableName=self.table,
                Key=self._key(day),
                UpdateExpression=update + " REMOVE res.#r",
                ConditionExpression="attribute_exists(res.#r)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
            return True
        except Exception as exc:
            if _is(exc, "ConditionalCheckFailedException"):
                return False
            raise

    def _recent_items(self, now: float) -> Iterator[dict[str, Any]]:
        since = self.day(now - SWEEP_LOOKBACK_DAYS * 86400)
        kwargs: dict[str, Any] = dict(
            TableName=self.table,
            ConsistentRead=True,
            KeyConditionExpression="#s = :s AND #d >= :since",
            ExpressionAttributeNames={"#s": "scope", "#d": "day"},
            ExpressionAttributeValues={":s": {"S": DAILY}, ":since": {"S": since}},
        )
        while True:
            page = self.ddb.query(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def release_expired(self, *, now: float) -> int:
        """For the sweeper: release reservations whose deadline passed (a Lambda that timed out)."""
        n = 0
        for item in self._recent_items(now):
            st = _state_from_item(item)
            for rid in st.expired(now):
                e = st.res[rid]
                n += self._release(item["day"]["S"], rid, e.pr, e.amount)
        return n

    def status(self, scope: str = DAILY, *, now: float) -> SpendStatus:
        day = self.day(now)
        return self._get_state(day).status(scope, day, self.daily_limit if scope == DAILY else self.pr_limit)
