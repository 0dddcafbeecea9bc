"""The deferred queue's keys (store/deferrals.py): a Query of sort keys below `due_bound(now)` returns exactly the
next-day deferrals due by `now`, earliest first; circuit waiters have a partition of their own; an entry of the old
layout maps to the key it would have been written with now."""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

import pytest

from prfleet.store import deferrals

JOB = "0123456789abcdef01234567"


def _epoch(y: int, m: int, d: int, h: int = 0, tz: str = "UTC") -> int:
    return int(dt.datetime(y, m, d, h, tzinfo=ZoneInfo(tz)).timestamp())


def test_a_next_day_deferral_is_due_when_its_budget_day_ends():
    assert deferrals.due_at("2026-03-10", "UTC") == _epoch(2026, 3, 11)
    # The budget day is the configured zone's, daylight saving time included: New York's 7 March ends at 05:00 UTC,
    # 8 March (clocks forward at 02:00) at 04:00 UTC.
    assert deferrals.due_at("2026-03-07", "America/New_York") == _epoch(2026, 3, 8, 5)
    assert deferrals.due_at("2026-03-08", "America/New_York") == _epoch(2026, 3, 9, 4)
    assert deferrals.due_at("2026-12-31", "Asia/Tokyo") == _epoch(2026, 12, 31, 15)


def test_the_keys_below_the_bound_are_exactly_the_due_entries():
    now = 1_773_187_200
    dues = [now - 86400, now - 1, now, now + 1, now + 3600, 999_999_999, 1_000_000_000, 9_999_999_999]
    keys = [deferrals.entry_key(until="day", created=1_773_000_000.5, job_id=JOB, due=d)["sk"] for d in dues]
    bound = deferrals.due_bound(now)
    assert [d for d, k in zip(dues, keys, strict=True) if k < bound] == [d for d in dues if d <= now]
    # A fraction of a second past the start of the day: still due, the next second's entries not yet.
    assert deferrals.due_bound(now + 0.999) == deferrals.due_bound(now)


def test_day_keys_sort_by_due_time_then_by_when_they_were_deferred():
    rng = random.Random(26)
    entries = [
        (rng.choice([1_700_000_000, 1_700_086_400, 999_999_999]), rng.uniform(1e9, 2e9)) for _ in range(200)
    ]
    keys = {deferrals.entry_key(until="day", created=c, job_id=JOB, due=d)["sk"]: (d, c) for d, c in entries}
    by_key = [keys[k] for k in sorted(keys)]  # DynamoDB's order: the sort key's UTF-8 bytes
    assert by_key == sorted(keys.values())


def test_circuit_waiters_have_a_partition_of_their_own_oldest_first():
    a = deferrals.entry_key(until="circuit", created=1_773_154_801.25, job_id=JOB)
    b = deferrals.entry_key(until="circuit", created=1_773_154_900.0, job_id=JOB)
    assert a["pk"] == b["pk"] == deferrals.CIRCUIT_PK != deferrals.DAY_PK
    assert a["sk"] == f"1773154801.250000#{JOB}" and a["sk"] < b["sk"]
    day = deferrals.entry_key(until="day", created=1_773_154_801.25, job_id=JOB, due=1_773_187_200)
    assert day == {"pk": deferrals.DAY_PK, "sk": f"1773187200#1773154801.250000#{JOB}"}
    with pytest.raises(ValueError):
        deferrals.entry_key(until="day", created=1.0, job_id=JOB)


@pytest.mark.parametrize(
    ("until", "pk", "due"),
    [
        ("day", deferrals.DAY_PK, 1_773_187_200),
        (None, deferrals.DAY_PK, 1_773_187_200),
        ("circuit", deferrals.CIRCUIT_PK, None),
    ],
)
def test_an_entry_of_the_old_layout_gets_the_key_it_would_be_written_with_now(until, pk, due):
    old = {
        "pk": "DEFERRED",
        "sk": f"1773154801.250000#{JOB}",
        "day": "2026-03-10",
        "job": "{}",
        "reason": "r",
    }
    if until is not None:
        old["until"] = until
    new = deferrals.relocated(old, "UTC")
    expected = deferrals.entry_key(until=until or "day", created=1_773_154_801.25, job_id=JOB, due=due)
    assert (new["pk"], new["sk"]) == (pk, expected["sk"])
    assert new["due"] == due and new["until"] == (until or "day")
    assert {k: new[k] for k in ("day", "job", "reason")} == {"day": "2026-03-10", "job": "{}", "reason": "r"}
