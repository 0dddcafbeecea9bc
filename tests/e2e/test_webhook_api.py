"""The webhook's HTTP API as the template configures its stage, through the local stack: one access-log line per
request in the template's format and log group, the route's throttle (429 past the token bucket, the function never
invoked), and the payload quotas (10 MB at the API, 6 MB of event for the Lambda invocation)."""

from __future__ import annotations

import json
import time

import pytest

from prfleet_local.demo.run import post, sandbox
from prfleet_local.stack import template as tpl
from prfleet_local.stack.invocations import InvocationFault

pytestmark = pytest.mark.e2e

STACK = "prfleet-local"
FORMAT_FIELDS = list(
    json.loads(tpl.load()["Resources"]["WebhookApi"]["Properties"]["AccessLogSettings"]["Format"])
)


def access_log(box) -> list[dict]:
    """The access log as CloudWatch Logs (moto) holds it: the stage's DestinationArn log group."""
    logs = box.stack.client("logs")
    events = logs.filter_log_events(logGroupName=box.stack.api_stage.log_group)["events"]
    return [json.loads(e["message"]) for e in events]


def webhook_invocations(box) -> float:
    name = f"{STACK}-WebhookFunction"
    return sum(
        p.value
        for p in box.stack.datapoints()
        if p.name == "Invocations" and p.dimensions.get("FunctionName") == name
    )


def ping(box, *, sign: bool = True) -> int:
    return box.deliver("ping", {"zen": "Speak like a human.", "hook_id": 1}, sign=sign)[0]


def test_every_request_leaves_one_access_log_line_in_the_templates_format(tmp_path):
    with sandbox(
        tmp_path, sweep_interval=None, alarm_interval=None, parameters={"LogRetentionDays": 14}
    ) as box:
        assert ping(box) == 200
        assert ping(box, sign=False) == 401  # refused by the handler: still one line
        status, _ = post(box.stack.webhook_url.replace("/webhook", "/nowhere"), b"{}", {})
        assert status == 404  # no route: API Gateway's own answer
        box.stack.inject(InvocationFault("WebhookFunction", "crash"))
        assert ping(box) == 500
        lines = access_log(box)
        assert [line["status"] for line in lines] == ["200", "401", "404", "500"]
        assert all(list(line) == FORMAT_FIELDS for line in lines)
        assert len({line["requestId"] for line in lines}) == 4
        assert all(line["sourceIp"] == "127.0.0.1" for line in lines)
        assert [line["routeKey"] for line in lines] == [
            "POST /webhook",
            "POST /webhook",
            "-",
            "POST /webhook",
        ]
        ok, refused, unrouted, crashed = lines
        assert ok["integrationStatus"] == "200" and ok["integrationError"] == "-" and ok["error"] == "-"
        assert int(ok["responseLatency"]) >= int(ok["integrationLatency"]) >= 0
        assert ok["userAgent"] == "GitHub-Hookshot/local"
        assert unrouted["error"] == "Not Found" and unrouted["integrationStatus"] == "-"
        assert "WebhookFunction: crash" in crashed["integrationError"]
        assert crashed["error"] == "Internal Server Error"
        assert box.stack.api_stage.lines == lines  # and the same lines in the workdir's file
        file_lines = (box.stack.workdir / "api-access.log.jsonl").read_text().splitlines()
        assert [json.loads(x) for x in file_lines] == lines
        # The log group the template names, kept as long as the stack's logs.
        (group,) = box.stack.client("logs").describe_log_groups(
            logGroupNamePrefix=box.stack.api_stage.log_group
        )["logGroups"]
        assert group["logGroupName"] == f"/aws/apigateway/{STACK}-WebhookApi/access"
        assert group["retentionInDays"] == 14


def test_past_the_burst_the_route_answers_429_without_invoking_the_function_and_refills_at_the_rate(tmp_path):
    rate, burst = 1, 3
    params = {"WebhookThrottlingRateLimit": rate, "WebhookThrottlingBurstLimit": burst}
    with sandbox(tmp_path, sweep_interval=None, alarm_interval=None, parameters=params) as box:
        started = time.monotonic()
        statuses = []
        while 429 not in statuses and len(statuses) < 50:
            statuses.append(ping(box))
        elapsed = time.monotonic() - started
        admitted = statuses[:-1]
        assert statuses[-1] == 429 and set(admitted) == {200}
        # The bucket starts full (burst) and refills at the rate: never more than that, never fewer than the burst.
        assert burst <= len(admitted) <= burst + rate * elapsed
        assert webhook_invocations(box) == len(admitted)  # the throttled request never reached the function
        throttled = access_log(box)[-1]
        assert (throttled["status"], throttled["error"], throttled["integrationStatus"]) == (
            "429",
            "Too Many Requests",
            "-",
        )
        time.sleep(1.0 / rate)  # one token's refill
        assert ping(box) == 200


def test_payloads_past_the_quotas_never_reach_the_function_and_a_too_big_invocation_pages(tmp_path):
    with sandbox(tmp_path, sweep_interval=None, alarm_interval=None) as box:
        url, headers = box.stack.webhook_url, {"Content-Type": "application/json", "X-GitHub-Event": "ping"}
        too_big = b'{"zen": "' + b"x" * (10 * 1024 * 1024) + b'"}'
        assert post(url, too_big, headers) == (413, {"message": "Request Entity Too Large"})
        seven_mb = (
            b'{"zen": "' + b"x" * (7 * 1024 * 1024) + b'"}'
        )  # within the API's 10 MB, past Lambda's 6 MB
        assert post(url, seven_mb, headers) == (500, {"message": "Internal Server Error"})
        assert webhook_invocations(box) == 0
        api_413, lambda_413 = access_log(box)
        assert api_413["status"] == "413" and api_413["integrationStatus"] == "-"
        assert lambda_413["integrationStatus"] == "413"
        assert lambda_413["integrationError"] == "Request must be smaller than 6291456 bytes"
        box.stack.evaluate_alarms(now=box.stack.now() + 60)
        assert str(box.stack.evaluator.states[box.stack.alarm_name("WebhookErrorsAlarm")]) == "ALARM"
