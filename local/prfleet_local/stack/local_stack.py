"""The local stack: the same handlers as in AWS, with only environment variables changed.

AWS is a moto server in its own process, provisioned by reading template.yaml (resources.py); API Gateway is a
small HTTP server turning requests into HTTP API (payload 2.0) events (http_api.py); event source mappings are
pollers that honour batchItemFailures (event_sources.py); the EventBridge schedule is a timer. Each invocation
runs in its own thread and execution environment (lambda_runtime.py), its stdout (Powertools JSON logs and EMF
metrics) captured, so the stack can evaluate the template's alarms on what the run emitted (metrics.py, alerts.py).

Time: the local CloudWatch lives on prfleet's clock (`prfleet.config.now()`, real time shifted by
CLOCK_OFFSET_SECONDS; the offset is 0 in AWS). A metric line is filed at its EMF timestamp plus the offset in
effect when the handler printed it, and `evaluate_alarms()` evaluates at prfleet's `now` by default, so a drill
that moves the clock (a stuck run found 5 minutes later, the budget day after) sees its metrics where CloudWatch
would. Nothing is re-stamped when the offset is 0; durations are always measured by the handlers in real time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prfleet import config, github
from prfleet.config import aws, secret_store
from prfleet.cost import circuit
from prfleet_local.stack import account, xray
from prfleet_local.stack import template as tpl
from prfleet_local.stack.alarms import AlarmEvaluator, Datapoint
from prfleet_local.stack.alerts import AlertInbox, Alerting, subscribe_alerts
from prfleet_local.stack.api_stage import stage_of
from prfleet_local.stack.event_sources import EventSources
from prfleet_local.stack.http_api import http_api
from prfleet_local.stack.invocations import Faults, Invocation, InvocationFault
from prfleet_local.stack.lambda_runtime import Function, install_router, load_functions
from prfleet_local.stack.metrics import CloudWatchMetrics, SqsSampler
from prfleet_local.stack.metrics import now as prfleet_now
from prfleet_local.stack.moto_proc import MotoProcess
from prfleet_local.stack.resources import TemplateResources
from prfleet_local.stack.schedules import LAMBDA_RETRY_DELAYS, Schedules


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
    # Lambda's waits before retrying a failed asynchronous (scheduled) invocation; a test may shorten them.
    async_retry_delays: tuple[float, ...] = LAMBDA_RETRY_DELAYS

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.template = tpl.load()
        self.log_lines: list[str] = []
        self.functions: dict[str, Function] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        # Set at the end of stop(): invocation threads parked where a `during=` fault killed them end then.
        self.released = threading.Event()
        self.moto = MotoProcess(log_path=self.workdir / "moto.log")
        self.faults = Faults()
        self._running: list[Invocation] = []
        self._running_lock = threading.Lock()
        self.metrics = CloudWatchMetrics()
        self.alerting = Alerting(self.metrics)
        self.api: ThreadingHTTPServer | None = None
        self.router = install_router()

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
                "AWS_DEFAULT_REGION": account.REGION,
                "AWS_REGION": account.REGION,
            }
        )
        os.environ.pop("AWS_PROFILE", None)
        if self.model_url:
            os.environ["ANTHROPIC_BASE_URL"] = self.model_url
            os.environ["MODEL_ENDPOINT_URL"] = (
                self.model_url
            )  # every provider's client (prfleet.model_client)
        params = {"GitHubApiUrl": self.github_url, **self.parameters}
        self.ctx = tpl.Context(
            self.template, parameters=params, region=account.REGION, stack_name=self.stack_name
        )
        self.ctx.check_rules()
        self.resources = TemplateResources(
            self.template,
            self.ctx,
            stack_name=self.stack_name,
            visibility_timeout=self.visibility_timeout,
            webhook_secret=self.webhook_secret,
        )
        self.resources.provision()
        self.resources.set_secrets(model_url=self.model_url, anthropic_api_key=self.anthropic_api_key)
        self._start_xray()
        self.functions.update(load_functions(self.template, self.ctx, self.resources.name))
        self._reset_library_caches()
        self.event_sources = EventSources(
            self.template, self.ctx, self._invoke, stop=self._stop, poll_wait=self.poll_wait
        )
        self.alerting.alarm_definitions = self.resources.alarm_definitions
        self.alerting.sqs = SqsSampler(self.template, self.ctx, self.event_sources.take_ages)
        self.api_stage = stage_of(self.resources, self.workdir)
        self.api, self.webhook_path = http_api(
            self.template, self.api_port, self._invoke, self.api_metrics, self.api_stage
        )
        self._spawn(self.api.serve_forever, "api")
        self.event_sources.start(self._spawn)
        self.schedules = Schedules.provisioned(
            self.resources,
            lambda fn, event, rid: self.functions[fn].invoke(event, self, request_id=rid),
            self._stop,
            self.async_retry_delays,
        )
        # The schedules run: the sweeper's every sweep_interval, the others at their template rate.
        if self.sweep_interval:
            self.schedules.start(self._spawn, {"SweeperFunction": self.sweep_interval})
        if self.alarm_interval:
            interval = self.alarm_interval
            self._spawn(lambda: self.alerting.loop(interval, self._stop), "alarms")
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
        return account.client(service)

    @property
    def webhook_url(self) -> str:
        assert self.api is not None
        return f"http://127.0.0.1:{self.api.server_address[1]}{self.webhook_path}"

    @staticmethod
    def _reset_library_caches() -> None:
        """The library's per-container state starts empty, as in a new deployment's execution environments (each
        runs the function's static code afresh in its Init phase:
        https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html): the functions of every
        stack run in this one process, and a cached spend-limit circuit from the stack before (same table name,
        read at most every 15 s) deferred every job of the next one."""
        config.settings.cache_clear()
        aws.client.cache_clear()
        secret_store.reset()
        github.reset_clients()
        circuit.reset()

    def _collect(self, line: str) -> None:
        self.log_lines.append(line)
        if '"_aws"' in line:
            self.metrics.emf(line)
        self._log_file.write(line + "\n")
        self._log_file.flush()

    def _start_xray(self) -> None:
        """Tracing: Active on every function: the X-Ray daemon stand-in, and the variables Lambda sets for the
        SDK (LAMBDA_TASK_ROOT marks a Lambda environment, where Powertools Tracer turns itself on)."""
        self.xray = xray.XRayDaemon(record_to=self.workdir / "xray-segments.jsonl")
        self._spawn(lambda: self.xray.serve(self._stop), "xray-daemon")
        os.environ["LAMBDA_TASK_ROOT"] = str(tpl.ROOT / "functions")
        xray.configure_sdk(self.xray.address)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _invoke(self, logical: str, event: dict[str, Any]) -> Any:
        return self.functions[logical].invoke(event, self)

    # ------------------------------------------------------------------ the template's resources
    @property
    def created(self) -> dict[str, str]:
        """Logical id -> resource type of every resource provisioned (those whose Condition held)."""
        return self.resources.created

    @property
    def outputs(self) -> dict[str, Any]:
        return self.resources.outputs

    @property
    def alarm_definitions(self) -> dict[str, dict[str, Any]]:
        return self.resources.alarm_definitions

    @property
    def query_definitions(self) -> dict[str, dict[str, Any]]:
        return self.resources.query_definitions

    def queue_url(self, logical: str) -> str:
        return self.ctx.refs[logical]

    def table(self, logical: str) -> str:
        return self.ctx.refs[logical]

    def alarm_name(self, logical: str) -> str:
        """The physical name of a template alarm (`<stack>-<LogicalId>`, as the stack provisions it)."""
        return str(self.ctx.refs[logical])

    # ------------------------------------------------------------------ event source mappings and the schedule
    def disable_event_sources(self) -> None:
        """Stop the pollers taking new messages (UpdateEventSourceMapping Enabled=false); running ones go on."""
        self.event_sources.disable()

    def enable_event_sources(self) -> None:
        self.event_sources.enable()

    def queue_depth(self, logical: str, *, in_flight: bool = True) -> int:
        """Every message the queue still holds (EventSources.queue_depth)."""
        return self.event_sources.queue_depth(logical, in_flight=in_flight)

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
        return self.event_sources.wait_idle(timeout, queues, in_flight=in_flight)

    def sweep(self) -> Any:
        """One sweep, invoked directly and synchronously (its reply or FunctionError); the schedule's own
        invocations are asynchronous, with Lambda's retries and failure record (`schedules.run`)."""
        return self.functions["SweeperFunction"].invoke(
            {"source": "aws.events", "detail-type": "Scheduled Event"}, self
        )

    # ------------------------------------------------------------------ the Lambda runtime (lambda_runtime.InvocationHost)
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

    # ------------------------------------------------------------------ CloudWatch: metrics and alarms
    def lambda_metrics(self, fn: Function, *, duration_ms: float, error: bool) -> None:
        """What Lambda publishes for every invocation (CloudWatchMetrics.lambda_metrics)."""
        self.metrics.lambda_metrics(fn.name, duration_ms=duration_ms, error=error)

    def api_metrics(self, status: int, latency_ms: float) -> None:
        """What the HTTP API publishes for each request (CloudWatchMetrics.api_metrics)."""
        self.metrics.api_metrics(str(self.ctx.refs.get("WebhookApi", "local")), status, latency_ms)

    def now(self) -> float:
        """prfleet's clock (real time + CLOCK_OFFSET_SECONDS): the time the local CloudWatch evaluates at."""
        return prfleet_now()

    def datapoints(self) -> list[Datapoint]:
        """Every metric datapoint the handlers emitted (EMF, filed on prfleet's clock) plus the published ones."""
        return self.metrics.datapoints()

    def evaluate_alarms(self, now: float | None = None) -> dict[str, str]:
        """Apply the template's alarms to the metrics this run emitted; publish state changes to the topic.

        `now` defaults to prfleet's clock. Each call also samples the SQS queues at `now` (depth, and the age of
        the oldest message the pollers saw), as CloudWatch's per-minute SQS metrics would. Every transition is
        published to the alarm's actions (SNS, CloudWatch's own message body) and mirrored into moto with
        set_alarm_state, so describe_alarms (`prfleet alarms`) shows the same states."""
        return self.alerting.evaluate(now)

    @property
    def evaluator(self) -> AlarmEvaluator | None:
        """The alarm evaluator (None until the first evaluation): its states, status and transitions."""
        return self.alerting.evaluator

    @property
    def notifications(self) -> list[dict[str, Any]]:
        return self.alerting.notifications

    @property
    def alarm_listeners(self) -> list[Callable[[Any, dict[str, Any]], None]]:
        """Called with (transition, notification body) for every alarm state change, e.g. by the serve console."""
        return self.alerting.listeners

    def subscribe_alerts(self, name: str = "alerts-inbox") -> AlertInbox:
        """Subscribe a new SQS queue to the AlertTopic (what an on-call integration does) and return it."""
        return subscribe_alerts(self.ctx.refs["AlertTopic"], f"{self.stack_name}-{name}")
