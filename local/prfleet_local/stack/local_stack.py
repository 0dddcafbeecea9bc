"""The local stack: the same handlers as in AWS, with only environment variables changed.

AWS is a moto server in its own process, provisioned by reading template.yaml; API Gateway is a small HTTP server
turning requests into HTTP API (payload 2.0) events; event source mappings are pollers that honour
batchItemFailures; the EventBridge schedule is a timer. Handlers' stdout (Powertools JSON logs and EMF metrics) is
captured per thread, so the stack can evaluate the template's alarms on what the run emitted.

Time: the local CloudWatch lives on prfleet's clock (`prfleet.config.now()`, real time shifted by
CLOCK_OFFSET_SECONDS; the offset is 0 in AWS). A metric line is filed at its EMF timestamp plus the offset in
effect when the handler printed it, and `evaluate_alarms()` evaluates at prfleet's `now` by default, so a drill
that moves the clock (a stuck run found 5 minutes later, the budget day after) sees its metrics where CloudWatch
would. Nothing is re-stamped when the offset is 0; durations are always measured by the handlers in real time.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import io
import json
import math
import os
import sys
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import boto3

from prfleet_local.stack import template as tpl
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
from prfleet_local.stack.moto_proc import MotoProcess

REGION = "us-east-1"
FUNCTIONS_DIR = tpl.ROOT / "functions"


class _StdoutRouter(io.TextIOBase):
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


_router: _StdoutRouter | None = None


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


def _install_router() -> _StdoutRouter:
    """One router per process (loggers keep the stream they were built with); re-seated if stdout was swapped."""
    global _router
    if _router is None:
        _router = _StdoutRouter(sys.stdout)
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

    def invoke(self, event: dict[str, Any], stack: LocalStack) -> Any:
        """Run the handler as Lambda would: in its own thread, abandoned at the function's Timeout.

        Returns the handler's reply; raises FunctionError for a handler that raised (the original exception is
        its __cause__), timed out or was killed, and publishes AWS/Lambda Invocations, Errors and Duration."""
        inv = Invocation(self.logical_id, stack.function_timeout(self))
        inv.fault = stack.faults.take(self.logical_id)
        ctx = FakeContext(self.name, inv.timeout, self.memory)
        ctx.aws_request_id = inv.request_id
        self.invocations += 1
        router = stack.router = _install_router()
        inv.model_url = getattr(stack, "model_url", None)
        released = getattr(stack, "released", None)
        if released is not None:
            inv.released = released
        if inv.fault is not None and inv.fault.during == "model_call":
            _install_model_call_hook()

        def run() -> None:
            enter_environment(env)
            router.local.capture = True
            router.local.invocation = inv
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


def _joined_headers(items: Any) -> dict[str, str]:
    """Headers as an HTTP API gives them to Lambda (payload 2.0): names lower-cased, duplicates joined with commas
    (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html)."""
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


@dataclass
class LocalStack:
    """Start with `start()`, stop with `stop()` (or use as a context manager)."""

    workdir: Path
    github_url: str
    model_url: str | None = None
    webhook_secret: str = "local-webhook-secret"
    parameters: dict[str, Any] = field(default_factory=dict)
    anthropic_api_key: str | None = None
    visibility_timeout: int = 3  # local queues redeliver after seconds, not the template's minutes
    poll_wait: float = 0.2
    sweep_interval: float | None = 60.0
    stack_name: str = "prfleet-local"
    api_port: int = 0
    # Lambda abandons an invocation at its Timeout (no flush; the batch comes back after its visibility timeout).
    kill_at_timeout: bool = True
    # Per-function Timeout overrides in seconds (logical id -> s), for tests that cannot wait 300 s; the template's
    # value otherwise. Like visibility_timeout, a local difference on purpose (README, "What the local stack does
    # differently").
    function_timeouts: dict[str, float] = field(default_factory=dict)
    # CloudWatch evaluates alarms every minute; the stack does too while it runs (None: only evaluate_alarms()).
    alarm_interval: float | None = 60.0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.template = tpl.load()
        self.log_lines: list[str] = []
        self.functions: dict[str, Function] = {}
        self.alarm_definitions: dict[str, dict[str, Any]] = {}
        self.query_definitions: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        # Set at the end of stop(): invocation threads parked where a `during=` fault killed them end then.
        self.released = threading.Event()
        self._sources_enabled = threading.Event()  # the event source mappings' Enabled flag
        self._sources_enabled.set()
        self._busy = 0
        self._busy_lock = threading.Lock()
        self.moto = MotoProcess(log_path=self.workdir / "moto.log")
        self.evaluator: Any = None
        self.notifications: list[dict[str, Any]] = []
        self.faults = Faults()
        self._running: list[Invocation] = []
        self._running_lock = threading.Lock()
        self._alarm_lock = threading.Lock()
        # Called with (transition, notification body) for every alarm state change, e.g. by the serve console.
        self.alarm_listeners: list[Callable[[Any, dict[str, Any]], None]] = []
        self._metric_points: list[Any] = []
        self._emf: list[tuple[float, str]] = []  # (clock offset when printed, EMF line)
        self._ages: dict[str, list[tuple[float, float]]] = {}
        self.api: ThreadingHTTPServer | None = None
        self.router = _install_router()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.workdir / "functions.log.jsonl", "a")  # noqa: SIM115
        self.router.sinks.append(self._collect)
        endpoint = self.moto.start()
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
            }
        )
        os.environ.pop("AWS_PROFILE", None)
        if self.model_url:
            os.environ["ANTHROPIC_BASE_URL"] = self.model_url
            os.environ["MODEL_ENDPOINT_URL"] = (
                self.model_url
            )  # every provider's client (prfleet.model_client)
        params = {"GitHubApiUrl": self.github_url, **self.parameters}
        self.ctx = tpl.Context(self.template, parameters=params, region=REGION, stack_name=self.stack_name)
        self.ctx.check_rules()
        self._provision()
        self._set_secrets()
        self._load_functions()
        self._reset_library_caches()
        self._start_api()
        self._start_pollers()
        if self.sweep_interval:
            self._spawn(self._sweep_loop, "sweeper")
        if self.alarm_interval:
            self._spawn(self._alarm_loop, "alarms")
        return self

    def stop(self) -> None:
        self._stop.set()
        for invocation in self.running():  # nothing outlives the stack, not even a hung invocation
            invocation.kill("shutdown")
        if self.api:
            self.api.shutdown()
            self.api.server_close()
        for t in self._threads:
            t.join(timeout=15)
        try:
            self.moto.stop()
        finally:
            # Parked invocations end only now: their except/finally blocks find no AWS endpoint to write to.
            self.released.set()
        if self._collect in self.router.sinks:
            self.router.sinks.remove(self._collect)
        self._log_file.close()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=os.environ["AWS_ENDPOINT_URL"])

    @property
    def webhook_url(self) -> str:
        assert self.api is not None
        return f"http://127.0.0.1:{self.api.server_address[1]}{self.webhook_path}"

    # ------------------------------------------------------------------ provisioning from template.yaml
    def _provision(self) -> None:
        pending = dict(self.template["Resources"])
        created: dict[str, str] = {}
        while pending:
            progressed = False
            for logical, res in list(pending.items()):
                if "Condition" in res and not self.ctx.condition(res["Condition"]):
                    del pending[logical]
                    progressed = True
                    continue
                try:
                    props = self.ctx.resolve(res.get("Properties", {}))
                except tpl.Unresolved:
                    continue
                self._create(logical, res["Type"], props)
                created[logical] = res["Type"]
                del pending[logical]
                progressed = True
            if not progressed:
                raise tpl.TemplateError(f"cannot resolve resources: {sorted(pending)}")
        self.created = created
        for name, out in self.template.get("Outputs", {}).items():
            try:
                self.outputs[name] = self.ctx.resolve(out["Value"])
            except tpl.Unresolved:
                pass

    def _name(self, logical: str) -> str:
        return f"{self.stack_name}-{logical}"

    def _create(self, logical: str, kind: str, props: dict[str, Any]) -> None:
        ctx = self.ctx
        if kind == "AWS::SQS::Queue":
            attrs = {
                k: str(v)
                for k, v in props.items()
                if k in ("MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds")
            }
            attrs["VisibilityTimeout"] = str(
                min(int(props.get("VisibilityTimeout", 30)), self.visibility_timeout)
            )
            if "RedrivePolicy" in props:
                attrs["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
            url = self.client("sqs").create_queue(QueueName=self._name(logical), Attributes=attrs)["QueueUrl"]
            arn = self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            ctx.refs[logical] = url
            ctx.attrs.update(
                {
                    (logical, "Arn"): arn,
                    (logical, "QueueName"): self._name(logical),
                    (logical, "QueueUrl"): url,
                }
            )
        elif kind == "AWS::DynamoDB::Table":
            args: dict[str, Any] = {
                "TableName": self._name(logical),
                "AttributeDefinitions": props["AttributeDefinitions"],
                "KeySchema": props["KeySchema"],
                "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
            }
            if props.get("GlobalSecondaryIndexes"):
                args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
            ddb = self.client("dynamodb")
            arn = ddb.create_table(**args)["TableDescription"]["TableArn"]
            ttl = props.get("TimeToLiveSpecification")
            if ttl:
                ddb.update_time_to_live(TableName=self._name(logical), TimeToLiveSpecification=ttl)
            ctx.refs[logical] = self._name(logical)
            ctx.attrs[(logical, "Arn")] = arn
        elif kind == "AWS::SNS::Topic":
            arn = self.client("sns").create_topic(Name=self._name(logical))["TopicArn"]
            ctx.refs[logical] = arn
            ctx.attrs[(logical, "TopicName")] = self._name(logical)
        elif kind == "AWS::SNS::Subscription":
            self.client("sns").subscribe(
                TopicArn=props["TopicArn"], Protocol=props["Protocol"], Endpoint=props["Endpoint"]
            )
        elif kind == "AWS::SecretsManager::Secret":
            value = props.get("SecretString")
            if value is None and "GenerateSecretString" in props:
                value = self.webhook_secret if logical == "WebhookSecret" else uuid.uuid4().hex
            arn = self.client("secretsmanager").create_secret(
                Name=f"{self.stack_name}/{logical}",
                Description=props.get("Description", ""),
                SecretString=value,
            )["ARN"]
            ctx.refs[logical] = arn
        elif kind == "AWS::Serverless::Function":
            ctx.refs[logical] = self._name(logical)
            ctx.attrs[(logical, "Arn")] = (
                f"arn:aws:lambda:{REGION}:123456789012:function:{self._name(logical)}"
            )
        elif kind == "AWS::Serverless::HttpApi":
            ctx.refs[logical] = "local"
        elif kind == "AWS::Serverless::LayerVersion":
            ctx.refs[logical] = f"arn:aws:lambda:{REGION}:123456789012:layer:{self._name(logical)}:1"
        elif kind == "AWS::Logs::LogGroup":
            self.client("logs").create_log_group(logGroupName=props["LogGroupName"])
            ctx.refs[logical] = props["LogGroupName"]
            # CloudFormation's Arn attribute (with the trailing :*); the functions' roles grant on it.
            ctx.attrs[(logical, "Arn")] = (
                f"arn:aws:logs:{REGION}:{ctx.account}:log-group:{props['LogGroupName']}:*"
            )
        elif kind == "AWS::IAM::Role":
            # Created in moto's IAM as written (moto does not enforce it; tests/integration/test_least_privilege.py
            # checks the statements). No RoleName in the template: CloudFormation generates one, so does the stack.
            iam = self.client("iam")
            name = props.get("RoleName") or self._name(logical)
            role = iam.create_role(
                RoleName=name,
                Path=props.get("Path", "/"),
                AssumeRolePolicyDocument=json.dumps(props["AssumeRolePolicyDocument"]),
                Description=props.get("Description", ""),
            )["Role"]
            for policy in props.get("Policies", []):
                iam.put_role_policy(
                    RoleName=name,
                    PolicyName=policy["PolicyName"],
                    PolicyDocument=json.dumps(policy["PolicyDocument"]),
                )
            for arn in props.get("ManagedPolicyArns", []):
                iam.attach_role_policy(RoleName=name, PolicyArn=arn)
            ctx.refs[logical] = name
            ctx.attrs[(logical, "Arn")] = role["Arn"]
            ctx.attrs[(logical, "RoleId")] = role["RoleId"]
        elif kind == "AWS::CloudWatch::Alarm":
            name = props.get("AlarmName") or self._name(logical)
            self.alarm_definitions[name] = props
            cw = self.client("cloudwatch")
            cw.put_metric_alarm(AlarmName=name, **props)
            # CloudWatch starts a new alarm in INSUFFICIENT_DATA (moto: OK); the local evaluator does too.
            cw.set_alarm_state(
                AlarmName=name,
                StateValue="INSUFFICIENT_DATA",
                StateReason="Unchecked: Initial alarm creation",
            )
            ctx.refs[logical] = name
            ctx.attrs[(logical, "Arn")] = f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:{name}"
        elif kind == "AWS::CloudWatch::Dashboard":
            self.client("cloudwatch").put_dashboard(
                DashboardName=props["DashboardName"], DashboardBody=props["DashboardBody"]
            )
            ctx.refs[logical] = props["DashboardName"]
        elif kind == "AWS::Logs::QueryDefinition":
            # moto has no PutQueryDefinition: the stack keeps them (`prfleet` prints them; AWS stores them).
            self.query_definitions[props["Name"]] = props
            ctx.refs[logical] = props["Name"]
        else:
            raise tpl.TemplateError(f"{logical}: resource type {kind} is not supported by the local stack")

    def _set_secrets(self) -> None:
        sm = self.client("secretsmanager")
        sm.put_secret_value(
            SecretId=self.ctx.refs["GitHubSecret"], SecretString=json.dumps({"token": "local-token"})
        )
        if "AnthropicSecret" not in self.ctx.refs:  # ModelProvider claude-platform-aws / bedrock: no key
            if not self.model_url:
                raise RuntimeError(
                    "no model: the AWS model providers run locally only against the offline model"
                )
            return
        key = self.anthropic_api_key or ("offline" if self.model_url else None)
        if key is None:
            raise RuntimeError("no model: give the stack an offline model URL or an ANTHROPIC_API_KEY")
        sm.put_secret_value(
            SecretId=self.ctx.refs["AnthropicSecret"], SecretString=json.dumps({"api_key": key})
        )

    # ------------------------------------------------------------------ functions
    def _load_functions(self) -> None:
        isolate_powertools_metrics()  # before the handlers create their Metrics: one metric set per invocation
        isolate_powertools_logging()  # one set of log keys (correlation id, ...) per execution environment
        for logical in tpl.resources(self.template, "AWS::Serverless::Function"):
            env = tpl.function_environment(self.template, self.ctx, logical)
            for name in tpl.function_environment_names(self.template, logical) - set(env):
                os.environ.pop(
                    name, None
                )  # AWS::NoValue here (e.g. no secret id): not left from another stack
            os.environ.update(env)
        for logical, res in tpl.resources(self.template, "AWS::Serverless::Function").items():
            code = tpl.ROOT / res["Properties"]["CodeUri"]
            handler = tpl.function_setting(self.template, logical, "Handler")
            module_name, _, func = handler.rpartition(".")
            assert func == "lambda_handler", handler
            load = functools.partial(_load_handler, f"prfleet_fn_{logical}", code / f"{module_name}.py")
            self.functions[logical] = Function(
                logical,
                self._name(logical),
                load(),
                float(tpl.function_setting(self.template, logical, "Timeout", 3)),
                int(tpl.function_setting(self.template, logical, "MemorySize", 128)),
                load=load,
            )

    @staticmethod
    def _reset_library_caches() -> None:
        from prfleet import config, github
        from prfleet.config import aws, secret_store

        config.settings.cache_clear()
        aws.client.cache_clear()
        secret_store.reset()
        github.reset_clients()

    def _collect(self, line: str) -> None:
        self.log_lines.append(line)
        if '"_aws"' in line:
            self._emf.append((self._clock_offset(), line))
        self._log_file.write(line + "\n")
        self._log_file.flush()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # ------------------------------------------------------------------ API Gateway
    def _start_api(self) -> None:
        routes = {}
        for logical, res in tpl.resources(self.template, "AWS::Serverless::Function").items():
            for ev in res["Properties"].get("Events", {}).values():
                if ev["Type"] in ("HttpApi", "Api"):
                    routes[(ev["Properties"]["Method"].upper(), ev["Properties"]["Path"])] = logical
        (self.webhook_path,) = [path for (_m, path) in routes]
        stack = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                path = self.path.split("?", 1)[0]
                logical = routes.get((self.command, path))
                # Each request's metrics are recorded before its answer leaves: a caller that has the answer finds
                # them (recorded after it, the 5xx of a crash was missed by an evaluation the caller ran at once).
                if logical is None:
                    stack.api_metrics(404, 0.0)  # a request to no route is still a request and a 4xx
                    self._send(404, {"message": "Not Found"})
                    return
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                try:
                    text, b64 = body.decode("utf-8"), False
                except UnicodeDecodeError:
                    text, b64 = base64.b64encode(body).decode(), True
                event = {
                    "version": "2.0",
                    "routeKey": f"{self.command} {path}",
                    "rawPath": path,
                    "rawQueryString": self.path.split("?", 1)[1] if "?" in self.path else "",
                    "headers": _joined_headers(self.headers.items()),
                    "requestContext": {
                        "http": {"method": self.command, "path": path, "sourceIp": self.client_address[0]},
                        "requestId": str(uuid.uuid4()),
                        "routeKey": f"{self.command} {path}",
                        "stage": "$default",
                        "timeEpoch": int(time.time() * 1000),
                    },
                    "body": text,
                    "isBase64Encoded": b64,
                }
                started = time.monotonic()
                try:
                    reply = stack.functions[logical].invoke(event, stack)
                except FunctionError:
                    # A function error (crash, timeout, unhandled exception): the HTTP API answers 500 with this body
                    # (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-troubleshooting-lambda.html).
                    stack.api_metrics(500, (time.monotonic() - started) * 1000)
                    self._send(500, {"message": "Internal Server Error"})
                    return
                status = int(reply.get("statusCode", 200))
                stack.api_metrics(status, (time.monotonic() - started) * 1000)
                self.send_response(status)
                for k, v in (reply.get("headers") or {}).items():
                    self.send_header(k, v)
                payload = reply.get("body") or ""
                data = base64.b64decode(payload) if reply.get("isBase64Encoded") else payload.encode()
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET = do_PUT = _serve  # noqa: N815

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.api = ThreadingHTTPServer(("127.0.0.1", self.api_port), Handler)
        self._spawn(self.api.serve_forever, "api")

    # ------------------------------------------------------------------ event source mappings
    def _start_pollers(self) -> None:
        for logical, res in tpl.resources(self.template, "AWS::Serverless::Function").items():
            for ev in res["Properties"].get("Events", {}).values():
                if ev["Type"] != "SQS":
                    continue
                props = ev["Properties"]
                queue_arn = self.ctx.resolve(props["Queue"])
                queue_logical = next(
                    k for (k, a), v in self.ctx.attrs.items() if a == "Arn" and v == queue_arn
                )
                url = self.ctx.refs[queue_logical]
                concurrency = int(
                    self.ctx.resolve(props.get("ScalingConfig", {}).get("MaximumConcurrency", 2))
                )
                partial = "ReportBatchItemFailures" in props.get("FunctionResponseTypes", [])
                batch = int(props.get("BatchSize", 10))
                poll = functools.partial(self._poll, url, queue_arn, logical, batch, partial)
                for i in range(concurrency):  # MaximumConcurrency: at most this many invocations at once
                    self._spawn(poll, f"poller-{logical}-{i}")

    def _poll(self, url: str, arn: str, function: str, batch_size: int, partial: bool) -> None:
        sqs = self.client("sqs")
        while not self._stop.is_set():
            if not self._sources_enabled.is_set():
                self._stop.wait(self.poll_wait)
                continue
            try:
                got = sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=min(batch_size, 10),
                    WaitTimeSeconds=0,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception:
                if self._stop.is_set():
                    return
                time.sleep(self.poll_wait)
                continue
            if not got:
                self._stop.wait(self.poll_wait)
                continue
            now = time.time()
            with self._busy_lock:
                self._busy += 1
                self._ages.setdefault(url, []).extend(
                    (now, now - int(m["Attributes"]["SentTimestamp"]) / 1000.0)
                    for m in got
                    if "Attributes" in m
                )
            try:
                self._deliver(sqs, url, arn, function, got, partial)
            finally:
                with self._busy_lock:
                    self._busy -= 1

    def _deliver(
        self, sqs: Any, url: str, arn: str, function: str, messages: list[dict[str, Any]], partial: bool
    ) -> None:
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
        try:
            reply = self.functions[function].invoke({"Records": records}, self)
            failed = (
                {f["itemIdentifier"] for f in (reply or {}).get("batchItemFailures", [])}
                if partial
                else set()
            )
        except Exception:
            failed = {r["messageId"] for r in records}  # a crashed invocation returns the whole batch
        done = [r for r in records if r["messageId"] not in failed]
        for start in range(0, len(done), 10):
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                    for i, r in enumerate(done[start : start + 10])
                ],
            )
        # failed records stay in flight and reappear after the visibility timeout; the redrive policy applies.

    def disable_event_sources(self) -> None:
        """Stop the pollers taking new messages (UpdateEventSourceMapping Enabled=false); running ones go on."""
        self._sources_enabled.clear()

    def enable_event_sources(self) -> None:
        self._sources_enabled.set()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.sweep_interval):
            try:
                self.sweep()
            except FunctionError:
                pass  # counted as the sweeper's Error; the next minute's schedule runs it again

    # ------------------------------------------------------------------ the Lambda runtime's own signals
    def function_timeout(self, fn: Function) -> float:
        """The Timeout an invocation of `fn` gets: the template's, unless this stack overrides it."""
        return float(self.function_timeouts.get(fn.logical_id, fn.timeout))

    def inject(self, fault: InvocationFault) -> None:
        """Arm a crash or hang for the next invocation(s) of a function (see prfleet_local.stack.invocations)."""
        if fault.function not in self.functions:
            raise ValueError(f"no function {fault.function!r}; one of {', '.join(sorted(self.functions))}")
        self.faults.add(fault)

    def running(self, function: str | None = None) -> list[Invocation]:
        """The invocations running now (optionally of one function); `kill()` one to crash it."""
        with self._running_lock:
            return [i for i in self._running if function is None or i.function == function]

    def _metric(self, namespace: str, name: str, dims: dict[str, str], value: float, unit: str) -> None:
        from prfleet_local.stack.alarms import Datapoint

        with self._busy_lock:
            self._metric_points.append(Datapoint(namespace, name, dims, self.now(), float(value), unit))

    def lambda_metrics(self, fn: Function, *, duration_ms: float, error: bool) -> None:
        """What Lambda publishes for every invocation in AWS/Lambda, per FunctionName: Invocations, Errors (a
        function error, a timeout or a crash), Duration
        (https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html)."""
        dims = {"FunctionName": fn.name}
        self._metric("AWS/Lambda", "Invocations", dims, 1, "Count")
        self._metric("AWS/Lambda", "Errors", dims, 1 if error else 0, "Count")
        self._metric("AWS/Lambda", "Duration", dims, duration_ms, "Milliseconds")

    def api_metrics(self, status: int, latency_ms: float) -> None:
        """What an HTTP API publishes per ApiId for each request: Count, 4xx, 5xx, Latency
        (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-metrics.html)."""
        dims = {"ApiId": str(self.ctx.refs.get("WebhookApi", "local"))}
        self._metric("AWS/ApiGateway", "Count", dims, 1, "Count")
        self._metric("AWS/ApiGateway", "4xx", dims, 1 if 400 <= status < 500 else 0, "Count")
        self._metric("AWS/ApiGateway", "5xx", dims, 1 if status >= 500 else 0, "Count")
        self._metric("AWS/ApiGateway", "Latency", dims, latency_ms, "Milliseconds")

    def _alarm_loop(self) -> None:
        """CloudWatch evaluates every alarm once a minute; so does the stack while it runs."""
        assert self.alarm_interval
        while not self._stop.wait(self.alarm_interval):
            try:
                self.evaluate_alarms()
            except Exception as exc:  # noqa: BLE001 - a failed evaluation must not end the loop; said on stderr
                if self._stop.is_set():
                    return
                print(f"prfleet local: alarm evaluation failed: {exc}", file=sys.__stderr__)

    def sweep(self) -> Any:
        return self.functions["SweeperFunction"].invoke(
            {"source": "aws.events", "detail-type": "Scheduled Event"}, self
        )

    # ------------------------------------------------------------------ waiting and inspection
    def queue_url(self, logical: str) -> str:
        return self.ctx.refs[logical]

    def queue_depth(self, logical: str, *, in_flight: bool = True) -> int:
        """Every message the queue still holds: visible, in flight (left out with `in_flight=False`), and delayed
        (a RetryLater's DelaySeconds: it is in neither of the other two counts,
        https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_GetQueueAttributes.html)."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"]
        if in_flight:
            names.append("ApproximateNumberOfMessagesNotVisible")
        attrs = self.client("sqs").get_queue_attributes(
            QueueUrl=self.queue_url(logical), AttributeNames=names
        )["Attributes"]
        return sum(int(attrs.get(n, 0)) for n in names)

    def wait_idle(
        self,
        timeout: float = 60.0,
        queues: tuple[str, ...] = ("PrQueue", "JobsQueue"),
        *,
        in_flight: bool = True,
    ) -> bool:
        """True once the work queues are empty and no handler is running (checked twice in a row). With
        `in_flight=False`, messages received and not deleted (a killed invocation's, a lost delete's) are not
        waited for: they come back after the visibility timeout, which at the template's 6 x Timeout is minutes."""
        deadline = time.monotonic() + timeout
        calm = 0
        while time.monotonic() < deadline:
            with self._busy_lock:
                busy = self._busy
            if busy == 0 and all(self.queue_depth(q, in_flight=in_flight) == 0 for q in queues):
                calm += 1
                if calm >= 2:
                    return True
            else:
                calm = 0
            time.sleep(0.2)
        return False

    def table(self, logical: str) -> str:
        return self.ctx.refs[logical]

    # ------------------------------------------------------------------ alarms (moto stores them, never evaluates)
    def _sqs_datapoints(self, now: float) -> list[Any]:
        """What CloudWatch would publish for the queues: depth now (visible and in flight), and the age of the
        oldest message seen.

        SQS pushes its metrics to CloudWatch "at one-minute intervals"
        (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/monitoring-using-cloudwatch.html):
        one depth sample per queue and minute, filed in the last whole minute, so the evaluation at `now`, which
        ends at that minute, sees it. The first evaluation of a minute samples; later ones in the same minute (a
        shortened alarm interval, a test evaluating twice) publish no second sample, since two would let a
        Maximum of each count a message received in between twice, once visible and once in flight. SQS publishes
        every minute, evaluations here may skip one (a slow evaluation, a test jumping ahead): the minutes missed
        since the last sample (at most 5) repeat the last sample, so a change is filed in the minute it was seen
        and a DLQ that did not change does not read as 0 -> depth (FILL(…, 0) + DIFF: a false page).
        ApproximateNumberOfMessagesVisible is GetQueueAttributes' ApproximateNumberOfMessages and
        ApproximateNumberOfMessagesNotVisible its namesake ("in flight: received but not yet deleted or
        expired", https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html)."""
        from prfleet_local.stack.alarms import Datapoint

        stamp = math.floor(now / 60) * 60 - 1
        sampled: set[tuple[str, float]] = self.__dict__.setdefault("_sqs_sampled", set())
        last: dict[str, tuple[float, dict[str, float]]] = self.__dict__.setdefault("_sqs_last", {})
        gauges = {
            "ApproximateNumberOfMessagesVisible": "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible": "ApproximateNumberOfMessagesNotVisible",
        }
        points = []
        for logical in tpl.resources(self.template, "AWS::SQS::Queue"):
            name = self.ctx.attrs[(logical, "QueueName")]
            dims = {"QueueName": name}
            if (logical, stamp) not in sampled:
                sampled.add((logical, stamp))
                attrs = self.client("sqs").get_queue_attributes(
                    QueueUrl=self.ctx.refs[logical], AttributeNames=list(gauges.values())
                )["Attributes"]
                values = {metric: float(attrs.get(attribute, 0)) for metric, attribute in gauges.items()}
                before = last.get(logical)
                if before is not None and before[0] < stamp - 60:
                    for missed in range(int(max(before[0] + 60, stamp - 300)), int(stamp), 60):
                        if (logical, float(missed)) not in sampled:
                            sampled.add((logical, float(missed)))
                            points += [
                                Datapoint("AWS/SQS", m, dims, float(missed), v, "Count")
                                for m, v in before[1].items()
                            ]
                if before is None or before[0] < stamp:
                    last[logical] = (stamp, values)
                points += [Datapoint("AWS/SQS", m, dims, stamp, v, "Count") for m, v in values.items()]
            with self._busy_lock:
                ages = self._ages.pop(self.ctx.refs[logical], [])
            for ts, age in ages or [(stamp, 0.0)]:
                points.append(Datapoint("AWS/SQS", "ApproximateAgeOfOldestMessage", dims, ts, age, "Seconds"))
        return points

    @staticmethod
    def _clock_offset() -> float:
        from prfleet import config

        try:
            return float(config.settings().clock_offset_s)
        except config.ConfigError:
            return 0.0

    def now(self) -> float:
        """prfleet's clock (real time + CLOCK_OFFSET_SECONDS): the time the local CloudWatch evaluates at."""
        return time.time() + self._clock_offset()

    def datapoints(self) -> list[Any]:
        """Every metric datapoint the handlers emitted (EMF, filed on prfleet's clock) plus the SQS samples."""
        from dataclasses import replace

        from prfleet_local.stack.alarms import emf_to_datapoints

        points: list[Any] = []
        for offset, line in list(self._emf):
            points.extend(replace(d, timestamp=d.timestamp + offset) for d in emf_to_datapoints([line]))
        with self._busy_lock:
            return points + list(self._metric_points)

    def evaluate_alarms(self, now: float | None = None) -> dict[str, str]:
        """Apply the template's alarms to the metrics this run emitted; publish state changes to the topic.

        `now` defaults to prfleet's clock. Each call also samples the SQS queues at `now` (depth, and the age of
        the oldest message the pollers saw), as CloudWatch's per-minute SQS metrics would. Every transition is
        published to the alarm's actions (SNS, CloudWatch's own message body) and mirrored into moto with
        set_alarm_state, so describe_alarms (`prfleet alarms`) shows the same states."""

        with self._alarm_lock:
            return self._evaluate_alarms(now)

    def _evaluate_alarms(self, now: float | None) -> dict[str, str]:
        from prfleet_local.stack.alarms import AlarmEvaluator, notification_subject

        now = self.now() if now is None else now
        if self.evaluator is None:
            self.evaluator = AlarmEvaluator(self.alarm_definitions)
        sqs_points = self._sqs_datapoints(now)
        with self._busy_lock:
            self._metric_points.extend(sqs_points)
        self.evaluator.evaluate(self.datapoints(), now)
        sns, cw = self.client("sns"), self.client("cloudwatch")
        for t in self.evaluator.last_transitions:
            body = self.evaluator.notification(t, region=REGION)
            for arn in self.evaluator.actions(t.alarm, t.new_state):
                sns.publish(
                    TopicArn=arn, Subject=notification_subject(t, region=REGION), Message=json.dumps(body)
                )
            cw.set_alarm_state(
                AlarmName=t.alarm,
                StateValue=str(t.new_state),
                StateReason=t.reason[:1023],
                StateReasonData=json.dumps(t.reason_data, default=str),
            )
            self.notifications.append(body)
            for listener in list(self.alarm_listeners):
                listener(t, body)
        return {k: str(v) for k, v in self.evaluator.states.items()}

    def alarm_name(self, logical: str) -> str:
        """The physical name of a template alarm (`<stack>-<LogicalId>`, as the stack provisions it)."""
        return str(self.ctx.refs[logical])

    def subscribe_alerts(self, name: str = "alerts-inbox") -> AlertInbox:
        """Subscribe a new SQS queue to the AlertTopic (what an on-call integration does) and return it."""
        sqs, sns = self.client("sqs"), self.client("sns")
        url = sqs.create_queue(QueueName=f"{self.stack_name}-{name}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=self.ctx.refs["AlertTopic"], Protocol="sqs", Endpoint=arn)
        return AlertInbox(sqs, url)


@dataclass
class AlertMessage:
    """One message that reached the alert topic: the SNS Subject and the decoded Message."""

    subject: str
    body: dict[str, Any]
    topic_arn: str

    @property
    def alarm(self) -> str | None:
        """The alarm's name for a CloudWatch state change (None for other notices, e.g. the budget notice)."""
        return self.body.get("AlarmName")

    @property
    def state(self) -> str | None:
        return self.body.get("NewStateValue")


class AlertInbox:
    """An SQS queue subscribed to the AlertTopic; `receive()` drains it (SNS envelope decoded)."""

    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs, self.url = sqs, url
        self.received: list[AlertMessage] = []

    def receive(self, *, wait: float = 0.0) -> list[AlertMessage]:
        """Messages that arrived since the last call (waits up to `wait` seconds for the first one)."""
        out: list[AlertMessage] = []
        deadline = time.monotonic() + wait
        while True:
            got = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
                "Messages", []
            )
            for m in got:
                envelope = json.loads(m["Body"])
                try:
                    body = json.loads(envelope.get("Message") or "{}")
                except ValueError:
                    body = {"text": envelope.get("Message")}
                out.append(AlertMessage(envelope.get("Subject", ""), body, envelope.get("TopicArn", "")))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
            if got:
                continue
            if out or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        self.received.extend(out)
        return out
