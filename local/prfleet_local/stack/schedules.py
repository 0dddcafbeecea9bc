"""The template's schedules, locally: EventBridge rules (`Type: Schedule` events) that invoke a function
asynchronously, and Lambda's handling of an asynchronous invocation that fails.

What each service does, and so the stand-in:
- EventBridge delivers a scheduled event to Lambda's queue for asynchronous invocations; its rule's RetryPolicy and
  DeadLetterConfig cover only a delivery that fails (the target unavailable, no permission): "an event isn't
  successfully delivered to a target" (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-retry-policy.html,
  eb-rule-dlq.html). Locally the function is always there to take the event, so no delivery fails and the rule's
  DLQ receives nothing (the one path the stand-in cannot take; the template still sets it for AWS).
- Lambda runs the event; a function error (an exception, a timeout, a crash) is retried MaximumRetryAttempts times
  (default 2), "a one-minute wait between the first two attempts, and two minutes between the second and third";
  an event older than MaximumEventAgeInSeconds (default 6 hours) is not run again
  (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html). Then it is discarded, or its
  invocation record goes to the OnFailure destination of EventInvokeConfig: the event, the condition
  (RetriesExhausted, EventAgeExceeded), the attempts and the function's error payload
  (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html). Here the record is sent to
  the destination queue in moto as Lambda sends it (an SQS message whose body is the record).

The retry waits are Lambda's unless the stack shortens them (`retry_delays`), as the local queues shorten their
visibility timeout: a local difference in time only, never in what is retried or recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prfleet_local.stack import template as tpl
from prfleet_local.stack.account import client
from prfleet_local.stack.invocations import FunctionError

LAMBDA_RETRY_DELAYS = (60.0, 120.0)  # before the second and the third attempt
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_AGE_S = 6 * 3600
_UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


def rate_seconds(expression: str) -> float:
    """`rate(N unit)` in seconds (the only schedule expression the template uses; cron is refused, not guessed)."""
    m = re.fullmatch(r"rate\((\d+) (minutes?|hours?|days?)\)", expression.strip())
    if not m:
        raise tpl.TemplateError(f"schedule {expression!r}: only rate(N minute|hour|day) is supported locally")
    return int(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class Schedule:
    """One function's schedule and its asynchronous-invocation settings, from its resolved properties."""

    function: str
    function_arn: str
    rule_name: str
    rate_s: float
    max_retries: int = DEFAULT_MAX_RETRIES
    max_age_s: float = DEFAULT_MAX_AGE_S
    on_failure: str | None = None  # destination ARN


def schedules_of(
    function_properties: dict[str, dict[str, Any]], arn_of: Callable[[str], str]
) -> list[Schedule]:
    """Every `Type: Schedule` event of the template's functions."""
    out = []
    for logical, props in function_properties.items():
        config = props.get("EventInvokeConfig") or {}
        failure = ((config.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        for name, ev in (props.get("Events") or {}).items():
            if ev["Type"] != "Schedule":
                continue
            p = ev["Properties"]
            out.append(
                Schedule(
                    logical,
                    arn_of(logical),
                    p.get("Name") or f"{logical}{name}",
                    rate_seconds(p["Schedule"]),
                    int(config.get("MaximumRetryAttempts", DEFAULT_MAX_RETRIES)),
                    float(config.get("MaximumEventAgeInSeconds", DEFAULT_MAX_AGE_S)),
                    failure,
                )
            )
    return out


@dataclass
class Outcome:
    """How one scheduled event ended: its attempts, and the record sent to the destination (None if it ran)."""

    function: str
    request_id: str
    attempts: int = 0
    record: dict[str, Any] | None = None


def _error_payload(exc: FunctionError, request_id: str) -> dict[str, Any]:
    """The function's error as Lambda's Python runtime reports it (errorMessage, errorType, requestId, stackTrace);
    a timeout or a crash as Lambda reports it for an invocation that never answered."""
    cause = exc.__cause__
    if exc.kind == "error" and cause is not None:
        return {
            "errorMessage": str(cause),
            "errorType": type(cause).__name__,
            "requestId": request_id,
            "stackTrace": traceback.format_tb(_handler_frames(cause.__traceback__)),
        }
    if exc.kind == "timeout":
        return {
            "errorMessage": f"RequestId: {request_id} Error: {exc.detail}",
            "errorType": "Sandbox.Timedout",
        }
    return {
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited without providing a reason",
        "errorType": "Runtime.ExitError",
    }


def _handler_frames(tb: Any) -> Any:
    """The traceback from the handler down: the local runtime's own frame is not part of the function's trace."""
    while tb is not None and tb.tb_frame.f_code.co_filename.endswith("lambda_runtime.py"):
        tb = tb.tb_next
    return tb


@dataclass
class Schedules:
    """The stack's schedules. `run(function)` is one scheduled event end to end (attempts, then the record);
    `start()` fires each schedule at its rate (or the interval given for it) until `stop` is set."""

    schedules: list[Schedule]
    invoke: Callable[[str, dict[str, Any], str], Any]  # (logical, event, request id) -> reply | FunctionError
    stop: threading.Event
    queue_url_of: Callable[[str], str]  # a queue's ARN -> its URL
    region: str = "us-east-1"
    account: str = "123456789012"
    retry_delays: tuple[float, ...] = LAMBDA_RETRY_DELAYS
    outcomes: list[Outcome] = field(default_factory=list)

    @classmethod
    def provisioned(
        cls,
        resources: Any,
        invoke: Callable[[str, dict[str, Any], str], Any],
        stop: threading.Event,
        retry_delays: tuple[float, ...] = LAMBDA_RETRY_DELAYS,
    ) -> Schedules:
        """The schedules of the provisioned template (`TemplateResources`): ARNs and queue URLs as created."""
        ctx = resources.ctx
        urls = {
            ctx.attrs[(q, "Arn")]: ctx.refs[q] for q in tpl.resources(resources.template, "AWS::SQS::Queue")
        }
        return cls(
            schedules_of(resources.function_properties, lambda f: ctx.attrs[(f, "Arn")]),
            invoke,
            stop,
            urls.__getitem__,
            region=ctx.region,
            account=ctx.account,
            retry_delays=retry_delays,
        )

    def schedule(self, function: str) -> Schedule:
        (found,) = [s for s in self.schedules if s.function == function]
        return found

    def event(self, schedule: Schedule) -> dict[str, Any]:
        """The Scheduled Event EventBridge sends (https://docs.aws.amazon.com/eventbridge/latest/ref/events-ref-scheduler.html)."""
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.account,
            "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.region,
            "resources": [f"arn:aws:events:{self.region}:{self.account}:rule/{schedule.rule_name}"],
            "detail": {},
        }

    def run(self, function: str) -> Outcome:
        """One scheduled event of `function`: Lambda's attempts, then its record to the OnFailure destination."""
        schedule = self.schedule(function)
        event, received = self.event(schedule), time.monotonic()
        out = Outcome(function, str(uuid.uuid4()))  # one request id for all attempts of one event
        while True:
            out.attempts += 1
            try:
                self.invoke(function, event, out.request_id)
                break
            except FunctionError as exc:
                condition = self._retry(schedule, out.attempts, received)
                if condition is None:
                    continue
                if condition != "stopped":
                    out.record = self._record(schedule, event, out, condition, exc)
                break
        self.outcomes.append(out)
        return out

    def _retry(self, schedule: Schedule, attempts: int, received: float) -> str | None:
        """None to run again (after Lambda's wait); else why not: the condition of the record, or "stopped"."""
        if self.stop.is_set():  # the stack is stopping: its invocations were killed, not failed
            return "stopped"
        if attempts > schedule.max_retries:
            return "RetriesExhausted"
        delay = self.retry_delays[min(attempts, len(self.retry_delays)) - 1]
        if time.monotonic() + delay - received > schedule.max_age_s:
            return "EventAgeExceeded"
        return "stopped" if self.stop.wait(delay) else None

    def _record(
        self, schedule: Schedule, event: dict[str, Any], out: Outcome, condition: str, exc: FunctionError
    ) -> dict[str, Any]:
        record = {
            "version": "1.0",
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "requestContext": {
                "requestId": out.request_id,
                "functionArn": f"{schedule.function_arn}:$LATEST",
                "condition": condition,
                "approximateInvokeCount": out.attempts,
            },
            "requestPayload": event,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": _error_payload(exc, out.request_id),
        }
        if schedule.on_failure:  # without a destination Lambda discards the event: nothing is sent
            client("sqs").send_message(
                QueueUrl=self.queue_url_of(schedule.on_failure), MessageBody=json.dumps(record)
            )
        return record

    def start(self, spawn: Callable[[Callable[[], None], str], None], intervals: dict[str, float]) -> None:
        """Fire each schedule every `intervals[function]` seconds (default its rate); each event in its own thread,
        as EventBridge does not wait for the last one."""
        for schedule in self.schedules:
            every = intervals.get(schedule.function, schedule.rate_s)
            spawn(lambda s=schedule, every=every: self._loop(s, every), f"schedule-{schedule.function}")

    def _loop(self, schedule: Schedule, every: float) -> None:
        while not self.stop.wait(every):
            threading.Thread(target=self.run, args=(schedule.function,), daemon=True).start()
