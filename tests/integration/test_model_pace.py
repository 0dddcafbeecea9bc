"""The offline model at a realistic pace, through the real anthropic SDK: every response waits exactly its model's
time to first token plus its output tokens (thinking included) at the tier's speed. The server's waits go through
an injected `wait`, so the arithmetic is checked without timing anything."""

from __future__ import annotations

import threading
from dataclasses import replace

import anthropic
import pytest
from anthropic.lib.aws import _auth

from prfleet import config
from prfleet.agents import model_client
from prfleet_local.model.pace import SPEEDS
from prfleet_local.model.server import ModelServer

TOOLS = [
    {
        "name": "read_file",
        "description": "Read a file of the repository.",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]


class Waits:
    """Records the server's waits instead of sleeping them."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> bool:
        with self._lock:
            self.seconds.append(seconds)
        return False

    def take(self) -> list[float]:
        with self._lock:
            out, self.seconds = self.seconds, []
        return out


@pytest.fixture(scope="module")
def paced():
    waits = Waits()
    with ModelServer(pace="realistic", wait=waits) as server:
        yield server, waits


def _client(server: ModelServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="offline-pace", max_retries=0, timeout=10)


@pytest.mark.parametrize(("model", "tier"), [("claude-sonnet-5-5", "sonnet"), ("claude-haiku-5-5", "haiku")])
def test_a_streamed_turn_waits_ttft_then_its_output_tokens_thinking_included(paced, model, tier):
    server, waits = paced
    waits.take()
    with _client(server).messages.stream(
        model=model,
        max_tokens=4000,
        tools=TOOLS,
        messages=[{"role": "user", "content": "Review app.py of this pull request."}],
    ) as stream:
        message = stream.get_final_message()
    recorded = waits.take()
    speed = SPEEDS[tier]
    usage = message.usage
    assert usage.output_tokens_details.thinking_tokens > 0  # the turn thought: those tokens are paced too
    assert recorded[0] == pytest.approx(speed.ttft_s)  # before message_start
    assert sum(recorded) == pytest.approx(speed.ttft_s + usage.output_tokens / speed.tokens_per_s)
    assert len(recorded) > 2  # spread over the stream's chunks, not one wait before the whole reply


def test_a_whole_response_is_held_for_the_same_total(paced):
    server, waits = paced
    waits.take()
    message = _client(server).messages.create(
        model="claude-opus-5-5",
        max_tokens=4000,
        messages=[{"role": "user", "content": "hello there"}],
    )
    speed = SPEEDS["opus"]
    assert waits.take() == [pytest.approx(speed.ttft_s + message.usage.output_tokens / speed.tokens_per_s)]


def test_instant_pace_never_waits():
    waits = Waits()
    with ModelServer(wait=waits) as server:
        _client(server).messages.create(
            model="claude-sonnet-5-5", max_tokens=2000, messages=[{"role": "user", "content": "hello there"}]
        )
        with _client(server).messages.stream(
            model="claude-sonnet-5-5", max_tokens=2000, messages=[{"role": "user", "content": "hello"}]
        ) as stream:
            stream.get_final_message()
    assert waits.take() == []


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "invoke-with-response-stream"])
def test_the_bedrock_wire_keeps_the_pace(monkeypatch, stream):
    """Bedrock re-frames the stream (no pings, AWS event-stream frames): the waits still add up to the model's."""
    for name in ("AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK", "ANTHROPIC_AWS_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(
            name, "testing"
        )  # the Lambda role's session credentials, as the local stack sets them
    _auth._get_session.cache_clear()
    profile = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
    waits = Waits()
    with ModelServer(pace="realistic", wait=waits) as server:
        settings = replace(
            config.Settings(*"dslrqjtwg", anthropic_secret_id=""),
            model_provider="bedrock",
            model_region="us-east-1",
            models={"review": profile, "tests": profile, "docs": profile},
            model_endpoint_url=server.url,
        )
        client = model_client.build(settings)
        args = {
            "model": profile,
            "max_tokens": 4000,
            "messages": [{"role": "user", "content": "Review app.py."}],
        }
        if stream:
            with client.messages.stream(**args) as s:
                message = s.get_final_message()
        else:
            message = client.messages.create(**args)
    speed = SPEEDS["haiku"]
    recorded = waits.take()
    assert sum(recorded) == pytest.approx(speed.ttft_s + message.usage.output_tokens / speed.tokens_per_s)
    assert (len(recorded) > 2) == stream  # a stream's frames are paced one by one, a whole reply once
