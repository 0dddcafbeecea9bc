"""The daily budget end to end: a budget too small for the sample PR defers jobs (none failed, none lost), the PR
says the budget was reached, and after the budget day changes the deferred jobs run and the review completes."""

from __future__ import annotations

import json
import time

import pytest

from prfleet.jobs import parse_message
from prfleet.store import deferrals, heads, job_runs
from prfleet_local.demo.run import REPO, sandbox
from prfleet_local.stack.moto_proc import FaultPlan, FaultRule

pytestmark = pytest.mark.e2e

# Enough for a few calls: a review call reserves its worst case (max_tokens x the output price) up front.
TINY_BUDGET_USD = 0.14


def _runs_when_done(box, number, head, timeout=120.0):
    """The head's runs once none is running or waiting on a delayed retry (wait_idle does not count delayed
    messages, and a job refused by open reservations comes back with a delay)."""
    deadline = time.monotonic() + timeout
    while True:
        assert box.stack.wait_idle(timeout=max(1.0, deadline - time.monotonic()))
        runs = job_runs.runs_of_head(REPO, number, head)
        if not any(r["status"] in ("running", "retrying", "requeued") for r in runs):
            return runs
        assert time.monotonic() < deadline, [(r["path"], r["agent"], r["status"]) for r in runs]
        time.sleep(0.5)


def _ledger(box):
    items = box.stack.client("dynamodb").scan(TableName=box.stack.table("LedgerTable"))["Items"]
    return {i["day"]["S"]: i for i in items if i["scope"]["S"] == "daily"}


def test_budget_defers_work_then_the_review_completes_after_the_reset(tmp_path, clock_offset):
    with sandbox(
        tmp_path,
        # max_tokens (thinking included) is reserved at the output rate: 4096 keeps a review call's worst case
        # inside the tiny budget, so the day fills by spend, not by one call's size. (8192 did until the review
        # agent read the repository: its later calls carry the callers it grepped and read,
        # and their worst case alone passed $0.14, so no deferred review could ever start on a new day.)
        # Verification off: this is the file jobs' story across budget days; a verify run whose worst case does
        # not fit the budget is tests/e2e/test_verification.py's (posted unverified, or held).
        parameters={
            "DailyBudgetUsd": TINY_BUDGET_USD,
            "BudgetRetrySeconds": 2,
            "ReviewMaxTokens": 4096,
            "Verification": "off",
        },
        sweep_interval=None,
        visibility_timeout=2,
    ) as box:
        number = box.open_sample_pr()
        payload = box.github.webhook_payload("opened", number)
        head = payload["pull_request"]["head"]["sha"]
        assert box.deliver("pull_request", payload)[0] == 202
        assert box.wait_for_review(number, head_sha=head, timeout=120)

        runs = job_runs.runs_of_head(REPO, number, head)
        statuses = [r["status"] for r in runs]
        assert "deferred" in statuses, statuses
        assert "failed" not in statuses
        record = heads.head_record(REPO, number, head)
        assert record.planned == len(runs) and record.complete and not record.final
        deferred = deferrals.deferred_jobs()
        waiting = {parse_message(r["job"]).job_id: r for r in runs if r["status"] == "deferred"}
        assert {parse_message(e["job"]).job_id for e in deferred} == set(waiting)
        for e in deferred:  # stored as the next attempt, carrying what the job has cost so far
            job = parse_message(e["job"])
            assert job.attempt >= 1 and job.spent_micros == int(waiting[job.job_id]["cost_micros"])
        assert all("budget" in e["reason"] for e in deferred)

        # The PR shows that the budget was reached: a neutral check (never a failing one) and a partial review.
        (check,) = box.github.check_runs_for(head)
        assert (check["status"], check["conclusion"]) == ("completed", "neutral")
        assert "budget" in (check["output"]["title"] + check["output"]["summary"]).lower()
        (day,) = _ledger(box).values()
        assert int(day["settled"]["N"]) + int(day.get("reserved", {"N": "0"})["N"]) <= TINY_BUDGET_USD * 1e6

        # Same day: the sweeper keeps them waiting.
        box.stack.sweep()
        assert box.stack.wait_idle(timeout=120)
        assert len(deferrals.deferred_jobs()) == len(deferred)

        # Each new day the sweeper re-queues them, oldest first, until the review completes. How much of the PR
        # ran on the first day depends on scheduling, so the rest may need more than one further day; each day's
        # spend stays inside its own budget (checked below), and every day makes progress.
        # On the first new day the sweeper's first take of a deferred entry is answered 500 after DynamoDB applied
        # it (botocore's retry is then refused): that job must still be re-queued, not left deferred for good.
        waiting_before = len(deferred)
        for day_number in range(1, 6):
            clock_offset(86400 * day_number)
            if day_number == 1:
                box.stack.moto.set_faults(
                    FaultPlan(
                        [
                            FaultRule(
                                "lost_response",
                                tables=["StateTable"],
                                operations=["DeleteItem"],
                                requests=[1],
                            )
                        ]
                    )
                )
            box.stack.sweep()
            if day_number == 1:
                assert box.stack.moto.injected(), "the lost response was not injected"
                box.stack.moto.set_faults(FaultPlan())
            runs = _runs_when_done(box, number, head)
            still = len(deferrals.deferred_jobs())
            if not still:
                break
            assert still < waiting_before, f"day {day_number}: no deferred job ran"
            waiting_before = still
        assert all(r["status"] == "succeeded" for r in runs), [
            (r["path"], r["agent"], r["status"], r.get("error")) for r in runs if r["status"] != "succeeded"
        ]
        assert deferrals.deferred_jobs() == []
        record = heads.head_record(REPO, number, head)
        assert record.final and record.posted == "final"
        (check,) = box.github.check_runs_for(head)
        assert check["conclusion"] == "success"
        days = _ledger(box)
        assert len(days) == day_number + 1  # spend landed on each new day's ledger item
        assert all(int(d["settled"]["N"]) <= TINY_BUDGET_USD * 1e6 for d in days.values())
        assert sum(int(d["settled"]["N"]) for d in days.values()) == sum(int(r["cost_micros"]) for r in runs)
        dlq = box.stack.client("sqs").get_queue_attributes(
            QueueUrl=box.stack.queue_url("JobsDLQ"), AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        assert dlq["ApproximateNumberOfMessages"] == "0"
        bodies = [json.loads(r.get("findings") or "[]") for r in runs]
        assert any(bodies)


def test_a_spend_limit_pauses_the_fleet_with_neutral_checks_until_the_probe_gets_through(
    tmp_path, clock_offset
):
    from prfleet.cost import circuit
    from prfleet_local.model.server import FaultPlan, FaultRule

    # Every call meets the workspace's spend limit (a 400 with the documented message) until it is raised.
    limit = FaultPlan(rules=[FaultRule("spend_limit_workspace", probability=1.0)])
    with sandbox(tmp_path, faults=limit, sweep_interval=None, visibility_timeout=2) as box:
        inbox = box.stack.subscribe_alerts()
        number = box.open_sample_pr()
        payload = box.github.webhook_payload("opened", number)
        head = payload["pull_request"]["head"]["sha"]
        assert box.deliver("pull_request", payload)[0] == 202
        assert box.wait_for_review(number, head_sha=head, timeout=120)
        runs = job_runs.runs_of_head(REPO, number, head)
        assert {r["status"] for r in runs} == {"deferred"}, [
            (r["path"], r["status"], r.get("error")) for r in runs
        ]
        assert all("spend limit" in r["error"] for r in runs)
        assert all(e["until"] == "circuit" for e in deferrals.deferred_jobs())
        # Not a failing check: neutral, with the reason (the API's spend limit, not prfleet's budget).
        (check,) = box.github.check_runs_for(head)
        assert (check["status"], check["conclusion"]) == ("completed", "neutral")
        assert "spend limit" in check["output"]["title"], check["output"]["title"]
        assert "spend limit" in check["output"]["summary"] and "budget" not in check["output"]["title"]
        # Exactly one notice for the whole fleet, however many jobs met the limit.
        notices = [m for m in inbox.receive(wait=2.0) if m.body.get("notice") == "spend-limit-circuit-open"]
        assert len(notices) == 1 and "spend limit" in notices[0].body["reason"]
        calls = len(box.model.requests)
        # No worker calls the API while the circuit is open; the sweeper probes only after its interval.
        box.stack.sweep()
        assert len(box.model.requests) == calls and len(deferrals.deferred_jobs()) == len(runs)
        # The limit is raised; the next probe gets through, the circuit closes, the jobs run and the review completes.
        box.model.set_faults(FaultPlan())
        clock_offset(circuit.PROBE_EVERY_S + 1)
        counts = box.stack.sweep()
        assert counts["probed"] == 1 and counts["requeued"] == len(runs)
        runs = _runs_when_done(box, number, head)
        assert {r["status"] for r in runs} == {"succeeded"}, [
            (r["path"], r["status"], r.get("error")) for r in runs
        ]
        (check,) = box.github.check_runs_for(head)
        assert check["conclusion"] == "success"
        (day,) = _ledger(box).values()
        assert int(day["settled"]["N"]) == sum(int(r["cost_micros"]) for r in runs) + _probe_cost(box)


def _probe_cost(box):
    """What the sweeper's probe booked (its usage item's exact cost for the probe's model)."""
    items = box.stack.client("dynamodb").scan(TableName=box.stack.table("LedgerTable"))["Items"]
    ends = [i for i in items if i["scope"]["S"].startswith("end@") and not i["pr"]["S"]]
    return sum(int(i["cost"]["N"]) for i in ends)
