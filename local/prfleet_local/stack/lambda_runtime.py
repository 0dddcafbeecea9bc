"""The local Lambda runtime: each invocation in its own thread and execution environment, abandoned at the
function's Timeout, with its stdout captured for the stack's log and the faults armed for it tripped there.

Handlers' stdout (Powertools JSON logs and EMF metrics) goes through one per-process router that sends the lines a
handler thread prints to the stack's sinks; `during="model_call"` faults trip inside the SDK's HTTP transport
(prfleet_local.stack.invocations' docstring says what each fault does).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import sys
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, Protocol

from prfleet_local.stack import template as tpl
from prfleet_local.stack import xray
from prfleet_local.stack.account import REGION
from prfleet_local.stack.invocations import (
    Faults,
    FunctionError,
    Invocation,
    InvocationFault,
    InvocationKilled,
    enter_environment,
    isolate_powertools_logging,
    isolate_powertools_metrics,
)


class StdoutRouter(io.TextIOBase):
    """sys.stdout replacement: lines written by handler threads go to the stack's log, the rest pass through."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.local = threading.local()
        self.sinks: list[Callable[[str], None]] = []
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not getattr(self.local, "capture", False):
            return self.real.write(text)
        invocation: Invocation | None = getattr(self.local, "invocation", None)
        if invocation is not None:
            invocation.check()  # an abandoned invocation stops at its next output; nothing more is logged
        buf = getattr(self.local, "buf", "") + text
        *lines, self.local.buf = buf.split("\n")
        for line in lines:
            if line.strip():
                with self._lock:
                    for sink in self.sinks:
                        sink(line)
                fault = invocation.fault if invocation is not None else None
                if fault is not None and fault.after is not None and fault.after in line:
                    _trip(invocation, fault)  # type: ignore[arg-type]
        return len(text)

    def flush(self) -> None:
        self.real.flush()


_router: StdoutRouter | None = None


def current_invocation() -> Invocation | None:
    """The invocation running in the calling thread (each invocation has its own thread), if any."""
    return getattr(_router.local, "invocation", None) if _router is not None else None


def _trip(invocation: Invocation, fault: InvocationFault) -> None:
    """Apply a fault in the invocation's own thread: crash it now, or hang it until its Timeout abandons it."""
    invocation.fault = None
    if fault.kind == "crash":
        invocation.kill("crash")
        invocation.check()
    invocation.hang()


def _is_model_call(request: Any, model_url: str | None) -> bool:
    """A request to the model API that makes a (billed) call: same origin as the stack's model URL (the real API's
    without one), not the free token count (`/v1/messages/count_tokens`)."""
    base = urllib.parse.urlsplit(model_url or "https://api.anthropic.com")
    url = request.url
    port = base.port or (443 if base.scheme == "https" else 80)
    return (
        url.scheme == base.scheme
        and url.host == base.hostname
        and (url.port or (443 if url.scheme == "https" else 80)) == port
        and not url.path.rstrip("/").endswith("/count_tokens")
    )


def _trip_mid_call(invocation: Invocation, fault: InvocationFault, response: Any) -> NoReturn:
    """A `during="model_call"` fault, in the invocation's own thread, with the call sent and its headers back:
    crash now (or hang until the Timeout abandons it), drop the connection as a dead client would, and park the
    thread there until the stack stops (nothing after the crash point runs; invocations.py's docstring)."""
    if fault.kind == "crash":
        invocation.kill("crash")
    else:
        invocation.over.wait()
    try:
        response.close()
    except Exception:  # noqa: BLE001, S110 - the connection is gone either way
        pass
    invocation.park()


def _stop_if_released(invocation: Invocation | None) -> None:
    """A parked invocation released at the stack's stop sends nothing more while it unwinds."""
    if invocation is not None and invocation.parked:
        raise InvocationKilled(f"{invocation.function} {invocation.request_id}: {invocation.killed}")


def _install_model_call_hook() -> None:
    """Wrap the SDK's HTTP transport once per process (as the stdout router): in the thread of an invocation that
    carries a `during="model_call"` fault, its next model request that gets response headers back trips it; every
    other request (other threads, other hosts, no such fault) passes straight through. botocore's send is wrapped
    too, only to stop a released parked invocation at its next AWS request."""
    import botocore.httpsession
    import httpx2

    original = httpx2.HTTPTransport.handle_request
    if getattr(original, "_prfleet_model_call_hook", False):
        return
    aws_send = botocore.httpsession.URLLib3Session.send

    @functools.wraps(aws_send)
    def send(self: Any, request: Any) -> Any:
        _stop_if_released(current_invocation())
        return aws_send(self, request)

    @functools.wraps(original)
    def handle_request(self: Any, request: Any) -> Any:
        invocation = current_invocation()
        _stop_if_released(invocation)
        fault = invocation.fault if invocation is not None else None
        if invocation is None or fault is None or fault.during != "model_call":
            return original(self, request)
        if not _is_model_call(request, invocation.model_url):
            return original(self, request)
        # Sent, status and headers received: the API has the call (and bills it).
        response = original(self, request)
        invocation.fault = None
        _trip_mid_call(invocation, fault, response)

    handle_request._prfleet_model_call_hook = True  # type: ignore[attr-defined]
    botocore.httpsession.URLLib3Session.send = send  # type: ignore[method-assign]
    httpx2.HTTPTransport.handle_request = handle_request  # type: ignore[method-assign]


# Powertools warns when a handler flushes no metric (e.g. a planner batch that planned nothing); in Lambda that goes
# to the function's log, locally it would clutter the terminal.
warnings.filterwarnings("ignore", message="No application metrics to publish")


def install_router() -> StdoutRouter:
    """One router per process (loggers keep the stream they were built with); re-seated if stdout was swapped."""
    global _router
    if _router is None:
        _router = StdoutRouter(sys.stdout)
    if sys.stdout is not _router:
        _router.real = sys.stdout
        sys.stdout = _router
    return _router


class FakeContext:
    """The bits of the Lambda context object the handlers use."""

    def __init__(self, name: str, timeout_s: float, memory: int = 256) -> None:
        self.function_name = name
        self.memory_limit_in_mb = memory
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class InvocationHost(Protocol):
    """What Function.invoke asks of the stack it runs in: the Timeout to give, the faults armed, the list of running
    invocations, the stdout router, the model URL, the event set at the stack's stop, and the AWS/Lambda metrics."""

    faults: Faults
    kill_at_timeout: bool
    router: Any
    _running: list[Invocation]
    _running_lock: threading.Lock

    def function_timeout(self, fn: Function) -> float: ...

    def lambda_metrics(self, fn: Function, *, duration_ms: float, error: bool) -> None: ...


@dataclass
class Function:
    """One function of the template. Like Lambda, an invocation runs alone in an execution environment: its own
    copy of the handler module (module-level state such as Powertools' BatchProcessor is per environment), taken
    from the idle ones or loaded anew (a cold start) when all are busy
    (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html). Sharing one module between
    concurrent invocations let one batch's failures be reported in another's reply, and the poller deleted
    messages that had failed (docs/reliability.md, defect 8)."""

    logical_id: str
    name: str
    module: ModuleType  # the first environment's copy (what a test inspects after sequential invocations)
    timeout: float
    memory: int
    load: Callable[[], ModuleType] | None = None
    invocations: int = 0
    errors: int = 0
    _idle: list[ModuleType] = field(default_factory=list)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._idle.append(self.module)

    def _environment(self) -> ModuleType:
        with self._pool_lock:
            if self._idle:
                return self._idle.pop()
        return self.load() if self.load is not None else self.module

    def invoke(self, event: dict[str, Any], stack: InvocationHost, *, request_id: str | None = None) -> Any:
        """Run the handler as Lambda would: in its own thread, abandoned at the function's Timeout.

        Returns the handler's reply; raises FunctionError for a handler that raised (the original exception is
        its __cause__), timed out or was killed, and publishes AWS/Lambda Invocations, Errors and Duration.
        `request_id`: the asynchronous event's (its retries keep it); a new one otherwise."""
        inv = Invocation(self.logical_id, stack.function_timeout(self))
        if request_id:
            inv.request_id = request_id
        inv.fault = stack.faults.take(self.logical_id)
        ctx = FakeContext(self.name, inv.timeout, self.memory)
        ctx.aws_request_id = inv.request_id
        self.invocations += 1
        router = stack.router = install_router()
        inv.model_url = getattr(stack, "model_url", None)
        released = getattr(stack, "released", None)
        if released is not None:
            inv.released = released
        if inv.fault is not None and inv.fault.during == "model_call":
            _install_model_call_hook()

        daemon = getattr(stack, "xray", None)  # Tracing: Active (the local X-Ray stand-in is running)
        trace = xray.InvocationTrace(self.name, event) if daemon is not None else None

        def run() -> None:
            enter_environment(env)
            router.local.capture = True
            router.local.invocation = inv
            xray.set_header(trace.header if trace is not None else None)
            try:
                if inv.fault is not None and inv.fault.after is None and inv.fault.during is None:
                    _trip(inv, inv.fault)
                inv.finish(result=env.lambda_handler(event, ctx))
            except InvocationKilled:
                pass
            except BaseException as exc:  # noqa: BLE001 - reported to the caller as the function's error
                inv.finish(error=exc)
            finally:
                router.local.capture = False
                router.local.invocation = None
                xray.set_header(None)

        env = self._environment()
        with stack._running_lock:
            stack._running.append(inv)
        thread = threading.Thread(target=run, name=f"{self.logical_id}-{inv.request_id[:8]}", daemon=True)
        thread.start()
        try:
            if not inv.over.wait(inv.timeout if stack.kill_at_timeout else None):
                inv.kill("timeout")
            # A killed invocation is not waited for: it may be parked (a `during=` fault) until the stack stops.
            if not stack.kill_at_timeout and not inv.killed:
                thread.join()
        finally:
            with stack._running_lock:
                stack._running.remove(inv)
        # A killed invocation's environment is not reused: Lambda resets it, and its thread may run on.
        if inv.finished:
            with self._pool_lock:
                self._idle.append(env)
        elapsed_ms = (time.monotonic() - inv.started) * 1000
        failed = not inv.finished or inv.error is not None
        stack.lambda_metrics(self, duration_ms=min(elapsed_ms, inv.timeout * 1000), error=failed)
        if trace is not None:
            trace.finish(daemon, inv.request_id, error=failed)
        if failed:
            self.errors += 1
        if not inv.finished:
            detail = f"Task timed out after {inv.timeout:.2f} seconds" if inv.killed == "timeout" else ""
            raise FunctionError(self.logical_id, str(inv.killed), detail)
        if inv.error is not None:
            raise FunctionError(self.logical_id, "error", repr(inv.error)) from inv.error
        return inv.result


def _load_handler(name: str, path: Path) -> ModuleType:
    """A fresh copy of a handler module: one execution environment's init phase."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_functions(
    template: dict[str, Any], ctx: tpl.Context, name_of: Callable[[str], str]
) -> dict[str, Function]:
    """The template's functions, their environment variables set in this process (one process hosts them all) and
    each handler loaded once: its first execution environment. `name_of` gives a function's physical name."""
    isolate_powertools_metrics()  # before the handlers create their Metrics: one metric set per invocation
    isolate_powertools_logging()  # one set of log keys (correlation id, ...) per execution environment
    for logical in tpl.resources(template, "AWS::Serverless::Function"):
        env = tpl.function_environment(template, ctx, logical)
        for name in tpl.function_environment_names(template, logical) - set(env):
            os.environ.pop(name, None)  # AWS::NoValue here (e.g. no secret id): not left from another stack
        os.environ.update(env)
    functions: dict[str, Function] = {}
    for logical, res in tpl.resources(template, "AWS::Serverless::Function").items():
        code = tpl.ROOT / res["Properties"]["CodeUri"]
        handler = tpl.function_setting(template, logical, "Handler")
        module_name, _, func = handler.rpartition(".")
        assert func == "lambda_handler", handler
        load = functools.partial(_load_handler, f"prfleet_fn_{logical}", code / f"{module_name}.py")
        functions[logical] = Function(
            logical,
            name_of(logical),
            load(),
            float(tpl.function_setting(template, logical, "Timeout", 3)),
            int(tpl.function_setting(template, logical, "MemorySize", 128)),
            load=load,
        )
    return functions
