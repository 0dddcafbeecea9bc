"""Agent events: one structured log line per event plus the EMF metrics the alarms and the dashboard read.

Why this module exists: every run must be observable and every failure must page somebody, so the log schema,
the metric names and the "a failed run is counted once" rule live in one place that every handler shares.

Logs go through Powertools Logger (one JSON object per line, `correlation_id` = the GitHub delivery id);
metrics through Powertools Metrics as CloudWatch Embedded Metric Format (EMF), which Powertools prints to
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
import json
import logging
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

DEFAULT_SERVICE = "prfleet"
DEFAULT_NAMESPACE = "prfleet"

EVENTS = frozenset(
    {
        "start",
        "api_call",
        "tool_call",
        "tool_result",
        "complete",
        "error",
        "cached",
        "deferred",
        "superseded",
        "skipped",
        "stuck",
        "heartbeat",
        "spend",  # the budget notice (runner: a scope first reached 80 % today); the metrics come from spend()
        "retrying",  # runner: open reservations fill the budget for now; the job is re-sent with a delay
        "circuit",  # runner / sweeper: the spend-limit circuit opened or closed
        "continuation",  # agents: a reply cut at max_tokens is continued with a larger max_tokens
        "refusal",  # agents: the model declined (stop_reason refusal, with its category)
        "fallback",  # agents: a refusal is retried on the fallback model
        "count_tokens",  # runner: the input counted before a reservation
        "estimated",  # runner: a failed call's cost booked from an estimate (billed but no usage)
    }
)

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
}
# Metrics that only make sense for the whole deployment: never copied per agent.
FLEET_ONLY = frozenset({"DailySpendUsd", "DailySpendPercent", "WebhookRejected", "WebhookErrors"})

_OUTCOME_METRIC = {"succeeded": "RunsSucceeded", "partial": "RunsPartial", "failed": "RunsFailed"}
# `emit("failed")` etc. (a run's outcome used as the event name) is logged and counted as `complete`.
_OUTCOME_ALIASES = frozenset(_OUTCOME_METRIC)
_SIMPLE_COUNTERS = {
    "cached": "CacheHits",
    "deferred": "JobsDeferred",
    "superseded": "JobsSuperseded",
    "stuck": "StuckRuns",
}
_LEVELS = {
    "circuit": logging.WARNING,
    "error": logging.ERROR,
    "stuck": logging.WARNING,
    "deferred": logging.INFO,
    "spend": logging.WARNING,
}

# Correlation context: the caller's name -> the log key.
_CONTEXT_KEYS = {
    "run_id": "run_id",
    "agent": "agent",
    "repo": "repository",
    "repository": "repository",
    "pr": "pr",
    "number": "pr",
    "head_sha": "head_sha",
    "path": "path",
    "model": "model",
    "delivery_id": "delivery_id",
    "job_id": "job_id",
}
# Fields that may hold code, prompts, tool output or tool inputs: never logged, only their size or names.
_ARG_KEYS = ("args", "arguments", "input", "tool_input")
_CONTENT_KEYS = ("result", "output", "content", "text", "prompt", "messages", "diff", "body", "patch")
# Attributes of logging.LogRecord: passing them in `extra` raises KeyError, so they are renamed.
_RESERVED = frozenset(
    {
        "name", "msg", "levelname", "levelno", "pathname", "filename", "module", "exc_info", "exc_text",
        "stack_info", "lineno", "funcName", "created", "msecs", "relativeCreated", "thread", "threadName",
        "processName", "process", "message", "asctime", "taskName", "level", "location", "timestamp",
        "service",
    }
)  # fmt: skip
_MAX_TEXT = 2000

# ------------------------------------------------------------------------------------------------- redaction

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 8  # shorter values (an app id, "true") would blank out ordinary text everywhere

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys (RSA, EC, OPENSSH, PKCS#8, encrypted), also when cut off before the END line.
    (
        re.compile(
            r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.DOTALL
        ),
        "[REDACTED PRIVATE KEY]",
    ),
    (re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"), REDACTED),  # Anthropic API / admin keys
    (re.compile(r"github_pat_[A-Za-z0-9_]{20,}"), REDACTED),  # fine-grained GitHub tokens
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), REDACTED),  # classic, OAuth, user/server, refresh tokens
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),  # AWS access key ids (long-term and STS)
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 " + REDACTED),  # Authorization: Bearer
    (  # aws_secret_access_key = ... in config dumps
        re.compile(r"(?i)(aws_secret_access_key\W{0,3})[A-Za-z0-9/+=]{40}"),
        r"\1" + REDACTED,
    ),
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Remember a secret value (called when a secret is loaded) so that no log line ever carries it."""
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        return
    variants = {value, value.strip()}
    escaped = json.dumps(value)[1:-1]  # how it looks inside a JSON string (a PEM key's newlines become \n)
    variants.add(escaped)
    with _secrets_lock:
        _secrets.update(v for v in variants if len(v) >= MIN_SECRET_LENGTH)


def registered_secrets() -> frozenset[str]:
    """The registered secret values (a snapshot)."""
    with _secrets_lock:
        return frozenset(_secrets)


def forget_secrets() -> None:
    """Drop every registered secret (tests; a Lambda container never needs this)."""
    with _secrets_lock:
        _secrets.clear()


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` without the given secrets, the registered ones, and anything shaped like a key or token."""
    if not text:
        return text
    values = set(registered_secrets())
    if secrets is not None:
        values.update(s for s in secrets if isinstance(s, str) and s)
    for value in sorted(values, key=len, reverse=True):  # longest first: a secret may contain another
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _clean(value: Any) -> Any:
    """Redact strings (also inside lists and dicts) and cut very long ones."""
    if isinstance(value, str):
        text = redact(value)
        return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "...[truncated]"
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return _clean(str(value))


# ------------------------------------------------------------------------------------------------- setup


def service_name() -> str:
    """The Powertools service name (POWERTOOLS_SERVICE_NAME, default prfleet): the `service` dimension."""
    return os.environ.get("POWERTOOLS_SERVICE_NAME") or DEFAULT_SERVICE


def metrics_namespace() -> str:
    """The metrics namespace (POWERTOOLS_METRICS_NAMESPACE, default prfleet): the alarms' Namespace."""
    return os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE


class _LiveStdout:
    """A stream that writes to whatever sys.stdout is at write time, so capture() and capsys see log lines
    even though the Powertools handler is created once per process."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def make_logger(service: str | None = None, *, level: str | int | None = None) -> Logger:
    """The one Logger setup handlers share: JSON lines on stdout, UTC timestamps, service from the env."""
    return Logger(service=service or service_name(), level=level, stream=_LiveStdout(), utc=True)  # type: ignore[arg-type]


def make_metrics(namespace: str | None = None, service: str | None = None) -> Metrics:
    """The one Metrics setup handlers share (namespace and service from the env, default prfleet)."""
    return Metrics(namespace=namespace or metrics_namespace(), service=service or service_name())


# ------------------------------------------------------------------------------------------------- runs


class _RunBook:
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


_RUNS = _RunBook()


# ------------------------------------------------------------------------------------------------- emitter


def _is_model_error(record: Mapping[str, Any]) -> bool:
    """An `error` about one model call (the agent loop logs each failed attempt with its HTTP status)."""
    return any(key in record for key in ("status", "attempt", "http_status"))


def _usage_get(usage: Any, name: str) -> int | None:
    value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
    return int(value) if isinstance(value, (int, float)) else None


class Emitter:
    """Emits agent events with a fixed correlation context (run, agent, repository, PR, head, path, model,
    delivery). `emit` never logs tool argument values, tool output or file content: only names and sizes."""

    def __init__(
        self,
        logger: Logger,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        **context: Any,
    ) -> None:
        self._logger = logger
        self._metrics = metrics
        self._clock = clock
        self.context: dict[str, Any] = {k: v for k, v in context.items() if v is not None}

    def bind(self, **more: Any) -> Emitter:
        """A child emitter with more context (e.g. the runner binds run_id, agent, path and model per job)."""
        return Emitter(
            self._logger,
            self._metrics,
            clock=self._clock,
            **{**self.context, **more},
        )

    # -------------------------------------------------------------------------------------- public API

    def emit(self, event: str, **fields: Any) -> None:
        """Log one line for `event` and publish its metrics (see module docstring for the mapping)."""
        if event in _OUTCOME_ALIASES:
            fields.setdefault("status", event)
            event = "complete"
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; expected one of {sorted(EVENTS)}")
        context = {**self.context}
        for key in list(fields):
            if key in _CONTEXT_KEYS:  # an event may refine the context (e.g. model on api_call)
                context[key] = fields.pop(key)
        record = self._record(event, context, fields)
        metric_values = self._metrics_for(event, context, record)
        self._log(event, record)
        self._publish(metric_values, context.get("agent"))

    def metric(self, name: str, value: float = 1, *, per_agent: bool = True) -> None:
        """Publish one named metric outside the event mapping (e.g. WebhookRejected from the webhook)."""
        if name not in METRIC_UNITS:
            raise ValueError(f"unknown metric {name!r}")
        self._publish([(name, float(value))], self.context.get("agent") if per_agent else None)

    def spend(self, status: Any) -> None:
        """Publish the day's spend (DailySpendUsd, DailySpendPercent) from a budget SpendStatus.

        Only the deployment-wide ("daily") scope is published: a PR scope at 80 % must not page anybody."""
        scope = getattr(status, "scope", "daily")
        micros = getattr(status, "settled", None)
        if micros is None:
            micros = getattr(status, "committed", 0)
        percent = float(getattr(status, "percent", 0.0) or 0.0)
        fields = {
            "scope": scope,
            "day": getattr(status, "day", None),
            "spend_usd": round(int(micros or 0) / 1_000_000, 6),
            "reserved_usd": round(int(getattr(status, "reserved", 0) or 0) / 1_000_000, 6),
            "limit_usd": round(int(getattr(status, "limit", 0) or 0) / 1_000_000, 6),
            "spend_percent": round(percent, 3),
            "crossed_80": bool(getattr(status, "crossed_80", False)),
        }
        level = logging.WARNING if fields["crossed_80"] else logging.INFO
        self._logger.log(
            level,
            "spend",
            extra={"event": "spend", **self._correlation(self.context), **fields},
            stacklevel=2,
        )
        if scope == "daily":
            self._publish([("DailySpendUsd", fields["spend_usd"]), ("DailySpendPercent", percent)], None)

    def flush(self) -> None:
        """Flush the fleet-level metrics now (handlers normally use `@metrics.log_metrics` instead)."""
        if getattr(self._metrics, "metric_set", None):
            self._metrics.flush_metrics()

    # -------------------------------------------------------------------------------------- internals

    @staticmethod
    def _correlation(context: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in context.items():
            out[_CONTEXT_KEYS.get(key, key)] = value
        if "delivery_id" in out:
            out["correlation_id"] = out["delivery_id"]  # Powertools' correlation id key
        if "agent" in out:
            out["gen_ai.agent.name"] = out["agent"]
        if "model" in out:
            out["gen_ai.system"] = "anthropic"  # semconv <= 1.36 name
            out["gen_ai.provider.name"] = "anthropic"  # its successor
            out["gen_ai.request.model"] = out["model"]
        return out

    def _record(self, event: str, context: Mapping[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {"event": event, **self._correlation(context)}

        for key in _ARG_KEYS:  # tool inputs: names only, never values
            if key in fields:
                value = fields.pop(key)
                names = sorted(str(k) for k in value) if isinstance(value, Mapping) else []
                record["arg_names"] = names
                record["gen_ai.tool.arg_names"] = names
        for key in _CONTENT_KEYS:  # content: size only
            if key in fields:
                value = fields.pop(key)
                record[f"{key}_chars"] = len(
                    value if isinstance(value, str) else json.dumps(value, default=str)
                )

        message = fields.pop("message", None)
        if message is not None:  # `message` is the log line's own key: it means the error text or a detail
            if event == "error" or "error_type" in fields or "error" in fields:
                fields.setdefault("error", str(message))
            else:
                record["detail"] = message
        error = fields.pop("error", None)
        if error is not None:
            if isinstance(error, BaseException):
                record["error_type"] = type(error).__name__
                record["error_message"] = str(error)
            else:
                record["error_message"] = str(error)
        if "error_type" in fields:
            record["error_type"] = str(fields.pop("error_type"))

        usage = fields.pop("usage", None)
        tokens = {
            "input_tokens": fields.pop("input_tokens", None),
            "output_tokens": fields.pop("output_tokens", None),
            "cache_read_tokens": fields.pop("cache_read_tokens", fields.pop("cache_read_input_tokens", None)),
            "cache_write_tokens": fields.pop(
                "cache_write_tokens", fields.pop("cache_creation_input_tokens", None)
            ),
        }
        if usage is not None:
            tokens["input_tokens"] = tokens["input_tokens"] or _usage_get(usage, "input_tokens")
            tokens["output_tokens"] = tokens["output_tokens"] or _usage_get(usage, "output_tokens")
            tokens["cache_read_tokens"] = tokens["cache_read_tokens"] or _usage_get(
                usage, "cache_read_input_tokens"
            )
            tokens["cache_write_tokens"] = tokens["cache_write_tokens"] or _usage_get(
                usage, "cache_creation_input_tokens"
            )
        if any(v is not None for v in tokens.values()):
            tokens = {k: int(v or 0) for k, v in tokens.items()}
            record.update(tokens)
            # OpenTelemetry GenAI semconv: for Anthropic, gen_ai.usage.input_tokens includes cached input.
            record["gen_ai.usage.input_tokens"] = (
                tokens["input_tokens"] + tokens["cache_read_tokens"] + tokens["cache_write_tokens"]
            )
            record["gen_ai.usage.output_tokens"] = tokens["output_tokens"]
            record["gen_ai.usage.cache_read.input_tokens"] = tokens["cache_read_tokens"]
            record["gen_ai.usage.cache_creation.input_tokens"] = tokens["cache_write_tokens"]

        cost_micros = fields.pop("cost_micros", None)
        cost_usd = fields.pop("cost_usd", None)
        if cost_micros is not None:
            record["cost_micros"] = int(cost_micros)
            record["cost_usd"] = round(int(cost_micros) / 1_000_000, 6)
        elif cost_usd is not None:
            record["cost_usd"] = float(cost_usd)

        if event == "api_call":
            record["gen_ai.operation.name"] = "chat"
            response_model = fields.pop("response_model", None)
            if response_model:
                record["gen_ai.response.model"] = response_model
            response_id = fields.pop("response_id", None) or fields.pop("message_id", None)
            if response_id:
                record["gen_ai.response.id"] = response_id
            stop = fields.get("stop_reason") or fields.pop("finish_reason", None)
            if stop:
                record["stop_reason"] = stop
                record["gen_ai.response.finish_reasons"] = [stop]
        if event in ("tool_call", "tool_result"):
            record["gen_ai.operation.name"] = "execute_tool"
            tool = fields.pop("tool", None) or fields.pop("tool_name", None) or fields.pop("name", None)
            if tool:
                record["tool"] = tool
                record["gen_ai.tool.name"] = tool
            call_id = fields.pop("tool_use_id", None) or fields.pop("call_id", None)
            if call_id:
                record["gen_ai.tool.call.id"] = call_id

        duration = fields.pop("duration_ms", None)
        if duration is None and event in ("complete", "error") and "run_id" in context:
            started = _RUNS.started_at(str(context["run_id"]))
            if started is not None:
                duration = (self._clock() - started) * 1000
        if duration is not None:
            record["duration_ms"] = round(float(duration), 3)

        for key, value in fields.items():  # anything else the caller adds (status, iteration, reason...)
            record[f"{key}_field" if key in _RESERVED else key] = value
        return {k: _clean(v) for k, v in record.items() if v is not None}

    def _metrics_for(
        self, event: str, context: Mapping[str, Any], record: dict[str, Any]
    ) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        run_id = str(context["run_id"]) if "run_id" in context else None
        if event == "start":
            if run_id:
                _RUNS.start(run_id, self._clock())
            out += [("RunsStarted", 1.0), ("CacheMisses", 1.0)]  # a run that starts was not served from cache
        elif event == "api_call":
            out.append(("ModelCalls", 1.0))
            if "error_message" in record or "error_type" in record:
                out.append(("ModelErrors", 1.0))
            for field, name in (
                ("input_tokens", "InputTokens"),
                ("output_tokens", "OutputTokens"),
                ("cache_read_tokens", "CacheReadTokens"),
                ("cache_write_tokens", "CacheWriteTokens"),
            ):
                if field in record:
                    out.append((name, float(record[field])))
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
            metric = _OUTCOME_METRIC.get(outcome)
            if metric and (run_id is None or _RUNS.end(run_id, outcome)):
                out.append((metric, 1.0))
                if "duration_ms" in record:
                    out.append(("RunDuration", float(record["duration_ms"])))
            elif metric:
                record["already_counted"] = True
        elif event in _SIMPLE_COUNTERS:
            out.append((_SIMPLE_COUNTERS[event], float(record.get("count", 1))))
        return out

    def _log(self, event: str, record: dict[str, Any]) -> None:
        level = _LEVELS.get(event, logging.INFO)
        if event == "error" and record.get("fatal") is not True:
            level = logging.WARNING
        self._logger.log(level, event, extra=record, stacklevel=3)  # location = the caller of emit()

    def _publish(self, values: list[tuple[str, float]], agent: Any) -> None:
        if not values:
            return
        for name, value in values:
            self._metrics.add_metric(name=name, unit=METRIC_UNITS[name], value=value)
        per_agent = [(n, v) for n, v in values if n not in FLEET_ONLY]
        if agent and per_agent:
            provider = AmazonCloudWatchEMFProvider(
                namespace=getattr(getattr(self._metrics, "provider", None), "namespace", None)
                or metrics_namespace(),
                service=getattr(getattr(self._metrics, "provider", None), "service", None) or service_name(),
            )
            provider.add_dimension(name="agent", value=str(agent))
            for name, value in per_agent:
                provider.add_metric(name=name, unit=METRIC_UNITS[name], value=value)
            provider.flush_metrics()  # prints one EMF line now; honours POWERTOOLS_METRICS_DISABLED


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


def spend(status: Any, emitter: Emitter | None = None) -> None:
    """Publish the day's spend from anywhere (runner, sweeper) through the process' shared Logger/Metrics.

    Powertools keeps Metrics state per process, so the handler's `@metrics.log_metrics` flushes these too."""
    (emitter or Emitter(make_logger(), make_metrics())).spend(status)
