"""What an HTTP API's stage does to each request before and after its integration, as the template says it:
the route's throttle, the payload quotas and the access log.

- Throttle: API Gateway's token bucket, one per route of the stage with the stage's DefaultRouteSettings: the
  bucket holds `ThrottlingBurstLimit` tokens, refills at `ThrottlingRateLimit` per second and starts full; a request
  takes one, and with none left it is answered 429 Too Many Requests without reaching the integration. Without
  route settings the account's per-Region limits apply (10,000 requests per second, burst 5,000)
  (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-throttling.html). API Gateway applies its
  throttles "on a best-effort basis ... as targets rather than guaranteed request ceilings"; here they are exact,
  i.e. never more lenient than the service.
- Payload: an HTTP API accepts 10 MB (http-api-quotas.html, "Payload size 10 MB", not adjustable); a Lambda
  integration is a synchronous invocation, whose request payload (the whole event) is at most 6 MB
  (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html): Lambda refuses a bigger one and the
  API answers 500.
- Access log: one line per request (throttled and unrouted ones included) in the stage's AccessLogSettings
  Format, each `$context.<name>` replaced by its value and "-" where it has none, as API Gateway writes them
  (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-logging-variables.html), into the
  DestinationArn's log group (moto's CloudWatch Logs) and a file beside the function logs.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prfleet_local.stack.account import client

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # HTTP API payload quota
LAMBDA_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024  # a synchronous invocation's request payload: 6,291,456 bytes
ACCOUNT_RATE, ACCOUNT_BURST = 10_000.0, 5_000  # API Gateway's default account-level throttle per Region
_VARIABLE = re.compile(r"\$context\.[A-Za-z0-9_.]+")


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second, full at the start; `take()` spends one if there is one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = float(rate), int(burst), clock
        self.tokens = float(burst)
        self.last = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self.clock()
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


@dataclass
class AccessEntry:
    """One request as the access log sees it: its $context values, filled in as the request goes."""

    values: dict[str, str]
    started: float
    request_id: str = ""
    status: int = 0

    def integration(self, status: int, error: str | None, began: float) -> None:
        """The Lambda integration's outcome: Lambda's own status, its error (if any), its latency."""
        self.values["integrationStatus"] = self.values["integration.integrationStatus"] = str(status)
        self.values["integrationLatency"] = self.values["integration.latency"] = str(
            int((time.monotonic() - began) * 1000)
        )
        if error:
            self.values["integrationErrorMessage"] = self.values["integration.error"] = error

    def respond(self, status: int, length: int, error: str | None = None) -> None:
        self.status = status
        self.values.update(
            status=str(status),
            responseLength=str(length),
            responseLatency=str(int((time.monotonic() - self.started) * 1000)),
        )
        if error:
            self.values["error.message"] = error
            self.values["error.messageString"] = json.dumps(error)


@dataclass
class Stage:
    """The $default stage of the template's HTTP API (its resolved properties), locally."""

    properties: dict[str, Any] = field(default_factory=dict)
    log_path: Path | None = None
    api_id: str = "local"
    account: str = "123456789012"
    clock: Callable[[], float] = time.monotonic
    lines: list[dict[str, Any]] = field(default_factory=list)  # every access-log line written, parsed

    def __post_init__(self) -> None:
        route = self.properties.get("DefaultRouteSettings") or {}
        self.rate = float(route.get("ThrottlingRateLimit", ACCOUNT_RATE))
        self.burst = int(route.get("ThrottlingBurstLimit", ACCOUNT_BURST))
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        access = self.properties.get("AccessLogSettings") or {}
        self.log_format: str | None = access.get("Format")
        arn = access.get("DestinationArn", "")
        self.log_group: str | None = arn.split(":log-group:", 1)[1].removesuffix(":*") if arn else None
        self._stream: str | None = None

    def admit(self, route_key: str) -> bool:
        """Take a token from the route's bucket: False means 429."""
        with self._lock:
            bucket = self._buckets.get(route_key)
            if bucket is None:
                bucket = self._buckets[route_key] = TokenBucket(self.rate, self.burst, self.clock)
        return bucket.take()

    def entry(self, handler: Any, path: str, started: float, *, route: bool) -> AccessEntry:
        """A new request's access-log entry with what is known on arrival."""
        request_id = str(uuid.uuid4())
        now = time.time()
        values = {
            "requestId": request_id,
            "extendedRequestId": request_id,
            "apiId": self.api_id,
            "accountId": self.account,
            "stage": "$default",
            "httpMethod": handler.command,
            "path": path,
            "protocol": handler.request_version,
            "routeKey": f"{handler.command} {path}" if route else "-",
            "identity.sourceIp": handler.client_address[0],
            "identity.userAgent": handler.headers.get("user-agent", "-"),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": str(int(now)),
        }
        return AccessEntry(values, started, request_id)

    def write(self, entry: AccessEntry) -> None:
        """The request's line in the template's format, into the log group and the file (nothing without a format)."""
        if not self.log_format:
            return
        line = _VARIABLE.sub(
            lambda m: _escape(entry.values.get(m.group(0)[len("$context.") :], "-")), self.log_format
        )
        with self._lock:
            self.lines.append(json.loads(line))
            if self.log_path is not None:
                with self.log_path.open("a") as f:
                    f.write(line + "\n")
            if self.log_group:
                self._put(line)

    def _put(self, line: str) -> None:
        logs = client("logs")
        if self._stream is None:
            self._stream = "local-$default"
            logs.create_log_stream(logGroupName=self.log_group, logStreamName=self._stream)
        logs.put_log_events(
            logGroupName=self.log_group,
            logStreamName=self._stream,
            logEvents=[{"timestamp": int(time.time() * 1000), "message": line}],
        )


def _escape(value: str) -> str:
    """A value as it sits inside the format's JSON string quotes."""
    return json.dumps(value)[1:-1]


def stage_of(resources: Any, workdir: Path) -> Stage:
    """The stage of the template's one HTTP API, as provisioned (`TemplateResources.http_apis`)."""
    (props,) = resources.http_apis.values() or [{}]
    return Stage(props, log_path=workdir / "api-access.log.jsonl", account=resources.ctx.account)
