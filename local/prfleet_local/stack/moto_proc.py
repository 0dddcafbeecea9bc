"""A moto server in its own process, each request atomic, with AWS's own faults on demand and every request counted.

Atomic requests. moto's in-process mock loses concurrent DynamoDB conditional updates; so does the stock threaded
server: its DynamoDB backend evaluates a ConditionExpression and applies the UpdateExpression in separate steps
with no lock, so concurrent writes to one item interleave (seen on moto 5.2.5: a ledger limit passed, settled
spend short of the sum of the costs). Real DynamoDB applies each conditional single-item write atomically. So by
default the server runs moto's own WSGI app behind a request lock: clients stay fully concurrent (many
connections, any interleaving of requests) and each request is atomic, as in DynamoDB. `serialized=False` runs
the stock server (no faults, no counts).

Faults (a `FaultPlan`, given to the constructor or switched per run with `set_faults()` / POST /_prfleet/faults),
each on chosen services, operations and tables, on chosen request numbers or at a seeded rate. What each one
imitates, from the documentation:

- `throttle`: DynamoDB refuses the request, applying nothing, with HTTP 400 and
  `ProvisionedThroughputExceededException` carrying `ThrottlingReasons` (reason + table ARN) -- "The request was
  denied due to request throttling ... The AWS SDKs for DynamoDB automatically retry requests that receive this
  exception" (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html,
  https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_ThrottlingReason.html). The reason for a
  PAY_PER_REQUEST table is `TableWriteKeyRangeThroughputExceeded` / `TableReadKeyRangeThroughputExceeded` (a hot
  partition: the one kind of throttling on-demand tables still get). A transaction is refused the way
  transactions are: `TransactionCanceledException` with a `ThrottlingError` cancellation reason on the item's
  table ("Transaction conflict handling", same guide).
- `throttling`: HTTP 400 `ThrottlingException` ("Rate of requests exceeds the allowed throughput"), the shape
  DynamoDB's control plane and, since the 2025 throttling-reasons change, the data plane use; applies nothing.
- `lost_response`: the request IS applied, then the client gets HTTP 500 `InternalServerError` -- DynamoDB's
  5xx "could not process your request ... OK to retry? Yes", and a write that got one may have been applied
  (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html#Programming.Errors.MessagesAndCodes.http5xx).
  The SDK retries it: a conditional write then fails its own condition, an ADD is applied twice. Default
  operations: the writes (PutItem, UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems). A retried
  TransactWriteItems with the same ClientRequestToken within 10 minutes returns the first success without
  applying again, as DynamoDB's idempotency token does (API_TransactWriteItems.html, ClientRequestToken); moto
  has no idempotency tokens, so the proxy keeps them.
- `sqs_delete_lost`: DeleteMessage / DeleteMessageBatch answer success but delete nothing, so the message comes
  back after its visibility timeout: "On rare occasions, one of the servers that stores a copy of a message might
  be unavailable when you receive or delete a message ... you might get that message copy again"
  (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/standard-queues-at-least-once-delivery.html).
  This is the duplicate delivery of standard queues, at the queue's own visibility timing.

Counting. Every request that reaches the proxy (retries included: they are billed and they cost latency) is
counted by (service, operation), service from the SigV4 credential scope, operation from X-Amz-Target, the
RPCv2 path or the query `Action`. GET /_prfleet/counts returns them; POST /_prfleet/counts/reset zeroes them.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from prfleet_local.stack import moto_speed, moto_trace

FAULT_KINDS = ("throttle", "throttling", "lost_response", "sqs_delete_lost")
DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
DYNAMODB_READS = ("GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems")
_DDB = "com.amazonaws.dynamodb.v20120810#"
_CREDENTIAL = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
IDEMPOTENCY_WINDOW_S = 600.0  # TransactWriteItems ClientRequestToken: valid for 10 minutes
ACCOUNT = "123456789012"


# The child ends itself when its parent goes, however the parent ended (SIGKILL, a crash, a closed terminal):
# a reparented process sees a different getppid(). Without this a killed `prfleet` leaves moto running.
def _orphan_watch(parent: int) -> None:
    while parent:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.5)


_STOCK_SERVER = """
import os, runpy, sys
from prfleet_local.stack.moto_proc import _orphan_watch
import threading
threading.Thread(target=_orphan_watch, args=(int(os.environ.get("PRFLEET_PARENT_PID") or 0),), daemon=True).start()
sys.argv = ["moto_server", "-H", "127.0.0.1", "-p", sys.argv[1]]
runpy.run_module("moto.server", run_name="__main__")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------------ fault plan


@dataclass
class FaultRule:
    """One fault: on the listed (1-based) numbers of the requests this rule matches, or at `rate` (seeded)."""

    kind: str
    operations: list[str] = field(default_factory=list)  # empty: the kind's defaults
    tables: list[str] = field(default_factory=list)  # logical (LedgerTable) or physical names; empty: all
    queues: list[str] = field(default_factory=list)  # for sqs_delete_lost: queue name suffixes; empty: all
    rate: float = 0.0
    requests: list[int] = field(default_factory=list)
    limit: int | None = None  # at most this many injections

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {self.rate}")

    @property
    def service(self) -> str:
        return "sqs" if self.kind == "sqs_delete_lost" else "dynamodb"

    def default_operations(self) -> tuple[str, ...]:
        if self.kind == "lost_response":
            return DYNAMODB_WRITES
        if self.kind == "sqs_delete_lost":
            return ("DeleteMessage", "DeleteMessageBatch")
        return DYNAMODB_WRITES + DYNAMODB_READS

    def matches(self, service: str, operation: str, tables: Iterable[str], queue: str | None) -> bool:
        if service != self.service or operation not in (self.operations or self.default_operations()):
            return False
        if self.kind == "sqs_delete_lost":
            return not self.queues or (queue is not None and any(queue.endswith(q) for q in self.queues))
        names = list(tables)
        return not self.tables or any(_same_table(n, t) for n in names for t in self.tables)


def _same_table(physical: str, wanted: str) -> bool:
    return physical == wanted or physical.endswith("-" + wanted)


@dataclass
class FaultPlan:
    rules: list[FaultRule] = field(default_factory=list)
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultPlan:
        return cls([FaultRule(**r) for r in data.get("rules", [])], int(data.get("seed", 0)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- the proxy


def classify(environ: dict[str, Any], body: bytes) -> tuple[str, str]:
    """(service, operation) of one AWS request as the SDK sent it."""
    m = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    service = m.group(2) if m else "unknown"
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return service, target.rsplit(".", 1)[-1]
    path = environ.get("PATH_INFO", "")
    if "/operation/" in path:  # smithy RPC v2 (CloudWatch): /service/<Service>/operation/<Operation>
        return service, path.rsplit("/operation/", 1)[-1]
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" not in query and body and b"Action=" in body[:4096]:
        query = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    action = (query.get("Action") or [None])[0]
    return service, action or f"{environ.get('REQUEST_METHOD', '?')} {path}"


def dynamodb_tables(operation: str, payload: dict[str, Any]) -> list[str]:
    """Every table one DynamoDB request touches."""
    if "TableName" in payload:
        return [str(payload["TableName"])]
    if operation in ("BatchWriteItem", "BatchGetItem"):
        return [str(t) for t in payload.get("RequestItems", {})]
    names = []
    for item in payload.get("TransactItems", []):
        for part in item.values():
            if isinstance(part, dict) and "TableName" in part:
                names.append(str(part["TableName"]))
    return names


def _json_reply(status: int, body: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    data = json.dumps(body).encode()
    return (
        f"{status} {'OK' if status == 200 else 'Bad Request' if status == 400 else 'Internal Server Error'}",
        [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("Content-Length", str(len(data))),
            ("x-amzn-RequestId", hashlib.sha1(data + str(time.time_ns()).encode()).hexdigest()[:32].upper()),
        ],
        data,
    )


def throttle_reply(kind: str, operation: str, tables: list[str], region: str) -> tuple[str, list, bytes]:
    """What DynamoDB answers a throttled request with (nothing applied)."""
    table = tables[0] if tables else "unknown"
    arn = f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{table}"
    rw = "Read" if operation in DYNAMODB_READS else "Write"
    if operation in ("TransactWriteItems", "TransactGetItems"):
        return _json_reply(
            400,
            {
                "__type": _DDB + "TransactionCanceledException",
                "message": "Transaction cancelled, please refer cancellation reasons for specific reasons "
                "[" + ", ".join("ThrottlingError" if i == 0 else "None" for i in range(len(tables))) + "]",
                "CancellationReasons": [
                    {
                        "Code": "ThrottlingError",
                        "Message": "Throughput exceeds the current capacity of your table "
                        "or index. DynamoDB is automatically scaling your table or index so please try again shortly.",
                    }
                    if i == 0
                    else {"Code": "None"}
                    for i in range(len(tables))
                ],
            },
        )
    if kind == "throttling":
        return _json_reply(
            400,
            {
                "__type": "com.amazon.coral.availability#ThrottlingException",
                "message": "Rate of requests exceeds the allowed throughput.",
                "ThrottlingReasons": [{"reason": f"Table{rw}KeyRangeThroughputExceeded", "resource": arn}],
            },
        )
    return _json_reply(
        400,
        {
            "__type": _DDB + "ProvisionedThroughputExceededException",
            "message": "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically "
            "scaling your table or index so please try again shortly. If exceptions persist, check if you have a "
            "hot key: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-design.html",
            "ThrottlingReasons": [{"reason": f"Table{rw}KeyRangeThroughputExceeded", "resource": arn}],
        },
    )


def lost_reply() -> tuple[str, list, bytes]:
    return _json_reply(500, {"__type": _DDB + "InternalServerError", "message": "Internal server error"})


class FaultProxy:
    """WSGI middleware around moto's app: counts, injects faults, serializes the requests it forwards."""

    def __init__(
        self,
        app: Callable[..., Any],
        plan: FaultPlan | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.lock = threading.Lock()  # moto's backends: one request at a time
        self.meta = threading.Lock()  # counters, plan, tokens
        self.counts: Counter[tuple[str, str]] = Counter()
        self.injected: Counter[tuple[str, str, str]] = Counter()
        self.clock = clock
        self.tokens: dict[str, tuple[str, float, tuple[str, list, bytes]]] = {}
        self.set_plan(plan or FaultPlan())

    def set_plan(self, plan: FaultPlan) -> None:
        with self.meta:
            self.plan = plan
            self.rng = random.Random(plan.seed)
            self.seen = [0] * len(plan.rules)
            self.fired = [0] * len(plan.rules)

    def _pick(self, service: str, operation: str, tables: list[str], queue: str | None) -> FaultRule | None:
        with self.meta:
            for i, rule in enumerate(self.plan.rules):
                if not rule.matches(service, operation, tables, queue):
                    continue
                self.seen[i] += 1
                if rule.limit is not None and self.fired[i] >= rule.limit:
                    continue
                if self.seen[i] in rule.requests or (rule.rate and self.rng.random() < rule.rate):
                    self.fired[i] += 1
                    self.injected[(rule.kind, service, operation)] += 1
                    return rule
        return None

    def _forward(self, environ: dict[str, Any]) -> tuple[str, list, bytes]:
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list, exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"], captured["headers"] = status, headers
            return lambda _data: None

        with self.lock:
            chunks = self.app(environ, start_response)
            try:
                data = b"".join(chunks)
            finally:
                close = getattr(chunks, "close", None)
                if close:
                    close()
        return captured["status"], captured["headers"], data

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if path.startswith("/_prfleet/"):
            status, headers, data = self._control(environ.get("REQUEST_METHOD", "GET"), path, body)
        else:
            status, headers, data = self._serve(environ, body)
        start_response(status, headers)
        return [data]

    def _serve(self, environ: dict[str, Any], body: bytes) -> tuple[str, list, bytes]:
        service, operation = classify(environ, body)
        if not environ.get("PATH_INFO", "").startswith("/moto-api"):
            with self.meta:
                self.counts[(service, operation)] += 1
        if service not in ("dynamodb", "sqs") or not self.plan.rules:
            return self._forward(environ)
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        tables = dynamodb_tables(operation, payload) if service == "dynamodb" else []
        queue = str(payload.get("QueueUrl", "")).rstrip("/").rsplit("/", 1)[-1] if service == "sqs" else None
        token = payload.get("ClientRequestToken") if operation == "TransactWriteItems" else None
        if token:
            replay = self._replay(str(token), body)
            if replay is not None:
                return replay
        rule = self._pick(service, operation, tables, queue)
        scope = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        region = scope.group(1) if scope else "us-east-1"
        if rule is None:
            reply = self._forward(environ)
        elif rule.kind in ("throttle", "throttling"):
            return throttle_reply(rule.kind, operation, tables, region)
        elif rule.kind == "sqs_delete_lost":
            return self._delete_lost(operation, payload)
        else:  # lost_response: applied, then the answer is lost
            reply = self._forward(environ)
            if token and reply[0].startswith("200"):
                self._remember(str(token), body, reply)
            return lost_reply()
        if token and reply[0].startswith("200"):
            self._remember(str(token), body, reply)
        return reply

    def _remember(self, token: str, body: bytes, reply: tuple[str, list, bytes]) -> None:
        with self.meta:
            self.tokens[token] = (self._params_hash(body), self.clock(), reply)

    @staticmethod
    def _params_hash(body: bytes) -> str:
        data = json.loads(body)
        data.pop("ClientRequestToken", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def _replay(self, token: str, body: bytes) -> tuple[str, list, bytes] | None:
        with self.meta:
            entry = self.tokens.get(token)
            if entry and self.clock() - entry[1] > IDEMPOTENCY_WINDOW_S:
                del self.tokens[token]
                entry = None
        if entry is None:
            return None
        if entry[0] != self._params_hash(body):
            return _json_reply(
                400,
                {
                    "__type": _DDB + "IdempotentParameterMismatchException",
                    "message": "Request parameters do not match the original request for this client token",
                },
            )
        return entry[2]

    @staticmethod
    def _delete_lost(operation: str, payload: dict[str, Any]) -> tuple[str, list, bytes]:
        if operation == "DeleteMessageBatch":
            ok = [{"Id": e.get("Id")} for e in payload.get("Entries", [])]
            return _json_reply(200, {"Successful": ok, "Failed": []})
        return _json_reply(200, {})

    def _control(self, method: str, path: str, body: bytes) -> tuple[str, list, bytes]:
        try:
            if path == "/_prfleet/faults" and method == "POST":
                self.set_plan(FaultPlan.from_dict(json.loads(body or b"{}")))
                return _json_reply(200, self.plan.to_dict())
            if path == "/_prfleet/faults":
                with self.meta:
                    injected = [
                        {"kind": k, "service": s, "operation": o, "count": n}
                        for (k, s, o), n in sorted(self.injected.items())
                    ]
                return _json_reply(200, {"plan": self.plan.to_dict(), "injected": injected})
            if path == "/_prfleet/counts/reset" and method == "POST":
                with self.meta:
                    self.counts.clear()
                return _json_reply(200, {"counts": []})
            if path == "/_prfleet/counts":
                with self.meta:
                    rows = [
                        {"service": s, "operation": o, "count": n}
                        for (s, o), n in sorted(self.counts.items())
                    ]
                return _json_reply(200, {"counts": rows})
        except (ValueError, TypeError) as exc:
            return _json_reply(400, {"error": str(exc)})
        return _json_reply(400, {"error": f"no control route {method} {path}"})


# ------------------------------------------------------------------------------------------------- process


class MotoProcess:
    """`python -m prfleet_local.stack.moto_proc` on a free loopback port; `endpoint` is what AWS_ENDPOINT_URL
    should be. `faults` is the initial FaultPlan; `set_faults()` switches it per run."""

    def __init__(
        self,
        *,
        log_path: Path | None = None,
        port: int | None = None,
        serialized: bool = True,
        faults: FaultPlan | None = None,
    ) -> None:
        self.serialized = serialized
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.faults = faults
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> str:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "MOTO_CALL_RESET_API": "false", "PRFLEET_PARENT_PID": str(os.getpid())}
        if self.serialized:
            cmd = [sys.executable, "-m", "prfleet_local.stack.moto_proc", "--port", str(self.port)]
            if self.faults is not None:
                cmd += ["--faults", json.dumps(self.faults.to_dict())]
        else:
            cmd = [sys.executable, "-c", _STOCK_SERVER, str(self.port)]
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._proc.returncode}")
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()  # noqa: S310 - loopback
                return self.endpoint
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint} within {timeout} s")

    def _control(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if not self.serialized:
            raise RuntimeError("faults and counts need the serialized server (serialized=True)")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.endpoint + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())

    def set_faults(self, plan: FaultPlan) -> None:
        """Replace the fault plan (request numbers and the seeded RNG start again)."""
        self.faults = plan
        self._control("POST", "/_prfleet/faults", plan.to_dict())

    def injected(self) -> dict[tuple[str, str, str], int]:
        """(kind, service, operation) -> how many faults were injected under the current plan."""
        rows = self._control("GET", "/_prfleet/faults")["injected"]
        return {(r["kind"], r["service"], r["operation"]): int(r["count"]) for r in rows}

    def counts(self) -> dict[tuple[str, str], int]:
        """(service, operation) -> requests received since start or the last reset (retries included)."""
        rows = self._control("GET", "/_prfleet/counts")["counts"]
        return {(r["service"], r["operation"]): int(r["count"]) for r in rows}

    def reset_counts(self) -> None:
        self._control("POST", "/_prfleet/counts/reset", {})

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def moto_server(
    timeout: float = 30.0, *, serialized: bool = True, faults: FaultPlan | None = None
) -> Iterator[str]:
    """A moto server for the length of a `with` block; yields its endpoint URL."""
    proc = MotoProcess(serialized=serialized, faults=faults)
    try:
        yield proc.start(timeout)
    finally:
        proc.stop()


def main(argv: list[str] | None = None) -> int:
    """The serialized, fault-injecting moto server: python -m prfleet_local.stack.moto_proc --port P."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--faults", default=None, help="FaultPlan as JSON")
    args = parser.parse_args(argv)
    parent = int(os.environ.get("PRFLEET_PARENT_PID") or 0)
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
    plan = FaultPlan.from_dict(json.loads(args.faults)) if args.faults else None
    moto_speed.apply()  # same answers, in time proportional to what is returned (see moto_speed)
    moto_trace.apply()  # a batch entry's AWSTraceHeader kept, as SQS keeps it
    proxy = FaultProxy(DomainDispatcherApplication(create_backend_app), plan)
    run_simple("127.0.0.1", args.port, proxy, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
