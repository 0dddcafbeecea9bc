"""The alarms fire: scenarios on the whole local stack, each checked twice, in the alarm's state (the template's
alarm definitions evaluated over the metrics the handlers printed as EMF) and in what reached the AlertTopic (an
SQS queue subscribed to it in moto, as an on-call integration would be). Every alarm also returns to OK, with an
OK notification, once its cause is gone.

Time: nothing here waits 5 or 15 minutes. Where a scenario needs a later moment, the alarms are evaluated at a
later `now` (what CloudWatch's own re-evaluation would see once the bad datapoints left the evaluation range:
EvaluationPeriods + 2 periods), or prfleet's clock is moved (CLOCK_OFFSET_SECONDS) for the sweeper, whose
metrics the local CloudWatch then files at that moved time. Run durations are never touched: the p95 scenario
waits for real slow replies.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import time
import uuid

import pytest

from prfleet import state
from prfleet.jobs import FileJob
from prfleet_local.cli.alarms import show_alarms
from prfleet_local.cli.target import target_of
from prfleet_local.demo.run import REPO, sandbox
from prfleet_local.model.server import FaultPlan, FaultRule

pytestmark = pytest.mark.e2e

ALARMS = (
    "ErrorRateAlarm",
    "SpendAlarm",
    "LatencyAlarm",
    "StuckRunsAlarm",
    "JobsQueueAgeAlarm",
    "PrQueueAgeAlarm",
    "JobsDLQAlarm",
    "PrDLQAlarm",
    "WebhookErrorsAlarm",
)
STACK = "prfleet-local"  # LocalStack.stack_name


# ------------------------------------------------------------------------------------------------- helpers


def states(box) -> dict[str, str]:
    """Alarm states by logical id."""
    got = box.stack.evaluator.states
    return {logical: str(got[box.stack.alarm_name(logical)]) for logical in ALARMS}


def evaluate(box, now: float | None = None) -> dict[str, str]:
    box.stack.evaluate_alarms(now=now)
    return states(box)


def notices(inbox, *, wait: float = 5.0) -> dict[str, str]:
    """Alarm -> new state for the alarm notifications that reached the topic since the last call."""
    got = inbox.receive(wait=wait)
    out: dict[str, str] = {}
    for m in got:
        if m.alarm:
            assert m.subject == f'{m.state}: "{m.alarm}" in US East (N. Virginia)'
            assert m.alarm.startswith(f"{STACK}-")
            out[m.alarm[len(STACK) + 1 :]] = m.state
    return out


def open_pr(box, base: dict[str, str], head: dict[str, str], title: str = "Change") -> tuple[int, dict, str]:
    """A pull request on the fake GitHub (real git), delivered to the webhook; returns (number, payload, head).
    `base` is committed on main first (skipped when empty); the PR branches from main."""
    if base:
        box.repo.commit({"README.md": "# shop\n", **base}, "base", branch="main")
    else:
        box.repo.checkout("main")
    box.repo.commit(head, title, branch=f"feature/{uuid.uuid4().hex[:8]}")
    number = box.github.open_pr(REPO, "main", box.repo.current_branch(), title, "What it does.")
    payload = box.github.webhook_payload("opened", number)
    status, reply = box.deliver("pull_request", payload)
    assert status == 202, reply
    return number, payload, payload["pull_request"]["head"]["sha"]


def module_text(name: str, functions: int) -> str:
    parts = [f'"""{name}: helpers."""\n']
    for k in range(functions):
        parts.append(
            f"\n\ndef scale_{k}(values, factor=2):\n"
            f'    """Each value times `factor`, plus {k}."""\n'
            "    result = []\n"
            "    for value in values:\n"
            f"        result.append(value * factor + {k})\n"
            "    return result\n"
        )
    return "".join(parts)


def review_sample_pr(box) -> tuple[int, str]:
    number = box.open_sample_pr()
    payload = box.github.webhook_payload("opened", number)
    assert box.deliver("pull_request", payload)[0] == 202
    head = payload["pull_request"]["head"]["sha"]
    assert box.wait_for_review(number, head_sha=head, timeout=120)
    return number, head


def cli(box) -> str:
    out = io.StringIO()
    assert show_alarms(argparse.Namespace(), out=out, target=target_of(box.stack)) == 0
    return out.getvalue()


# ------------------------------------------------------------------------------- healthy, then a poison job


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    with sandbox(
        tmp_path_factory.mktemp("alarms-healthy"),
        parameters={"MaxReceiveCount": 2},
        sweep_interval=None,
        visibility_timeout=2,
    ) as box:
        inbox = box.stack.subscribe_alerts()
        number, head = review_sample_pr(box)
        yield box, inbox, number, head


def test_a_healthy_review_leaves_every_alarm_ok_and_says_so_on_the_topic(healthy):
    box, inbox, number, head = healthy
    runs = state.runs_of_head(REPO, number, head)
    assert len(runs) >= 5 and all(r["status"] == "succeeded" for r in runs)
    assert evaluate(box) == dict.fromkeys(ALARMS, "OK")
    # Every alarm left INSUFFICIENT_DATA for OK; each has OKActions, so each change reached the topic.
    assert notices(inbox) == dict.fromkeys(ALARMS, "OK")
    body = next(m.body for m in inbox.received if m.alarm and m.alarm.endswith("-ErrorRateAlarm"))
    assert body["OldStateValue"] == "INSUFFICIENT_DATA" and body["NewStateValue"] == "OK"
    assert body["AlarmArn"].endswith(f":alarm:{STACK}-ErrorRateAlarm")
    assert [m["Id"] for m in body["Trigger"]["Metrics"]] == ["started", "failed", "errorrate"]
    # Evaluating again changes nothing and publishes nothing.
    assert evaluate(box) == dict.fromkeys(ALARMS, "OK")
    assert notices(inbox, wait=1.0) == {}


def test_a_poison_job_raises_the_dlq_alarm_until_the_dead_letter_is_dealt_with(healthy):
    box, inbox, _number, _head = healthy
    sqs = box.stack.client("sqs")
    dlq = box.stack.queue_url("JobsDLQ")
    job = FileJob(
        "acme/does-not-exist", 7, "a" * 40, "b" * 40, "x.py", "c" * 40, "review", None, str(uuid.uuid4())
    )
    sqs.send_message(QueueUrl=box.stack.queue_url("JobsQueue"), MessageBody=job.to_message())
    deadline = time.monotonic() + 30
    while box.stack.queue_depth("JobsDLQ") == 0 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert box.stack.queue_depth("JobsDLQ") == 1, "the poison job never reached the DLQ"

    now = box.stack.now()
    got = evaluate(box, now)
    assert got == {**dict.fromkeys(ALARMS, "OK"), "JobsDLQAlarm": "ALARM"}
    assert notices(inbox) == {"JobsDLQAlarm": "ALARM"}
    body = inbox.received[-1].body
    assert body["Trigger"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert body["Trigger"]["Dimensions"] == [{"value": f"{STACK}-JobsDLQ", "name": "QueueName"}]
    assert "1.0" in body["NewStateReason"]

    # `prfleet alarms` reads the states back from CloudWatch (moto): the DLQ alarm firing, with its reason.
    text = cli(box)
    line = next(x for x in text.splitlines() if x.startswith(f"{STACK}-JobsDLQAlarm "))
    assert " ALARM " in line and "Threshold Crossed" in line and " UTC " in line
    assert "firing: JobsDLQAlarm" in text

    # The operator looks at the dead letter and removes it: the next minute's datapoint is 0 -> OK.
    (msg,) = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", [])
    assert json.loads(msg["Body"])["repo"] == "acme/does-not-exist"
    sqs.delete_message(QueueUrl=dlq, ReceiptHandle=msg["ReceiptHandle"])
    assert evaluate(box, now + 60) == dict.fromkeys(ALARMS, "OK")
    assert notices(inbox) == {"JobsDLQAlarm": "OK"}
    line = next(x for x in cli(box).splitlines() if x.startswith(f"{STACK}-JobsDLQAlarm "))
    assert " OK " in line


# ---------------------------------------------------------------------------------------------- error rate


def test_failed_runs_above_20_percent_raise_the_error_rate_alarm(tmp_path):
    """3 of the sample PR's 9 runs fail: the model answers its first three requests with the spend-limit 429,
    which the agents never retry (a 529/5xx would be retried and the run would succeed). Each failure ends its
    run, so three failing requests are three failed runs, whatever the order in which the pollers run."""
    plan = FaultPlan(rules=[FaultRule("spend_limit", requests=[1, 2, 3])])
    with sandbox(tmp_path, faults=plan, sweep_interval=None, visibility_timeout=2) as box:
        inbox = box.stack.subscribe_alerts()
        number, head = review_sample_pr(box)
        runs = state.runs_of_head(REPO, number, head)
        failed = [r for r in runs if r["status"] == "failed"]
        assert len(runs) >= 5 and len(failed) == 3, [(r["agent"], r["status"]) for r in runs]
        assert all("spend limit" in r["error"] for r in failed)
        assert 100 * len(failed) / len(runs) > 20

        now = box.stack.now()
        got = evaluate(box, now)
        assert got["ErrorRateAlarm"] == "ALARM"
        assert {k: v for k, v in got.items() if k != "ErrorRateAlarm"} == dict.fromkeys(
            set(ALARMS) - {"ErrorRateAlarm"}, "OK"
        )
        assert notices(inbox)["ErrorRateAlarm"] == "ALARM"
        body = next(m.body for m in inbox.received if m.state == "ALARM")
        rate = round(100 * len(failed) / len(runs), 6)
        assert body["NewStateReason"].startswith("Threshold Crossed: 1 out of the last 1 datapoint [")
        assert str(rate)[:5] in body["NewStateReason"]
        assert body["Trigger"]["Metrics"][2]["Expression"].startswith("IF(FILL(started, 0) >= 5")

        # The cause is fixed and the 15-minute window moves on: back to OK, and the topic is told.
        box.model.set_faults(FaultPlan())
        assert evaluate(box, now + 900)["ErrorRateAlarm"] == "OK"
        assert notices(inbox) == {"ErrorRateAlarm": "OK"}


# ---------------------------------------------------------------------------------------------- stuck runs


def test_a_run_that_stops_sending_events_raises_the_stuck_alarm(tmp_path, clock_offset):
    """A run hangs in a model call (the offline model holds its first reply for 8 s); meanwhile prfleet's clock is
    moved 6 minutes on for the sweeper, which finds the run silent for more than 5 minutes, marks it stuck and
    re-queues its job. The pollers are paused (an event source mapping disabled) while the clock is moved so
    that no run measures its duration across the jump; the clock goes back before they resume."""
    plan = FaultPlan(rules=[FaultRule("slow", requests=[1], delay=8.0)])
    with sandbox(tmp_path, faults=plan, sweep_interval=None, visibility_timeout=10) as box:
        inbox = box.stack.subscribe_alerts()
        number, _payload, head = open_pr(
            box,
            {".prfleet.toml": 'disabled = ["tests", "docs"]\n', "shop/util.py": module_text("util", 1)},
            {"shop/util.py": module_text("util", 3)},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            box.model.requests
            and [r["status"] for r in state.runs_of_head(REPO, number, head)] == ["running"]
        ):
            time.sleep(0.1)
        assert box.model.requests, "the run never called the model"

        box.stack.disable_event_sources()
        clock_offset(360)
        counts = box.stack.sweep()
        assert counts["stuck"] == 1
        jumped = box.stack.now()
        got = evaluate(box, jumped)
        assert got["StuckRunsAlarm"] == "ALARM", got
        assert notices(inbox)["StuckRunsAlarm"] == "ALARM"
        body = next(m.body for m in inbox.received if m.state == "ALARM")
        assert body["Trigger"]["MetricName"] == "StuckRuns"
        assert body["Trigger"]["Dimensions"] == [{"value": "prfleet", "name": "service"}]
        stuck_lines = [json.loads(x) for x in box.stack.log_lines if '"event":"stuck"' in x.replace(" ", "")]
        assert stuck_lines and "no event for" in stuck_lines[0]["reason"]

        clock_offset(0)
        box.stack.enable_event_sources()
        assert box.wait_for_review(number, head_sha=head, timeout=60)  # the re-queued job completes the PR

        # Three 5-minute periods later the StuckRuns datapoint has left the evaluation range: OK again.
        later = jumped + 3 * 300
        assert evaluate(box, later)["StuckRunsAlarm"] == "OK"
        assert notices(inbox)["StuckRunsAlarm"] == "OK"
        assert "ALARM" not in states(box).values()


# ---------------------------------------------------------------------------------------------- spend


def _next_utc_day(now: float) -> float:
    today = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
    return dt.datetime.combine(today + dt.timedelta(days=1), dt.time(0, 1), dt.timezone.utc).timestamp()


def test_spend_past_80_percent_raises_the_cost_alarm_until_the_budget_day_changes(tmp_path, clock_offset):
    """A $0.015 day and a 9-file PR (27 jobs) whose reviews would cost more: the fleet spends up to the limit
    and defers the rest. Worst-case reservations must stay small next to the budget for the spend to get past
    80 % (a reservation that does not fit defers its job), hence the cheaper model on every agent, at most two
    runs at a time and the repository's max_tokens lowered to 1024 (all real settings)."""
    budget = 0.015
    with sandbox(
        tmp_path,
        parameters={"DailyBudgetUsd": budget, "ReviewModel": "claude-haiku-5-5", "AgentMaxConcurrency": 2},
        sweep_interval=None,
        visibility_timeout=5,
    ) as box:
        inbox = box.stack.subscribe_alerts()
        files = range(9)
        number, _payload, head = open_pr(
            box,
            {
                ".prfleet.toml": "[limits]\nmax_tokens = 1024\n",
                **{f"pkg/m{i}.py": '"""m."""\n' for i in files},
            },
            {f"pkg/m{i}.py": module_text(f"m{i}", 12) for i in files},
        )
        assert box.wait_for_review(number, head_sha=head, timeout=120)
        ledger = box.stack.client("dynamodb").scan(TableName=box.stack.table("LedgerTable"))["Items"]
        (daily,) = [i for i in ledger if i["scope"]["S"] == "daily"]
        settled = int(daily["settled"]["N"])
        assert 0.8 * budget * 1e6 <= settled <= budget * 1e6
        assert "deferred" in {r["status"] for r in state.runs_of_head(REPO, number, head)}

        got = evaluate(box)
        assert got == {**dict.fromkeys(ALARMS, "OK"), "SpendAlarm": "ALARM"}
        assert notices(inbox) == {**dict.fromkeys(ALARMS, "OK"), "SpendAlarm": "ALARM"}
        body = next(m.body for m in inbox.received if m.state == "ALARM")
        assert body["Trigger"]["MetricName"] == "DailySpendPercent"
        assert body["Trigger"]["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        # The runner's own once-a-day notice went to the same topic.
        budget_notices = [m.body for m in inbox.received if m.body.get("notice") == "budget-80-percent"]
        assert [n["scope"] for n in budget_notices] == ["daily"]

        # The next budget day: the sweeper publishes the new day's spend (and re-queues the deferred jobs).
        clock_offset(_next_utc_day(time.time()) - time.time())
        counts = box.stack.sweep()
        assert counts["requeued"] >= 1
        got = evaluate(box)
        assert got["SpendAlarm"] == "OK", box.stack.evaluator.status[box.stack.alarm_name("SpendAlarm")]
        assert notices(inbox) == {"SpendAlarm": "OK"}
        assert box.wait_for_review(number, head_sha=head, timeout=120)
        assert evaluate(box)["SpendAlarm"] == "OK"  # the deferred work alone stays under 80 % of a day


# ---------------------------------------------------------------------------------------------- latency


@pytest.mark.slow
def test_slow_model_replies_raise_the_p95_latency_alarm(tmp_path):
    """RunDuration is the runner's real wall time, so this test really waits: every model reply is held 25 s
    by the offline model (`slow` fault) and each run makes 5 calls (read_file in 3 ranges, report_findings,
    end of turn), so each run takes about 126 s. Each call stays far below the SDK call timeout
    (min(AgentSpec.call_timeout=120 s, time left)) and the run below the agent's 300 s deadline, so the runs
    succeed, only slowly. Three one-file PRs (the repository runs only the review agent) are opened one after
    the other, each once the previous one's run has started, so that each job is its own invocation (the
    agent's event source takes batches of 2, run one after the other) and the three runs overlap on the
    agent pollers: about 2.3 minutes of wall time. Queues keep messages invisible for 10 minutes here, so no
    job is redelivered while it runs."""
    plan = FaultPlan(rules=[FaultRule("slow", probability=1.0, delay=25.0)], read_chunks=3)
    with sandbox(tmp_path, faults=plan, sweep_interval=None, visibility_timeout=600) as box:
        inbox = box.stack.subscribe_alerts()
        base = {".prfleet.toml": 'disabled = ["tests", "docs"]\n'}
        base.update({f"shop/m{i}.py": module_text(f"m{i}", 1) for i in range(3)})
        prs = []
        for i in range(3):
            number, _payload, head = open_pr(
                box, base if i == 0 else {}, {f"shop/m{i}.py": module_text("m", 3)}
            )
            prs.append((number, head))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not state.runs_of_head(REPO, number, head):
                time.sleep(0.1)
        runs = []
        for number, head in prs:
            assert box.wait_for_review(number, head_sha=head, timeout=280)
            runs += state.runs_of_head(REPO, number, head)
        assert len(runs) == 3 and all(r["status"] == "succeeded" for r in runs), runs
        assert all(int(r["duration_ms"]) > 120_000 for r in runs), [r["duration_ms"] for r in runs]
        assert all(int(r["iterations"]) == 5 for r in runs)

        now = box.stack.now()
        got = evaluate(box, now)
        assert got == {**dict.fromkeys(ALARMS, "OK"), "LatencyAlarm": "ALARM"}
        assert notices(inbox)["LatencyAlarm"] == "ALARM"
        body = next(m.body for m in inbox.received if m.state == "ALARM")
        assert body["Trigger"]["ExtendedStatistic"] == "p95"
        assert body["Trigger"]["MetricName"] == "RunDuration" and body["Trigger"]["Threshold"] == 120000.0
        p95 = box.stack.evaluator.status[box.stack.alarm_name("LatencyAlarm")].reason_data["recentDatapoints"]
        # Nearest rank: p95 of up to 19 samples in a period is the slowest of them.
        assert len(p95) == 1 and p95[0] > 120_000 and p95[0] in {float(r["duration_ms"]) for r in runs}

        # Replies are fast again; once the slow runs left the 15-minute range the alarm is OK, and says so.
        box.model.set_faults(FaultPlan())
        assert evaluate(box, now + 3 * 300)["LatencyAlarm"] == "OK"
        assert notices(inbox) == {"LatencyAlarm": "OK"}
