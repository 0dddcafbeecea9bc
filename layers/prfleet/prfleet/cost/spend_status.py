"""The day's (and a PR's) spend status after a settle, read at most every STATUS_EVERY_S per process.

Its only uses are the DailySpendPercent / DailySpendUsd metric and the once-per-day 80 % notice; the limits
themselves are enforced by the reservation's conditional transaction (prfleet.cost.ledger), never by this read.
Between reads a settle reports the last read plus what this process booked on the scope since (see _Seen), and
reads at once when that projection reaches 80 % of a limit not yet marked crossed. Why 60 s: SpendAlarm takes the
Maximum of DailySpendPercent over 300 s periods, so a fresh value at least every 60 s from each settling container
(and the sweeper's, every minute) lands in the period of a crossing or at worst the next one, and a lower value
published meanwhile cannot hide a fresh one (Maximum); the notice is late by at most 60 s after another
container's settle crosses 80 % (at once when this container's own settle does).
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, replace
from typing import Any

from prfleet.cost.booking import DAILY, Total, percent, reaches_80
from prfleet.cost.ledger_table import LedgerTable, error_code, key, num, total_of

STATUS_EVERY_S = 60.0
_STATUS_ENTRIES = 512  # per client: a container works on a few PRs at a time; old entries are re-read


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
    estimated: int = (
        0  # part of `settled` booked at a worst case (may have been billed; see prfleet.cost.billing)
    )
    booked: bool = True  # False when this settle was a repeat and booked nothing

    @property
    def committed(self) -> int:
        return self.settled + self.reserved


def spend_status(t: Total, scope: str, day: str, limit: int, crossed: bool = False) -> SpendStatus:
    """The status of one scope's total."""
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


class StatusCache:
    """The statuses this process last read from the ledger's table, with its own bookings since projected on them."""

    def __init__(self, db: LedgerTable, *, monotonic: Any = time.monotonic) -> None:
        self.db = db
        self.monotonic = monotonic  # the cache's clock (STATUS_EVERY_S)

    def project(self, day: str, pr: str | None, sent: float, **deltas: int) -> None:
        """Add what this process just booked (a reservation, a settle, a release; its transaction first sent at
        `sent`) to the cached statuses it touched, so the status reported between reads is the last read plus this
        process's own bookings since. Only to a status whose read had returned before `sent`: a read that overlapped
        the transaction may already hold it, and counting it twice would no longer be a lower bound."""
        with _seen_lock:
            seen = _seen_of(self.db.ddb)
            if not seen:
                return
            for scope_day in ((DAILY, day), (f"pr@{day}", pr or "")) if pr else ((DAILY, day),):
                entry = seen.get((self.db.table, *scope_day))
                if entry is None or entry.at > sent:
                    continue
                t = entry.total
                t.committed += deltas.get("committed", 0)
                t.reserved += deltas.get("reserved", 0)
                t.settled += deltas.get("settled", 0)

    def after_settle(
        self, day: str, pr: str | None, booked: bool, *, daily_limit: int, pr_limit: int
    ) -> SpendStatus:
        """The day's status after a settle, with the PR's in `others` only when the PR may have reached 80 % of its
        limit: a PR's bookings are part of the day's (settled - reconciled, reconciliation moves only the day), so
        while the day's bookings are below 80 % of the PR limit no PR can be there, and its read is skipped.
        Each status is read at most every STATUS_EVERY_S per process, or at once near 80 % (_read)."""
        out = []
        day_bookings = None
        for scope, scope_key, limit in (
            (DAILY, key(DAILY, day), daily_limit),
            (pr, key(f"pr@{day}", pr or ""), pr_limit),
        ):
            if scope is None:
                continue
            if scope != DAILY and day_bookings is not None and not reaches_80(day_bookings, limit):
                continue
            t, reconciled, crossed = self._read(scope_key, limit)
            if scope == DAILY:
                day_bookings = t.settled - reconciled
            out.append(spend_status(t, scope, day, limit, crossed))
        return replace(out[0], others=tuple(out[1:]), booked=booked)

    def _read(self, scope_key: dict[str, Any], limit: int) -> tuple[Total, int, bool]:
        """(total, reconciled, crossed) of one scope after a settle: read when the cached one is older than
        STATUS_EVERY_S, missing, or projected at/over 80 % of a limit not yet marked crossed; else the projection
        (crossed False: only a read marks a crossing, with the conditional write, so exactly one caller notices)."""
        ck = (self.db.table, scope_key["scope"]["S"], scope_key["day"]["S"])
        with _seen_lock:
            seen = _seen_of(self.db.ddb)
            entry = seen.get(ck) if seen is not None else None
            if entry is not None:
                t = entry.total
                fresh = self.monotonic() - entry.at < STATUS_EVERY_S
                if fresh and (t.a80 or not reaches_80(t.settled, limit)):
                    return replace(t), entry.reconciled, False
        item = self.db.get(scope_key) or {}
        at = self.monotonic()
        t, reconciled = total_of(item), num(item.get("reconciled"))
        crossed = reaches_80(t.settled, limit) and not t.a80 and self._mark_80(scope_key)
        t.a80 = t.a80 or reaches_80(t.settled, limit)  # marked now, by this caller or (refused) by another
        with _seen_lock:
            seen = _seen_of(self.db.ddb)
            if seen is not None:
                if len(seen) >= _STATUS_ENTRIES:
                    for old in sorted(seen, key=lambda k: seen[k].at)[: len(seen) // 2]:
                        del seen[old]
                seen[ck] = _Seen(at, replace(t), reconciled)
        return t, reconciled, crossed

    def _mark_80(self, scope_key: dict[str, Any]) -> bool:
        """Conditional write: succeeds once per scope per day, so exactly one caller sends the notice."""
        try:
            self.db.ddb.update_item(
                TableName=self.db.table,
                Key=scope_key,
                UpdateExpression="SET a80 = :t",
                ConditionExpression="attribute_not_exists(a80)",
                ExpressionAttributeValues={":t": {"BOOL": True}},
            )
            return True
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
