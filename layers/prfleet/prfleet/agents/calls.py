"""One model call, ours end to end: the SDK's retries are off and this module applies our retry policy, so every
attempt is logged with its request-id, priced by the budget guard, and no wait runs past the Lambda's deadline.
Also what a call reports back: the usage buckets the run records and the stop a terminal error puts on the run.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

from prfleet.cost import pricing
from prfleet.observability import tracing

Status = Literal["succeeded", "partial", "failed"]


class CallGuard(Protocol):
    """Budget hook around every model call; any exception from before_call propagates out of run_agent.

    after_call prices what was served (the response's `model`, not the one asked for; `pricing.billed_model`:
    the provider id invoked when the response names that id's model); on_error gets the exception
    so the guard decides whether the failed call may have been billed, and returns what it booked for it."""

    def before_call(self, model: str, params: dict) -> object: ...

    def after_call(self, token: object, usage: Any, *, model: str) -> int: ...

    def on_error(self, token: object, exc: BaseException) -> int: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Our retry policy (the SDK's is switched off so that every attempt is ours and logged)."""

    max_attempts: int = 4  # per model call, across 429 / 529 / 5xx / connection errors
    base_delay: float = 0.5
    max_delay: float = 8.0
    min_call_seconds: float = 2.0  # do not start a call with less time than this left before the deadline
    default_rate_limit_wait: float = 5.0  # a 429 without retry-after


_SPEND_LIMIT_RE = re.compile(r"spend(ing)?[ _-]limit|usage limit|credit balance|billing", re.IGNORECASE)
_BILLED_TOTALS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
# Every bucket the run records: the four billed totals plus the TTL split of cache writes and the thinking share
# of output (already inside output_tokens: never add them to the totals).
USAGE_KEYS = (
    *_BILLED_TOTALS,
    "cache_creation_5m_input_tokens",
    "cache_creation_1h_input_tokens",
    "thinking_tokens",
)


def _refusal_fields(message: Any) -> dict[str, Any]:
    """stop_details of a refusal, for the api_call event (category and explanation; nothing otherwise)."""
    if getattr(message, "stop_reason", None) != "refusal":
        return {}
    details = getattr(message, "stop_details", None)
    return {
        "refusal_category": getattr(details, "category", None),
        "refusal_explanation": (getattr(details, "explanation", None) or "")[:300],
    }


class IncompleteStream(ValueError):
    """A 200 stream that ended before message_stop (no stop_reason): the call may have been billed."""


def usage_fields(usage: Any) -> dict[str, int]:
    """Every bucket of an SDK Usage (or dict), zero when absent."""

    def get(obj: Any, name: str) -> Any:
        if obj is None:
            return None
        return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)

    out = {k: int(get(usage, k) or 0) for k in _BILLED_TOTALS}
    cc = get(usage, "cache_creation")
    out["cache_creation_5m_input_tokens"] = int(get(cc, "ephemeral_5m_input_tokens") or 0)
    out["cache_creation_1h_input_tokens"] = int(get(cc, "ephemeral_1h_input_tokens") or 0)
    if cc is None:
        out["cache_creation_5m_input_tokens"] = out["cache_creation_input_tokens"]  # the API's default TTL
    out["thinking_tokens"] = int(get(get(usage, "output_tokens_details"), "thinking_tokens") or 0)
    return out


def retry_after_seconds(headers: Mapping[str, str] | None, *, now: float) -> float | None:
    """retry-after-ms, else retry-after (seconds or HTTP date), as seconds from now; None when absent."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - now)
    except (TypeError, ValueError):
        return None


class StopRun(Exception):
    """Ends the run with this status: a call's terminal error (as the retry policy classifies it), the deadline,
    or a turn the loop cannot go on from."""

    def __init__(
        self, status: Status, error: str, *, retry_after: float | None = None, stop: str | None = None
    ):
        super().__init__(error)
        self.status: Status = status
        self.error = error
        self.retry_after = retry_after
        self.stop = stop


class ModelCaller:
    """Makes the run's model calls with our retry policy and keeps what they cost and used: the usage buckets,
    the cost the guard booked, the model that last answered."""

    def __init__(
        self,
        model_client: Any,
        *,
        deadline: float,
        guard: CallGuard,
        emit: Callable[..., None],
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        rng: random.Random,
        retry: RetryPolicy,
        call_timeout: float,
    ) -> None:
        self.model_client = model_client.with_options(max_retries=0)
        self.deadline, self.guard, self.emit = deadline, guard, emit
        self.clock, self.sleep, self.rng, self.retry = clock, sleep, rng, retry
        self.call_timeout = call_timeout
        self.usage = dict.fromkeys(USAGE_KEYS, 0)
        self.cost = 0
        self.served_model: str | None = None
        self._model = (
            ""  # the model of the call under way, and its max_tokens and loop iteration (for events)
        )
        self._max_tokens = 0
        self._iteration = 0

    def tokens_used(self) -> int:
        """The run's billed token totals so far (what max_run_tokens caps)."""
        return sum(self.usage[k] for k in _BILLED_TOTALS)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.retry.max_delay, self.retry.base_delay * 2 ** (attempt - 1))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def _wait_or_stop(self, wait: float, attempt: int, what: str) -> None:
        if attempt >= self.retry.max_attempts:
            raise StopRun("failed", f"{what}: gave up after {attempt} attempts", retry_after=wait)
        if self.clock() + wait + self.retry.min_call_seconds > self.deadline:
            raise StopRun("failed", f"{what}: waiting {wait:.1f}s would pass the deadline", retry_after=wait)
        self.sleep(wait)

    def call(self, params: dict[str, Any], *, iteration: int) -> Any:
        """The response to `params` (the loop's `iteration`), after as many attempts as the policy allows;
        raises StopRun when it gives up or the deadline is near, and whatever guard.before_call raises."""
        # Lazy: the SDK takes ~3 s to import (docs/performance.md, "Import time per function"), and the planner
        # imports this package without ever calling a model.
        import anthropic

        attempt = 0
        while True:
            attempt += 1
            left = self.deadline - self.clock()
            if left < self.retry.min_call_seconds:
                raise StopRun("partial", "deadline reached", stop="deadline")
            timeout = min(self.call_timeout, left)
            self._model, self._max_tokens, self._iteration = params["model"], params["max_tokens"], iteration
            token = self.guard.before_call(params["model"], params)  # BudgetExceeded propagates to the runner
            # One subsegment per attempt: what X-Ray shows of the call (its cost is known once the guard books it).
            with tracing.subsegment("model_call", remote=True, model=params["model"]) as span:
                started, cost_before = time.monotonic(), self.cost
                try:
                    message = self._stream(params, token, timeout)
                except anthropic.APIStatusError as exc:  # also an error event inside a 200 stream
                    self.cost += int(self.guard.on_error(token, exc) or 0)
                    self._on_status_error(exc, attempt, started)
                    continue
                except anthropic.APITimeoutError as exc:
                    self.cost += int(self.guard.on_error(token, exc) or 0)
                    self._log_error("timeout", str(exc), attempt, started)
                    if self.deadline - self.clock() < self.retry.min_call_seconds:
                        raise StopRun(
                            "partial", "deadline reached during a model call", stop="deadline"
                        ) from None
                    self._wait_or_stop(self._backoff(attempt), attempt, "model call timed out")
                    continue
                except anthropic.APIConnectionError as exc:
                    self.cost += int(self.guard.on_error(token, exc) or 0)
                    self._log_error("connection", str(exc), attempt, started)
                    self._wait_or_stop(self._backoff(attempt), attempt, "connection error")
                    continue
                except (ValueError, anthropic.APIResponseValidationError) as exc:  # a cut body or stream
                    self.cost += int(self.guard.on_error(token, exc) or 0)
                    self._log_error("bad_response", f"{type(exc).__name__}: {exc}"[:300], attempt, started)
                    self._wait_or_stop(self._backoff(attempt), attempt, "malformed API response")
                    continue
                except BaseException as exc:
                    self.cost += int(self.guard.on_error(token, exc) or 0)
                    raise
                # Priced by what was served; on Bedrock by the profile invoked, whose premium the served name hides.
                billed = pricing.billed_model(params["model"], message.model)
                self.cost += int(self.guard.after_call(token, message.usage, model=billed) or 0)
                self._record(message, attempt, started)
                span.metadata(
                    model=message.model,
                    tokens=usage_fields(message.usage),
                    cost_micros=self.cost - cost_before,
                    request_id=getattr(message, "_request_id", None),
                    attempt=attempt,
                )
                return message

    def _stream(self, params: dict[str, Any], token: object, timeout: float) -> Any:
        """One streamed call with the SDK's helper. message_start's exact input usage goes to the guard's
        optional on_start hook; the whole call is bounded by `timeout` (the SDK's timeout bounds each read
        only); the SDK's own exceptions pass through unchanged."""
        import anthropic

        on_start = getattr(self.guard, "on_start", None)
        ends = time.monotonic() + timeout
        with self.model_client.messages.stream(**params, timeout=timeout) as stream:
            for event in stream:
                if event.type == "message_start" and on_start is not None:
                    on_start(token, event.message.usage)
                if time.monotonic() > ends:
                    raise anthropic.APITimeoutError(request=stream.response.request)
            message = stream.get_final_message()
            message._request_id = stream.request_id  # for the api_call event
        if message.stop_reason is None:
            raise IncompleteStream("the stream ended before message_stop (no stop_reason)")
        return message

    def _log_error(self, kind: str, message: str, attempt: int, started: float, **extra: Any) -> None:
        self.emit(
            "error",
            error_type=kind,
            message=message,
            attempt=attempt,
            duration_ms=int((time.monotonic() - started) * 1000),
            model=self._model,
            **extra,
        )

    def _on_status_error(self, exc: Any, attempt: int, started: float) -> None:
        status = exc.status_code
        text = f"{exc.api_message or exc.message}"
        headers = exc.response.headers if exc.response is not None else {}
        self._log_error(
            str(exc.type or f"http_{status}"),
            text[:500],
            attempt,
            started,
            status=status,
            request_id=exc.request_id,
        )
        if status == 400 and _SPEND_LIMIT_RE.search(text):  # a spend limit set on the org or a workspace
            raise StopRun("failed", f"spend limit reached (not retried): {text[:200]}")
        if status == 429:
            if _SPEND_LIMIT_RE.search(text) or _SPEND_LIMIT_RE.search(str(exc.error_code or "")):
                raise StopRun("failed", f"spend limit reached (not retried): {text[:200]}")
            wait = retry_after_seconds(headers, now=self.clock())
            self._wait_or_stop(
                self.retry.default_rate_limit_wait if wait is None else wait, attempt, "rate limited (429)"
            )
            return
        if status in (408, 409, 529) or status >= 500 or exc.type in ("overloaded_error", "api_error"):
            wait = retry_after_seconds(headers, now=self.clock())
            self._wait_or_stop(max(wait or 0.0, self._backoff(attempt)), attempt, f"API error {status}")
            return
        raise StopRun("failed", f"API error {status}: {text[:300]}")

    def _record(self, message: Any, attempt: int, started: float) -> None:
        fields = usage_fields(message.usage)
        self.served_model = getattr(message, "model", None) or self._model
        for k, v in fields.items():
            self.usage[k] += v
        self.emit(
            "api_call",
            model=getattr(message, "model", None) or self._model,
            requested_model=self._model,
            input_tokens=fields["input_tokens"],
            output_tokens=fields["output_tokens"],
            thinking_tokens=fields["thinking_tokens"],
            cache_read_tokens=fields["cache_read_input_tokens"],
            cache_write_tokens=fields["cache_creation_input_tokens"],
            cache_write_5m_tokens=fields["cache_creation_5m_input_tokens"],
            cache_write_1h_tokens=fields["cache_creation_1h_input_tokens"],
            duration_ms=int((time.monotonic() - started) * 1000),
            request_id=getattr(message, "_request_id", None),
            attempt=attempt,
            stop_reason=message.stop_reason,
            iteration=self._iteration,
            max_tokens=self._max_tokens,
            **_refusal_fields(message),
        )
