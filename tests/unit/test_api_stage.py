"""The local API Gateway stage on its own: the token bucket's arithmetic on a clock the test moves, and the
access-log line rendered from the template's own Format."""

from __future__ import annotations

import json

from prfleet_local.stack import template as tpl
from prfleet_local.stack.api_stage import ACCOUNT_BURST, ACCOUNT_RATE, AccessEntry, Stage, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_bucket_starts_full_spends_the_burst_then_admits_at_the_rate():
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.t += 0.49  # less than one token (2 per second)
    assert not bucket.take()
    clock.t += 0.02
    assert bucket.take() and not bucket.take()
    clock.t += 60  # refilled, but never beyond the burst
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_each_route_has_its_own_bucket_with_the_stages_default_route_settings():
    clock = Clock()
    stage = Stage(
        {"DefaultRouteSettings": {"ThrottlingRateLimit": 1, "ThrottlingBurstLimit": 1}}, clock=clock
    )
    assert stage.admit("POST /webhook") and not stage.admit("POST /webhook")
    assert stage.admit("POST /other")
    clock.t += 1
    assert stage.admit("POST /webhook")
    account = Stage()  # no route settings: the account's limits
    assert (account.rate, account.burst) == (ACCOUNT_RATE, ACCOUNT_BURST)


def test_the_access_log_line_is_the_templates_format_with_every_variable_filled_or_dashed(tmp_path):
    props = tpl.load()["Resources"]["WebhookApi"]["Properties"]
    fmt = props["AccessLogSettings"]["Format"]
    stage = Stage(
        {"AccessLogSettings": {"Format": fmt}, "DefaultRouteSettings": {}}, log_path=tmp_path / "access.jsonl"
    )
    entry = AccessEntry({"requestId": "r-1", "identity.sourceIp": "192.0.2.1", "routeKey": 'POST "/x"'}, 0.0)
    entry.respond(429, 33, error="Too Many Requests")
    stage.write(entry)
    [line] = stage.lines
    assert list(line) == list(json.loads(fmt))  # the template's fields, in its order
    assert line["requestId"] == "r-1" and line["sourceIp"] == "192.0.2.1" and line["status"] == "429"
    assert line["routeKey"] == 'POST "/x"'  # escaped inside the JSON string
    assert line["error"] == "Too Many Requests" and line["integrationError"] == "-"  # no integration ran
    assert json.loads((tmp_path / "access.jsonl").read_text()) == line
