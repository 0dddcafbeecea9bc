"""The reviewer sees the repository (issue 23), end to end through the local stack: the demo's sample PR adds a
required parameter to `shop.pricing.shipping_cost`, which `shop/checkout.py` (not in the PR) still calls the old way;
`Cart` and `apply_discount` are exercised by test files the PR does not touch, `bulk_price` by none.

Real HTTP to the webhook, moto, the fake GitHub on a real git repository, the snapshot and the repository tools, and
the offline model, which learns about the repository only through the tool calls it makes: its request log ties
every fact it reported on to a tool result it asked for."""

from __future__ import annotations

import json

import pytest

from prfleet_local.demo import sample
from prfleet_local.demo.run import REPO, sandbox
from tests.review_helpers import review_opened

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory):
    with sandbox(tmp_path_factory.mktemp("repo-review"), sweep_interval=None, visibility_timeout=6) as box:
        number = box.open_sample_pr()
        _head, runs = review_opened(box, REPO, number, delivery="repository-review")
        yield box, runs


def findings_of(runs, path, agent):
    return [f for r in runs if r["path"] == path and r["agent"] == agent for f in json.loads(r["findings"])]


def test_the_caller_the_pr_breaks_is_reported_at_its_file_and_line_outside_the_diff(reviewed):
    _box, runs = reviewed
    ((path, code, _what),) = sample.BROKEN_CALLERS
    line = sample.bug_line(path, code)
    assert path not in sample.HEAD_CHANGES  # the caller is outside the diff
    broken = [f for f in findings_of(runs, "shop/pricing.py", "review") if f["path"] == path]
    assert [(f["line"], f["category"], f["severity"]) for f in broken] == [(line, "bug", "high")]
    assert "shipping_cost" in broken[0]["title"] and "country" in broken[0]["body"]


def test_no_test_is_reported_only_for_what_no_existing_test_uses(reviewed):
    _box, runs = reviewed
    for path, symbol in sample.TESTED_ELSEWHERE:
        titles = [f["title"] for f in findings_of(runs, path, "tests")]
        assert f"No test for `{symbol}`" not in titles, (path, titles)
    for path, symbol in sample.UNTESTED:
        titles = [f["title"] for f in findings_of(runs, path, "tests")]
        assert f"No test for `{symbol}`" in titles, (path, titles)


def test_the_model_log_shows_the_repository_was_learned_only_through_tool_calls(reviewed):
    box, _runs = reviewed
    log = box.model.model_log()
    asked = {a["id"]: a for entry in log for a in entry["asked"]}
    reports = [e for e in log if e["findings"] or e["facts"]]
    assert reports
    for entry in reports:
        for fact in entry["facts"]:
            # a tool call the model asked for, whose result came back in the request it reported on
            assert fact["tool_use_id"] in asked and asked[fact["tool_use_id"]]["name"] == fact["tool"]
            assert fact["tool_use_id"] in {r["tool_use_id"] for r in entry["tool_results"]}
            evidence = entry["evidence"][fact["tool_use_id"]]
            if fact["tool"] == "grep" and fact["line"]:
                assert f"{fact['path']}:{fact['line']}:" in evidence
            elif fact["tool"] == "read_file":
                assert f'path="{fact["path"]}"' in evidence
        # every finding outside the file under review rests on such facts
        for finding in entry["findings"]:
            if finding["path"] != entry["path"]:
                kinds = {
                    (f["tool"], f["path"], f["line"]) for f in entry["facts"] if f["kind"] == "broken_call"
                }
                assert ("grep", finding["path"], finding["line"]) in kinds
                assert ("read_file", finding["path"], finding["line"]) in kinds
    ((path, code, _what),) = sample.BROKEN_CALLERS
    calling_line = code
    review_firsts = [
        json.dumps(body["messages"][0])
        for body in box.model.requests
        if "shop/pricing.py" in json.dumps(body["messages"][0])
        and "review agent" in json.dumps(body["system"])
    ]
    assert review_firsts
    # the caller's code never reached the model in the first message: it came through grep and read_file
    assert all(calling_line not in first for first in review_firsts)
    cart_tests = [e for e in log if e["agent"] == "tests" and e["path"] == "shop/cart.py" and e["facts"]]
    assert cart_tests and any(
        f["kind"] == "tested" and f["path"] == "tests/test_cart.py" for f in cart_tests[-1]["facts"]
    )
