"""The fake GitHub's HTTP side: one dispatcher in front of the routes (routes/), enforcing what every call shares.

- every call needs `Authorization` (401 without; the repository is private):
  https://docs.github.com/en/rest/authentication/authenticating-to-the-rest-api
- conditional requests: every GET answers with an `ETag`; `If-None-Match` with it gets a 304, which does not
  count against the primary rate limit:
  https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate
- primary rate limit: `rate_limit_total` requests per hour (5,000 for an installation by default), every answer
  (injected faults too) with x-ratelimit-limit/-remaining/-used/-reset/-resource; past it a 403 with
  x-ratelimit-remaining: 0 and x-ratelimit-reset in UTC epoch seconds:
  https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit
- injected faults (faults.py) answer before a route runs, or after it has applied its write.

The fake's own control endpoint (not GitHub's; no auth, loopback only): `POST {api_url}/_fake/faults` with JSON
{"kind": "before" | "after_write" | "secondary" | "primary", "pattern", "status", "times", "method",
"retry_after", "reset_in"}; `DELETE {api_url}/_fake/faults`; `GET {api_url}/_fake/requests` for the calls counted
so far ({"total", "by_route"}). `GET /prfleet/...` is the read-only review page (page.py); `GET /_codeload/...` the archive a tarball
redirect points to (codeload.py, no Authorization, like codeload.github.com).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any

from prfleet_local.github.codeload import serve_codeload
from prfleet_local.github.faults import Fault
from prfleet_local.github.page import is_blob_page, serve_page
from prfleet_local.github.routes import ROUTES
from prfleet_local.github.routes.archive import CODELOAD_PREFIX
from prfleet_local.github.routes.common import Call, HttpError
from prfleet_local.github.state import GitHubState


class Handler(BaseHTTPRequestHandler):
    """One connection's requests; `owner` is the state it serves (bound by GitHubServer.start)."""

    owner: GitHubState
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # -- plumbing --

    def _send(
        self, status: int, data: Any, headers: dict[str, str] | None = None, *, raw: bytes | None = None
    ) -> None:
        body = raw if raw is not None else (b"" if data is None else json.dumps(data).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-GitHub-Request-Id", secrets.token_hex(8).upper())
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _rate_headers(self) -> dict[str, str]:
        srv = self.owner
        return {
            "X-RateLimit-Limit": str(srv.rate_limit_total),
            "X-RateLimit-Remaining": str(max(0, srv.rate_limit_total - srv.rate_limit_used)),
            "X-RateLimit-Used": str(srv.rate_limit_used),
            "X-RateLimit-Reset": str(int(srv.rate_limit_reset)),
            "X-RateLimit-Resource": "core",
        }

    def _fault_headers(self, fault: Fault) -> dict[str, str]:
        """An injected answer carries the x-ratelimit-* headers every API answer has (a secondary limit leaves the
        primary one untouched); a primary limit says remaining 0 until its reset, in UTC epoch seconds."""
        headers = {**self._rate_headers(), **fault.headers}
        if fault.reset_in is not None:
            headers.update(
                {
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Used": headers["X-RateLimit-Limit"],
                    "X-RateLimit-Reset": str(int(self.owner.clock() + fault.reset_in + 0.999)),
                }
            )
        return headers

    def _count_request(self) -> None:
        """Primary rate limit: one more request in the hour, or a 403 with x-ratelimit-remaining: 0
        (https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit)."""
        srv = self.owner
        with srv.lock:
            now = srv.clock()
            if now >= srv.rate_limit_reset:
                srv.rate_limit_used, srv.rate_limit_reset = 0, now + 3600
            if srv.rate_limit_used >= srv.rate_limit_total:
                raise HttpError(
                    403,
                    "API rate limit exceeded for installation.",
                    headers=self._rate_headers(),
                )
            srv.rate_limit_used += 1

    def _control(self, method: str, path: str, raw: bytes) -> None:
        """The fake's own control endpoint (not GitHub's): faults and request counts, see the module doc."""
        srv = self.owner
        if path == "/_fake/faults" and method == "POST":
            try:
                srv.add_fault(json.loads(raw or b"{}"))
            except (KeyError, TypeError, ValueError) as exc:
                self._send(400, {"message": f"bad fault: {exc}"})
                return
            self._send(201, {"faults": len(srv.faults)})
        elif path == "/_fake/faults" and method == "DELETE":
            srv.clear_faults()
            self._send(204, None)
        elif path == "/_fake/requests" and method == "GET":
            by_route: dict[str, int] = {}
            with srv.lock:
                for m, p in srv.requests:
                    key = f"{m} {p}"
                    by_route[key] = by_route.get(key, 0) + 1
                total = len(srv.requests)
            self._send(200, {"total": total, "by_route": by_route, "not_modified": srv.not_modified})
        else:
            self._send(404, {"message": f"Not Found: {method} {path}"})

    def _dispatch(self, method: str) -> None:
        srv = self.owner
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        query = dict(urllib.parse.parse_qsl(split.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if split.path.startswith("/_fake/"):
            self._control(method, split.path, raw)
            return
        if method == "GET" and (split.path.startswith("/prfleet/") or is_blob_page(srv, path)):
            serve_page(self, path)  # the read-only review page, and a file's lines as github.com links them
            return
        if method == "GET" and split.path.startswith(CODELOAD_PREFIX):  # the archive link (codeload.py)
            serve_codeload(self, split.path, split.query)
            return
        with srv.lock:
            srv.requests.append((method, split.path))
        try:
            fault = srv.take_fault(method, split.path)
            if fault is not None:
                raise HttpError(fault.status, fault.message, headers=self._fault_headers(fault))
            auth = self.headers.get("Authorization")
            for route in ROUTES:
                m = route.pattern.match(split.path)
                if not m or route.method != method:
                    continue
                params = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
                if not route.app_jwt:
                    if not srv.authorized(auth):
                        raise HttpError(401, "Requires authentication" if not auth else "Bad credentials")
                    if f"{params['owner']}/{params['repo']}" != srv.full_name:
                        raise HttpError(404, "Not Found")
                    self._count_request()
                body = json.loads(raw) if raw else {}
                status, data, headers = route.answer(Call(srv, params, query, body, auth, split.path))
                headers = {**self._rate_headers(), **(headers or {})} if not route.app_jwt else headers
                after = srv.take_fault(method, split.path, after_write=True)
                if after is not None:  # the write is applied; the answer is lost
                    if after.status == 0:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    raise HttpError(after.status, after.message, headers=self._fault_headers(after))
                out = json.dumps(data).encode() if data is not None else b""
                if method == "GET" and status == 200:
                    # Conditional requests: a 304 for a matching If-None-Match, free under the primary limit
                    # (best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate).
                    etag = '"' + hashlib.sha1(out).hexdigest() + '"'  # noqa: S324 - an ETag, not security
                    headers["ETag"] = etag
                    if self.headers.get("If-None-Match") == etag:
                        with srv.lock:  # a 304 is free under the primary rate limit
                            srv.rate_limit_used = max(0, srv.rate_limit_used - 1)
                            srv.not_modified += 1
                        headers.update(self._rate_headers())
                        self._send(304, None, headers)
                        return
                self._send(status, None, headers, raw=out)
                return
            raise HttpError(404, f"Not Found: {method} {path}")
        except HttpError as exc:
            payload: dict[str, Any] = {
                "message": exc.message,
                "documentation_url": "https://docs.github.com/rest",
                "status": str(exc.status),
            }
            if exc.errors is not None:
                payload["errors"] = exc.errors
            self._send(exc.status, payload, exc.headers)
        except Exception as exc:  # noqa: BLE001 - a fake server reports its own bugs as 500s
            self._send(500, {"message": f"fake github error: {type(exc).__name__}: {exc}"})
