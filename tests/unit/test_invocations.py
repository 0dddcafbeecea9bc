"""The local Lambda runtime's invocation rules (prfleet_local.stack.invocations, LocalStack's Function.invoke)."""

from __future__ import annotations

import json
import re
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aws_lambda_powertools.metrics import Metrics

from prfleet_local.stack import lambda_runtime
from prfleet_local.stack.invocations import (
    Faults,
    FunctionError,
    Invocation,
    InvocationFault,
    PerThreadDict,
    enter_environment,
    isolate_powertools_logging,
    isolate_powertools_metrics,
)


def test_each_thread_has_its_own_powertools_metric_set() -> None:
    """In Lambda each execution environment is a process: metrics one invocation added but never flushed cannot be
    flushed by another. Powertools shares them across Metrics instances of a process, the stack per thread."""
    isolate_powertools_metrics()
    assert isinstance(Metrics._metrics, PerThreadDict)
    metrics = Metrics(namespace="prfleet", service="prfleet")
    metrics.clear_metrics()  # this thread's: an earlier test in the same worker may have left its own unflushed
    seen: dict[str, list[str]] = {}

    def invocation(name: str, metric: str, ready: threading.Event, go: threading.Event) -> None:
        metrics.add_metric(name=metric, unit="Count", value=1)
        ready.set()
        go.wait(60)
        seen[name] = sorted(metrics.metric_set)

    ready_a, ready_b, go = threading.Event(), threading.Event(), threading.Event()
    a = threading.Thread(target=invocation, args=("a", "RunsStarted", ready_a, go))
    b = threading.Thread(target=invocation, args=("b", "RunsFailed", ready_b, go))
    a.start(), b.start()
    ready_a.wait(60), ready_b.wait(60)  # each returns once its thread is there; 60 s only bounds a broken one
    go.set()
    a.join(60), b.join(60)
    assert seen == {"a": ["RunsStarted"], "b": ["RunsFailed"]}
    assert len(metrics.metric_set) == 0  # this thread added nothing


def test_each_execution_environment_has_its_own_powertools_log_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In Lambda each execution environment is a process with its own Powertools formatter; locally every function
    shares one process, so one formatter per logger name. Two planner invocations at once: the first's line about
    its PR job carried the second's correlation id (or none, after the second's clear_state or a bad message),
    and a job dead-lettered under load had no line under its own delivery id."""
    from prfleet.observability.logger import make_logger

    isolate_powertools_logging()
    logger = make_logger()  # what every handler module does at import, each copy on the one formatter
    logger.set_correlation_id("outside")  # a thread in no environment: a test calling a handler directly
    env_a, env_b, env_c = (types.ModuleType(f"env-{n}") for n in "abc")
    a_set, b_done = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def first() -> None:
        enter_environment(env_a)
        logger.clear_state()  # inject_lambda_context(clear_state=True)
        logger.set_correlation_id("delivery-a")
        a_set.set()
        b_done.wait(60)  # the other invocation starts, clears its state and takes its own job meanwhile
        logger.error("planning failed")

    def second() -> None:
        enter_environment(env_b)
        a_set.wait(60)
        logger.clear_state()
        logger.set_correlation_id(None)  # a bad message first (parse_record)
        logger.set_correlation_id("delivery-b")
        logger.error("planning failed")
        b_done.set()

    def warm_then_fresh() -> None:
        enter_environment(env_a)  # env a's next invocation: a warm environment keeps what it appended
        seen["warm"] = logger.get_correlation_id()
        enter_environment(env_c)  # a new environment starts from the formatter's initial keys
        seen["fresh"] = logger.get_correlation_id()

    capsys.readouterr()
    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert sorted(x["correlation_id"] for x in lines if x["message"] == "planning failed") == [
        "delivery-a",
        "delivery-b",
    ]
    later = threading.Thread(target=warm_then_fresh)
    later.start()
    later.join(60)
    assert seen == {"warm": "delivery-a", "fresh": None}
    assert logger.get_correlation_id() == "outside"  # the threads in environments left it alone
    logger.set_correlation_id(None)


def test_faults_are_taken_per_function_and_count_down() -> None:
    faults = Faults()
    faults.add(InvocationFault("AgentFunction", "hang", after='"event":"start"', times=2))
    faults.add(InvocationFault("WebhookFunction", "crash"))
    assert faults.take("PlannerFunction") is None
    assert faults.take("WebhookFunction").kind == "crash"
    assert faults.take("WebhookFunction") is None
    assert faults.take("AgentFunction") is not None and faults.take("AgentFunction") is not None
    assert faults.take("AgentFunction") is None
    faults.add(InvocationFault("AgentFunction", "crash", times=0))  # every invocation
    assert all(faults.take("AgentFunction") for _ in range(5))


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"kind": "explode"}, "unknown invocation fault 'explode'"),
        ({"kind": "crash", "times": -1}, "times must be 0"),
        ({"kind": "crash", "during": "api_call"}, "unknown fault point during='api_call'; one of model_call"),
        ({"kind": "hang", "during": "model_call", "after": '"event":"start"'}, "not both"),
    ],
)
def test_unknown_faults_are_refused(bad: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        InvocationFault("AgentFunction", **bad)


def test_a_fault_during_a_model_call_is_accepted_for_both_kinds() -> None:
    for kind in ("crash", "hang"):
        fault = InvocationFault("AgentFunction", kind, during="model_call")
        assert (fault.during, fault.after, fault.times) == ("model_call", None, 1)


def test_a_killed_invocation_cannot_finish_afterwards() -> None:
    inv = Invocation("AgentFunction", 1.0)
    assert inv.kill("timeout") is True
    inv.finish(result={"late": True})
    assert (inv.finished, inv.result, inv.killed) == (False, None, "timeout")
    assert inv.kill() is False


class _Runtime:
    """What Function.invoke asks of its stack: timeouts, faults, running list and the metric sink."""

    def __init__(self, timeout: float | None = None) -> None:
        self.faults = Faults()
        self.kill_at_timeout = True
        self._running: list[Invocation] = []
        self._running_lock = threading.Lock()
        self.metrics: list[tuple[str, float, bool]] = []
        self.timeout = timeout
        self.router = None
        self.model_url: str | None = None
        self.released = threading.Event()

    def function_timeout(self, fn: lambda_runtime.Function) -> float:
        return self.timeout or fn.timeout

    def lambda_metrics(self, fn: lambda_runtime.Function, *, duration_ms: float, error: bool) -> None:
        self.metrics.append((fn.logical_id, duration_ms, error))


def _function(handler: Any, timeout: float = 0.5) -> lambda_runtime.Function:
    module = types.ModuleType("fn")
    module.lambda_handler = handler  # type: ignore[attr-defined]
    return lambda_runtime.Function("AgentFunction", "prfleet-local-AgentFunction", module, timeout, 128)


def test_an_invocation_past_its_timeout_is_abandoned_and_prints_nothing_more() -> None:
    printed: list[str] = []
    router = lambda_runtime.install_router()
    router.sinks.append(printed.append)
    release = threading.Event()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        print("before")
        release.wait(5)  # a call that outlives the Timeout
        print("after")  # the abandoned invocation stops here
        return {"ok": True}

    runtime = _Runtime()
    try:
        started = time.monotonic()
        with pytest.raises(FunctionError, match="Task timed out after 0.50 seconds"):
            _function(handler).invoke({}, runtime)  # type: ignore[arg-type]
        assert time.monotonic() - started < 3  # the caller did not wait for the handler
        release.set()
        time.sleep(0.3)
        assert printed == ["before"]
        ((name, duration, error),) = runtime.metrics
        assert name == "AgentFunction" and error and duration == pytest.approx(500, abs=1)
    finally:
        router.sinks.remove(printed.append)


def test_a_handler_exception_is_the_functions_error_and_a_reply_is_returned() -> None:
    runtime = _Runtime()
    assert _function(lambda e, c: {"n": e["n"]}).invoke({"n": 2}, runtime) == {"n": 2}  # type: ignore[arg-type]

    def boom(event: dict[str, Any], context: Any) -> None:
        raise KeyError("x")

    with pytest.raises(FunctionError) as info:
        _function(boom).invoke({}, runtime)  # type: ignore[arg-type]
    assert isinstance(info.value.__cause__, KeyError)
    assert [m[2] for m in runtime.metrics] == [False, True]


def test_a_crash_fault_kills_the_invocation_at_its_marker() -> None:
    printed: list[str] = []
    router = lambda_runtime.install_router()
    router.sinks.append(printed.append)
    done: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        print('{"event":"start"}')
        done.append("ran on")
        print("never")

    runtime = _Runtime()
    runtime.faults.add(InvocationFault("AgentFunction", "crash", after='"event":"start"'))
    try:
        with pytest.raises(FunctionError, match="crash"):
            _function(handler, timeout=5).invoke({}, runtime)  # type: ignore[arg-type]
        time.sleep(0.2)
        assert printed == ['{"event":"start"}'] and done == []
    finally:
        router.sinks.remove(printed.append)


class _Model(BaseHTTPRequestHandler):
    """A stand-in model API: records every POST it answered (as the offline server bills it) and answers 200."""

    answered: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).answered.append(self.path)
        body = b"event: message_start\ndata: {}\n\n" * 50
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("kind", ["crash", "hang"])
def test_a_fault_during_a_model_call_kills_the_invocation_inside_the_call_and_parks_its_thread(
    kind: str,
) -> None:
    """The request reaches the model API and gets its headers back (billed), the caller gets FunctionError (a
    crash at once, a hang at the Timeout), and nothing after that point runs: not the caller's `except
    BaseException` (the agent's books the call), not the rest of the handler. The thread waits parked until the
    stack has stopped, then ends, stopped again at its next AWS request while it unwinds. Requests of other
    threads, and the free token count, pass straight through."""
    import boto3
    import httpx2

    _Model.answered = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Model)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    after: list[str] = []
    aws_sent: list[str] = []
    threads: list[threading.Thread] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        threads.append(threading.current_thread())
        with httpx2.Client() as client:
            assert client.post(f"{url}/v1/messages/count_tokens", json={}).status_code == 200
            try:
                with client.stream("POST", f"{url}/v1/messages", json={"model": "m"}) as response:
                    after.append("headers read by the caller")
                    response.read()
            except BaseException:
                after.append("except BaseException ran")  # the agent's books the call on the ledger here
                sqs = boto3.client(
                    "sqs",
                    region_name="us-east-1",
                    endpoint_url=url,
                    aws_access_key_id="x",
                    aws_secret_access_key="x",
                )
                aws_sent.append("trying")
                sqs.list_queues()  # stopped before it is sent
                aws_sent.append("sent")
                raise
            after.append("handler ran on")

    # A crash ends the invocation at the call, so its Timeout is only a ceiling, far above the work before the
    # call (an HTTP client and two requests: over 0.5 s on a busy machine, where a 0.5 s Timeout killed it first
    # and the test saw "timed out"). A hang ends at its Timeout: 0.5 s.
    timeout = 60.0 if kind == "crash" else 0.5
    runtime = _Runtime(timeout=timeout)
    runtime.model_url = url
    runtime.faults.add(InvocationFault("AgentFunction", kind, during="model_call"))
    try:
        started = time.monotonic()
        with pytest.raises(FunctionError, match="crash" if kind == "crash" else "timed out"):
            _function(handler, timeout=timeout).invoke({}, runtime)  # type: ignore[arg-type]
        elapsed = time.monotonic() - started
        if kind == "crash":
            assert elapsed < timeout  # the caller got the crash at once, not at the Timeout
        else:
            # held until the Timeout, not until the parked handler (which never returns by itself)
            assert timeout <= elapsed < 30
        # The call reached the API. A hang's Timeout may pass before the call on a busy machine: the fault then
        # trips at the call all the same (invocations.py), so wait for the request, bounded by the work.
        deadline = time.monotonic() + 30
        while len(_Model.answered) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _Model.answered == ["/v1/messages/count_tokens", "/v1/messages"]
        time.sleep(0.3)
        (thread,) = threads
        assert thread.is_alive() and after == []  # parked inside the call: nothing after it ran

        # Other threads' requests pass straight through, also while one is parked.
        with httpx2.Client() as client:
            assert client.post(f"{url}/v1/messages", json={}).status_code == 200
        assert _Model.answered[-1] == "/v1/messages"

        runtime.released.set()  # the stack stopped
        thread.join(
            60
        )  # it ends after building a boto3 client: the join returns then, 60 s bounds a broken one
        assert not thread.is_alive()
        assert after == ["except BaseException ran"] and aws_sent == ["trying"]
        assert len(_Model.answered) == 3
    finally:
        runtime.released.set()
        server.shutdown()
        server.server_close()
