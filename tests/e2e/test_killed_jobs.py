"""A job whose every invocation is killed (Lambda timeout or crash: no handler code runs after that point, so the
handler's own last-attempt recording never happens) still ends in a recorded end state with its reason, and its
message is in the DLQ once, body intact; the PR's check completes (docs/reliability.md, soak finding 1).

How: the agent's last receive stores `last_delivery` on the run it claims; when that invocation dies, the run's
heartbeat goes silent, and the sweeper's stuck check fails the run with the reason instead of re-queuing a copy
of a message SQS has already dead-lettered. In AWS the redelivery after a kill comes after the queue's visibility
timeout (1800 s = 6 x the agent's 300 s Timeout), by when the dead claim's heartbeat is stale; locally the
redelivery comes after seconds, so prfleet's clock is moved on (CLOCK_OFFSET_SECONDS) while the pollers are paused.

A crash in the middle of a model call (`InvocationFault(..., during="model_call")`) is billed by the API while
nothing after it runs: its reservation stays open until the sweeper books it `expired` at its worst case.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from prfleet.cost import pricing
from prfleet.store import job_runs
from prfleet_local.demo.run import REPO, sandbox
from prfleet_local.stack.invocations import InvocationFault
from tests.e2e.test_providers import _usage as bill_usage

pytestmark = pytest.mark.e2e


def wait(what, timeout: float = 60.0, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    return what()


def events(box) -> list[str]:
    """What the handlers said, briefly (for a failing assertion)."""
    out = []
    for line in box.stack.log_lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if "event" in e or e.get("level") in ("ERROR", "WARNING"):
            out.append(
                f"{e.get('timestamp', '')[11:19]} {e.get('event') or e.get('message')} {e.get('reason', '')}"
            )
    return out


def open_util_pr(box) -> tuple[int, str]:
    """A one-file PR reviewed by the review agent alone, delivered to the webhook: (number, head sha)."""
    box.repo.commit(
        {"README.md": "# shop\n", ".prfleet.toml": 'disabled = ["tests", "docs"]\n'},
        "base",
        branch="main",
    )
    box.repo.commit(
        {"shop/util.py": '"""Util."""\n\n\ndef double(x):\n    return 2 * x\n'}, "util", branch="f"
    )
    number = box.github.open_pr(REPO, "main", "f", "Util", "Adds a helper.")
    payload = box.github.webhook_payload("opened", number)
    assert box.deliver("pull_request", payload)[0] == 202
    return number, payload["pull_request"]["head"]["sha"]


def test_a_job_killed_on_every_delivery_ends_failed_with_its_reason_and_its_message_in_the_dlq(
    tmp_path, clock_offset
):
    with sandbox(
        tmp_path,
        parameters={"MaxReceiveCount": 2},
        sweep_interval=None,
        alarm_interval=None,
        visibility_timeout=25,  # no redelivery while an attempt (cold start included) runs; AWS: 1800 s
    ) as box:
        box.stack.inject(InvocationFault("AgentFunction", "crash", after='"api_call"', times=0))
        number, head = open_util_pr(box)
        agent = box.stack.functions["AgentFunction"]

        def run() -> dict | None:
            runs = job_runs.runs_of_head(REPO, number, head)
            return runs[0] if runs else None

        # First receive: claims the run, calls the model, is killed.
        assert wait(lambda: agent.errors >= 1, 90), events(box)
        first = run()
        assert first and first["status"] == "running" and not first["last_delivery"]

        # The redelivery comes when the dead claim's heartbeat is stale (as after AWS's 1800 s visibility timeout).
        box.stack.disable_event_sources()
        clock_offset(400)
        box.stack.enable_event_sources()
        assert wait(lambda: agent.errors >= 2, 90), events(box)
        last = wait(lambda: (r := run()) and r["run_id"] != first["run_id"] and r)
        assert last["status"] == "running" and last["last_delivery"] is True

        # SQS moves the message to JobsDLQ on its next receive, body intact.
        sqs = box.stack.client("sqs")
        dlq = box.stack.queue_url("JobsDLQ")
        got = wait(lambda: sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages"), 90)
        assert got and len(got) == 1
        assert json.loads(got[0]["Body"])["path"] == "shop/util.py"

        # The sweeper finds the run silent past 5 minutes: failed with the reason, not re-queued.
        box.stack.disable_event_sources()
        clock_offset(800)
        counts = box.stack.sweep()
        assert counts["stuck"] == 1 and counts["stuck_failed"] == 1
        ended = run()
        assert ended["status"] == "failed"
        assert "last delivery ended without an outcome" in ended["error"] and "killed" in ended["error"]
        assert "dead-letter queue" in ended["error"]
        assert box.stack.queue_depth("JobsQueue") == 0  # no copy re-sent

        # The failure is logged (ERROR or WARNING) under the delivery id, and the PR's check completed (the review is not owed forever).
        delivery = json.loads(ended["job"])["delivery_id"]
        errors = [
            json.loads(x)
            for x in box.stack.log_lines
            if ('"level":"ERROR"' in x or '"level":"WARNING"' in x) and f'"delivery_id":"{delivery}"' in x
        ]
        assert any("last delivery ended without an outcome" in json.dumps(e) for e in errors), errors[-3:]
        checks = box.github.check_runs_for(head)
        assert checks and checks[-1]["status"] == "completed" and checks[-1]["conclusion"] == "failure"


def _billed_micros(record) -> int:
    """What the offline server's bill charges for one call, at prfleet's prices."""
    return pricing.cost_micros(record.model, bill_usage(record))


def test_a_crash_in_the_middle_of_a_model_call_is_billed_held_then_expired_and_the_job_reviewed_once(
    tmp_path, clock_offset
):
    """An agent invocation killed while its model call streams (`during="model_call"`): the API received and billed
    the call, and nothing after that point ran, so the call's reservation stays open (never settled or released),
    the run stays `running` and the message comes back after its visibility timeout. The sweeper finds the run
    stuck and re-queues the job, which is reviewed once; the reservation stays open until its deadline (900 s),
    when the sweeper books it `expired` at its worst case, never below what the bill charged for that call. At no
    point does the day's ledger hold less than the bill (committed = settled + reserved)."""
    with sandbox(
        tmp_path,
        sweep_interval=None,
        alarm_interval=None,
        visibility_timeout=25,  # no redelivery while an attempt (cold start included) runs; AWS: 1800 s
    ) as box:
        box.stack.inject(InvocationFault("AgentFunction", "crash", during="model_call"))
        number, head = open_util_pr(box)
        agent = box.stack.functions["AgentFunction"]
        ddb = box.stack.client("dynamodb")
        table = box.stack.table("LedgerTable")

        def ledger(prefix: str) -> list[dict]:
            items = ddb.scan(TableName=table)["Items"]
            return [i for i in items if i["scope"]["S"].startswith(prefix)]

        def run() -> dict | None:
            runs = job_runs.runs_of_head(REPO, number, head)
            return runs[0] if runs else None

        def committed(day: str) -> int:
            (total,) = [i for i in ledger("daily") if i["day"]["S"] == day]
            return int(total["committed"]["N"])

        # The first receive claims the run, reserves the call, sends it and is killed before reading the stream.
        assert wait(lambda: agent.errors >= 1, 90), events(box)
        (crashed,) = box.model.bill()  # the API has the call, and bills it
        assert len(box.model.responses) == 1
        billed = _billed_micros(crashed)
        assert billed > 0
        parked = [t for t in threading.enumerate() if t.name.startswith("AgentFunction-")]
        time.sleep(1.0)  # nothing after the crash point runs, however long we wait
        first = run()
        assert first and first["status"] == "running", events(box)
        (held,) = ledger("res@")  # the call's reservation: open, never settled nor released
        assert not ledger("end@"), ledger("end@")
        amount, day = int(held["amount"]["N"]), held["scope"]["S"].removeprefix("res@")
        assert amount >= billed and committed(day) == amount
        assert not any('"api_call"' in x or '"level":"ERROR"' in x for x in box.stack.log_lines), events(box)
        assert len(parked) == 1 and parked[0].is_alive()  # parked inside the call, not unwinding

        # The sweeper finds the run silent past 5 minutes (as in AWS, long before the 1800 s visibility timeout)
        # and re-queues the job; the reservation is not due yet (its deadline is 900 s after it was made).
        box.stack.disable_event_sources()
        clock_offset(400)
        counts = box.stack.sweep()
        assert counts["stuck"] == 1 and counts["stuck_failed"] == 0 and counts["expired"] == 0, counts
        assert ledger("res@") == [held]
        box.stack.enable_event_sources()

        # The re-queued copy is reviewed; the original message, back after its visibility timeout, adds nothing.
        def finished() -> dict | None:
            r = run()
            return r if r and r["status"] == "succeeded" else None

        done = wait(finished, 120)
        assert done, events(box)
        assert wait(lambda: agent.invocations >= 3 and box.stack.queue_depth("JobsQueue") == 0, 90), events(
            box
        )
        assert [r["run_id"] for r in job_runs.runs_of_head(REPO, number, head)] == [done["run_id"]]
        reviews = [r for r in box.github.reviews if r["number"] == number]
        assert len(reviews) == 1, reviews
        checks = box.github.check_runs_for(head)
        assert checks and checks[-1]["status"] == "completed" and checks[-1]["conclusion"] == "success"
        bill = box.model.bill()
        assert len(bill) > 1 and bill[0] == crashed
        after = sum(_billed_micros(r) for r in bill[1:])
        assert ledger("res@") == [held]  # still open: only its deadline closes it
        everything = sum(int(i["committed"]["N"]) for i in ledger("daily"))
        assert everything >= amount + after >= billed + after  # never below the bill

        # Past the reservation's deadline the sweeper books it `expired` at its worst case, never released.
        box.stack.disable_event_sources()
        clock_offset(1000)
        counts = box.stack.sweep()
        assert counts["expired"] == 1, counts
        assert not ledger("res@")
        (closed,) = [i for i in ledger("end@") if i["day"]["S"] == held["day"]["S"]]
        assert closed["how"]["S"] == "expired" and int(closed["cost"]["N"]) == amount >= billed
        days = ledger("daily")
        assert sum(int(i["reserved"]["N"]) for i in days) == 0
        settled = sum(int(i["settled"]["N"]) for i in days)
        assert settled == amount + after >= sum(_billed_micros(r) for r in bill)  # before reconciliation

    # Once the stack has stopped the parked thread ends.
    parked[0].join(30)
    assert not parked[0].is_alive()
