"""EMF metrics: the metric catalogue, which metrics each event counts, and their publication (fleet and per agent).

Metrics go through Powertools Metrics as CloudWatch Embedded Metric Format (EMF), which Powertools prints to
stdout and CloudWatch Logs turns into metrics:
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html

Dimensions. Powertools adds a `service` dimension to every metric of a `Metrics` instance. Fleet-level metrics
(the ones the alarms watch) are added to the shared `Metrics` the handler passes in and carry only `service`;
the handler flushes them when each SQS record ends (`record_metrics`) and at the end of the invocation
(`@metrics.log_metrics`). The per-agent
copy for the dashboard is a separate EMF object with `service` and `agent`, printed at once for each event by
a private `AmazonCloudWatchEMFProvider`. Why not a second `Metrics` instance: Powertools keeps `Metrics` state
in class attributes shared by all instances, so an `agent` dimension added to one would leak onto the fleet
metrics (and a batch mixing agents would get one agent for all). Why not `single_metric`: it holds one metric
per EMF line, while a per-event provider puts all of an event's metrics (tokens, cost, calls) in one line.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from prfleet.observability.logger import service_name

DEFAULT_NAMESPACE = "prfleet"

# Metric names and units (docs/architecture.md). CloudWatch has no currency unit: dollars are "None".
METRIC_UNITS: dict[str, str] = {
    "RunsStarted": "Count",
    "RunsSucceeded": "Count",
    "RunsFailed": "Count",
    "RunsPartial": "Count",
    "RunDuration": "Milliseconds",
    "ModelCalls": "Count",
    "ModelErrors": "Count",
    "InputTokens": "Count",
    "OutputTokens": "Count",
    "CacheReadTokens": "Count",
    "CacheWriteTokens": "Count",
    "CostUsd": "None",
    "DailySpendUsd": "None",
    "DailySpendPercent": "Percent",
    "CacheHits": "Count",
    "CacheMisses": "Count",
    "JobsDeferred": "Count",
    "JobsSuperseded": "Count",
    "StuckRuns": "Count",
    "WebhookRejected": "Count",
    "WebhookErrors": "Count",
    # An agent container opened a head without its snapshot (too large, failed, refused archive, missing): the
    # jobs still run, through GitHub, with grep over the changed files only. No alarm: docs/runbook.md#snapshot.
    "SnapshotFallbacks": "Count",
    # What the team thinks of the findings (FEEDBACK_METRICS below): the change in 👍 / 👎 reactions on prfleet's
    # inline comments, and findings a team's suppression skipped.
    "FindingsUpvoted": "Count",
    "FindingsDownvoted": "Count",
    "FindingsSuppressed": "Count",
    # Comments addressed to prfleet that it does not act on (a bot, prfleet itself, an untrusted author, a closed
    # PR, an edit): the log line's `comment_ignored` field says which. Answers posted in threads / on the PR.
    "CommentsIgnored": "Count",
    "CommentsAnswered": "Count",
}
# Metrics that only make sense for the whole deployment: never copied per agent.
FLEET_ONLY = frozenset(
    {
        "DailySpendUsd",
        "DailySpendPercent",
        "WebhookRejected",
        "WebhookErrors",
        "CommentsIgnored",
        # published with their own dimensions by publish_feedback, never as a per-agent copy
        "FindingsUpvoted",
        "FindingsDownvoted",
        "FindingsSuppressed",
    }
)


# ------------------------------------------------------------------------------------------ feedback metrics
# The one place the feedback metrics are named and dimensioned (pipeline.reactions emits the first two; the
# suppression path emits FindingsSuppressed through `publish_feedback` too).
#   FindingsUpvoted / FindingsDownvoted: the CHANGE in 👍 / 👎 reactions on prfleet's own inline comments since they
#   were last read (a reaction taken back is a negative value), so a day's Sum is the day's net reactions.
#   FindingsSuppressed: findings a repository's suppression ("ignore this") kept out of a review.
# Each is published twice, like the run metrics: a fleet copy with only `service` (NoiseAlarm reads it) and a copy
# with service + agent + model + category (the dashboard). Limits: CloudWatch takes at most 30 dimensions per
# metric and Powertools validates 29 beside `service` (its MAX_DIMENSIONS); 4 is far under either
# (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch_concepts.html#Dimension,
# https://docs.aws.amazon.com/powertools/python/latest/core/metrics/). Every distinct set of dimension values is a
# separate custom metric, billed per month, and an EMF value whose dimensions are not strings on the root node is
# not a metric at all (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html):
# so the values are bounded strings. `category` is the model's free text (kebab-case, up to 40 characters): only the
# common categories below keep their name, any other is published as "other" (the store keeps the exact one, and
# `prfleet quality report` shows it); `model` is the configured model id, `agent` the configured agent.
FEEDBACK_METRICS = frozenset({"FindingsUpvoted", "FindingsDownvoted", "FindingsSuppressed"})
FEEDBACK_DIMENSIONS = ("agent", "model", "category")
FEEDBACK_CATEGORIES = frozenset(
    {
        "bug",
        "security",
        "error-handling",
        "correctness",
        "performance",
        "concurrency",
        "resource-leak",
        "maintainability",
        "style",
        "tests",
        "docs",
        "api",
        "compatibility",
        "prompt-injection",
    }
)
OTHER_CATEGORY = "other"
_MAX_DIMENSION_VALUE = 100  # agents and model ids are far shorter; a longer value is cut, never dropped


def feedback_category(category: str | None) -> str:
    """The `category` dimension value of a finding: a common category by name, anything else "other"."""
    value = str(category or "").strip().lower()
    return value if value in FEEDBACK_CATEGORIES else OTHER_CATEGORY


def feedback_dimensions(agent: str | None, model: str | None, category: str | None) -> dict[str, str]:
    """The dimension values (besides `service`) of one feedback datapoint: always non-empty strings."""
    return {
        "agent": (str(agent or "").strip() or "unknown")[:_MAX_DIMENSION_VALUE],
        "model": (str(model or "").strip() or "unknown")[:_MAX_DIMENSION_VALUE],
        "category": feedback_category(category),
    }


def publish_feedback(
    metrics: Metrics, name: str, value: float, *, agent: str | None, model: str | None, category: str | None
) -> None:
    """One feedback datapoint: its fleet copy on the shared `metrics` (flushed by the handler) and its
    agent / model / category copy printed now. A zero change publishes nothing."""
    if name not in FEEDBACK_METRICS:
        raise ValueError(f"{name!r} is not a feedback metric ({', '.join(sorted(FEEDBACK_METRICS))})")
    if not value:
        return
    metrics.add_metric(name=name, unit=METRIC_UNITS[name], value=float(value))
    provider = AmazonCloudWatchEMFProvider(
        namespace=getattr(getattr(metrics, "provider", None), "namespace", None) or metrics_namespace(),
        service=getattr(getattr(metrics, "provider", None), "service", None) or service_name(),
    )
    for key, dim in feedback_dimensions(agent, model, category).items():
        provider.add_dimension(name=key, value=dim)
    provider.add_metric(name=name, unit=METRIC_UNITS[name], value=float(value))
    provider.flush_metrics()


# A run's outcome -> the metric that counts it (an outcome is also accepted as an event name: see events.emit).
OUTCOME_METRIC = {"succeeded": "RunsSucceeded", "partial": "RunsPartial", "failed": "RunsFailed"}
_SIMPLE_COUNTERS = {
    "cached": "CacheHits",
    "deferred": "JobsDeferred",
    "superseded": "JobsSuperseded",
    "stuck": "StuckRuns",
    "answered": "CommentsAnswered",
}
_TOKEN_METRICS = (
    ("input_tokens", "InputTokens"),
    ("output_tokens", "OutputTokens"),
    ("cache_read_tokens", "CacheReadTokens"),
    ("cache_write_tokens", "CacheWriteTokens"),
)


def metrics_namespace() -> str:
    """The metrics namespace (POWERTOOLS_METRICS_NAMESPACE, default prfleet): the alarms' Namespace."""
    return os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE


def make_metrics(namespace: str | None = None, service: str | None = None) -> Metrics:
    """The one Metrics setup handlers share (namespace and service from the env, default prfleet)."""
    return Metrics(namespace=namespace or metrics_namespace(), service=service or service_name())


@contextlib.contextmanager
def record_metrics(metrics: Metrics) -> Iterator[None]:
    """Flush the fleet-level metrics of one SQS record when the record ends, also when it raises.

    Why: Powertools flushes when the handler returns, and an invocation Lambda stops at its Timeout or kills for
    memory never returns: every record of its batch would vanish from RunsStarted / RunsFailed, the ones that
    completed included. Flushed per record, only the record that was running is lost, and the function's own
    AWS/Lambda Errors count it (the error-rate alarm adds them)."""
    try:
        yield
    finally:
        if getattr(metrics, "metric_set", None):
            metrics.flush_metrics()


class RunBook:
    """Which runs already ended (so a failed run is counted once even if both `error` and `complete` arrive,
    from the same or different Emitters) and when each started. Bounded, for warm Lambda containers."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._started: OrderedDict[str, float] = OrderedDict()
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, run_id: str, at: float) -> None:
        with self._lock:
            self._started[run_id] = at
            self._ended.pop(run_id, None)  # the same run id re-run (a re-queued job) counts again
            while len(self._started) > self._size:
                self._started.popitem(last=False)

    def started_at(self, run_id: str) -> float | None:
        with self._lock:
            return self._started.get(run_id)

    def end(self, run_id: str, outcome: str) -> bool:
        """True the first time a run ends; False when it was already counted."""
        with self._lock:
            if run_id in self._ended:
                return False
            self._ended[run_id] = outcome
            while len(self._ended) > self._size:
                self._ended.popitem(last=False)
            return True


RUNS = RunBook()  # one per process: the Emitters of all handlers' records share it


def _is_model_error(record: Mapping[str, Any]) -> bool:
    """An `error` about one model call (the agent loop logs each failed attempt with its HTTP status)."""
    return any(key in record for key in ("status", "attempt", "http_status"))


def metrics_for(
    event: str, run_id: str | None, record: dict[str, Any], clock: Callable[[], float]
) -> list[tuple[str, float]]:
    """The (metric, value) pairs one event's log record counts. A run's end is counted once: a second ending
    of the same run is marked `already_counted` in the record instead."""
    out: list[tuple[str, float]] = []
    if event == "start":
        if run_id:
            RUNS.start(run_id, clock())
        out += [("RunsStarted", 1.0), ("CacheMisses", 1.0)]  # a run that starts was not served from cache
    elif event == "api_call":
        out.append(("ModelCalls", 1.0))
        if "error_message" in record or "error_type" in record:
            out.append(("ModelErrors", 1.0))
        out += [(name, float(record[field])) for field, name in _TOKEN_METRICS if field in record]
        if "cost_usd" in record:
            out.append(("CostUsd", float(record["cost_usd"])))
    elif event in ("complete", "error"):
        if event == "error" and _is_model_error(record):
            out += [("ModelCalls", 1.0), ("ModelErrors", 1.0)]
        if event == "complete":
            outcome = str(record.get("status", "succeeded"))
        else:
            # Only an error that says fatal=True ends its run; others (a retried API error, a corrective
            # turn, a rate limit re-queued with retry_after) are logged and the run's `complete` counts.
            outcome = "failed" if record.get("fatal") is True else ""
        metric = OUTCOME_METRIC.get(outcome)
        if metric and (run_id is None or RUNS.end(run_id, outcome)):
            out.append((metric, 1.0))
            if "duration_ms" in record:
                out.append(("RunDuration", float(record["duration_ms"])))
        elif metric:
            record["already_counted"] = True
    elif event == "snapshot":
        if record.get("action") == "opened" and record.get("outcome") == "fallback":
            out.append(("SnapshotFallbacks", 1.0))
    elif event in _SIMPLE_COUNTERS:
        out.append((_SIMPLE_COUNTERS[event], float(record.get("count", 1))))
    return out


def publish(metrics: Metrics, values: list[tuple[str, float]], agent: Any) -> None:
    """Add `values` to the fleet-level `metrics`, and print their per-agent copy (FLEET_ONLY excepted) now."""
    if not values:
        return
    for name, value in values:
        metrics.add_metric(name=name, unit=METRIC_UNITS[name], value=value)
    per_agent = [(n, v) for n, v in values if n not in FLEET_ONLY]
    if agent and per_agent:
        provider = AmazonCloudWatchEMFProvider(
            namespace=getattr(getattr(metrics, "provider", None), "namespace", None) or metrics_namespace(),
            service=getattr(getattr(metrics, "provider", None), "service", None) or service_name(),
        )
        provider.add_dimension(name="agent", value=str(agent))
        for name, value in per_agent:
            provider.add_metric(name=name, unit=METRIC_UNITS[name], value=value)
        provider.flush_metrics()  # prints one EMF line now; honours POWERTOOLS_METRICS_DISABLED
