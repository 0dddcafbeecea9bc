"""The local CloudWatch's metrics, on prfleet's clock: the handlers' EMF lines, what Lambda and the HTTP API
publish for each invocation and request, and the per-minute samples SQS publishes for its queues.

prfleet's clock is real time shifted by CLOCK_OFFSET_SECONDS (0 in AWS). An EMF line is filed at its timestamp
plus the offset in effect when the handler printed it, so a drill that moves the clock sees its metrics where
CloudWatch would; nothing is re-stamped when the offset is 0.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from prfleet import config
from prfleet_local.stack import template as tpl
from prfleet_local.stack.account import client
from prfleet_local.stack.alarms import Datapoint, emf_to_datapoints


def clock_offset() -> float:
    """prfleet's CLOCK_OFFSET_SECONDS now (0 when the settings cannot be read)."""
    try:
        return float(config.settings().clock_offset_s)
    except config.ConfigError:
        return 0.0


def now() -> float:
    """prfleet's clock (real time + CLOCK_OFFSET_SECONDS): the time the local CloudWatch evaluates at."""
    return time.time() + clock_offset()


class CloudWatchMetrics:
    """Every datapoint the run published; `datapoints()` is what the alarms are evaluated on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._points: list[Datapoint] = []
        self._emf: list[tuple[float, str]] = []  # (clock offset when printed, EMF line)

    def emf(self, line: str) -> None:
        """A handler's EMF line, kept with the clock offset in effect now."""
        self._emf.append((clock_offset(), line))

    def put(self, namespace: str, name: str, dims: dict[str, str], value: float, unit: str) -> None:
        """One datapoint at prfleet's `now`."""
        with self._lock:
            self._points.append(Datapoint(namespace, name, dims, now(), float(value), unit))

    def add(self, points: list[Datapoint]) -> None:
        with self._lock:
            self._points.extend(points)

    def lambda_metrics(self, function_name: str, *, duration_ms: float, error: bool) -> None:
        """What Lambda publishes for every invocation in AWS/Lambda, per FunctionName: Invocations, Errors (a
        function error, a timeout or a crash), Duration
        (https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html)."""
        dims = {"FunctionName": function_name}
        self.put("AWS/Lambda", "Invocations", dims, 1, "Count")
        self.put("AWS/Lambda", "Errors", dims, 1 if error else 0, "Count")
        self.put("AWS/Lambda", "Duration", dims, duration_ms, "Milliseconds")

    def api_metrics(self, api_id: str, status: int, latency_ms: float) -> None:
        """What an HTTP API publishes per ApiId for each request: Count, 4xx, 5xx, Latency
        (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-metrics.html)."""
        dims = {"ApiId": api_id}
        self.put("AWS/ApiGateway", "Count", dims, 1, "Count")
        self.put("AWS/ApiGateway", "4xx", dims, 1 if 400 <= status < 500 else 0, "Count")
        self.put("AWS/ApiGateway", "5xx", dims, 1 if status >= 500 else 0, "Count")
        self.put("AWS/ApiGateway", "Latency", dims, latency_ms, "Milliseconds")

    def datapoints(self) -> list[Datapoint]:
        """Every metric datapoint the handlers emitted (EMF, filed on prfleet's clock) plus the published ones."""
        points: list[Datapoint] = []
        for offset, line in list(self._emf):
            points.extend(replace(d, timestamp=d.timestamp + offset) for d in emf_to_datapoints([line]))
        with self._lock:
            return points + list(self._points)


class SqsSampler:
    """What CloudWatch would publish for the queues: depth now (visible and in flight), and the age of the oldest
    message seen.

    SQS pushes its metrics to CloudWatch "at one-minute intervals"
    (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/monitoring-using-cloudwatch.html):
    one depth sample per queue and minute, filed in the last whole minute, so the evaluation at `now`, which ends
    at that minute, sees it. The first evaluation of a minute samples; later ones in the same minute (a shortened
    alarm interval, a test evaluating twice) publish no second sample, since two would let a Maximum of each count
    a message received in between twice, once visible and once in flight. SQS publishes every minute, evaluations
    here may skip one (a slow evaluation, a test jumping ahead): the minutes missed since the last sample (at most
    5) repeat the last sample, so a change is filed in the minute it was seen and a DLQ that did not change does
    not read as 0 -> depth (FILL(…, 0) + DIFF: a false page). ApproximateNumberOfMessagesVisible is
    GetQueueAttributes' ApproximateNumberOfMessages and ApproximateNumberOfMessagesNotVisible its namesake ("in
    flight: received but not yet deleted or expired",
    https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html).
    """

    GAUGES = {
        "ApproximateNumberOfMessagesVisible": "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible": "ApproximateNumberOfMessagesNotVisible",
    }

    def __init__(
        self,
        template: dict[str, Any],
        ctx: tpl.Context,
        take_ages: Callable[[str], list[tuple[float, float]]],
    ) -> None:
        self.template, self.ctx = template, ctx
        self._take_ages = take_ages  # queue URL -> (received at, age) of the messages the pollers received
        self._sampled: set[tuple[str, float]] = set()
        self._last: dict[str, tuple[float, dict[str, float]]] = {}

    def sample(self, now: float) -> list[Datapoint]:
        """The queues' datapoints for an evaluation at `now`: depth samples and the ages seen since the last call."""
        stamp = math.floor(now / 60) * 60 - 1
        points = []
        for logical in tpl.resources(self.template, "AWS::SQS::Queue"):
            name = self.ctx.attrs[(logical, "QueueName")]
            dims = {"QueueName": name}
            if (logical, stamp) not in self._sampled:
                points += self._depth(logical, dims, stamp)
            ages = self._take_ages(self.ctx.refs[logical])
            for ts, age in ages or [(stamp, 0.0)]:
                points.append(Datapoint("AWS/SQS", "ApproximateAgeOfOldestMessage", dims, ts, age, "Seconds"))
        return points

    def _depth(self, logical: str, dims: dict[str, str], stamp: float) -> list[Datapoint]:
        self._sampled.add((logical, stamp))
        attrs = client("sqs").get_queue_attributes(
            QueueUrl=self.ctx.refs[logical], AttributeNames=list(self.GAUGES.values())
        )["Attributes"]
        values = {metric: float(attrs.get(attribute, 0)) for metric, attribute in self.GAUGES.items()}
        points = []
        before = self._last.get(logical)
        if before is not None and before[0] < stamp - 60:
            for missed in range(int(max(before[0] + 60, stamp - 300)), int(stamp), 60):
                if (logical, float(missed)) not in self._sampled:
                    self._sampled.add((logical, float(missed)))
                    points += [
                        Datapoint("AWS/SQS", m, dims, float(missed), v, "Count") for m, v in before[1].items()
                    ]
        if before is None or before[0] < stamp:
            self._last[logical] = (stamp, values)
        points += [Datapoint("AWS/SQS", m, dims, stamp, v, "Count") for m, v in values.items()]
        return points
