"""Agent events: the event catalogue and the Emitter, which turns one event into one structured log line and the
EMF metrics it counts (`metrics.metrics_for`), the ones the alarms and the dashboard read.

Why this module exists: every run must be observable and every failure must page somebody, so the log schema
and the "a failed run is counted once" rule live in one place that every handler shares. Logs go through
Powertools Logger (`logger.make_logger`: one JSON object per line, `correlation_id` = the GitHub delivery id);
every value is scrubbed of secrets (`redaction.scrub`) before it is logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics

from prfleet.observability.logger import make_logger
from prfleet.observability.metrics import (
    METRIC_UNITS,
    OUTCOME_METRIC,
    RUNS,
    make_metrics,
    metrics_for,
    publish,
)
from prfleet.observability.redaction import scrub

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
        "snapshot",  # repository.snapshot: a head's snapshot stored (planner) or opened (agent), and how
        "instructions_unreadable",  # pipeline.runner: the head's stored instructions could not be read back
        "answered",  # pipeline.answering: prfleet replied to a comment (an answer, or one line saying why not)
    }
)

# `emit("failed")` etc. (a run's outcome used as the event name) is logged and counted as `complete`.
_OUTCOME_ALIASES = frozenset(OUTCOME_METRIC)
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
        "name",
        "msg",
        "levelname",
        "levelno",
        "pathname",
        "filename",
        "module",
        "exc_info",
        "exc_text",
        "stack_info",
        "lineno",
        "funcName",
        "created",
        "msecs",
        "relativeCreated",
        "thread",
        "threadName",
        "processName",
        "process",
        "message",
        "asctime",
        "taskName",
        "level",
        "location",
        "timestamp",
        "service",
    }
)


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
        """Log one line for `event` and publish its metrics (`metrics.metrics_for` holds the mapping)."""
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
        run_id = str(context["run_id"]) if "run_id" in context else None
        metric_values = metrics_for(event, run_id, record, self._clock)
        self._log(event, record)
        publish(self._metrics, metric_values, context.get("agent"))

    def metric(self, name: str, value: float = 1, *, per_agent: bool = True) -> None:
        """Publish one named metric outside the event mapping (e.g. WebhookRejected from the webhook)."""
        if name not in METRIC_UNITS:
            raise ValueError(f"unknown metric {name!r}")
        publish(self._metrics, [(name, float(value))], self.context.get("agent") if per_agent else None)

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
            publish(
                self._metrics, [("DailySpendUsd", fields["spend_usd"]), ("DailySpendPercent", percent)], None
            )

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
        """The log record of one event: its correlation, then what each kind of field may show (the names and
        sizes of tool inputs and content, the error, tokens, cost, GenAI attributes, the duration), then the
        caller's other fields (status, iteration, reason...). Each step pops the fields it reads."""
        record: dict[str, Any] = {"event": event, **self._correlation(context)}
        _add_names_and_sizes(fields, record)
        _add_error(event, fields, record)
        _add_tokens(fields, record)
        _add_cost(fields, record)
        _add_gen_ai(event, fields, record)
        duration = fields.pop("duration_ms", None)
        if duration is None and event in ("complete", "error") and "run_id" in context:
            started = RUNS.started_at(str(context["run_id"]))
            if started is not None:
                duration = (self._clock() - started) * 1000
        if duration is not None:
            record["duration_ms"] = round(float(duration), 3)
        for key, value in fields.items():
            record[f"{key}_field" if key in _RESERVED else key] = value
        return {k: scrub(v) for k, v in record.items() if v is not None}

    def _log(self, event: str, record: dict[str, Any]) -> None:
        level = _LEVELS.get(event, logging.INFO)
        if event == "error" and record.get("fatal") is not True:
            level = logging.WARNING
        self._logger.log(level, event, extra=record, stacklevel=3)  # location = the caller of emit()


# ------------------------------------------------------------------------------ the parts of a log record


def _add_names_and_sizes(fields: dict[str, Any], record: dict[str, Any]) -> None:
    """Tool inputs as their argument names only, content (code, prompts, output) as its size only."""
    for key in _ARG_KEYS:
        if key in fields:
            value = fields.pop(key)
            names = sorted(str(k) for k in value) if isinstance(value, Mapping) else []
            record["arg_names"] = names
            record["gen_ai.tool.arg_names"] = names
    for key in _CONTENT_KEYS:
        if key in fields:
            value = fields.pop(key)
            record[f"{key}_chars"] = len(value if isinstance(value, str) else json.dumps(value, default=str))


def _add_error(event: str, fields: dict[str, Any], record: dict[str, Any]) -> None:
    """`error` / `error_type` as error_type and error_message; `message` is the error text on an error, else a
    detail (`message` is the log line's own key)."""
    message = fields.pop("message", None)
    if message is not None:
        if event == "error" or "error_type" in fields or "error" in fields:
            fields.setdefault("error", str(message))
        else:
            record["detail"] = message
    error = fields.pop("error", None)
    if error is not None:
        if isinstance(error, BaseException):
            record["error_type"] = type(error).__name__
        record["error_message"] = str(error)
    if "error_type" in fields:
        record["error_type"] = str(fields.pop("error_type"))


def _usage_get(usage: Any, name: str) -> int | None:
    value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
    return int(value) if isinstance(value, (int, float)) else None


def _add_tokens(fields: dict[str, Any], record: dict[str, Any]) -> None:
    """Token counts, from the fields or a model `usage`, with their OpenTelemetry GenAI names."""
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


def _add_cost(fields: dict[str, Any], record: dict[str, Any]) -> None:
    """The cost in micro-dollars and dollars (or dollars alone when that is all the caller has)."""
    cost_micros = fields.pop("cost_micros", None)
    cost_usd = fields.pop("cost_usd", None)
    if cost_micros is not None:
        record["cost_micros"] = int(cost_micros)
        record["cost_usd"] = round(int(cost_micros) / 1_000_000, 6)
    elif cost_usd is not None:
        record["cost_usd"] = float(cost_usd)


def _add_gen_ai(event: str, fields: dict[str, Any], record: dict[str, Any]) -> None:
    """OpenTelemetry GenAI attributes of a model call (api_call) or a tool call (tool_call, tool_result)."""
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


def spend(status: Any, emitter: Emitter | None = None) -> None:
    """Publish the day's spend from anywhere (runner, sweeper) through the process' shared Logger/Metrics.

    Powertools keeps Metrics state per process, so the handler's `@metrics.log_metrics` flushes these too."""
    (emitter or Emitter(make_logger(), make_metrics())).spend(status)
