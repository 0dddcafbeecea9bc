"""`prfleet cost estimate` / `cost report`: the reference case to the cent, and the report's sums."""

from __future__ import annotations

import argparse
import io
import json

import pytest
from boto3.dynamodb.types import TypeSerializer

from prfleet import config
from prfleet_local.cli import cost as costcli

REFERENCE = (
    "cost estimate --input-price 3 --output-price 15 --input-tokens 9500 --requests 5 "
    "--output-tokens 2000 --agents 5 --files 3 --prs-per-day 20"
)


def run(argv: str, **kw) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="prfleet")
    costcli.add_cost_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv.split())
    out = io.StringIO()
    return args.func(args, out=out, **kw), out.getvalue()


def test_reference_case_json_exact():
    code, out = run(REFERENCE + " --json")
    assert code == 0
    data = json.loads(out)
    assert data["per_run_usd"] == 0.1725
    assert data["per_run_micros"] == 172_500
    assert data["runs_per_day"] == 300
    assert data["per_day_usd"] == 51.75
    assert data["per_month_usd"] == 1552.50


def test_reference_case_text():
    code, out = run(REFERENCE)
    assert code == 0
    assert "$0.1725" in out and "300" in out and "$51.75" in out and "$1,552.50" in out


def test_model_prices_come_from_the_table():
    _, out = run(
        "cost estimate --model claude-sonnet-5-5 --input-tokens 9500 --requests 5 "
        "--output-tokens 2000 --agents 5 --files 3 --prs-per-day 20 --json"
    )
    data = json.loads(out)
    assert data["per_run_micros"] == 9_500 * 5 * 2 + 2_000 * 10  # $2 / $10 per MTok
    assert data["per_month_usd"] == pytest.approx(0.115 * 300 * 30)


def test_cache_read_ratio_prices_the_cached_share_at_the_cache_read_rate():
    _, out = run(REFERENCE + " --cache-read-ratio 0.8 --json")
    # 47,500 input tokens: 9,500 at $3, 38,000 at $0.30 (10 % of input); 2,000 output at $15
    assert json.loads(out)["per_run_micros"] == 9_500 * 3 + 38_000 * 0.3 + 2_000 * 15


def test_estimate_refuses_unknown_models_and_missing_prices(capsys):
    assert run("cost estimate --model claude-nope --json") == (2, "")
    assert "claude-nope" in capsys.readouterr().err
    assert run("cost estimate --input-price 3 --json") == (2, "")
    assert "--output-price" in capsys.readouterr().err


T = 1_795_000_000  # 2026-11-18 12:53 UTC


def _runs():
    return [
        {
            "pk": "PR#acme/app#1",
            "sk": "RUN#a#1",
            "agent": "review",
            "model": "claude-sonnet-5-5",
            "repo": "acme/app",
            "cost_micros": 300_000,
            "cache_read_input_tokens": 100_000,
            "input_tokens": 120_000,
            "created_at": T,
            "status": "succeeded",
        },
        {
            "pk": "PR#acme/app#1",
            "sk": "RUN#a#2",
            "agent": "review",
            "model": "claude-sonnet-5-5",
            "repo": "acme/app",
            "cost_micros": 0,
            "cache_read_input_tokens": 0,
            "input_tokens": 0,
            "created_at": T + 60,
            "status": "cached",
        },
        {
            "pk": "PR#acme/lib#7",
            "sk": "RUN#b#1",
            "agent": "docs",
            "model": "claude-haiku-5-5",
            "repo": "acme/lib",
            "cost_micros": 20_000,
            "cache_read_input_tokens": 0,
            "input_tokens": 5_000,
            "created_at": "2026-11-17T10:00:00+00:00",
            "status": "succeeded",
        },
        {
            "pk": "PR#acme/lib#7",
            "sk": "RUN#b#2",
            "agent": "docs",
            "model": "claude-haiku-5-5",
            "repo": "acme/lib",
            "cost_micros": 99_000,
            "created_at": T - 30 * 86400,
            "status": "succeeded",
        },  # too old
    ]


def _ledger():
    return [
        {"scope": "daily", "day": "2026-11-18", "settled": 300_000, "reserved": 50_000, "limit": 10_000_000},
        {"scope": "daily", "day": "2026-11-17", "settled": 20_000, "reserved": 0, "limit": 10_000_000},
    ]


def test_summarize_groups_spend_and_counts_cache_savings():
    s = costcli.summarize(_ledger(), _runs(), days=7, now=T)
    assert s["runs"] == 3
    assert s["by_agent"] == {"docs": 20_000, "review": 300_000}
    assert s["by_model"] == {"claude-haiku-5-5": 20_000, "claude-sonnet-5-5": 300_000}
    assert s["by_repo"] == {"acme/app": 300_000, "acme/lib": 20_000}
    assert s["by_day"]["2026-11-18"] == {"settled": 300_000, "reserved": 50_000, "limit": 10_000_000}
    # 100k cache-read tokens on Sonnet 5.5 (after 2026-10-07): input $2 - cache read $0.10 per MTok
    assert s["cache"]["prompt_cache_saved_micros"] == 100_000 * 2 - 100_000 // 10
    assert s["cache"]["result_cache_hits"] == 1
    assert s["cache"]["result_cache_saved_micros"] == 300_000  # one hit x the mean paid review run
    assert s["projection"]["per_month_micros"] == round(320_000 / 7 * 30)


class FakeDynamo:
    """Low-level query/scan answers, paginated, in DynamoDB's wire format."""

    def __init__(self, ledger, runs):
        ser = TypeSerializer()
        self.ledger = [{k: ser.serialize(v) for k, v in i.items()} for i in ledger]
        self.runs = [{k: ser.serialize(v) for k, v in i.items()} for i in runs]
        self.calls = []

    def query(self, **kw):
        self.calls.append(("query", kw["TableName"]))
        since = kw["ExpressionAttributeValues"][":since"]["S"]
        return {"Items": [i for i in self.ledger if i["day"]["S"] >= since]}

    def scan(self, **kw):
        self.calls.append(("scan", kw["TableName"]))
        if "ExclusiveStartKey" not in kw:
            return {"Items": self.runs[:2], "LastEvaluatedKey": {"pk": {"S": "x"}}}
        return {"Items": self.runs[2:]}


@pytest.fixture
def env(monkeypatch):
    for name, value in {
        "DELIVERIES_TABLE": "d",
        "STATE_TABLE": "state",
        "RESULTS_TABLE": "r",
        "LEDGER_TABLE": "ledger",
        "PR_QUEUE_URL": "q",
        "JOBS_QUEUE_URL": "j",
        "ALERT_TOPIC_ARN": "a",
        "WEBHOOK_SECRET_ID": "w",
        "GITHUB_SECRET_ID": "g",
        "ANTHROPIC_SECRET_ID": "k",
    }.items():
        monkeypatch.setenv(name, value)
    config.settings.cache_clear()
    yield
    config.settings.cache_clear()


def test_report_reads_both_tables_and_prints_every_section(env):
    fake = FakeDynamo(_ledger(), _runs())
    from prfleet_local.cli.target import StackTarget

    target = StackTarget(
        "prfleet",
        "us-east-1",
        {"LedgerTable": ("AWS::DynamoDB::Table", "ledger"), "StateTable": ("AWS::DynamoDB::Table", "state")},
    )
    code, out = run("cost report --days 7", client=fake, now=T, target=target)
    assert code == 0
    assert ("query", "ledger") in fake.calls and fake.calls.count(("scan", "state")) == 2
    for text in (
        "2026-11-18",
        "review",
        "claude-sonnet-5-5",
        "acme/lib",
        "prompt cache",
        "result cache",
        "projection",
        "$0.3000",
    ):
        assert text in out
    code, out = run("cost report --days 7 --json", client=fake, now=T, target=target)
    assert json.loads(out)["by_repo"] == {"acme/app": 300_000, "acme/lib": 20_000}
