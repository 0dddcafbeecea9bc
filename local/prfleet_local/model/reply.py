"""What the server answers to one request: the Messages policy's reply, which the AWS wires re-frame.

Its own module so that the server (which routes to the wires) and the wires (which build replies) both import it
and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    """What the handler does: a JSON body, or SSE events; `action` hides the reply as a fault would."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    events: list[bytes] = field(default_factory=list)
    action: str = "send"  # send | hold | reset | truncate | stream_error
    delay: float = 0.0
    after_events: int = 3
    gaps: list[float] = field(default_factory=list)  # the wait before each event (pace.py); none: no wait

    def __iter__(self) -> Any:
        """(status, headers, body bytes, delay), for wires that re-encode the reply (providers.py); a cut body
        stays cut, a stream is its SSE bytes."""
        body = b"".join(self.events) if self.events else self.body
        if self.action == "truncate":
            body = body[: len(body) // 2]
        return iter((self.status, self.headers, body, self.delay))
