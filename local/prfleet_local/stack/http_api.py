"""The webhook's HTTP API (API Gateway, payload 2.0): a small HTTP server turning each request on one of the
template's routes into the event an HTTP API gives Lambda, and the function's reply (or its error) into the
response; it publishes what an HTTP API publishes per request, and does what the template's stage says: the
route's throttle, the access log, and the payload quotas (`Stage`)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prfleet_local.stack import template as tpl
from prfleet_local.stack.api_stage import LAMBDA_SYNC_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES, AccessEntry, Stage
from prfleet_local.stack.invocations import FunctionError


def _joined_headers(items: Any) -> dict[str, str]:
    """Headers as an HTTP API gives them to Lambda (payload 2.0): names lower-cased, duplicates joined with commas
    (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html)."""
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def routes(template: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(method, path) -> the logical id of the function the template routes it to (HttpApi and Api events)."""
    out = {}
    for logical, res in tpl.resources(template, "AWS::Serverless::Function").items():
        for ev in res["Properties"].get("Events", {}).values():
            if ev["Type"] in ("HttpApi", "Api"):
                out[(ev["Properties"]["Method"].upper(), ev["Properties"]["Path"])] = logical
    return out


def _event(handler: BaseHTTPRequestHandler, path: str, body: bytes, request_id: str) -> dict[str, Any]:
    """The payload 2.0 event of one request."""
    try:
        text, b64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, b64 = base64.b64encode(body).decode(), True
    return {
        "version": "2.0",
        "routeKey": f"{handler.command} {path}",
        "rawPath": path,
        "rawQueryString": handler.path.split("?", 1)[1] if "?" in handler.path else "",
        "headers": _joined_headers(handler.headers.items()),
        "requestContext": {
            "http": {"method": handler.command, "path": path, "sourceIp": handler.client_address[0]},
            "requestId": request_id,
            "routeKey": f"{handler.command} {path}",
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
        },
        "body": text,
        "isBase64Encoded": b64,
    }


Reply = tuple[int, dict[str, str], bytes, str | None]  # status, headers, body, API Gateway's error


def _error(status: int, message: str) -> Reply:
    """API Gateway's own answer (its message, also the access log's $context.error.message)."""
    body = json.dumps({"message": message}).encode()
    return status, {"content-type": "application/json"}, body, message


def _integrate(
    invoke: Callable[[str, dict[str, Any]], Any], logical: str, event: dict[str, Any], log: AccessEntry
) -> Reply:
    """The Lambda proxy integration: the function's reply, or 500 when the invocation fails."""
    size = len(json.dumps(event).encode())
    began = time.monotonic()
    if size > LAMBDA_SYNC_PAYLOAD_BYTES:
        # Lambda refuses the invoke itself (RequestEntityTooLargeException, HTTP 413): the integration fails.
        log.integration(413, f"Request must be smaller than {LAMBDA_SYNC_PAYLOAD_BYTES} bytes", began)
        return _error(500, "Internal Server Error")
    try:
        reply = invoke(logical, event)
    except FunctionError as exc:
        # A function error (crash, timeout, unhandled exception): the HTTP API answers 500 with this body
        # (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-troubleshooting-lambda.html).
        log.integration(200, str(exc), began)
        return _error(500, "Internal Server Error")
    log.integration(200, None, began)
    payload = reply.get("body") or ""
    data = base64.b64decode(payload) if reply.get("isBase64Encoded") else payload.encode()
    return int(reply.get("statusCode", 200)), dict(reply.get("headers") or {}), data, None


def http_api(
    template: dict[str, Any],
    port: int,
    invoke: Callable[[str, dict[str, Any]], Any],
    api_metrics: Callable[[int, float], None],
    stage: Stage | None = None,
) -> tuple[ThreadingHTTPServer, str]:
    """The server (not yet serving) and the webhook's path. `invoke(logical, event)` runs a function and returns
    its reply or raises FunctionError; `api_metrics(status, latency_ms)` publishes one request's metrics; `stage`
    is the template's stage (throttle, access log); without one, only the account's throttle applies."""
    table = routes(template)
    (webhook_path,) = [path for (_m, path) in table]
    stage = stage or Stage()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            started = time.monotonic()
            path = self.path.split("?", 1)[0]
            logical = table.get((self.command, path))
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            log = stage.entry(self, path, started, route=logical is not None)
            if logical is None:
                reply = _error(404, "Not Found")
            elif not stage.admit(f"{self.command} {path}"):
                reply = _error(429, "Too Many Requests")  # before the integration: the function never runs
            elif length > MAX_PAYLOAD_BYTES:
                reply = _error(413, "Request Entity Too Large")
            else:
                reply = _integrate(invoke, logical, _event(self, path, body, log.request_id), log)
            status, headers, data, error = reply
            # Logged and counted as the response leaves, so whoever got it finds its line and its metrics.
            log.respond(status, len(data), error=error)
            api_metrics(status, (time.monotonic() - started) * 1000)
            stage.write(log)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_GET = do_PUT = _serve  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler), webhook_path


__all__ = ["Stage", "http_api", "routes"]
