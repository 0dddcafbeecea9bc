"""The cost ledger: reserve a call's worst case before the call, settle to what it cost (or may have cost) after.

Layout (LedgerTable, pk `scope`, sk `day`; every item small, so a write costs the same at 10 or 10,000 PRs a day):
  daily       / <day>        the day total: committed (= settled + reserved), reserved, settled, estimated, limit, a80
  pr@<day>    / <pr scope>   one PR's total for the day: committed, settled, a80
  res@<day>   / <id>         one open reservation: amount, pr, deadline
  end@<day>   / <id>         one closed reservation: how (settled | estimated | released | expired) and what it booked
  use@<hour>  / <model>      tokens per UTC hour and model (exact buckets, and the estimated calls), for reconciliation;
                             the hour is the one the call was RESERVED in (made right after), never the hour it was
                             closed in: a reservation the sweeper books hours later belongs to the bill's hour of its
                             call, and to the budget day the reservation was booked on
A reservation is ONE TransactWriteItems (day total + PR total, each with its limit in the condition, + the
reservation item), so committed spend never passes either limit whatever the concurrency. A settle or release is
one transaction that moves the reservation item to its closure item (conditional on both), so a settle applied
twice (lost response, botocore retry, redelivery) books once: the second one finds the closure and does nothing.
The day total is one item: its throughput ceiling and the plan beyond it are in docs/architecture.md.

Billing rules (prfleet.billing): a call that may have been billed is booked `estimated` at its worst case; a
reservation stranded past its deadline (a Lambda that died, a settle that could not be written) is booked
`expired`, also at its worst case, never released: the call may have been made. A late exact settle replaces an
estimate. Reconciliation (prfleet.reconcile) later moves the day total onto the bill.

A refusal names its cause: `spent` when settled spend alone leaves no room (defer to the next budget day),
`reserved` when open reservations do (retry after a short delay).

Pure core: the decisions (`fits`, `refusal_cause`, `reaches_80`, `close`) and `Book`, an in-memory ledger with the
Ledger's protocol. Adapter: `Ledger` over DynamoDB.
"""

from __future__ import annotations

import datetime as _dt
import random
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo

from prfleet.config.aws import client as aws_client
from prfleet.cost import pricing

DAILY = "daily"
ALERT_PERCENT = 80
RETENTION_DAYS = 100
CLOSURE_DAYS = 15  # closures outlive any redelivery (SQS keeps a message at most 14 days)
SWEEP_LOOKBACK_DAYS = 3
TOKEN_BUCKETS = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
# The day's (and a PR's) status after a settle is read at most every STATUS_EVERY_S per process (Lambda container),
# not after every settle. Its only uses are the DailySpendPercent / DailySpendUsd metric and the once-per-day 80 %
# notice; the limits themselves are enforced by the reservation's conditional transaction, never by this read.
# Between reads a settle reports the last read plus what this process booked on the scope since (see _Seen), and
# reads at once when that projection reaches 80 % of a limit not yet marked crossed. Why 60 s: SpendAlarm takes the
# Maximum of DailySpendPercent over 300 s periods, so a fresh value at least every 60 s from each settling container
# (and the sweeper's, every minute) lands in the period of a crossing or at worst the next one, and a lower value
# published meanwhile cannot hide a fresh one (Maximum); the notice is late by at most 60 s after another
# container's settle crosses 80 % (at once when this container's own settle does).
STATUS_EVERY_S = 60.0
_STATUS_ENTRIES = 512  # per client: a container works on a few PRs at a time; old entries are re-read


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
    estimated: int = 0  # part of `settled` booked at a worst case (may have been billed; see prfleet.billing)
    booked: bool = True  # False when this settle was a repeat and booked nothing

    @property
    def committed(self) -> int:
        return self.settled + self.reserved


# ----------------------------------------------------------------------------------------------- pure core

# Reservation sizing for text never sent before (the first call of a run, or what a later call appends): one token
# per UTF-8 byte. That is a hard bound, not an average: a byte-level BPE token covers at least one byte, whatever
# the text (minified code, regex tables, base64, non-Latin scripts). Measured (docs/architecture.md, "Reservation
# size"; local/prfleet_local/bench/chars_per_token.py) with the only real Anthropic tokenizer available offline, the
# Claude 2-era `tokenizer.json` of anthropic 0.30.0, on 2,072 files of 9 languages: 1.74 characters per token for
# the densest file (regex-heavy JavaScript), 2.1-2.2 for the densest Shell, Markdown and C; the current models'
# tokenizer counts the same text as ~30 % more tokens (Haiku 5.5 model page), ~1.34 for that file. The previous
# bound, 2 ASCII characters per token, was below those (that file: 15 % more tokens than it allowed).
CHARS_PER_TOKEN_BOUND = 1  # UTF-8 bytes per token


def input_bound(text: str) -> int:
    """Upper bound of the tokens of `text` for a reservation: its UTF-8 bytes (see CHARS_PER_TOKEN_BOUND)."""
    return len(text.encode("utf-8", "surrogatepass"))


def fits(committed: int, amount: int, limit: int) -> bool:
    """May `amount` be reserved on a scope that has `committed` of `limit`?"""
    return amount >= 0 and committed + amount <= limit


def ceiling_for(limit: int, amount: int) -> int:
    """The largest committed value that still admits `amount` (the conditional write's bound)."""
    return limit - amount


def refusal_cause(settled: int, committed: int, amount: int, limit: int) -> str | None:
    """None if it fits; "spent" if settled spend alone leaves no room; "reserved" if open reservations do."""
    if fits(committed, amount, limit):
        return None
    return "spent" if not fits(settled, amount, limit) else "reserved"


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


def hour_of(now: float) -> str:
    """The UTC hour bucket of an epoch time, as the Usage and Cost API buckets it ("2026-11-30T14")."""
    return _dt.datetime.fromtimestamp(now, _dt.timezone.utc).strftime("%Y-%m-%dT%H")


def day_end(day: str, tz: str = "UTC") -> int:
    """Epoch seconds at which `day` ends in `tz` (DST-aware)."""
    d = _dt.date.fromisoformat(day) + _dt.timedelta(days=1)
    return int(_dt.datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(tz)).timestamp())


@dataclass(frozen=True)
class Closed:
    how: str  # settled | estimated | released | expired
    cost: int  # what this closure booked (0 when released)


@dataclass(frozen=True)
class Move:
    """What closing a reservation does to the totals (applied to the day and PR items together)."""

    closure: Closed
    committed: int
    reserved: int
    settled: int
    estimated: int
    exact_call: bool  # count the usage as exact tokens (and drop a previous estimate from the usage item)
    replaces: Closed | None = None  # the closure this one replaces (conditional on it)


def close(amount: int, prior: Closed | None, is_open: bool, how: str, cost: int) -> Move | None:
    """The pure settlement rule. `how` is settled, estimated, released or expired. None: nothing to book (a repeat).

    open      -> settled/estimated books `cost` and frees `amount`; released frees it; expired books `amount`.
    released  -> a late settle/estimate books `cost` (the reservation was already given back).
    estimated/expired -> an exact settle replaces the estimate; anything else is a repeat.
    settled   -> always a repeat.
    """
    est = how in ("estimated", "expired")
    if is_open:
        if how == "released":
            return Move(Closed("released", 0), -amount, -amount, 0, 0, False)
        booked = amount if how == "expired" else cost
        return Move(
            Closed(how, booked), booked - amount, -amount, booked, booked if est else 0, how == "settled"
        )
    if how in ("released", "expired"):
        return None
    if prior is None or prior.how == "released":
        return Move(Closed(how, cost), cost, 0, cost, cost if est else 0, how == "settled", prior)
    if prior.how in ("estimated", "expired") and how == "settled":
        d = cost - prior.cost
        return Move(Closed("settled", cost), d, 0, d, -prior.cost, True, prior)
    return None


@dataclass
class Total:
    committed: int = 0
    reserved: int = 0
    settled: int = 0
    estimated: int = 0
    a80: bool = False


@dataclass
class Open:
    amount: int
    pr: str | None
    deadline: int
    day: str


def _new_id() -> str:
    return uuid.uuid4().hex


def _status(t: Total, scope: str, day: str, limit: int, crossed: bool = False) -> SpendStatus:
    return SpendStatus(
        day,
        scope,
        limit,
        t.settled,
        t.committed - t.settled,
        percent(t.settled, limit),
        crossed,
        (),
        t.estimated,
    )


@dataclass
class _Seen:
    """A scope's total as this process last read it, plus what this process booked on it since (settles and
    reservations: exact contributions, so `settled` stays a lower bound of the stored total up to other workers'
    downward corrections, an exact settle replacing a higher estimate or a reconciliation adjustment, which the
    next read brings in)."""

    at: float  # monotonic time the read returned: later bookings of this process are not in it
    total: Total
    reconciled: int = 0


# One status cache per DynamoDB client (a container has one; a test's own client has its own), dropped with it.
_seen: weakref.WeakKeyDictionary[Any, dict[tuple[str, str, str], _Seen]] = weakref.WeakKeyDictionary()
_seen_lock = threading.Lock()


def _seen_of(client: Any) -> dict[tuple[str, str, str], _Seen] | None:
    """The status cache of `client` (call with _seen_lock held); None when the client cannot be weakly referenced
    (then every status is read)."""
    try:
        return _seen.setdefault(client, {})
    except TypeError:
        return None


def forget_statuses(client: Any = None) -> None:
    """Drop the cached statuses (of one client, or all): the next settle reads its status."""
    with _seen_lock:
        if client is None:
            _seen.clear()
        else:
            _seen.pop(client, None)


class Book:
    """In-memory ledger with the Ledger's exact protocol (thread-safe; pure apart from the lock)."""

    def __init__(self, *, daily_limit_micros: int, pr_limit_micros: int, tz: str = "UTC") -> None:
        self.daily_limit = daily_limit_micros
        self.pr_limit = pr_limit_micros
        self.tz = tz
        self.totals: dict[tuple[str, str], Total] = {}  # (scope, day)
        self.open: dict[str, Open] = {}
        self.closed: dict[str, Closed] = {}
        self._lock = threading.Lock()

    def day(self, now: float) -> str:
        return day_of(now, self.tz)

    def _t(self, scope: str, day: str) -> Total:
        return self.totals.setdefault((scope, day), Total())

    def reserve(
        self, pr_scope: str | None, amount: int, *, now: float, ttl: int = 900, **_: Any
    ) -> Reservation:
        day, pr, rid = self.day(now), pr_scope or None, _new_id()
        with self._lock:
            for scope, limit in ((DAILY, self.daily_limit), (pr, self.pr_limit)):
                if scope is None:
                    continue
                t = self._t(scope, day)
                cause = refusal_cause(t.settled, t.committed, amount, limit)
                if cause:
                    raise BudgetExceeded(scope, amount, max(0, limit - t.committed), cause)
            for scope in (DAILY, pr):
                if scope is not None:
                    t = self._t(scope, day)
                    t.committed += amount
                    t.reserved += amount
            self.open[rid] = Open(amount, pr, int(now) + ttl, day)
        scopes = ((DAILY, day),) + (((pr, day),) if pr else ())
        return Reservation(rid, amount, scopes, int(now) + ttl, float(now))

    def _apply(self, rid: str, day: str, pr: str | None, amount: int, how: str, cost: int) -> Move | None:
        move = close(amount, self.closed.get(rid), rid in self.open, how, cost)
        if move is None:
            return None
        self.open.pop(rid, None)
        self.closed[rid] = move.closure
        for scope in (DAILY, pr):
            if scope is None:
                continue
            t = self._t(scope, day)
            t.committed += move.committed
            t.reserved += move.reserved
            t.settled += move.settled
            t.estimated += move.estimated
        return move

    def settle(
        self, r: Reservation, actual: int, *, now: float, estimated: bool = False, **_: Any
    ) -> SpendStatus:
        with self._lock:
            move = self._apply(
                r.id, r.day, r.pr_scope, r.amount, "estimated" if estimated else "settled", actual
            )
            out = []
            for scope, limit in ((DAILY, self.daily_limit), (r.pr_scope, self.pr_limit)):
                if scope is None:
                    continue
                t = self._t(scope, r.day)
                crossed = reaches_80(t.settled, limit) and not t.a80
                t.a80 = t.a80 or crossed
                out.append(_status(t, scope, r.day, limit, crossed))
            return replace(out[0], others=tuple(out[1:]), booked=move is not None)

    def release(self, r: Reservation, *, now: float) -> bool:
        with self._lock:
            return self._apply(r.id, r.day, r.pr_scope, r.amount, "released", 0) is not None

    def release_expired(self, *, now: float) -> int:
        """Book reservations past their deadline at their worst case (`expired`): the call may have been billed."""
        n = 0
        with self._lock:
            for rid, o in list(self.open.items()):
                if o.deadline <= now:
                    n += self._apply(rid, o.day, o.pr, o.amount, "expired", o.amount) is not None
        return n

    def status(self, scope: str = DAILY, *, now: float) -> SpendStatus:
        day = self.day(now)
        with self._lock:
            return _status(
                self._t(scope, day), scope, day, self.daily_limit if scope == DAILY else self.pr_limit
            )


# ----------------------------------------------------------------------------------------- DynamoDB adapter


def _n(v: Any) -> int:
    return int(v.get("N", 0)) if isinstance(v, dict) else 0


def _s(v: Any) -> str | None:
    return v.get("S") if isinstance(v, dict) else None


def _k(pk: str, sk: str) -> dict[str, Any]:
    return {"scope": {"S": pk}, "day": {"S": sk}}


def _code(exc: Exception) -> str | None:
    return getattr(exc, "response", {}).get("Error", {}).get("Code")


def _reasons(exc: Exception) -> list[str]:
    return [str(r.get("Code") or "None") for r in getattr(exc, "response", {}).get("CancellationReasons", [])]


def _total(item: dict[str, Any] | None) -> Total:
    item = item or {}
    return Total(
        committed=_n(item.get("committed")),
        reserved=_n(item.get("reserved")),
        settled=_n(item.get("settled")),
        estimated=_n(item.get("estimated")),
        a80="a80" in item,
    )


def may_be_tiered(model: str | None, input_bound: int) -> bool:
    """Can a call of `model` whose prompt is at most `input_bound` tokens be priced above the base tier?
    (Unknown model or bound: yes, the safe answer.) Reconciliation prices an estimated call's billed tokens in the
    base tier only when none of the hour's estimated calls could have crossed a prompt-length threshold."""
    if not model or input_bound <= 0:
        return True

    try:
        tiers = pricing.rates(model).tiers
    except Exception:  # an unknown model: it may be anything
        return True
    return any(input_bound > t.above_prompt_tokens for t in tiers)


BOOKED_PREFIX = "b_"  # on a run item: b_<reservation id> = micro-dollars that reservation booked


def attribution(owner: tuple[str, str, str], rid: str, cost: int) -> dict[str, Any]:
    """The transaction item that writes one booking onto its run (`b_<reservation id>`: a repeat or a replacing
    exact settle overwrites it, so the run holds exactly what the ledger booked for it)."""
    table, pk, sk = owner
    return {
        "Update": {
            "TableName": table,
            "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
            "UpdateExpression": "SET #b = :b",
            "ExpressionAttributeNames": {"#b": BOOKED_PREFIX + rid},
            "ExpressionAttributeValues": {":b": {"N": str(int(cost))}},
        }
    }


def _owner(item: dict[str, Any]) -> tuple[str, str, str] | None:
    parts = [p.get("S", "") for p in item.get("owner", {}).get("L", [])]
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def usage_deltas(
    tokens: Any,
    *,
    cost: int,
    estimated: bool,
    worst: tuple[int, int] = (0, 0),
    model: str | None = None,
) -> dict[str, int]:
    """The usage item's counters for one call: exact token buckets, or (estimated) the worst case it was booked at
    (`est_tiered` counts the estimated calls that may lie above the model's base prompt-length tier)."""
    if estimated:
        return {
            "est_calls": 1,
            "est_micros": cost,
            "est_input": worst[0],
            "est_output": worst[1],
            "est_tiered": int(may_be_tiered(model, worst[0])),
        }
    out = {b: int(getattr(tokens, b, 0) or 0) for b in TOKEN_BUCKETS} if tokens is not None else {}
    return {**out, "calls": 1, "exact_micros": cost}


class Ledger:
    """The ledger over DynamoDB (see the module doc for the layout)."""

    TRANSACT_ATTEMPTS = 8

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
        if client is None:
            client = aws_client("dynamodb")
        ZoneInfo(tz)  # fail fast on a bad time zone name
        self.table = table
        self.daily_limit = int(daily_limit_micros)
        self.pr_limit = int(pr_limit_micros)
        self.tz = tz
        self.ddb = client
        self.sleep = sleep
        self.monotonic = monotonic  # the status cache's clock (STATUS_EVERY_S)

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

    # -- building blocks

    def _exp(self, day: str, days: int = RETENTION_DAYS) -> dict[str, str]:
        return {"N": str(day_end(day, self.tz) + days * 86400)}

    def _add(
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

    def _transact(self, items: list[dict[str, Any]]) -> list[str] | None:
        """Run one transaction; None on success, else the cancellation reasons of a condition that failed.
        Conflicts with another transaction on the same items are retried with jittered backoff."""
        for attempt in range(self.TRANSACT_ATTEMPTS):
            try:
                # A fresh ClientRequestToken per attempt (botocore would generate one too: the parameter is an
                # idempotency token; explicit here because the ledger depends on it): botocore's retry of a
                # transaction whose response was lost (applied, answered 500) returns the first success instead of
                # failing its own conditions, so the caller knows it booked and a reservation is not stranded. A
                # separate repeat (a new call) carries a new token and meets the conditions.
                self.ddb.transact_write_items(TransactItems=items, ClientRequestToken=_new_id())
                return None
            except Exception as exc:
                code = _code(exc)
                if code != "TransactionCanceledException" and code != "TransactionConflictException":
                    raise
                reasons = _reasons(exc)
                if "ConditionalCheckFailed" in reasons:
                    return reasons
                if attempt == self.TRANSACT_ATTEMPTS - 1:
                    raise
                self.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
        raise AssertionError("unreachable")

    def _get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        return self.ddb.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")

    # -- protocol

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
        pr, day, rid = pr_scope or None, self.day(now), _new_id()
        deadline = int(now) + int(ttl)
        exp = self._exp(day)
        scopes = [(DAILY, _k(DAILY, day), self.daily_limit)]
        if pr is not None:
            scopes.append((pr, _k(f"pr@{day}", pr), self.pr_limit))
        items = []
        for scope, key, limit in scopes:
            if amount > limit:
                raise self._refusal(scope, key, amount, limit)
            items.append(
                self._add(
                    key,
                    {"committed": amount, "reserved": amount, "settled": 0, "estimated": 0},
                    expires=exp,
                    condition="attribute_not_exists(committed) OR committed <= :max",
                    values={":max": {"N": str(ceiling_for(limit, amount))}},
                    sets={"limit": {"N": str(limit)}},
                )
            )
        res = {
            **_k(f"res@{day}", rid),
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
        items.append(
            {
                "Put": {
                    "TableName": self.table,
                    "Item": res,
                    "ConditionExpression": "attribute_not_exists(#s)",
                    "ExpressionAttributeNames": {"#s": "scope"},
                }
            }
        )
        sent = self.monotonic()
        failed = self._transact(items)
        if failed:
            for (scope, key, limit), code in zip(scopes, failed, strict=False):
                if code == "ConditionalCheckFailed":
                    raise self._refusal(scope, key, amount, limit)
            raise BudgetExceeded(DAILY, amount, 0, "reserved")
        self._project(day, pr, sent, committed=amount, reserved=amount)
        return Reservation(
            rid, amount, ((DAILY, day),) + (((pr, day),) if pr else ()), deadline, float(now), owner
        )

    def _refusal(self, scope: str, key: dict[str, Any], amount: int, limit: int) -> BudgetExceeded:
        t = _total(self._get(key))
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
        (crossed_80 set once per scope per day; see _statuses): read at most every STATUS_EVERY_S per process,
        between reads the last read plus this process's own bookings since (a lower bound)."""
        how = "estimated" if estimated else "settled"
        sent = self.monotonic()
        move = self._close(
            r.day,
            r.id,
            r.pr_scope,
            r.amount,
            how,
            int(actual),
            now=now,
            model=model,
            tokens=tokens,
            worst=worst_tokens,
            at=r.at,
            owner=r.owner,
        )
        if move is not None:
            self._project(
                r.day,
                r.pr_scope,
                sent,
                committed=move.committed,
                reserved=move.reserved,
                settled=move.settled,
            )
        return self._statuses(r.day, r.pr_scope, move is not None)

    def release(self, r: Reservation, *, now: float) -> bool:
        """Give back the reservation of a call that was certainly not billed (no-op if already closed)."""
        sent = self.monotonic()
        move = self._close(r.day, r.id, r.pr_scope, r.amount, "released", 0, now=now, at=r.at)
        if move is not None:
            self._project(r.day, r.pr_scope, sent, committed=move.committed, reserved=move.reserved)
        return move is not None

    def _close(
        self,
        day: str,
        rid: str,
        pr: str | None,
        amount: int,
        how: str,
        cost: int,
        *,
        now: float,
        model: str | None = None,
        tokens: Any = None,
        worst: tuple[int, int] = (0, 0),
        at: float = 0.0,
        owner: tuple[str, str, str] | None = None,
    ) -> Move | None:
        """Close the reservation once; the Move it booked, or None when there was nothing to book (a repeat)."""
        res_key, end_key = _k(f"res@{day}", rid), _k(f"end@{day}", rid)
        is_open, prior = True, None
        prior_model, prior_worst = model, worst  # what the closure being replaced booked its usage under
        for _ in range(3):
            move = close(amount, prior, is_open, how, cost)
            if move is None:
                return None
            items: list[dict[str, Any]] = []
            if is_open:
                items.append(
                    {
                        "Delete": {
                            "TableName": self.table,
                            "Key": res_key,
                            "ConditionExpression": "attribute_exists(#s)",
                            "ExpressionAttributeNames": {"#s": "scope"},
                        }
                    }
                )
            end = {
                **end_key,
                "how": {"S": move.closure.how},
                "cost": {"N": str(move.closure.cost)},
                "amount": {"N": str(amount)},
                "pr": {"S": pr or ""},
                "model": {"S": model or ""},
                "wi": {"N": str(int(worst[0]))},
                "wo": {"N": str(int(worst[1]))},
                **({"owned": {"BOOL": True}} if owner else {}),  # its cost is on the owner run too
                "expires_at": {"N": str(int(now) + CLOSURE_DAYS * 86400)},
            }
            if move.replaces is None:
                put: dict[str, Any] = {
                    "ConditionExpression": "attribute_not_exists(#s)",
                    "ExpressionAttributeNames": {"#s": "scope"},
                }
            else:
                put = {
                    "ConditionExpression": "#h = :h AND #c = :c",
                    "ExpressionAttributeNames": {"#h": "how", "#c": "cost"},
                    "ExpressionAttributeValues": {
                        ":h": {"S": move.replaces.how},
                        ":c": {"N": str(move.replaces.cost)},
                    },
                }
            items.append({"Put": {"TableName": self.table, "Item": end, **put}})
            deltas = {
                "committed": move.committed,
                "reserved": move.reserved,
                "settled": move.settled,
                "estimated": move.estimated,
            }
            exp = self._exp(day)
            items.append(self._add(_k(DAILY, day), deltas, expires=exp))
            if pr:
                items.append(
                    self._add(
                        _k(f"pr@{day}", pr), {k: deltas[k] for k in ("committed", "settled")}, expires=exp
                    )
                )
            hour = hour_of(at or now)
            for use_model, use in self._usage_deltas(move, tokens, worst, model, prior_model, prior_worst):
                items.append(self._add(_k(f"use@{hour}", use_model), use, expires=exp))
            if owner and move.closure.how != "released":
                items.append(attribution(owner, rid, move.closure.cost))
            if self._transact(items) is None:
                return move
            # Closed meanwhile (a repeat, the sweeper, or another worker): decide again from the closure.
            item = self._get(end_key)
            is_open = item is None and self._get(res_key) is not None
            prior = Closed(_s(item.get("how")) or "", _n(item.get("cost"))) if item else None
            if item:
                prior_model = _s(item.get("model")) or model
                prior_worst = (_n(item.get("wi")), _n(item.get("wo"))) if "wi" in item else worst
        raise RuntimeError(f"reservation {rid} kept changing while being closed")

    @staticmethod
    def _usage_deltas(
        move: Move,
        tokens: Any,
        worst: tuple[int, int],
        model: str | None,
        prior_model: str | None,
        prior_worst: tuple[int, int],
    ) -> list[tuple[str, dict[str, int]]]:
        """(model, counters) for the use@ items of the call's hour. An exact settle replacing an estimate also
        takes back every counter the estimate added, under the model and worst case the estimate was booked with
        (the estimate names the requested model, the settle the served one), or reconciliation would still count
        the call as estimated."""
        if move.closure.how == "released":
            return []
        out: dict[str, dict[str, int]] = {}
        if model:
            out[model] = usage_deltas(
                tokens, cost=move.closure.cost, estimated=not move.exact_call, worst=worst, model=model
            )
        if move.replaces is not None and move.replaces.how in ("estimated", "expired") and prior_model:
            undo = usage_deltas(
                None, cost=move.replaces.cost, estimated=True, worst=prior_worst, model=prior_model
            )
            row = out.setdefault(prior_model, {})
            for k, v in undo.items():
                row[k] = row.get(k, 0) - v
        return [(m, d) for m, d in out.items() if d]

    def _project(self, day: str, pr: str | None, sent: float, **deltas: int) -> None:
        """Add what this process just booked (a reservation, a settle, a release; its transaction first sent at
        `sent`) to the cached statuses it touched, so the status reported between reads is the last read plus this
        process's own bookings since. Only to a status whose read had returned before `sent`: a read that overlapped
        the transaction may already hold it, and counting it twice would no longer be a lower bound."""
        with _seen_lock:
            seen = _seen_of(self.ddb)
            if not seen:
                return
            for key in ((DAILY, day), (f"pr@{day}", pr or "")) if pr else ((DAILY, day),):
                entry = seen.get((self.table, *key))
                if entry is None or entry.at > sent:
                    continue
                t = entry.total
                t.committed += deltas.get("committed", 0)
                t.reserved += deltas.get("reserved", 0)
                t.settled += deltas.get("settled", 0)

    def _status_of(self, key: dict[str, Any], limit: int) -> tuple[Total, int, bool]:
        """(total, reconciled, crossed) of one scope after a settle: read when the cached one is older than
        STATUS_EVERY_S, missing, or projected at/over 80 % of a limit not yet marked crossed; else the projection
        (crossed False: only a read marks a crossing, with the conditional write, so exactly one caller notices)."""
        ck = (self.table, key["scope"]["S"], key["day"]["S"])
        with _seen_lock:
            seen = _seen_of(self.ddb)
            entry = seen.get(ck) if seen is not None else None
            if entry is not None:
                t = entry.total
                fresh = self.monotonic() - entry.at < STATUS_EVERY_S
                if fresh and (t.a80 or not reaches_80(t.settled, limit)):
                    return replace(t), entry.reconciled, False
        item = self._get(key) or {}
        at = self.monotonic()
        t, reconciled = _total(item), _n(item.get("reconciled"))
        crossed = reaches_80(t.settled, limit) and not t.a80 and self._mark_80(key)
        t.a80 = t.a80 or reaches_80(t.settled, limit)  # marked now, by this caller or (refused) by another
        with _seen_lock:
            seen = _seen_of(self.ddb)
            if seen is not None:
                if len(seen) >= _STATUS_ENTRIES:
                    for old in sorted(seen, key=lambda k: seen[k].at)[: len(seen) // 2]:
                        del seen[old]
                seen[ck] = _Seen(at, replace(t), reconciled)
        return t, reconciled, crossed

    def _statuses(self, day: str, pr: str | None, booked: bool) -> SpendStatus:
        """The day's status after a settle, with the PR's in `others` only when the PR may have reached 80 % of its
        limit: a PR's bookings are part of the day's (settled - reconciled, reconciliation moves only the day), so
        while the day's bookings are below 80 % of the PR limit no PR can be there, and its read is skipped.
        Each status is read at most every STATUS_EVERY_S per process, or at once near 80 % (_status_of)."""
        out = []
        day_bookings = None
        for scope, key, limit in (
            (DAILY, _k(DAILY, day), self.daily_limit),
            (pr, _k(f"pr@{day}", pr or ""), self.pr_limit),
        ):
            if scope is None:
                continue
            if scope != DAILY and day_bookings is not None and not reaches_80(day_bookings, limit):
                continue
            t, reconciled, crossed = self._status_of(key, limit)
            if scope == DAILY:
                day_bookings = t.settled - reconciled
            out.append(_status(t, scope, day, limit, crossed))
        return replace(out[0], others=tuple(out[1:]), booked=booked)

    def _mark_80(self, key: dict[str, Any]) -> bool:
        """Conditional write: succeeds once per scope per day, so exactly one caller sends the notice."""
        try:
            self.ddb.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET a80 = :t",
                ConditionExpression="attribute_not_exists(a80)",
                ExpressionAttributeValues={":t": {"BOOL": True}},
            )
            return True
        except Exception as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise

    def _open_reservations(self, now: float) -> Iterator[dict[str, Any]]:
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
                    yield {**item, "_day": day}
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def release_expired(self, *, now: float) -> int:
        """For the sweeper: book reservations past their deadline at their worst case (`expired`), never release
        them: the Lambda that held one may have made a billed call before it died or failed to settle."""
        n = 0
        for item in list(self._open_reservations(now)):
            if _n(item.get("deadline")) > now:
                continue
            amount = _n(item.get("amount"))
            n += None is not self._close(
                item["_day"],
                item["day"]["S"],
                _s(item.get("pr")) or None,
                amount,
                "expired",
                amount,
                now=now,
                model=_s(item.get("model")) or None,
                worst=(_n(item.get("wi")), _n(item.get("wo"))),
                at=float(_n(item.get("at"))),
                owner=_owner(item),
            )
        return n

    def status(self, scope: str = DAILY, *, now: float) -> SpendStatus:
        day = self.day(now)
        key = _k(DAILY, day) if scope == DAILY else _k(f"pr@{day}", scope)
        return _status(
            _total(self._get(key)), scope, day, self.daily_limit if scope == DAILY else self.pr_limit
        )

    def adjust(self, day: str, hour: str, model: str, want: int, *, now: float) -> int:
        """Reconciliation: make the adjustment booked for (hour, model) equal `want`, once however often it runs
        (a marker item holds what was applied); returns the micro-dollars added to the day total now."""
        key = _k(f"rec@{hour}", model)
        for _ in range(5):
            prev_item = self._get(key)
            prev = _n(prev_item.get("applied")) if prev_item else None
            delta = int(want) - (prev or 0)
            if delta == 0:
                return 0
            if prev is None:
                cond: dict[str, Any] = {
                    "ConditionExpression": "attribute_not_exists(#s)",
                    "ExpressionAttributeNames": {"#s": "scope"},
                }
            else:
                cond = {
                    "ConditionExpression": "applied = :p",
                    "ExpressionAttributeValues": {":p": {"N": str(prev)}},
                }
            marker = {
                **key,
                "applied": {"N": str(int(want))},
                "budget_day": {"S": day},
                "expires_at": self._exp(day),
            }
            items = [
                {"Put": {"TableName": self.table, "Item": marker, **cond}},
                self._add(
                    _k(DAILY, day),
                    {"committed": delta, "settled": delta, "reconciled": delta},
                    expires=self._exp(day),
                ),
            ]
            if self._transact(items) is None:
                return delta
        raise RuntimeError(f"reconciliation marker {hour}/{model} kept changing")

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
            i["day"]["S"]: {k: _n(v) for k, v in i.items() if k not in ("scope", "day", "expires_at")}
            for i in page.get("Items", [])
        }


__all__ = [
    "DAILY",
    "Book",
    "BudgetExceeded",
    "Closed",
    "Ledger",
    "Reservation",
    "SpendStatus",
    "close",
    "day_end",
    "forget_statuses",
    "day_of",
    "fits",
    "hour_of",
    "input_bound",
    "reaches_80",
    "refusal_cause",
]
