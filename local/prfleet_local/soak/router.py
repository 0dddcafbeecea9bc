"""One GitHub API URL in front of several fake GitHub servers, one per real git repository.

The stack has one GitHubApiUrl, as a GitHub App has one api.github.com; each fake GitHub hosts one repository.
The router sends /repos/{owner}/{name}/... to the server hosting that repository and answers 404 like GitHub for
a repository nobody hosts. It forwards bytes unchanged, so each server's own strictness applies.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prfleet_local.github.server import GitHubServer

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class GitHubRouter:
    """`start()` -> the API base URL; `stop()`. `servers` maps "owner/name" to the server hosting it."""

    def __init__(self, servers: dict[str, GitHubServer]) -> None:
        self.servers = servers
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.api_url = ""

    def start(self) -> str:
        router = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _route(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.split("?", 1)[0].split("/")
                name = "/".join(parts[2:4]) if len(parts) > 3 and parts[1] == "repos" else None
                target = router.servers.get(name or "")
                if target is None:
                    data = json.dumps(
                        {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}
                    )
                    self._reply(404, [("Content-Type", "application/json")], data.encode())
                    return
                host, port = target.api_url.removeprefix("http://").split(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    conn.request(self.command, self.path, body=raw or None, headers=headers)
                    try:
                        resp = conn.getresponse()
                        body = resp.read()
                    except (http.client.RemoteDisconnected, ConnectionError):
                        self.close_connection = True  # the server dropped the connection: so does the router
                        return
                    self._reply(
                        resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP], body
                    )
                finally:
                    conn.close()

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _route  # noqa: N815

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.api_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self.api_url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
