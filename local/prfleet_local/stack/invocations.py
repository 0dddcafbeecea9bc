"""The Lambda runtime's side of an invocation, locally: the function's Timeout, a killed invocation, its own memory.

Why: Lambda stops an invocation at its Timeout (or when it runs out of memory) and nothing after that point
happens: no `finally`, no Powertools flush, no reply; the event source sees an error and SQS shows the batch again
after its visibility timeout ("Timeout", https://docs.aws.amazon.com/lambda/latest/dg/configuration-timeout.html;
"Errors ... include timeouts", https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html). Locally
every invocation runs in a thread of its own that the stack waits for up to the function's template Timeout; past
it (or when killed) the invocation is abandoned:
- the caller (poller, API, timer) gets `FunctionError` at once, as Lambda's caller does;
- a thread cannot be stopped from outside, so the abandoned one is frozen at its next line of output: it raises
  `InvocationKilled` (a BaseException, so no handler's `except Exception` runs its recovery) and nothing it prints
  any more reaches the function's log. A thread inside a blocking call goes on until that call returns, then
  stops at its next line: the one place where the stand-in is not exact (a side effect of that one call can land),
  except for a model call, where a `during="model_call"` fault kills it inside the call (below);
- each invocation thread has its own Powertools metric set (`PerThreadDict`): in Lambda every execution environment
  is its own process, so the metrics an abandoned invocation added but never flushed are lost, never flushed by
  another invocation that happens to share the local process;
- each execution environment (a copy of the handler module) has its own Powertools log keys (correlation id,
  request id, cold start: the formatter's `log_format`, which Powertools keeps on one formatter per logger name, so
  per process): an invocation's `set_correlation_id` or `inject_lambda_context(clear_state=True)` no longer
  rewrites the keys of another function's or another batch's lines (docs/reliability.md, "A suite that holds under
  load").

Faults (`InvocationFault`) let a test or a soak run crash or hang an invocation at a chosen point: at once, after
the log line that contains a marker (`after=`, e.g. the agent's `"event":"start"`), or in the middle of a model
call (`during="model_call"`); `Invocation.kill()` crashes a running one.

`during="model_call"` is the blocking call made exact, for the one call that matters to the budget: the stack
wraps the HTTP transport of the SDK (httpx2's `HTTPTransport.handle_request`, once per process) and, in the thread
of an invocation that carries such a fault, lets its next request to the model API go out and its response headers
come back (the API has the call and bills it, as Anthropic bills a call whose client went away), then kills the
invocation there (a `hang` first blocks until the Timeout abandons it) and drops the connection. The thread is then
PARKED inside the transport instead of raising into the SDK: raising would unwind through the agent's own
`except BaseException` (which books the call on the ledger), i.e. run code after the crash point. So nothing after
it runs: the reservation of that call stays open, the run stays `running`, the metrics stay unflushed, and the
message comes back after its visibility timeout. A parked thread (a daemon) is released when its stack has stopped,
after the stack's AWS endpoint is gone; it then ends by raising `InvocationKilled`, and is stopped again at its next
line of output, AWS request (botocore's `URLLib3Session.send`, wrapped with the transport) or model request, so
what its except/finally blocks attempt while unwinding never lands.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn


class InvocationKilled(BaseException):
    """Raised in an abandoned invocation's thread: the runtime stopped it (timeout or crash)."""


class FunctionError(Exception):
    """What Lambda's caller sees for an invocation that raised, timed out or crashed (Errors in AWS/Lambda)."""

    def __init__(self, function: str, kind: str, detail: str = "") -> None:
        super().__init__(f"{function}: {kind}{': ' + detail if detail else ''}")
        self.function, self.kind, self.detail = function, kind, detail


FAULT_KINDS = ("crash", "hang")
FAULT_DURING = ("model_call",)  # `during=`: a point inside a blocking call where the fault trips


@dataclass
class InvocationFault:
    """Crash or hang the next `times` invocations of `function` (a template logical id): at once, right after
    the invocation prints a line containing `after`, or `during="model_call"`: in the middle of its next model call
    (the request sent and the response headers received, so the API bills it; before the SDK reads the body; see
    the module docstring). `times=0`: every invocation."""

    function: str
    kind: str
    after: str | None = None
    times: int = 1
    during: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown invocation fault {self.kind!r}; one of {', '.join(FAULT_KINDS)}")
        if self.during is not None and self.during not in FAULT_DURING:
            raise ValueError(f"unknown fault point during={self.during!r}; one of {', '.join(FAULT_DURING)}")
        if self.during is not None and self.after is not None:
            raise ValueError(
                "a fault trips after a log line (after=) or during a call (during=), not both: "
                f"after={self.after!r}, during={self.during!r}"
            )
        if self.times < 0:
            raise ValueError("times must be 0 (every invocation) or more")


@dataclass
class Invocation:
    """One running invocation: its function, request id, deadline, and how it ended."""

    function: str
    timeout: float
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)
    fault: InvocationFault | None = None
    killed: str | None = None  # "timeout" | "crash" once the runtime abandoned it
    finished: bool = False  # the handler returned or raised before any kill
    result: Any = None
    error: BaseException | None = None
    over: threading.Event = field(default_factory=threading.Event)
    model_url: str | None = None  # the model API's base URL, for a `during="model_call"` fault
    # Set once the stack has stopped: a thread parked where it was killed (park()) ends then.
    released: threading.Event = field(default_factory=threading.Event)
    parked: bool = False  # park() was called: once released, the thread stops at its next request too
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def kill(self, reason: str = "crash") -> bool:
        """Abandon the invocation now (as an out-of-memory kill or a runtime crash would); False if it had ended."""
        with self._lock:
            if self.over.is_set():
                return False
            self.killed = reason
            self.over.set()
            return True

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        """The handler's own end (called from its thread); ignored once the runtime abandoned the invocation."""
        with self._lock:
            if self.over.is_set():
                return
            self.finished, self.result, self.error = True, result, error
            self.over.set()

    def check(self) -> None:
        """Called from the invocation's own thread at each line of output: stop here if it was abandoned."""
        if self.killed:
            raise InvocationKilled(f"{self.function} {self.request_id}: {self.killed}")

    def hang(self) -> None:
        """Block the invocation's thread until the runtime abandons it (a hang fault), then stop it."""
        self.over.wait()
        self.check()

    def park(self) -> NoReturn:
        """Hold the abandoned invocation's thread where it stopped until the stack has stopped, then end it.

        For a kill inside a blocking call (`during=`): raising there at once would run the callers' except and
        finally blocks, code after the crash point that the killed Lambda never runs. Once released, the stack
        stops the unwinding thread at its next AWS or model request as at its next line of output."""
        self.parked = True
        self.released.wait()
        raise InvocationKilled(f"{self.function} {self.request_id}: {self.killed or 'parked'}")


class Faults:
    """The armed invocation faults; `take(function)` hands the next matching one to a starting invocation."""

    def __init__(self) -> None:
        self._faults: list[InvocationFault] = []
        self._lock = threading.Lock()

    def add(self, fault: InvocationFault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, function: str) -> InvocationFault | None:
        with self._lock:
            for fault in self._faults:
                if fault.function == function:
                    if fault.times == 1:
                        self._faults.remove(fault)
                    elif fault.times > 1:
                        fault.times -= 1
                    return fault
        return None


class PerThreadDict(dict):  # type: ignore[type-arg]
    """A dict whose contents belong to the calling thread (Powertools' class-level metric set, made per invocation).

    Subclasses dict because Powertools passes the set around as one; every operation it uses is redirected."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def _d(self) -> dict[str, Any]:
        d = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = {}
        return d

    def __getitem__(self, key: str) -> Any:
        return self._d()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._d()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._d()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._d()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._d()))

    def __len__(self) -> int:
        return len(self._d())

    def __repr__(self) -> str:
        return repr(self._d())

    def __eq__(self, other: object) -> bool:
        return self._d() == other

    __hash__ = None  # type: ignore[assignment]

    def get(self, key: str, default: Any = None) -> Any:
        return self._d().get(key, default)

    def keys(self) -> Any:
        return self._d().keys()

    def values(self) -> Any:
        return self._d().values()

    def items(self) -> Any:
        return self._d().items()

    def clear(self) -> None:
        self._d().clear()

    def pop(self, key: str, *default: Any) -> Any:
        return self._d().pop(key, *default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._d().update(*args, **kwargs)

    def setdefault(self, key: str, default: Any = None) -> Any:
        return self._d().setdefault(key, default)

    def copy(self) -> dict[str, Any]:
        return dict(self._d())


def isolate_powertools_metrics() -> None:
    """Give every thread its own Powertools metric and metadata sets (call before the handlers are imported).

    Powertools keeps them in class attributes of `Metrics`, shared by every instance in a process; each Lambda
    execution environment is a process of its own, the local stack is one process for all."""
    from aws_lambda_powertools.metrics import Metrics

    if not isinstance(Metrics._metrics, PerThreadDict):
        Metrics._metrics = PerThreadDict()
        Metrics._metadata = PerThreadDict()


_environment = threading.local()  # the execution environment (handler-module copy) the calling thread runs in


def enter_environment(environment: object | None) -> None:
    """Mark the calling thread (an invocation's) as running in `environment`, whose log keys it then uses."""
    _environment.current = environment


class _LogKeysPerEnvironment:
    """Powertools' `LambdaPowertoolsFormatter.log_format` (the keys every log line carries), one per execution
    environment. In Lambda each environment is a process with its own formatter; locally the five functions and
    their concurrent invocations share one process, hence one formatter per logger name, so one invocation's
    `set_correlation_id` (or the `clear_state` of another's `inject_lambda_context`) changed the keys of lines
    another invocation was writing: a planner line about one PR job carried another job's delivery id or none.
    A thread outside any environment (a test calling a handler directly) keeps the formatter's own dict; a fresh
    environment starts from the formatter's initial keys, as a new process would, and keeps what it appended for
    its next invocations, as a warm environment does."""

    def __get__(self, fmt: Any, owner: type | None = None) -> Any:
        if fmt is None:
            return self
        environment = getattr(_environment, "current", None)
        if environment is None:
            return fmt.__dict__["log_format"]
        keys = self._per_environment(fmt)
        if environment not in keys:
            keys[environment] = {**dict.fromkeys(fmt.log_record_order), **fmt.keys_combined}
        return keys[environment]

    def __set__(self, fmt: Any, value: dict[str, Any]) -> None:
        environment = getattr(_environment, "current", None)
        if environment is None:
            fmt.__dict__["log_format"] = value
        else:
            self._per_environment(fmt)[environment] = value

    @staticmethod
    def _per_environment(fmt: Any) -> weakref.WeakKeyDictionary[Any, dict[str, Any]]:
        return fmt.__dict__.setdefault("_prfleet_log_keys", weakref.WeakKeyDictionary())


def isolate_powertools_logging() -> None:
    """Give every execution environment its own Powertools log keys (see `_LogKeysPerEnvironment`); invocation
    threads say which environment they run in with `enter_environment`."""
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    if not isinstance(LambdaPowertoolsFormatter.__dict__.get("log_format"), _LogKeysPerEnvironment):
        LambdaPowertoolsFormatter.log_format = _LogKeysPerEnvironment()  # type: ignore[assignment]


__all__ = [
    "FAULT_DURING",
    "FAULT_KINDS",
    "Faults",
    "FunctionError",
    "Invocation",
    "InvocationFault",
    "InvocationKilled",
    "PerThreadDict",
    "enter_environment",
    "isolate_powertools_logging",
    "isolate_powertools_metrics",
]
