"""Capture what Powertools prints (log lines and EMF blobs): tests and the local stack read metrics this way.

Local only: in Lambda the lines go to CloudWatch Logs, which extracts EMF itself."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

from prfleet_local.stack.alarms import emf_to_datapoints


class Capture:
    """Lines printed to stdout while capturing: Powertools log lines and EMF blobs (tests, local stack)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def _add(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    def _json(self) -> list[dict[str, Any]]:
        out = []
        with self._lock:
            lines = list(self.lines)
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def emf(self) -> list[dict[str, Any]]:
        """The EMF objects (those with an `_aws.CloudWatchMetrics` block)."""
        return [o for o in self._json() if isinstance(o.get("_aws"), dict)]

    def emf_lines(self) -> list[str]:
        """The raw EMF lines, for prfleet_local.stack.alarms.emf_to_datapoints."""
        with self._lock:
            return [line for line in self.lines if '"_aws"' in line]

    def logs(self, event: str | None = None) -> list[dict[str, Any]]:
        """The structured log lines (optionally only one event's)."""
        logs = [o for o in self._json() if "_aws" not in o]
        return [o for o in logs if event is None or o.get("event") == event]

    def datapoints(self) -> list[Any]:
        """The captured metrics as prfleet_local.stack.alarms.Datapoint values."""
        return emf_to_datapoints(self.emf_lines())


class _Tee:
    """Stands in for sys.stdout: keeps complete lines (per thread) and passes the text through if asked."""

    def __init__(self, target: Any, capture: Capture, passthrough: bool) -> None:
        self._target = target
        self._capture = capture
        self._passthrough = passthrough
        self._partial = threading.local()

    def write(self, text: str) -> int:
        if self._passthrough:
            self._target.write(text)
        buf = getattr(self._partial, "buf", "") + text
        *complete, rest = buf.split("\n")
        for line in complete:
            if line.strip():
                self._capture._add(line)
        self._partial.buf = rest
        return len(text)

    def flush(self) -> None:
        if self._passthrough:
            self._target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


@contextlib.contextmanager
def capture(*, passthrough: bool = False) -> Iterator[Capture]:
    """Capture what Powertools prints inside the block: log lines of make_logger() loggers, every EMF blob.

    The local stack can wrap its whole run in it (passthrough=True) and feed `datapoints()` to the alarms."""
    cap = Capture()
    previous = sys.stdout
    sys.stdout = _Tee(previous, cap, passthrough)  # type: ignore[assignment]
    try:
        yield cap
    finally:
        sys.stdout = previous
