"""Shared fixtures: the GitHub payload fixtures, and sys.path for the function handlers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAYLOADS = ROOT / "tests" / "fixtures" / "github-webhook-payloads"


def load_payload(name: str) -> dict:
    return json.loads((PAYLOADS / name).read_text())


@pytest.fixture
def payload():
    return load_payload


@pytest.fixture
def clock_offset():
    """Move prfleet's clock (CLOCK_OFFSET_SECONDS) in this process, as a budget-day change or a stuck run needs;
    put it back afterwards."""
    import os

    from prfleet import config

    def move(seconds: float) -> None:
        os.environ["CLOCK_OFFSET_SECONDS"] = str(seconds)
        config.settings.cache_clear()

    yield move
    os.environ.pop("CLOCK_OFFSET_SECONDS", None)
    config.settings.cache_clear()
