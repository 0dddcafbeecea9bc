"""The alarms that must have fired, worked out independently of the evaluator from the run's own data: the DLQs,
the ledger, the sweeper's counts, the webhook's statuses, and each alarm's own arithmetic (ErrorRateAlarm,
LatencyAlarm, the queue ages, LedgerDriftAlarm) over every instant the alarms were evaluated at
(the stack's minute, the soak's samples, and the minutes caught up between them)."""

from __future__ import annotations

import math
from collections import Counter

from prfleet_local.soak import invariants as inv
from prfleet_local.stack.local_stack import LocalStack


def expected_alarms(
    stack: LocalStack,
    o: inv.Observed,
    dlq: dict[str, list[str]],
    daily: int,
    *,
    swept: Counter[str],
    statuses: Counter[int],
    sampled_at: list[float],
    drifts: list[float],
) -> set[str]:
    """The alarms the run's own data says must fire (their template thresholds), derived from the stores and what
    the soak saw: the sweeper's counts, the webhook's statuses, the instants the alarms were evaluated at and the
    ledger drift of each reconciliation pass."""
    out = set()
    if dlq.get("JobsDLQ"):
        out.add("JobsDLQAlarm")
    if dlq.get("PrDLQ"):
        out.add("PrDLQAlarm")
    if stack.queue_depth(
        "ScheduleDLQ"
    ):  # a scheduled run failed all of Lambda's attempts (its record is there)
        out.add("ScheduleDLQAlarm")
    # DailySpendPercent >= 80: a day whose bookings are there now, or that crossed it while the day ran (the
    # ledger's once-a-day `a80` mark; reconciliation may have given the worst cases back since, and the
    # alarm read what was published then).
    if any(
        i.get("scope") == "daily" and (int(i.get("settled", 0)) * 100 >= 80 * daily or i.get("a80"))
        for i in o.ledger
    ):
        out.add("SpendAlarm")
    if swept.get("stuck"):
        out.add("StuckRunsAlarm")  # StuckRuns >= 1
    if any(code >= 500 for code in statuses):
        out.add("WebhookErrorsAlarm")
    # ErrorRateAlarm's own arithmetic: (RunsFailed + the agent's Lambda Errors) / (RunsStarted + Errors) > 20 %
    # with at least 5 runs, over the SLIDING 15-minute range the local evaluator (and CloudWatch) uses at each
    # instant the alarms were evaluated at: it ends at the last whole minute (prfleet_local.stack.alarms.window).
    # Aligned 15-minute buckets (the former oracle) miss a breach that straddles two of them.
    agent = stack.functions["AgentFunction"].name
    points: list[tuple[float, str, float]] = []
    for d in stack.datapoints():
        fleet = d.namespace == "prfleet" and set(d.dimensions) == {"service"}
        lam = (
            d.namespace == "AWS/Lambda"
            and dict(d.dimensions) == {"FunctionName": agent}
            and d.name == "Errors"
        )
        if fleet or lam:
            points.append((d.timestamp, d.name, d.value))
    if error_rate_breached(points, sampled_at):
        out.add("ErrorRateAlarm")
    # The queue-age alarms (1 of 1 over a minute): a message that waited over 5 minutes when it was received, as the
    # stack measures it from SentTimestamp (a killed invocation's or a lost delete's message is back only after the
    # visibility timeout, 6 x the agent's Timeout: in AWS the age counts from the send too, and the alarm pages).
    # The evaluation at the end of that minute pages; the evaluator catches that minute up if no one evaluated it.
    for logical in ("JobsQueue", "PrQueue"):
        queue = stack.queue_url(logical).rsplit("/", 1)[-1]
        threshold = float(stack.alarm_definitions[stack.alarm_name(f"{logical}AgeAlarm")]["Threshold"])
        if any(
            d.namespace == "AWS/SQS"
            and d.name == "ApproximateAgeOfOldestMessage"
            and dict(d.dimensions).get("QueueName") == queue
            and d.value > threshold
            for d in stack.datapoints()
        ):
            out.add(f"{logical}AgeAlarm")
    # LedgerDriftAlarm: Maximum of LedgerDriftPercent over an hour above its threshold, from any pass.
    drift_name = stack.ctx.refs.get("LedgerDriftAlarm")  # created with the Claude API only
    drift = stack.alarm_definitions.get(str(drift_name)) if drift_name else None
    if drift is not None and any(d > float(drift["Threshold"]) for d in drifts):
        out.add("LedgerDriftAlarm")
    # LatencyAlarm's own arithmetic over what the runs published (a killed invocation's RunDuration never
    # reaches CloudWatch): the p95 of the sliding 30-minute range, only with at least 20 runs in it.
    alarm = stack.alarm_definitions[stack.alarm_name("LatencyAlarm")]
    durations = [
        (d.timestamp, d.value)
        for d in stack.datapoints()
        if d.namespace == "prfleet" and set(d.dimensions) == {"service"} and d.name == "RunDuration"
    ]
    if latency_breached(durations, sampled_at, float(alarm["Threshold"])):
        out.add("LatencyAlarm")
    return out


def latency_breached(
    durations: list[tuple[float, float]],
    sampled_at: list[float],
    threshold_ms: float,
    *,
    period: int = 1800,
    min_runs: int = 20,
) -> bool:
    """LatencyAlarm's expression, IF(FILL(n, 0) >= 20, p95, 0) > threshold, over the sliding 30-minute range that
    ends at the last whole minute before each instant in `sampled_at`. p95 is the nearest rank (CloudWatch's
    percentile of raw values, Statistics-definitions.html). `durations`: (timestamp, RunDuration in ms)."""
    for at in sampled_at:
        end = math.floor(at / 60) * 60
        values = sorted(v for ts, v in durations if end - period <= ts < end)
        if len(values) >= min_runs and values[math.ceil(0.95 * len(values)) - 1] > threshold_ms:
            return True
    return False


def error_rate_breached(points: list[tuple[float, str, float]], sampled_at: list[float]) -> bool:
    """ErrorRateAlarm's expression, IF(runs >= 5, 100 * (failed + errors) / runs, 0) > 20 with runs = started +
    errors, over the sliding 15-minute range that ends at the last whole minute before each instant in
    `sampled_at` (prfleet_local.stack.alarms.window). `points`: (timestamp, metric name, value)."""
    for at in sampled_at:
        end = math.floor(at / 60) * 60
        w: Counter[str] = Counter()
        for ts, name, value in points:
            if end - 900 <= ts < end:
                w[name] += value
        n = w["RunsStarted"] + w["Errors"]
        if n >= 5 and 100 * (w["RunsFailed"] + w["Errors"]) / n > 20:
            return True
    return False
