"""`prfleet quality report`: the arithmetic (posted, reacted, 👍, 👎, acceptance per agent, model and category), the
window of days it reads, its text, and its mistakes as one line on stderr."""

from __future__ import annotations

import io
import json

import pytest

from prfleet_local.cli import main, quality

NOW = 1_777_888_800.0  # 2026-05-04T10:00:00Z


def item(agent: str, model: str, category: str, up: int, down: int) -> dict:
    return {"agent": agent, "model": model, "category": category, "up": up, "down": down}


ITEMS = [
    item("review", "sonnet", "security", 3, 0),
    item("review", "sonnet", "security", 1, 1),
    item("review", "sonnet", "style", 0, 4),
    item("review", "sonnet", "style", 0, 0),
    item("tests", "haiku", "tests", 1, 3),
    item("tests", "haiku", "tests", 0, 0),
    item("docs", "haiku", "docs", 0, 0),
]


def test_acceptance_is_thumbs_up_over_all_thumbs():
    assert quality.acceptance(3, 1) == 75.0
    assert quality.acceptance(1, 2) == 33.3
    assert quality.acceptance(0, 0) is None  # nobody reacted: no acceptance, not 0 %


def test_the_report_adds_up_per_agent_model_and_category():
    s = quality.summarize(ITEMS, days=7, now=NOW)
    assert s["total"] == {"posted": 7, "reacted": 4, "up": 5, "down": 8, "acceptance": 38.5}
    by_agent = {r["agent"]: r for r in s["by_agent"]}
    assert by_agent["review"] == {
        "agent": "review",
        "posted": 4,
        "reacted": 3,
        "up": 4,
        "down": 5,
        "acceptance": 44.4,
    }
    assert by_agent["tests"] == {
        "agent": "tests",
        "posted": 2,
        "reacted": 1,
        "up": 1,
        "down": 3,
        "acceptance": 25.0,
    }
    assert by_agent["docs"]["acceptance"] is None and by_agent["docs"]["reacted"] == 0
    by_model = {r["model"]: r for r in s["by_model"]}
    assert (by_model["haiku"]["posted"], by_model["haiku"]["up"], by_model["haiku"]["down"]) == (3, 1, 3)
    by_category = {r["category"]: r for r in s["by_category"]}
    assert by_category["style"]["acceptance"] == 0.0 and by_category["security"]["acceptance"] == 80.0
    combos = s["by_agent_model_category"]
    assert sum(r["posted"] for r in combos) == 7 and len(combos) == 4
    # every grouping adds up to the totals
    for key in ("by_agent", "by_model", "by_category", "by_agent_model_category"):
        for field in ("posted", "reacted", "up", "down"):
            assert sum(r[field] for r in s[key]) == s["total"][field], (key, field)


def test_the_worst_rows_come_first_and_the_unreacted_last():
    s = quality.summarize(ITEMS, days=7, now=NOW)
    assert [r["category"] for r in s["by_category"]] == ["style", "tests", "security", "docs"]
    assert [r["agent"] for r in s["by_agent"]] == ["tests", "review", "docs"]


def test_the_window_is_the_last_n_utc_days_today_included():
    assert quality.window(1, NOW) == ["2026-05-04"]
    assert quality.window(3, NOW) == ["2026-05-02", "2026-05-03", "2026-05-04"]
    s = quality.summarize([], days=3, now=NOW)
    assert (s["first_day"], s["last_day"]) == ("2026-05-02", "2026-05-04")
    assert s["total"] == {"posted": 0, "reacted": 0, "up": 0, "down": 0, "acceptance": None}


class FakeDynamo:
    """Query answers by partition, two pages for one of them (the report must follow LastEvaluatedKey)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def query(self, **kw):
        pk = kw["ExpressionAttributeValues"][":pk"]["S"]
        self.asked.append(pk)
        row = {
            "agent": {"S": "review"},
            "model": {"S": "m"},
            "category": {"S": "bug"},
            "up": {"N": "1"},
            "down": {"N": "0"},
        }
        if pk == "QUALITY#2026-05-04" and "ExclusiveStartKey" not in kw:
            return {"Items": [row], "LastEvaluatedKey": {"pk": {"S": pk}, "sk": {"S": "x"}}}
        if pk == "QUALITY#2026-05-04":
            return {"Items": [{**row, "down": {"N": "2"}}]}
        return {"Items": []}


class Target:
    where = "the local stack (http://127.0.0.1:1)"

    def table(self, logical: str) -> str:
        assert logical == "StateTable"
        return "state"


def test_the_report_reads_each_days_partition_every_page(tmp_path):
    import argparse

    ddb, out = FakeDynamo(), io.StringIO()
    args = argparse.Namespace(days=2, json=True)
    assert quality.run_report(args, out=out, client=ddb, now=NOW, target=Target()) == 0
    assert ddb.asked == ["QUALITY#2026-05-03", "QUALITY#2026-05-04", "QUALITY#2026-05-04"]
    s = json.loads(out.getvalue())
    assert s["total"] == {"posted": 2, "reacted": 2, "up": 2, "down": 2, "acceptance": 50.0}
    text = io.StringIO()
    quality.run_report(
        argparse.Namespace(days=2, json=False), out=text, client=FakeDynamo(), now=NOW, target=Target()
    )
    lines = text.getvalue().splitlines()
    assert lines[0] == Target.where
    assert lines[1].startswith(
        "prfleet findings posted from 2026-05-03 to 2026-05-04 (UTC, 2 day(s)): 2 inline"
    )
    assert any(line.split()[:2] == ["review", "2"] and line.endswith("50.0%") for line in lines)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["quality", "report", "--days", "0", "--local"], "argument --days: must be from 1 to 90"),
        (["quality", "report", "--days", "91", "--local"], "argument --days: must be from 1 to 90"),
        (
            ["quality", "report", "--days", "two", "--local"],
            "argument --days: must be a whole number of days",
        ),
        (["quality", "report", "--stack", "a", "--local"], "not allowed with argument"),
        (["quality", "report"], "which stack? give --stack NAME"),
    ],
)
def test_mistakes_are_one_line_on_stderr_and_a_nonzero_exit(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("PRFLEET_STACK", raising=False)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit from the parser, as `prfleet` does
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert err.startswith("prfleet quality report: ")


def test_no_local_stack_running_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PRFLEET_LOCAL_STATE", str(tmp_path / "none.json"))
    assert main(["quality", "report", "--local"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no local stack is running" in err
