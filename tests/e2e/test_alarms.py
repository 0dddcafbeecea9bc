"""The alarms fire: scenarios on the whole local stack, each checked twice, in the alarm's state (the template's
alarm definitions evaluated over the metrics the handlers printed as EMF and the AWS/Lambda, API Gateway and SQS
metrics the stack publishes as AWS would) and in what reached the AlertTopic (an SQS queue subscribed to it in moto,
as an on-call integration would be). Alarms return to OK, with an OK notification, once their cause is gone.

Time: CloudWatch evaluates each minute over a sliding window that ends at the last whole minute, so a metric is seen
by the evaluation after the minute it was emitted in: the scenarios evaluate at `now + 60`. Nothing here waits 5 or
15 minutes: where a scenario needs a later moment, the alarms are evaluated at a later `now`, or prfleet's clock is
moved (CLOCK_OFFSET_SECONDS) for the sweeper, whose metrics the local CloudWatch then files at that moved time. The
stacks here do not evaluate on their own (alarm_interval=None): each evaluation is the test's. Run durations are never
touched. The agent's Timeout is lowered (function_timeouts) only where a scenario needs invocations killed at it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import time
import uuid

import pytest

from prfleet.store import job_runs
from prfleet_local.cli.alarms import show_alarms
from prfleet_local.cli.target import target_of
from prfleet_local.demo.run import REPO, sandbox
from prfleet_local.model.server import FaultPlan, FaultRule
from prfleet_local.stack import template as tpl
from prfleet_local.stack.invocations import InvocationFault

pytestmark = pytest.mark.e2e

ALARMS = tuple(tpl.resources(tpl.load(), "AWS::CloudWatch::Alarm"))  # every alarm of template.yaml
STACK = "prfleet-local"  # LocalStack.stack_name


# ------------------------------------------------------------------------------------------------- helpers


def states(box) -> dict[str, str]:
    """Alarm states by logical id."""
    got = box.stack.evaluator.states
    return {logical: str(got[box.stack.alarm_name(logical)]) for logical in ALARMS}


def evaluate(box, now: float | None = None) -> dict[str, str]:
    """Evaluate at `now` (default: the next minute, the first evaluation that sees what was emitted until now)."""
    box.stack.evaluate_alarms(now=box.stack.now() + 60 if now is None else now)
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


def quiet_stack(tmp_path, **options):
    return sandbox(tmp_path, sweep_interval=None, alarm_interval=None, **options)


def alarm_notices(inbox) -> list[tuple[str, str]]:
    """(alarm, new state) of every alarm notification received so far, in order."""
    return [(m.alarm[len(STACK) + 1 :], m.state) for m in inbox.received if m.alarm]


# ------------------------------------------------------------------------------------------------ healthy


def test_a_healthy_review_leaves_every_alarm_ok_and_says_so_on_the_topic(tmp_path):
    with quiet_stack(tmp_path, visibility_timeout=2) as box:
        inbox = box.stack.subscribe_alerts()
        number, head = review_sample_pr(box)
        runs = job_runs.runs_of_head(REPO, number, head)
        assert len(runs) >= 5 and all(r["status"] == "succeeded" for r in runs)
        now = box.stack.now() + 60
        assert evaluate(box, now) == dict.fromkeys(ALARMS, "OK")
        # Every alarm left INSUFFICIENT_DATA for OK; each has OKActions, so each change reached the topic.
        assert notices(inbox) == dict.fromkeys(ALARMS, "OK")
        body = next(m.body for m in inbox.received if m.alarm and m.alarm.endswith("-ErrorRateAlarm"))
        assert body["OldStateValue"] == "INSUFFICIENT_DATA" and body["NewStateValue"] == "OK"
        assert body["AlarmArn"].endswith(f":alarm:{STACK}-ErrorRateAlarm")
        assert [m["Id"] for m in body["Trigger"]["Metrics"]] == [
            "started",
            "failed",
            "errors",
            "runs",
            "errorrate",
        ]
        # The stack published what Lambda and API Gateway publish: one invocation per delivery, no errors.
        points = box.stack.datapoints()
        webhook = [
            p
            for p in points
            if p.namespace == "AWS/Lambda" and p.dimensions["FunctionName"].endswith("-WebhookFunction")
        ]
        assert webhook and sum(p.value for p in webhook if p.name == "Errors") == 0
        assert sum(p.value for p in points if p.namespace == "AWS/ApiGateway" and p.name == "Count") == 1
        # Evaluating again a minute later changes nothing and publishes nothing.
        assert evaluate(box, now + 60) == dict.fromkeys(ALARMS, "OK")
        assert notices(inbox, wait=1.0) == {}


# ------------------------------------------------------------------------------ dead letters, webhook crash


def poison_message(k: int) -> str:
    """A message no agent can take (not a file job: an older version's, or garbage): every receive raises."""
    return json.dumps({"kind": "file", "note": f"not a job {k}"})


def wait_depth(box, queue: str, depth: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while box.stack.queue_depth(queue) < depth and time.monotonic() < deadline:
        time.sleep(0.3)
    assert box.stack.queue_depth(queue) == depth, f"{queue} never reached {depth} messages"


def wait_depth_at_least(box, queue: str, depth: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while box.stack.queue_depth(queue) < depth and time.monotonic() < deadline:
        time.sleep(0.3)
    assert box.stack.queue_depth(queue) >= depth, f"{queue} never reached {depth} messages"


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A stack with nothing reviewed, two receives before the DLQ; alarms start from their first evaluation."""
    with sandbox(
        tmp_path_factory.mktemp("alarms-bare"),
        parameters={"MaxReceiveCount": 2},
        sweep_interval=None,
        alarm_interval=None,
        visibility_timeout=2,
    ) as box:
        inbox = box.stack.subscribe_alerts()
        yield box, inbox


def test_three_dead_letters_at_different_times_are_three_pages(bare):
    """The DLQ alarm watches new dead letters (the minute-to-minute increase of visible + in-flight messages), not
    the depth: it pages for each one, although the first two are still in the queue when the third arrives. A
    poison job is not a run, and its failed receives are reported in batchItemFailures, not raised: no AWS/Lambda
    Error, so the error-rate alarm stays quiet (the DLQ alarm is the page). Then the runbook's first step, reading
    the dead letters (receive-message), moves them to in flight and back: no page."""
    box, inbox = bare
    sqs = box.stack.client("sqs")
    start = box.stack.now() + 60
    evaluate(box, start)
    inbox.receive(wait=2.0)
    for k in range(3):
        sqs.send_message(QueueUrl=box.stack.queue_url("JobsQueue"), MessageBody=poison_message(k))
        wait_depth(box, "JobsDLQ", k + 1)
        got = evaluate(box, start + 120 * k + 60)  # the first evaluation after the dead letter: a page
        assert got["JobsDLQAlarm"] == "ALARM", box.stack.evaluator.status[
            box.stack.alarm_name("JobsDLQAlarm")
        ]
        assert notices(inbox)["JobsDLQAlarm"] == "ALARM"
        body = next(m.body for m in reversed(inbox.received) if m.alarm == f"{STACK}-JobsDLQAlarm")
        assert [m.get("Expression") for m in body["Trigger"]["Metrics"]] == [
            None,
            None,
            "FILL(visible, 0) + FILL(inflight, 0)",
            "DIFF(depth)",
        ]
        assert evaluate(box, start + 120 * k + 120)["JobsDLQAlarm"] == "OK"  # no new dead letter this minute
        assert notices(inbox)["JobsDLQAlarm"] == "OK"
    pages = [n for n in alarm_notices(inbox) if n == ("JobsDLQAlarm", "ALARM")]
    assert len(pages) == 3
    assert ("ErrorRateAlarm", "ALARM") not in alarm_notices(inbox)
    agent = f"{STACK}-AgentFunction"
    points = [p for p in box.stack.datapoints() if p.dimensions.get("FunctionName") == agent]
    assert sum(p.value for p in points if p.name == "Invocations") >= 6  # 3 jobs x MaxReceiveCount 2
    assert [p.value for p in points if p.name == "Errors"] == [0.0] * sum(
        1 for p in points if p.name == "Errors"
    )  # every failure was reported (batchItemFailures), none raised
    assert (
        box.stack.queue_depth("JobsDLQ") == 3
    )  # nobody dealt with them: the depth alarm would have paged once

    # The runbook's inspection step: receive the dead letters (in flight for the visibility timeout, 30 s), then
    # they are visible again. Visible alone read 3 -> 0 -> 3: a false page. The reader hands them back at once
    # (ChangeMessageVisibility 0 ends the visibility timeout,
    # https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-visibility-timeout.html): with a
    # 3 s timeout and a sleep, an evaluation slower than 3 s on a busy machine sampled them visible, not in flight.
    dlq = box.stack.queue_url("JobsDLQ")
    read = start + 120 * 3 + 60
    got_messages = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=30)["Messages"]
    assert len(got_messages) == 3
    assert evaluate(box, read)["JobsDLQAlarm"] == "OK"
    sqs.change_message_visibility_batch(
        QueueUrl=dlq,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(got_messages)
        ],
    )
    assert box.stack.queue_depth("JobsDLQ", in_flight=False) == 3  # visible again
    assert evaluate(box, read + 60)["JobsDLQAlarm"] == "OK"
    assert evaluate(box, read + 120)["JobsDLQAlarm"] == "OK"
    # An evaluation that skips a minute (SQS itself publishes every minute): the unchanged DLQ is no new dead letter.
    assert evaluate(box, read + 240)["JobsDLQAlarm"] == "OK"
    assert "JobsDLQAlarm" not in notices(inbox, wait=1.0)
    samples = [
        (p.name, p.value)
        for p in box.stack.datapoints()
        if p.dimensions.get("QueueName") == box.stack.ctx.attrs[("JobsDLQ", "QueueName")]
        and p.name != "ApproximateAgeOfOldestMessage"
        and p.timestamp >= read - 61
    ]
    assert ("ApproximateNumberOfMessagesNotVisible", 3.0) in samples  # the read, as SQS publishes it

    # Every transition is mirrored into CloudWatch (moto), where `prfleet alarms --local` reads it.
    (described,) = box.stack.client("cloudwatch").describe_alarms(AlarmNames=[f"{STACK}-JobsDLQAlarm"])[
        "MetricAlarms"
    ]
    assert described["StateValue"] == "OK" and described["StateReason"].startswith("Threshold Crossed")
    line = next(x for x in cli(box).splitlines() if x.startswith(f"{STACK}-JobsDLQAlarm "))
    assert " OK " in line


def test_a_webhook_crash_raises_the_webhook_alarm_though_the_handler_reported_nothing(bare):
    """The runtime kills the webhook's invocation before the handler runs (as an out-of-memory kill would): no log
    line, no WebhookErrors; API Gateway answers 500 and counts a 5xx, Lambda counts an Error."""
    box, inbox = bare
    inbox.receive(wait=1.0)
    box.stack.inject(InvocationFault("WebhookFunction", "crash"))
    before = len(box.stack.log_lines)
    record = box.stack.api_metrics

    def descheduled(*args, **kwargs):  # the API's thread loses the CPU before it records (a busy machine)
        time.sleep(1.0)
        record(*args, **kwargs)

    # A request's metrics are recorded before its answer leaves, so the evaluation right after has them.
    box.stack.api_metrics = descheduled
    try:
        status, reply = box.deliver("ping", {"zen": "Keep it logically awesome.", "hook_id": 1})
    finally:
        del box.stack.api_metrics
    assert (status, reply) == (500, {"message": "Internal Server Error"})
    assert [p.value for p in box.stack.datapoints() if p.name == "5xx"][-1] == 1.0  # in with the answer
    assert box.stack.log_lines[before:] == []  # the handler printed nothing: nothing of its own could page
    assert not [p for p in box.stack.datapoints() if p.name == "WebhookErrors"]
    now = box.stack.now() + 60
    got = evaluate(box, now)
    assert got["WebhookErrorsAlarm"] == "ALARM"
    assert notices(inbox)["WebhookErrorsAlarm"] == "ALARM"
    reason = box.stack.evaluator.status[box.stack.alarm_name("WebhookErrorsAlarm")].reason
    assert reason.startswith("Threshold Crossed: 1 out of the last 1 datapoint [2.0")  # 5xx + Errors
    # The next delivery is served again; once the crash left the evaluation range (3 x 5 min) the alarm is OK.
    assert box.deliver("ping", {"zen": "Design for failure.", "hook_id": 1})[0] == 200
    assert evaluate(box, now + 900)["WebhookErrorsAlarm"] == "OK"
    assert notices(inbox)["WebhookErrorsAlarm"] == "OK"


def test_a_job_failing_on_every_delivery_is_one_failed_run_and_no_lambda_error(tmp_path):
    """A real file job whose every attempt fails in a handled way (its repository does not exist: GitHub answers
    404), delivered alone, so every batch is one record that fails. Powertools raised BatchProcessingError for such
    a batch by default (raise_on_entire_batch_failure=True), an AWS/Lambda Error per receive on top of the run's
    RunsFailed; the agent reports it in batchItemFailures instead, SQS still retries it, and after MaxReceiveCount
    (2 here) it is dead-lettered with its failure recorded once: 0 Errors, 1 RunsFailed. (Visibility 20 s: longer
    than a failing attempt under load, so no redelivery overlaps the attempt still running.)"""
    from prfleet.jobs import FileJob

    with quiet_stack(tmp_path, parameters={"MaxReceiveCount": 2}, visibility_timeout=20) as box:
        sqs = box.stack.client("sqs")
        agent = f"{STACK}-AgentFunction"
        job = FileJob(
            "acme/does-not-exist", 99, "a" * 40, "b" * 40, "x.py", "c" * 40, "review", None, str(uuid.uuid4())
        )
        sqs.send_message(QueueUrl=box.stack.queue_url("JobsQueue"), MessageBody=job.to_message())
        wait_depth(box, "JobsDLQ", 1, timeout=120)
        deadline = time.monotonic() + 60
        while ((run := job_runs.get_run(job)) is None or run["status"] in ("running", "retrying")) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)  # the last attempt records its failure while SQS already moves the message
        assert run is not None and run["status"] == "failed" and "404" in run["error"]
        assert box.stack.wait_idle(timeout=30, queues=("JobsQueue",))

        points = box.stack.datapoints()
        mine = [p for p in points if p.dimensions.get("FunctionName") == agent]
        invocations = sum(p.value for p in mine if p.name == "Invocations")
        assert invocations == 2  # one per receive: MaxReceiveCount 2, each a one-record batch that failed
        errors = [p.value for p in mine if p.name == "Errors"]
        assert errors == [0.0, 0.0]  # an Errors datapoint per invocation, each 0: reported, not raised
        fleet = {"service": "prfleet"}
        failed = [p for p in points if p.name == "RunsFailed" and dict(p.dimensions) == fleet]
        assert sum(p.value for p in failed) == 1  # counted once, as a run, on its last delivery
        got = evaluate(box)
        # 1 failed run: below the 5-run volume guard, and no Errors added
        assert got["ErrorRateAlarm"] == "OK"
        rate = box.stack.evaluator.status[box.stack.alarm_name("ErrorRateAlarm")].values[-1][1]
        assert rate == 0.0


# ------------------------------------------------------------------------------------ scheduled failures

SWEEPER_RETRIES = tpl.load()["Resources"]["SweeperFunction"]["Properties"]["EventInvokeConfig"][
    "MaximumRetryAttempts"
]
RECONCILE_RETRIES = tpl.load()["Resources"]["ReconcileFunction"]["Properties"]["EventInvokeConfig"][
    "MaximumRetryAttempts"
]


def schedule_dead_letters(box) -> list[dict]:
    """The invocation records in ScheduleDLQ (received, so in flight: the DLQ alarm counts those too)."""
    sqs = box.stack.client("sqs")
    got = sqs.receive_message(QueueUrl=box.stack.queue_url("ScheduleDLQ"), MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in got.get("Messages", [])]


def test_a_failing_scheduled_sweep_lands_in_the_schedule_dlq_with_its_reason_and_pages(tmp_path):
    """The sweeper's schedule fires on its own (every second here) and every sweep fails for a real reason: its
    table is gone, so the handler's first query raises. Each scheduled event is an asynchronous invocation: Lambda
    runs it 1 + MaximumRetryAttempts times (its waits shortened to 0.2 s), then sends its invocation record (the
    event, the condition, the error) to ScheduleDLQ instead of discarding it; the DLQ alarm pages."""
    with sandbox(tmp_path, sweep_interval=1.0, alarm_interval=None, async_retry_delays=(0.2, 0.2)) as box:
        inbox = box.stack.subscribe_alerts()
        start = box.stack.now() + 60
        assert evaluate(box, start)["ScheduleDLQAlarm"] == "OK"  # an idle DLQ: no data is OK
        inbox.receive(wait=2.0)
        ddb = box.stack.client(
            "dynamodb"
        )  # the StateTable is deletion-protected (template): lift it first, as an operator must
        ddb.update_table(TableName=box.stack.table("StateTable"), DeletionProtectionEnabled=False)
        ddb.delete_table(TableName=box.stack.table("StateTable"))
        wait_depth_at_least(box, "ScheduleDLQ", 1, timeout=60)
        record = schedule_dead_letters(box)[0]
        context = record["requestContext"]
        assert context["condition"] == "RetriesExhausted"
        assert context["approximateInvokeCount"] == 1 + SWEEPER_RETRIES
        assert context["functionArn"].endswith(f":function:{STACK}-SweeperFunction:$LATEST")
        assert record["requestPayload"]["detail-type"] == "Scheduled Event"
        assert record["requestPayload"]["resources"][0].endswith(f":rule/{STACK}-SweeperSchedule")
        assert record["responseContext"]["functionError"] == "Unhandled"
        error = record["responsePayload"]
        assert error["errorType"] == "ResourceNotFoundException"
        assert "Query operation" in error["errorMessage"] and error["requestId"] == context["requestId"]
        assert any("functions/sweeper/app.py" in frame for frame in error["stackTrace"])
        sweeper = f"{STACK}-SweeperFunction"
        errors = [p for p in box.stack.datapoints() if p.dimensions.get("FunctionName") == sweeper]
        assert (
            sum(p.value for p in errors if p.name == "Errors") >= 1 + SWEEPER_RETRIES
        )  # every attempt counted
        got = evaluate(box, start + 60)
        assert got["ScheduleDLQAlarm"] == "ALARM", box.stack.evaluator.status[
            box.stack.alarm_name("ScheduleDLQAlarm")
        ]
        assert notices(inbox)["ScheduleDLQAlarm"] == "ALARM"
        page = next(m.body for m in inbox.received if m.alarm == f"{STACK}-ScheduleDLQAlarm")
        assert "docs/runbook.md#scheduledlqalarm" in page["AlarmDescription"]


def test_a_retried_sweep_pages_nobody_and_a_reconciliation_failing_every_attempt_does(tmp_path):
    """Lambda's retry rides out one failure: the sweep crashes once, its retry runs, nothing reaches the DLQ and
    the alarm stays OK. A reconciliation whose every attempt crashes (the runtime dies: no error of its own) is
    recorded after its 1 + MaximumRetryAttempts attempts with Lambda's reason for it, and pages."""
    with quiet_stack(tmp_path, async_retry_delays=(0.2, 0.2)) as box:
        inbox = box.stack.subscribe_alerts()
        start = box.stack.now() + 60
        evaluate(box, start)
        inbox.receive(wait=2.0)
        box.stack.inject(InvocationFault("SweeperFunction", "crash", times=1))
        sweep = box.stack.schedules.run("SweeperFunction")
        assert (sweep.attempts, sweep.record) == (2, None)
        assert box.stack.queue_depth("ScheduleDLQ") == 0
        assert evaluate(box, start + 60)["ScheduleDLQAlarm"] == "OK"

        box.stack.inject(InvocationFault("ReconcileFunction", "crash", times=0))
        try:
            run = box.stack.schedules.run("ReconcileFunction")
        finally:
            box.stack.faults.clear()
        assert run.attempts == 1 + RECONCILE_RETRIES
        [record] = schedule_dead_letters(box)
        assert record == run.record
        assert record["requestContext"]["condition"] == "RetriesExhausted"
        assert record["requestContext"]["approximateInvokeCount"] == 1 + RECONCILE_RETRIES
        assert record["requestPayload"]["resources"][0].endswith(f":rule/{STACK}-ReconcileSchedule")
        assert record["responsePayload"]["errorType"] == "Runtime.ExitError"
        assert record["responsePayload"]["errorMessage"].startswith(f"RequestId: {run.request_id} Error:")
        assert evaluate(box, start + 120)["ScheduleDLQAlarm"] == "ALARM"
        assert notices(inbox)["ScheduleDLQAlarm"] == "ALARM"
        assert evaluate(box, start + 180)["ScheduleDLQAlarm"] == "OK"  # no new dead letter this minute


# ---------------------------------------------------------------------------------------------- error rate


def test_every_agent_run_timing_out_raises_the_error_rate_alarm(tmp_path):
    """Every agent invocation hangs right after its run started (a call that never returns) and Lambda abandons it
    at the function's Timeout (lowered to 4 s here): nothing it buffered is flushed, so no RunsStarted and no
    RunsFailed ever reach CloudWatch; only AWS/Lambda Errors count them. The batch comes back after its visibility
    timeout, and its run (still claimed by the dead invocation) is left for the sweeper's stuck-run check."""
    with quiet_stack(tmp_path, visibility_timeout=2, function_timeouts={"AgentFunction": 4}) as box:
        inbox = box.stack.subscribe_alerts()
        box.stack.inject(InvocationFault("AgentFunction", "hang", after='"event":"start"', times=0))
        number = box.open_sample_pr()
        payload = box.github.webhook_payload("opened", number)
        assert box.deliver("pull_request", payload)[0] == 202
        agent = box.stack.functions["AgentFunction"]
        deadline = time.monotonic() + 120
        while agent.errors < 5 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert agent.errors >= 5, "fewer than 5 agent invocations timed out"
        started = [json.loads(x) for x in box.stack.log_lines if '"event":"start"' in x.replace(" ", "")]
        assert started, "no run started"
        points = box.stack.datapoints()
        assert not [p for p in points if p.name in ("RunsStarted", "RunsFailed")]  # killed before any flush
        errors = [p for p in points if p.namespace == "AWS/Lambda" and p.name == "Errors" and p.value == 1]
        assert {p.dimensions["FunctionName"] for p in errors} == {f"{STACK}-AgentFunction"}

        got = evaluate(box)
        assert got["ErrorRateAlarm"] == "ALARM", box.stack.evaluator.status[
            box.stack.alarm_name("ErrorRateAlarm")
        ]
        assert notices(inbox)["ErrorRateAlarm"] == "ALARM"
        body = next(m.body for m in inbox.received if m.alarm and m.alarm.endswith("-ErrorRateAlarm"))
        assert body["NewStateReason"].startswith("Threshold Crossed: 1 out of the last 1 datapoint [100.0")

        # Each message came back after its visibility timeout: its run, claimed by the killed invocation, still
        # looks alive, so the redelivery hands the copy back to SQS (runner.RunBusy) and, on its last receive,
        # leaves it (a duplicate) for the sweeper to find stuck.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            '"duplicate":true' in x.replace(" ", "") for x in box.stack.log_lines
        ):
            time.sleep(0.5)
        box.stack.faults.clear()
        skipped = [json.loads(x) for x in box.stack.log_lines if '"duplicate":true' in x.replace(" ", "")]
        assert skipped and all(e["event"] == "skipped" for e in skipped)
        number_runs = job_runs.runs_of_head(REPO, number, payload["pull_request"]["head"]["sha"])
        assert number_runs and {r["status"] for r in number_runs} == {
            "running"
        }  # none finished, none counted


def test_failed_runs_above_20_percent_raise_the_error_rate_alarm(tmp_path):
    """3 of the sample PR's 9 runs fail: the model ends its first three replies with a stop_reason the agents do not
    know, which fails the run at once (a 529/5xx would be retried and the run would succeed; a spend-limit error
    now opens the budget circuit and defers instead). Each failure ends its run, so three failing replies are three
    failed runs, whatever the order in which the pollers run."""
    plan = FaultPlan(rules=[FaultRule("stop_reason", requests=[1, 2, 3], stop_reason="bogus_stop")])
    with quiet_stack(tmp_path, faults=plan, visibility_timeout=2) as box:
        inbox = box.stack.subscribe_alerts()
        number, head = review_sample_pr(box)
        runs = job_runs.runs_of_head(REPO, number, head)
        failed = [r for r in runs if r["status"] == "failed"]
        assert len(runs) >= 5 and len(failed) == 3, [(r["agent"], r["status"]) for r in runs]
        assert all("unknown stop_reason" in r["error"] for r in failed)
        assert 100 * len(failed) / len(runs) > 20

        now = box.stack.now() + 60
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

        # The window slides by the minute: 10 minutes on (past the quarter hour), the runs are still in it.
        assert evaluate(box, now + 600)["ErrorRateAlarm"] == "ALARM"
        # The cause is fixed and the runs are more than 15 minutes old: back to OK, and the topic is told.
        box.model.set_faults(FaultPlan())
        assert evaluate(box, now + 960)["ErrorRateAlarm"] == "OK"
        assert notices(inbox) == {"ErrorRateAlarm": "OK"}


# ---------------------------------------------------------------------------------------------- stuck runs


def test_a_run_that_stops_sending_events_raises_the_stuck_alarm(tmp_path, clock_offset):
    """A run hangs in a model call (the offline model holds its first reply for 8 s); meanwhile prfleet's clock is
    moved 6 minutes on for the sweeper, which finds the run silent for more than 5 minutes, marks it stuck and
    re-queues its job. The pollers are paused (an event source mapping disabled) while the clock is moved so
    that no run measures its duration across the jump; the clock goes back before they resume."""
    plan = FaultPlan(rules=[FaultRule("slow", requests=[1], delay=8.0)])
    with quiet_stack(tmp_path, faults=plan, visibility_timeout=10) as box:
        inbox = box.stack.subscribe_alerts()
        number, _payload, head = open_pr(
            box,
            {".prfleet.toml": 'disabled = ["tests", "docs"]\n', "shop/util.py": module_text("util", 1)},
            {"shop/util.py": module_text("util", 3)},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            box.model.requests
            and [r["status"] for r in job_runs.runs_of_head(REPO, number, head)] == ["running"]
        ):
            time.sleep(0.1)
        assert box.model.requests, "the run never called the model"

        box.stack.disable_event_sources()
        clock_offset(360)
        counts = box.stack.sweep()
        assert counts["stuck"] == 1
        jumped = box.stack.now() + 60
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

        # The StuckRuns datapoint stays the most recent real one of the 15-minute evaluation range (EvaluationPeriods
        # + 2 periods, alarms-and-missing-data), then leaves it: OK again.
        assert evaluate(box, jumped + 600)["StuckRunsAlarm"] == "ALARM"
        assert evaluate(box, jumped + 900)["StuckRunsAlarm"] == "OK"
        assert notices(inbox)["StuckRunsAlarm"] == "OK"
        assert "ALARM" not in states(box).values()


# ---------------------------------------------------------------------------------------------- spend


def _next_utc_day(now: float) -> float:
    today = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
    return dt.datetime.combine(today + dt.timedelta(days=1), dt.time(0, 1), dt.timezone.utc).timestamp()


def test_an_80_percent_crossing_is_exactly_one_page_until_the_budget_day_changes(tmp_path, clock_offset):
    """A $0.015 day and a 9-file PR (27 jobs) whose reviews would cost more: the fleet spends up to the limit
    and defers the rest. Worst-case reservations must stay small next to the budget for the spend to get past
    80 % (a reservation that does not fit defers its job), hence the cheaper model on every agent, at most two
    runs at a time and the repository's max_tokens lowered to 512 (all real settings; 1024 did until the tests
    agent grepped the repository's tests for each symbol: its calls grew, and the last reservations no longer fit
    past 80 %). One page: SpendAlarm; the
    runner's 80 % notices (daily and per PR) are log events, not messages on the topic."""
    budget = 0.015
    with quiet_stack(
        tmp_path,
        parameters={"DailyBudgetUsd": budget, "ReviewModel": "claude-haiku-5-5", "AgentMaxConcurrency": 2},
        visibility_timeout=5,
    ) as box:
        inbox = box.stack.subscribe_alerts()
        files = range(9)
        number, _payload, head = open_pr(
            box,
            {
                ".prfleet.toml": "[limits]\nmax_tokens = 512\n",
                **{f"pkg/m{i}.py": '"""m."""\n' for i in files},
            },
            {f"pkg/m{i}.py": module_text(f"m{i}", 12) for i in files},
        )
        assert box.wait_for_review(number, head_sha=head, timeout=120)
        ledger = box.stack.client("dynamodb").scan(TableName=box.stack.table("LedgerTable"))["Items"]
        (daily,) = [i for i in ledger if i["scope"]["S"] == "daily"]
        settled = int(daily["settled"]["N"])
        assert 0.8 * budget * 1e6 <= settled <= budget * 1e6
        assert "deferred" in {r["status"] for r in job_runs.runs_of_head(REPO, number, head)}
        spend_events = [
            json.loads(x) for x in box.stack.log_lines if '"notice":"budget-80-percent"' in x.replace(" ", "")
        ]
        assert "daily" in {e["scope"] for e in spend_events}  # the crossing was noticed (logged) ...

        now = box.stack.now() + 60
        for minute in range(3):  # ... and paged once, however often the alarm is evaluated
            got = evaluate(box, now + 60 * minute)
            assert got == {**dict.fromkeys(ALARMS, "OK"), "SpendAlarm": "ALARM"}
        inbox.receive(wait=3.0)
        assert [m.alarm for m in inbox.received if m.state == "ALARM"] == [f"{STACK}-SpendAlarm"]
        assert [m for m in inbox.received if not m.alarm] == []  # no notice on the topic, daily or per PR
        body = next(m.body for m in inbox.received if m.state == "ALARM")
        assert body["Trigger"]["MetricName"] == "DailySpendPercent"
        assert body["Trigger"]["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"

        # The next budget day: the sweeper publishes the new day's spend (and re-queues the deferred jobs). The
        # agent's event source mapping is disabled meanwhile (UpdateEventSourceMapping Enabled=false), or the
        # re-queued jobs would spend the new day's $0.015 past 80 % before the evaluation, a second crossing.
        box.stack.disable_event_sources()
        try:
            # 16 minutes into the next day, not 1: the evaluation range is EvaluationPeriods + 2 periods (15 min),
            # and the crossing's datapoints sit at the real time the test ran, minutes before midnight when it runs
            # then (a run at 23:57 UTC evaluated them with the new day's 0: reliability.md, run 4).
            clock_offset(_next_utc_day(time.time()) + 15 * 60 - time.time())
            counts = box.stack.sweep()
            assert counts["requeued"] >= 1
            got = evaluate(
                box, box.stack.now() + 360
            )  # the previous day's last maximum left the evaluation range
            assert got["SpendAlarm"] == "OK", box.stack.evaluator.status[box.stack.alarm_name("SpendAlarm")]
            assert notices(inbox)["SpendAlarm"] == "OK"
        finally:
            box.stack.enable_event_sources()


# ---------------------------------------------------------------------------------------------- latency


@pytest.mark.slow
def test_one_slow_run_among_many_is_no_page_and_sustained_slow_runs_are(tmp_path):
    """RunDuration is the runner's real wall time, so this test really waits (about 7 minutes).

    First 20 one-file jobs (the repository runs only the review agent) of which one is slow: the offline model holds
    the very first reply 125 s, past the SDK's 120 s call timeout, so that run retries and takes over 120 s, the
    others about a second. p95 of 20 runs is the second slowest: no page (with the earlier p95-of-any-count alarm,
    this one run paged). Then 20 more jobs whose every reply is held 41 s (3 calls: read_file, report_findings, end
    of turn, so about 123 s a run): 21 of the 40 runs in the 30 minutes are slow, p95 is slow: a page. At most 20
    runs at once (AgentMaxConcurrency=20, a real parameter) so the slow phase takes two rounds at most, and budgets
    large enough that 20 worst-case reservations at once never hold a job back."""
    plan = FaultPlan(rules=[FaultRule("slow", requests=[1], delay=125.0)])
    with quiet_stack(
        tmp_path,
        faults=plan,
        visibility_timeout=600,
        parameters={"AgentMaxConcurrency": 20, "DailyBudgetUsd": 100, "PrBudgetUsd": 50},
    ) as box:
        inbox = box.stack.subscribe_alerts()
        base = {".prfleet.toml": 'disabled = ["tests", "docs"]\n'}
        base.update({f"shop/a{i}.py": module_text(f"a{i}", 1) for i in range(20)})
        base.update({f"shop/b{i}.py": module_text(f"b{i}", 1) for i in range(20)})
        number, _payload, head = open_pr(
            box, base, {f"shop/a{i}.py": module_text(f"a{i}", 2) for i in range(20)}
        )
        assert box.wait_for_review(number, head_sha=head, timeout=280)
        runs = job_runs.runs_of_head(REPO, number, head)
        assert {r["status"] for r in runs} == {"succeeded"}, [
            r["status"] for r in runs
        ]  # distinct files: no cache
        slow = [r for r in runs if int(r["duration_ms"]) > 120_000]
        assert len(runs) == 20 and len(slow) == 1, sorted(int(r["duration_ms"]) for r in runs)
        got = evaluate(box)
        assert got["LatencyAlarm"] == "OK"
        assert notices(inbox)["LatencyAlarm"] == "OK"

        box.model.set_faults(FaultPlan(rules=[FaultRule("slow", probability=1.0, delay=41.0)]))
        number, _payload, head = open_pr(
            box, {}, {f"shop/b{i}.py": module_text(f"b{i}", 2) for i in range(20)}
        )
        assert box.wait_for_review(number, head_sha=head, timeout=400)
        runs = job_runs.runs_of_head(REPO, number, head)
        assert len(runs) == 20 and all(int(r["duration_ms"]) > 120_000 for r in runs)
        got = evaluate(box)
        assert got["LatencyAlarm"] == "ALARM", box.stack.evaluator.status[
            box.stack.alarm_name("LatencyAlarm")
        ]
        assert notices(inbox)["LatencyAlarm"] == "ALARM"
        body = next(m.body for m in inbox.received if m.state == "ALARM")
        assert body["Trigger"]["Metrics"][2]["Expression"] == "IF(FILL(n, 0) >= 20, p95, 0)"
