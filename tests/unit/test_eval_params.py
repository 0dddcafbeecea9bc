"""`prfleet eval --param NAME=VALUE`: every mistake refused as one line before the first review (checked against
template.yaml itself), and the breakdown per agent, model and effort an operator compares models and efforts by."""

from __future__ import annotations

from pathlib import Path

import pytest

from prfleet_local.cli import main
from prfleet_local.cli.errors import CliError
from prfleet_local.eval.corpus import Golden
from prfleet_local.eval.params import constraint_problem, eval_owned, parse_params
from prfleet_local.eval.report import table, to_json
from prfleet_local.eval.scoring import case_result
from prfleet_local.model.providers import local_parameters


def check(*values: str, provider: str = "anthropic") -> dict[str, str]:
    fixed = local_parameters(provider)
    return parse_params(values, owned=eval_owned(fixed, provider), fixed=fixed)


def test_good_values_pass_through_as_given():
    got = check("ReviewModel=claude-opus-5", "ReviewEffort=max", "VerifyEffort=low", "MaxInlineComments=0")
    assert got == {
        "ReviewModel": "claude-opus-5",
        "ReviewEffort": "max",
        "VerifyEffort": "low",
        "MaxInlineComments": "0",
    }
    assert check() == {}


@pytest.mark.parametrize(
    ("values", "provider", "message"),
    [
        (["ReviewEffort"], "anthropic", "--param 'ReviewEffort': expected NAME=VALUE"),
        (["=high"], "anthropic", "--param '=high': expected NAME=VALUE"),
        (["Nope=1"], "anthropic", "--param Nope: template.yaml has no parameter Nope"),
        (["ReviewEfort=high"], "anthropic", "has no parameter ReviewEfort (did you mean ReviewEffort?)"),
        (
            ["ReviewEffort=extreme"],
            "anthropic",
            "--param ReviewEffort='extreme': ReviewEffort must be one of low, medium, high, xhigh, max",
        ),
        (["ReviewModel=gpt-4"], "anthropic", "ReviewModel must match the pattern ^((global|us|eu|jp|apac)"),
        (
            ["MaxInlineComments=ten"],
            "anthropic",
            "MaxInlineComments is a Number: give an integer or a decimal",
        ),
        (["MaxInlineComments=51"], "anthropic", "MaxInlineComments must be between 0 and 50"),
        (["DailyBudgetUsd=0.001"], "anthropic", "DailyBudgetUsd must be between 0.01 and 100000"),
        (
            ["ReviewEffort=high", "ReviewEffort=low"],
            "anthropic",
            "--param ReviewEffort given twice ('high' and 'low'): give each parameter once",
        ),
        (
            ["ModelProvider=bedrock"],
            "anthropic",
            "--param ModelProvider: the eval sets ModelProvider itself (--provider chooses it)",
        ),
        (["GitHubApiUrl=https://api.github.com"], "anthropic", "the eval sets GitHubApiUrl itself"),
        (
            ["ReviewModel=claude-opus-5"],  # a Claude API id on Bedrock: the template's rule refuses it
            "bedrock",
            "--param: template.yaml's rule",
        ),
        (
            ["ReviewModel=claude-nonexistent-9"],
            "anthropic",
            "--param: template.yaml's rule ClaudeApiModels: ReviewModel, TestsModel and DocsModel must be",
        ),
    ],
)
def test_each_mistake_is_refused_with_what_to_do(values, provider, message):
    with pytest.raises(CliError) as refused:
        check(*values, provider=provider)
    text = str(refused.value)
    assert message in text and "\n" not in text and refused.value.code == 2


def test_the_first_mistake_is_the_one_reported():
    with pytest.raises(CliError, match="ReviewEffort='extreme'"):
        check("ReviewEffort=extreme", "ReviewEffort=high")


def test_constraints_follow_cloudformation():
    pattern = {"Type": "String", "AllowedPattern": "[a-z]+"}
    assert constraint_problem(pattern, "abc") == ""
    assert constraint_problem(pattern, "abc1") != ""  # the pattern must match the whole value
    numbers = {"Type": "Number", "AllowedValues": [1, 3, 5]}
    assert constraint_problem(numbers, "3") == "" and "one of 1, 3, 5" in constraint_problem(numbers, "2")
    assert "a Number" in constraint_problem({"Type": "Number"}, "nan")
    assert "at most 9" in constraint_problem({"Type": "Number", "MaxValue": 9}, "9.5")
    sized = {
        "Type": "String",
        "MinLength": 2,
        "MaxLength": 3,
        "ConstraintDescription": "two or three letters",
    }
    assert constraint_problem(sized, "a") == "must be at least 2 characters long (two or three letters)"
    assert constraint_problem(sized, "abcd").startswith("must be at most 3")


def test_the_command_line_refuses_before_reading_the_corpus(tmp_path: Path, capsys):
    # the corpus does not even exist: the --param mistake is the one reported, one line, exit 2
    assert main(["eval", str(tmp_path / "missing"), "--param", "ReviewEffort=extreme"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ReviewEffort must be one of" in err and "Traceback" not in err
    assert main(["eval", str(tmp_path / "missing"), "--param", "ModelProvider=bedrock"]) == 2
    assert "--provider" in capsys.readouterr().err


# ---------------------------------------------------------------------------- per agent, model and effort


def f(path: str, line: int, agent: str, model: str) -> dict:
    return {"path": path, "line": line, "agent": agent, "model": model}


EFFORTS = {"review": "max", "tests": "low", "docs": "low", "verify": "medium"}


def test_two_agents_with_different_efforts_and_a_model_that_takes_none():
    golden = [Golden("a.py", 10, 10), Golden("b.py", 3, 3)]
    findings = [
        f("a.py", 10, "review", "claude-opus-5"),
        f("b.py", 3, "tests", "claude-haiku-5-5"),
        f("b.py", 40, "docs", "claude-sonnet-4-5"),  # Sonnet 4.5 takes no effort: none is sent
    ]
    runs = [
        {"agent": "review", "model": "claude-opus-5", "cost_micros": 30},
        {"agent": "tests", "model": "claude-haiku-5-5", "cost_micros": 5},
        {"agent": "docs", "model": "claude-sonnet-4-5", "cost_micros": 7},
        {"agent": "verify", "model": "claude-opus-5", "cost_micros": 11},
    ]
    res = case_result("c", golden, findings, runs, 1.0, efforts=EFFORTS)
    rows = res.by_agent_model_effort
    assert list(rows) == [
        ("docs", "claude-sonnet-4-5", "none"),
        ("review", "claude-opus-5", "max"),
        ("tests", "claude-haiku-5-5", "low"),
        ("verify", "claude-opus-5", "medium"),
    ]
    review = rows[("review", "claude-opus-5", "max")]
    assert (review.findings, review.true_positives, review.recall, review.cost_micros) == (1, 1, 0.5, 30)
    docs = rows[("docs", "claude-sonnet-4-5", "none")]
    assert (docs.findings, docs.true_positives, docs.precision) == (1, 0, 0.0)
    verify = rows[("verify", "claude-opus-5", "medium")]
    assert (verify.findings, verify.cost_micros) == (0, 11)  # the verify run's cost counts under verify

    out = to_json(
        [res, case_result("d", golden, findings[:1], runs[:1], 2.0, efforts=EFFORTS)], model="m", offline=True
    )
    case_rows = out["cases"][0]["per_agent_model_effort"]
    assert {(r["agent"], r["model"], r["effort"]) for r in case_rows} == set(rows)
    total = {(r["agent"], r["effort"]): r for r in out["per_agent_model_effort"]}
    assert total[("review", "max")]["findings"] == 2 and total[("review", "max")]["cost_usd"] == 0.00006
    assert {"golden", "true_positives", "precision", "recall", "f1", "usd_per_true_positive"} <= set(
        total[("review", "max")]
    )


def test_the_same_agent_at_two_efforts_is_two_rows_and_xhigh_is_sent_as_high_where_the_model_has_no_xhigh():
    golden = [Golden("a.py", 10, 10)]
    one = case_result(
        "one",
        golden,
        [f("a.py", 10, "review", "claude-sonnet-4-6")],
        [{"agent": "review", "model": "claude-sonnet-4-6", "cost_micros": 2}],
        1.0,
        efforts={"review": "xhigh"},
    )
    two = case_result(
        "two",
        golden,
        [f("a.py", 90, "review", "claude-sonnet-4-6")],
        [{"agent": "review", "model": "claude-sonnet-4-6", "cost_micros": 3}],
        1.0,
        efforts={"review": "low"},
    )
    lines = table([one, two], model="offline", offline=True, parameters={"ReviewEffort": "xhigh"})
    assert "parameters: ReviewEffort=xhigh" in lines
    at = lines.index(
        "  total", lines.index(next(x for x in lines if x.startswith("per agent, model and effort")))
    )
    high, low = lines[at + 1].split(), lines[at + 2].split()
    assert high[:6] == [
        "review",
        "claude-sonnet-4-6",
        "high",
        "1",
        "1",
        "1",
    ]  # xhigh sent as high on Sonnet 4.6
    assert low[:6] == ["review", "claude-sonnet-4-6", "low", "1", "1", "0"]


def test_a_long_model_id_never_cuts_the_effort_off_the_table():
    model = "global.anthropic.claude-sonnet-4-6"
    res = case_result(
        "c", [], [], [{"agent": "review", "model": model, "cost_micros": 1}], 1.0, efforts={"review": "high"}
    )
    lines = table([res], model="offline", offline=True)
    assert any(line.split()[:3] == ["review", model, "high"] for line in lines)


def test_a_providers_model_ids_are_defaults_a_param_replaces():
    """--provider bedrock sets Bedrock profiles for the three agents; comparing models there means replacing one."""
    given = check("ReviewModel=global.anthropic.claude-opus-4-5-20251101-v1:0", provider="bedrock")
    assert given == {"ReviewModel": "global.anthropic.claude-opus-4-5-20251101-v1:0"}
