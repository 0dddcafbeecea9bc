"""A job whose every invocation is killed (Lambda timeout or crash: no handler code runs after that point, so the
handler's own last-attempt recording never happens) still ends in a recorded end state with its reason, and its
message is in the DLQ once, body intact; the PR's check completes (docs/reliability.md, soak finding 1).

How: the agent's last receive stores `last_delivery` on the run it claims; when that invocation dies, the run's
heartbeat goes silent, and the sweeper's stuck check fails the run with the reason instead of re-queuing a copy
of a message SQS has already dead-lettered. In AWS the redelivery after a kill comes after the queue's visibility
timeout (1800 s = 6 x the agent's 300 s Timeout), by when the dead claim's heartbeat is stale; locally the
redelivery comes after seconds, so prfleet's clock is moved on (CLOCK_OFFSET_SECONDS) while the pollers are paused.
"""

from __future__ import annotations

import json
import time

import pytest

from prfleet import state
from prfleet_local.demo.run import REPO, sandbox
from prfleet_local.stack.invocations import InvocationFault

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
        head = payload["pull_request"]["head"]["sha"]
        assert box.deliver("pull_request", payload)[0] == 202
        agent = box.stack.functions["AgentFunction"]

        def run() -> dict | None:
            runs = state.runs_of_head(REPO, number, head)
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
