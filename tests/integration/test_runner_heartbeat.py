"""The run's heartbeat and the circuit are read at most once a minute during a run, not around every model call
(docs/performance.md, job cost), without giving up what they are for: a run that is no longer ours (marked stuck
by the sweeper after 300 s of silence) reserves nothing, and a circuit this run's own call opened stops its next
call. Against the moto server, with the runner's LedgerGuard and a clock the test moves."""

from __future__ import annotations

import time

import pytest

from prfleet.config import settings
from prfleet.cost.guard import CIRCUIT_RECHECK_S, HEARTBEAT_EVERY_S, CircuitOpen, LedgerGuard
from prfleet.cost.ledger import Ledger
from prfleet.pipeline import runner
from prfleet.store import job_runs
from tests.integration.test_budget_billing import Events, endpoint, env, job  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("env")  # moto tables and settings (test_budget_billing)
PARAMS = {"model": "claude-haiku-5-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def guard_at(clock: list[float], j, run_id: str, **options) -> LedgerGuard:
    return runner.run_guard(
        Ledger.from_settings(settings()),
        j,
        run_id,
        "claude-haiku-5-5",
        Events(),
        clock=lambda: clock[0],
        **options,
    )


def call(guard: LedgerGuard) -> None:
    """One call's reservation, given back (no model: only what happens before the call is under test)."""
    token = guard.before_call("claude-haiku-5-5", PARAMS)
    guard.ledger.release(token.reservation, now=guard.clock())


def test_the_heartbeat_is_refreshed_once_a_minute_and_a_run_no_longer_ours_reserves_nothing():
    t0 = time.time()
    clock = [t0]
    j = job(11)
    job_runs.start_run(j, "run-hb", "claude-haiku-5-5", now=t0)
    guard = guard_at(clock, j, "run-hb", claimed_at=t0)

    clock[0] = t0 + 10
    call(guard)
    call(guard)
    assert job_runs.get_run(j)["updated_at"] == int(t0)  # the claim is fresh: no write per call

    clock[0] = t0 + HEARTBEAT_EVERY_S + 5
    call(guard)
    assert job_runs.get_run(j)["updated_at"] == int(clock[0])

    # Silent past the stuck limit (say, a model call that hung): the sweeper takes the run.
    clock[0] += 400
    assert job_runs.mark_stuck(job_runs.get_run(j), now=clock[0], reason="no event") == 1
    committed = guard.ledger.status(now=clock[0]).committed
    with pytest.raises(job_runs.RunInProgress):
        call(guard)
    assert guard.ledger.status(now=clock[0]).committed == committed  # nothing reserved for a run not ours


def test_without_a_claim_time_the_first_call_proves_the_run_is_ours():
    t0 = time.time()
    clock = [t0]
    j = job(12)
    job_runs.start_run(j, "run-first", "claude-haiku-5-5", now=t0)
    job_runs.finish_run(
        j, "run-first", "retrying", {"error": "x"}, owner=True, now=t0
    )  # given back meanwhile
    with pytest.raises(job_runs.RunInProgress):
        call(guard_at(clock, j, "run-first"))


def test_the_circuit_is_read_once_a_minute_during_a_run():
    t0 = time.time()
    clock = [t0]
    j = job(13)
    job_runs.start_run(j, "run-circ", "claude-haiku-5-5", now=t0)
    reads: list[float] = []
    is_open = [False]

    def check() -> str | None:
        reads.append(clock[0])
        return "spend limit" if is_open[0] else None

    guard = guard_at(clock, j, "run-circ", claimed_at=t0, circuit_read_at=t0, circuit_check=check)
    clock[0] = t0 + 5
    call(guard)
    assert reads == []  # read by the runner right after the claim
    clock[0] = t0 + CIRCUIT_RECHECK_S + 1
    call(guard)
    assert reads == [clock[0]]
    clock[0] += 5
    is_open[0] = True  # opened by another worker: this run meets it at its next read (or in the call itself)
    call(guard)
    assert len(reads) == 1
    clock[0] += CIRCUIT_RECHECK_S
    with pytest.raises(CircuitOpen):
        guard.before_call("claude-haiku-5-5", PARAMS)
    # After this run's own spend-limit error the next call reads the circuit at once: covered by
    # test_budget_billing.py::test_a_spend_limit_opens_the_circuit_once_and_the_probe_closes_it.
