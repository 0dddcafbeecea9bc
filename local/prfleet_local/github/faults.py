"""Injectable failures of the fake GitHub, switchable per run from Python or over HTTP (the control endpoint).

- `inject(pattern, status, times, method=..., retry_after=...)`: answer the next N matching calls with `status`
  before doing anything (401/403/404/422, a 5xx, a secondary rate limit);
- `rate_limit(pattern, times, retry_after=None)`: a secondary rate limit (no retry-after when None);
- `primary_limit(pattern, times, reset_in=60)`: the primary limit spent for those calls: 403 (or 429) with
  x-ratelimit-remaining 0 and x-ratelimit-reset `reset_in` seconds after the answer;
- `fail_after_write(pattern, times, status=502, method="POST")`: apply the write, then answer `status`
  (status 0: close the connection without an answer, as a timeout would look);
- `hostile_archive(kind, times)`: the next `times` archive downloads (codeload) carry a hostile entry, `kind` one of
  traversal, absolute, symlink, device, bomb (hostile.py says what each adds);
- `clear_faults()`.

The shapes follow GitHub's rate-limit page: a secondary rate limit is a 403 (or 429) "You have exceeded a
secondary rate limit", with or without retry-after; past the primary limit a 403 with x-ratelimit-remaining: 0
and x-ratelimit-reset in UTC epoch seconds:
https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from prfleet_local.github.hostile import DEFAULT_BOMB_BYTES, KINDS


@dataclass
class Fault:
    """One injected failure: the calls it matches, how many more it takes, and how it answers."""

    pattern: re.Pattern[str]
    status: int
    remaining: int
    method: str | None
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    after_write: bool = False  # apply the request, then answer `status` (0: drop the connection)
    reset_in: float | None = None  # a primary rate limit: remaining 0 until this long after the answer


class FaultControls:
    """The fault switches of the fake's state (GitHubState mixes them in; the handler takes faults per call)."""

    lock: threading.RLock
    installation_id: int
    faults: list[Fault]
    archive_faults: list[list[Any]]  # [kind, remaining, bomb_bytes] of hostile_archive, oldest first

    def inject(
        self,
        pattern: str,
        status: int,
        times: int = 1,
        *,
        method: str | None = None,
        message: str | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
        after_write: bool = False,
        reset_in: float | None = None,
    ) -> None:
        """Answer the next `times` calls whose path matches regex `pattern` with `status` (after applying
        them, with `after_write`; as a primary rate limit resetting `reset_in` seconds after the answer, with
        `reset_in`)."""
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["Retry-After"] = str(retry_after)
        default = {
            0: "",
            401: "Bad credentials",
            403: "Resource not accessible by integration",
            404: "Not Found",
            422: "Unprocessable Entity",
            429: "You have exceeded a secondary rate limit",
            500: "Internal Server Error",
            502: "Server Error",
            503: "Service Unavailable",
            504: "We couldn't respond to your request in time",
        }.get(status, "error")
        with self.lock:
            self.faults.append(
                Fault(
                    re.compile(pattern),
                    status,
                    times,
                    method.upper() if method else None,
                    message or default,
                    hdrs,
                    after_write,
                    reset_in,
                )
            )

    def rate_limit(
        self,
        pattern: str,
        times: int = 1,
        *,
        retry_after: int | None = 1,
        status: int = 403,
        method: str | None = None,
    ) -> None:
        """A secondary rate limit on the next `times` matching calls (of `method`, if given; no retry-after
        header when `retry_after` is None)."""
        self.inject(
            pattern,
            status,
            times,
            method=method,
            retry_after=retry_after,
            message="You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        )

    def primary_limit(
        self, pattern: str, times: int = 1, *, reset_in: float = 60.0, status: int = 403
    ) -> None:
        """The primary rate limit spent, for the next `times` matching calls: `status` (403 or 429) with
        x-ratelimit-remaining 0 and x-ratelimit-reset `reset_in` seconds after each answer (UTC epoch seconds), as
        GitHub answers past an installation's hourly limit; other routes keep being served (a scoped stand-in for
        the installation-wide limit, which `rate_limit_total` models)."""
        if status not in (403, 429):
            raise ValueError("GitHub answers a primary rate limit with 403 or 429")
        self.inject(
            pattern,
            status,
            times,
            message=f"API rate limit exceeded for installation ID {self.installation_id}.",
            reset_in=reset_in,
        )

    def fail_after_write(
        self, pattern: str, times: int = 1, *, status: int = 502, method: str | None = "POST"
    ) -> None:
        """Apply the next `times` matching writes, then answer `status` (0: close without answering)."""
        self.inject(pattern, status, times, method=method, after_write=True)

    def hostile_archive(self, kind: str, times: int = 1, *, bomb_bytes: int = DEFAULT_BOMB_BYTES) -> None:
        """The next `times` archive downloads carry a hostile entry of `kind` (hostile.KINDS), so the snapshot
        stored for a head is one the agents must refuse (path traversal, absolute path, link out of the tree,
        device file, decompression bomb)."""
        if kind not in KINDS:
            raise ValueError(f"unknown hostile archive kind {kind!r}: one of {', '.join(KINDS)}")
        with self.lock:
            self.archive_faults.append([kind, times, bomb_bytes])

    def take_archive_fault(self) -> tuple[str, int] | None:
        """The hostile kind (and bomb size) the next archive download carries, if one is switched on."""
        with self.lock:
            for fault in self.archive_faults:
                if fault[1] > 0:
                    fault[1] -= 1
                    return fault[0], fault[2]
        return None

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()
            self.archive_faults.clear()

    def add_fault(self, spec: dict[str, Any]) -> None:
        """A fault from its JSON form (the control endpoint): kind before | after_write | secondary | primary |
        hostile_archive ({"kind": "hostile_archive", "archive": "traversal", "times": 1})."""
        kind = spec.get("kind", "before")
        if kind == "hostile_archive":
            self.hostile_archive(str(spec["archive"]), int(spec.get("times", 1)))
            return
        pattern, times = str(spec["pattern"]), int(spec.get("times", 1))
        if kind == "secondary":
            self.rate_limit(
                pattern,
                times,
                retry_after=spec.get("retry_after"),
                status=int(spec.get("status", 403)),
                method=spec.get("method"),
            )
        elif kind == "primary":
            self.primary_limit(
                pattern,
                times,
                reset_in=float(spec.get("reset_in", 60)),
                status=int(spec.get("status", 403)),
            )
        elif kind == "after_write":
            self.fail_after_write(
                pattern, times, status=int(spec.get("status", 502)), method=spec.get("method", "POST")
            )
        elif kind == "before":
            self.inject(
                pattern,
                int(spec["status"]),
                times,
                method=spec.get("method"),
                message=spec.get("message"),
                retry_after=spec.get("retry_after"),
            )
        else:
            raise ValueError(
                f"unknown fault kind {kind!r}: before, after_write, secondary, primary or hostile_archive"
            )

    def take_fault(self, method: str, path: str, *, after_write: bool = False) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.after_write != after_write:
                    continue
                if fault.remaining > 0 and (fault.method in (None, method)) and fault.pattern.search(path):
                    fault.remaining -= 1
                    return fault
        return None
