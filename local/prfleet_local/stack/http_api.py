"""The webhook's HTTP API (API Gateway, payload 2.0): a small HTTP server turning each request on one of the
template's routes into the event an HTTP API gives Lambda, and the function's reply (or its error) into the
response; it publishes what an HTTP API publishes per request."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prfleet_local.stack import template as tpl
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


def http_api(
    template: dict[str, Any],
    port: int,
    invoke: Callable[[str, dict[str, Any]], Any],
    api_metrics: Callable[[int, float], None],
) -> tuple[ThreadingHTTPServer, str]:
    """The server (not yet serving) and the webhook's path. `invoke(logical, event)` runs a function and returns
    its reply or raises FunctionError; `api_metrics(status, latency_ms)` publishes one request's metrics."""
    table = routes(template)
    (webhook_path,) = [path for (_m, path) in table]

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            path = self.path.split("?", 1)[0]
            logical = table.get((self.command, path))
            if logical is None:
                self._send(404, {"message": "Not Found"})
                api_metrics(404, 0.0)  # a request to no route is still a request and a 4xx
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
                reply = invoke(logical, event)
            except FunctionError:
                # A function error (crash, timeout, unhandled exception): the HTTP API answers 500 with this body
                # (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-troubleshooting-lambda.html).
                self._send(500, {"message": "Internal Server Error"})
                api_metrics(500, (time.monotonic() - started) * 1000)
                return
            status = int(reply.get("statusCode", 200))
            api_metrics(status, (time.monotonic() - started) * 1000)
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

    return ThreadingHTTPServer(("127.0.0.1", port), Handler), webhook_path
