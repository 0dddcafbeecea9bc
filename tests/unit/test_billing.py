"""Billed or not, per failure, with the exceptions the real anthropic SDK raises (built from httpx2 objects)."""

from __future__ import annotations

import json

import anthropic
import httpx2
import pytest

from prfleet.cost.billing import classify, spend_limit

REQ = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")


def status_error(status: int, body: dict) -> anthropic.APIStatusError:
    response = httpx2.Response(status, request=REQ, content=json.dumps(body).encode())
    client = anthropic.Anthropic(api_key="k", base_url="https://api.anthropic.com")
    return client._make_status_error(json.dumps(body), body=body, response=response)


def wrapped(cls, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as err:
            raise cls(request=REQ) from err
    except BaseException as exc:
        return exc


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 429, 500, 529])
def test_an_error_body_is_not_billed(status):
    exc = status_error(status, {"type": "error", "error": {"type": "x", "message": "no"}})
    assert classify(exc).billed is False


@pytest.mark.parametrize(
    "cause",
    [
        httpx2.ReadTimeout("read"),
        httpx2.WriteTimeout("write"),
        httpx2.RemoteProtocolError("peer closed"),
        httpx2.ReadError("reset"),
    ],
)
def test_a_failure_after_the_request_was_sent_is_billed(cause):
    cls = anthropic.APITimeoutError if "Timeout" in type(cause).__name__ else anthropic.APIConnectionError
    assert classify(wrapped(cls, cause)).billed is True
    assert classify(cause).billed is True  # raised bare from a stream iterator


@pytest.mark.parametrize(
    "cause", [httpx2.ConnectTimeout("c"), httpx2.PoolTimeout("p"), httpx2.ConnectError("refused")]
)
def test_a_request_never_sent_is_not_billed(cause):
    cls = anthropic.APITimeoutError if "Timeout" in type(cause).__name__ else anthropic.APIConnectionError
    assert classify(wrapped(cls, cause)).billed is False


def test_an_unreadable_200_and_anything_after_message_start_are_billed():
    assert classify(json.JSONDecodeError("x", "{", 0)).billed is True
    overloaded_mid_stream = status_error(200, {"type": "error", "error": {"type": "overloaded_error"}})
    assert classify(overloaded_mid_stream).billed is True
    assert classify(status_error(529, {"type": "error"}), started=True).billed is True
    assert classify(RuntimeError("unknown")).billed is True  # not known to be unbilled


def test_both_documented_spend_limit_shapes_and_nothing_else():
    workspace = status_error(
        400,
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "You have reached your specified workspace API usage limits. You will regain access on ...",
            },
        },
    )
    tier = status_error(
        429,
        {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": "monthly spend cap",
                "details": {"error_code": "enforced_spend_limit_reached"},
            },
        },
    )
    assert spend_limit(workspace) and spend_limit(tier)
    assert classify(workspace).billed is False and classify(tier).billed is False
    plain_429 = status_error(
        429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    )
    bad_400 = status_error(
        400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    )
    assert spend_limit(plain_429) is None and spend_limit(bad_400) is None
