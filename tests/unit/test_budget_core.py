"""The reserve/settle/release protocol on the pure core, over arbitrary interleavings (hypothesis)."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from prfleet.budget import DAILY, Book, BudgetExceeded, day_end, day_of, fits, reaches_80

DAILY_LIMIT = 1_000
PR_LIMIT = 400
PRS = ["pr#o/r#1", "pr#o/r#2", "pr#o/r#3"]
T0 = 1_795_000_000


class LedgerProtocol(RuleBasedStateMachine):
    """Many workers interleave reserve / settle / release / sweep / time passing on one Book."""

    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.book = Book(daily_limit_micros=DAILY_LIMIT, pr_limit_micros=PR_LIMIT)
        self.now = T0
        self.actual: dict[str, int] = {}  # day -> sum of settled costs
        self.actual_pr: dict[tuple[str, str], int] = {}
        self.open: dict[str, int] = {}  # reservation id -> amount, still held
        self.alerts: list[tuple[str, str]] = []

    @rule(
        target=reservations,
        pr=st.sampled_from([*PRS, None]),
        amount=st.integers(0, 450),
        ttl=st.integers(1, 600),
    )
    def reserve(self, pr, amount, ttl):
        before = self.book.status(now=self.now)
        try:
            r = self.book.reserve(pr, amount, now=self.now, ttl=ttl)
        except BudgetExceeded as exc:
            # A refusal is only allowed when the amount really does not fit one of the scopes.
            pr_committed = self.book.status(exc.scope, now=self.now).committed
            limit = DAILY_LIMIT if exc.scope == DAILY else PR_LIMIT
            assert not fits(pr_committed, amount, limit)
            assert exc.available == max(0, limit - pr_committed)
            return None
        assert fits(before.committed, amount, DAILY_LIMIT)
        self.open[r.id] = amount
        return r

    @rule(r=consumes(reservations), frac=st.floats(0, 1))
    def settle(self, r, frac):
        # A reservation past its deadline belongs to a dead worker (ttl > Lambda timeout): it is never
        # settled, only released by the sweeper. (A late settle is covered by the integration test.)
        if r is None or self.now >= r.expires_at:
            return
        actual = int(r.amount * frac)
        status = self.book.settle(r, actual, now=self.now)
        self.open.pop(r.id, None)
        self.actual[r.day] = self.actual.get(r.day, 0) + actual
        if r.pr_scope:
            key = (r.day, r.pr_scope)
            self.actual_pr[key] = self.actual_pr.get(key, 0) + actual
        for s in (status, *status.others):
            if s.crossed_80:
                assert reaches_80(s.settled, s.limit)
                assert (s.day, s.scope) not in self.alerts
                self.alerts.append((s.day, s.scope))

    @rule(r=consumes(reservations))
    def release(self, r):
        if r is None:
            return
        self.book.release(r, now=self.now)
        self.open.pop(r.id, None)

    @rule(dt=st.integers(1, 50_000))
    def time_passes(self, dt):
        self.now += dt

    @rule()
    def sweep(self):
        expired = {rid for st_ in self.book.days.values() for rid in st_.expired(self.now)}
        assert self.book.release_expired(now=self.now) == len(expired)
        for rid in expired:
            self.open.pop(rid, None)

    @invariant()
    def committed_never_exceeds_limits(self):
        for s in self.book.days.values():
            assert s.committed == s.settled + s.reserved
            assert 0 <= s.committed <= DAILY_LIMIT
            for pr, c in s.prc.items():
                assert 0 <= c <= PR_LIMIT
                assert c - s.prs.get(pr, 0) == sum(e.amount for e in s.res.values() if e.pr == pr)

    @invariant()
    def settled_equals_sum_of_actual_costs(self):
        for day, s in self.book.days.items():
            assert s.settled == self.actual.get(day, 0)
            for pr, v in s.prs.items():
                assert v == self.actual_pr.get((day, pr), 0)

    @invariant()
    def reserved_equals_open_reservations(self):
        held = sum(e.amount for s in self.book.days.values() for e in s.res.values())
        assert held == sum(self.open.values())
        assert sum(s.reserved for s in self.book.days.values()) == held

    @invariant()
    def alert_seen_whenever_a_scope_reached_80(self):
        for day, s in self.book.days.items():
            if reaches_80(s.settled, DAILY_LIMIT):
                assert (day, DAILY) in self.alerts


TestLedgerProtocol = LedgerProtocol.TestCase
TestLedgerProtocol.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


def test_exhaustive_two_workers_racing_for_the_last_budget():
    """Every order of two workers' reserve/settle steps: at most one fits when only one amount fits."""
    import itertools

    steps = [("A", "reserve"), ("A", "settle"), ("B", "reserve"), ("B", "settle")]
    orders = [
        p
        for p in itertools.permutations(steps)
        if p.index(("A", "reserve")) < p.index(("A", "settle"))
        and p.index(("B", "reserve")) < p.index(("B", "settle"))
    ]
    assert len(orders) == 6
    for order in orders:
        book = Book(daily_limit_micros=100, pr_limit_micros=100)
        held = {}
        for who, op in order:
            if op == "reserve":
                try:
                    held[who] = book.reserve(None, 60, now=T0)
                except BudgetExceeded:
                    held[who] = None
            elif held[who] is not None:
                book.settle(held[who], 60, now=T0)
        s = book.status(now=T0)
        assert s.settled <= 100 and s.reserved == 0
        assert s.settled == 60 * sum(r is not None for r in held.values())


def test_refused_reservation_names_the_scope_and_what_is_left():
    book = Book(daily_limit_micros=1_000, pr_limit_micros=300)
    book.reserve("pr#o/r#1", 250, now=T0)
    with pytest.raises(BudgetExceeded) as exc:
        book.reserve("pr#o/r#1", 100, now=T0)
    assert (exc.value.scope, exc.value.needed, exc.value.available) == ("pr#o/r#1", 100, 50)
    book.reserve("pr#o/r#2", 300, now=T0)
    book.reserve("pr#o/r#3", 300, now=T0)
    with pytest.raises(BudgetExceeded) as exc:
        book.reserve("pr#o/r#4", 200, now=T0)
    assert (exc.value.scope, exc.value.available) == (DAILY, 150)


def test_settle_releases_the_reservation_and_counts_the_actual_cost():
    book = Book(daily_limit_micros=1_000, pr_limit_micros=1_000)
    r = book.reserve("pr#o/r#1", 700, now=T0)
    s = book.settle(r, 120, now=T0 + 10)
    assert (s.settled, s.reserved, s.committed, s.percent) == (120, 0, 120, 12.0)
    assert s.others[0].scope == "pr#o/r#1" and s.others[0].settled == 120
    book.reserve(None, 880, now=T0)  # the released 580 is available again


def test_budget_day_follows_the_configured_time_zone():
    t = 1_795_161_600 - 1  # 2026-11-19 23:59:59 in Los Angeles is 07:59:59 UTC on the 20th
    assert day_of(t, "UTC") == "2026-11-20"
    assert day_of(t, "America/Los_Angeles") == "2026-11-19"
    assert day_end("2026-11-19", "America/Los_Angeles") == t + 1
    book = Book(daily_limit_micros=100, pr_limit_micros=100, tz="America/Los_Angeles")
    book.reserve(None, 100, now=t)
    with pytest.raises(BudgetExceeded):
        book.reserve(None, 1, now=t)
    book.reserve(None, 100, now=t + 1)  # midnight in Los Angeles: a new budget day
