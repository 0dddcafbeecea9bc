"""The offline model server's HTTP side: routes, the AWS wires in front, and replies sent as a fault would bend them.

The Messages semantics live in server.ModelServer; this handler only reads the request, picks the route
(POST /v1/messages, /v1/messages/count_tokens, an AWS provider's wire, the /_faults and /_bill controls, the
Usage API report) and writes the Reply: whole, held open, reset, cut short, or a stream ended by an error event.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from prfleet_local.model import providers
from prfleet_local.model.faults import FaultPlan
from prfleet_local.model.reply import Reply
from prfleet_local.model.wire import LABEL, error_body, sse

if TYPE_CHECKING:
    from prfleet_local.model.server import ModelServer


class Handler(BaseHTTPRequestHandler):
    """One connection's requests; `owner` is the ModelServer it serves (bound by ModelServer.start)."""

    owner: ModelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        return

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, {"content-type": "application/json"}, json.dumps(payload).encode())

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0): the client sees a connection reset after sending its request."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        self.close_connection = True

    def _hold(self, seconds: float) -> None:
        """Keep the request open (billed) until the client gives up, the hold ends, or the server stops."""
        deadline = time.monotonic() + (seconds or 600.0)
        self.connection.settimeout(0.05)
        while time.monotonic() < deadline and not self.owner._stopping.is_set():
            try:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    break  # the client closed its side
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                break
        self.close_connection = True

    def _reply(self, reply: Reply) -> None:
        if reply.action == "reset":
            self._reset()
            return
        if reply.action == "hold":
            self._hold(reply.delay)
            return
        if reply.delay:
            self.owner.wait(reply.delay)
        if not reply.events:
            payload = reply.body
            if reply.action == "truncate":
                payload = payload[: len(payload) // 2]
            self._send(reply.status, reply.headers, payload)
            return
        try:
            self.send_response(reply.status)
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.send_header("connection", "close")
            self.end_headers()
            events = reply.events
            if reply.action in ("truncate", "stream_error"):
                events = events[: reply.after_events]
            gaps = reply.gaps or [0.0] * len(events)
            for event, gap in zip(events, gaps, strict=False):
                if gap:
                    self.owner.wait(gap)  # the model's pace (pace.py)
                self.wfile.write(event)
                self.wfile.flush()
            if reply.action == "stream_error":
                self.wfile.write(sse("error", error_body("overloaded_error", "Overloaded")))
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = self.path.split("?", 1)[0]
        if path == "/_faults":
            try:
                self.owner.set_faults(FaultPlan.from_dict(json.loads(raw or b"{}")))
            except (ValueError, TypeError) as exc:
                self._json(400, error_body("invalid_request_error", str(exc)))
                return
            self._json(200, self.owner.plan.to_dict())
            return
        routed = providers.dispatch(  # an AWS provider's wire in front of handle() (providers.py)
            self.owner, self.owner.aws, method="POST", path=self.path, headers=headers, raw=raw
        )
        if routed is not None:
            self._reply(routed)
            return
        if path == "/v1/messages/count_tokens":
            status, hdrs, payload = self.owner.count_tokens(headers, raw)
            self._send(status, {**hdrs, "content-type": "application/json"}, json.dumps(payload).encode())
            return
        if path != "/v1/messages":
            self._json(404, error_body("not_found_error", f"no route {path}"))
            return
        self._reply(self.owner.handle(headers, raw))

    def do_GET(self) -> None:  # noqa: N802
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}
        if path == "/_faults":
            self._json(200, self.owner.plan.to_dict())
        elif path == "/_bill":
            self._json(200, {"data": [r.to_dict() for r in self.owner.bill()]})
        elif path == "/v1/organizations/usage_report/messages":
            status, payload = self.owner.usage_report(headers, query)
            self._json(status, payload)
        else:
            self._json(200, {"ok": True, "label": LABEL})
