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
