"""A git-backed fake of the GitHub REST API, for tests and the offline demo: at least as strict as GitHub.

PR files, contents, blobs and trees come from a real git repository on disk (through the `git` command), so
the diffs, blob SHAs and patches are what GitHub would compute. Everything prfleet posts (reviews, review
comments, check runs with their status history and annotations, issue comments) is recorded for assertions.

Rules copied from GitHub, each cited with the page or OpenAPI operation it follows (github/rest-api-description)
in the module that enforces it:
- handler.py: authentication, conditional requests (ETag, 304), the primary rate limit and its headers, and the
  control endpoint (`/_fake/faults`, `/_fake/requests`);
- faults.py: injected failures (`inject`, `rate_limit`, `primary_limit`, `fail_after_write`, `clear_faults`);
- routes/access.py: installation tokens from the app's JWT, a collaborator's permission;
- routes/pulls.py and diff.py: a PR, its files (3,000 at most, `patch` left out for binary or too-large diffs),
  compare;
- routes/reviews.py: reviews (event, body, commit_id, inline comments only on lines of the diff);
- routes/contents.py: contents (base64 up to 1 MB, none up to 100 MB, symlinks), blobs, trees (truncated);
- routes/checks.py: check runs (output, annotations, status and conclusion) and the list for a ref;
- routes/issues.py: issue comments (body required, 65,536 characters at most);
- routes/reactions.py and reactions.py: a reaction on a review or issue comment (201 / 200 / 422), the `reactions`
  roll-up every listed comment carries.

state.py holds what the fake knows and the helpers a test builds a scenario with (`open_pr`, `update_head`,
`webhook_payload`, ...); this module serves it.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

from prfleet_local.github.gitrepo import GitRepo
from prfleet_local.github.handler import Handler
from prfleet_local.github.state import GitHubState

__all__ = ["GitHubServer", "GitRepo"]


class GitHubServer(GitHubState):
    """The fake GitHub: `start()` -> api_url, `stop()`, or use as a context manager."""

    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> str:
        """Serve on 127.0.0.1 (free port) in a daemon thread; returns the API base URL."""
        server = self

        class Bound(Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Bound)
        self._httpd.daemon_threads = True
        host, port = self._httpd.server_address[:2]
        self.api_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="fake-github", daemon=True
        )
        self._thread.start()
        return self.api_url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GitHubServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
