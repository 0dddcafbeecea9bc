"""Lambda's asynchronous invocation as the local schedules apply it, without AWS: attempts, waits, the condition
and the error payload of the record (the destination send is exercised through the stack in tests/e2e/test_alarms.py)."""

from __future__ import annotations

import threading

import pytest

from prfleet_local.stack import template as tpl
from prfleet_local.stack.invocations import FunctionError
from prfleet_local.stack.schedules import Schedule, Schedules, rate_seconds


def failing(kind: str = "error", *, fail_times: int = 10**6):
    calls: list[tuple[str, str]] = []

    def invoke(function: str, event: dict, request_id: str) -> dict:
        calls.append((function, request_id))
        if len(calls) <= fail_times:
            if kind == "error":
                try:
                    raise ValueError("the ledger is gone")
                except ValueError as exc:
                    raise FunctionError(function, "error", repr(exc)) from exc
            raise FunctionError(function, kind, "Task timed out after 60.00 seconds")
        return {"ok": True}

    return invoke, calls


def schedules(invoke, *, retries=2, max_age=3600.0, delays=(0.0, 0.0)) -> Schedules:
    sched = Schedule(
        "SweeperFunction", "arn:aws:lambda:us-east-1:1:function:s", "s-rule", 60, retries, max_age
    )
    return Schedules([sched], invoke, threading.Event(), {}.__getitem__, retry_delays=delays)


def test_rate_expressions_and_nothing_else():
    assert [
        rate_seconds(x) for x in ("rate(1 minute)", "rate(5 minutes)", "rate(1 hour)", "rate(2 days)")
    ] == [
        60,
        300,
        3600,
        172800,
    ]
    with pytest.raises(tpl.TemplateError):
        rate_seconds("cron(0 * * * ? *)")


def test_every_attempt_failing_is_recorded_once_with_the_exception_and_one_request_id():
    invoke, calls = failing()
    out = schedules(invoke, retries=2).run("SweeperFunction")
    assert out.attempts == 3 and len(calls) == 3
    assert {rid for _, rid in calls} == {out.request_id}  # Lambda's retries keep the event's request id
    record = out.record
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"].endswith(":function:s:$LATEST")
    assert record["requestPayload"]["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/s-rule"]
    payload = record["responsePayload"]
    assert (payload["errorType"], payload["errorMessage"]) == ("ValueError", "the ledger is gone")
    assert "in invoke" in payload["stackTrace"][0]  # where it was raised, as the runtime reports it


def test_a_retry_that_succeeds_records_nothing_and_zero_retries_record_the_first_failure():
    invoke, calls = failing(fail_times=1)
    assert (schedules(invoke).run("SweeperFunction").record, len(calls)) == (None, 2)
    invoke, calls = failing("timeout")
    out = schedules(invoke, retries=0).run("SweeperFunction")
    assert out.attempts == 1
    assert out.record["responsePayload"]["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 60.00 seconds" in out.record["responsePayload"]["errorMessage"]


def test_an_event_too_old_for_its_next_attempt_is_recorded_as_event_age_exceeded():
    invoke, calls = failing("crash")
    out = schedules(invoke, retries=2, max_age=30.0, delays=(60.0, 120.0)).run("SweeperFunction")
    assert len(calls) == 1  # the retry would start 60 s after the event, past its 30 s: not run, no wait
    assert out.record["requestContext"]["condition"] == "EventAgeExceeded"
    assert out.record["responsePayload"]["errorType"] == "Runtime.ExitError"
