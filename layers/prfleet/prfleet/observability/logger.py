"""The logger: one Powertools Logger setup that every handler shares (JSON lines on stdout, UTC timestamps)."""

from __future__ import annotations

import os
import sys

from aws_lambda_powertools import Logger

DEFAULT_SERVICE = "prfleet"


def service_name() -> str:
    """The Powertools service name (POWERTOOLS_SERVICE_NAME, default prfleet): the `service` key of every log
    line and the `service` dimension of every metric."""
    return os.environ.get("POWERTOOLS_SERVICE_NAME") or DEFAULT_SERVICE


class _LiveStdout:
    """A stream that writes to whatever sys.stdout is at write time, so capture() and capsys see log lines
    even though the Powertools handler is created once per process."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def make_logger(service: str | None = None, *, level: str | int | None = None) -> Logger:
    """The one Logger setup handlers share: JSON lines on stdout, UTC timestamps, service from the env."""
    return Logger(service=service or service_name(), level=level, stream=_LiveStdout(), utc=True)  # type: ignore[arg-type]
