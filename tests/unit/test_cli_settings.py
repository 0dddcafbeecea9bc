"""Settings a user can find: `prfleet config check`, the GitHub App manifest, and the FailOn check policy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from prfleet import agents
from prfleet.config.repo_config import KNOWN_AGENTS, RepoConfigError, fail_on_policy, parse_repo_config
from prfleet.pipeline import render
from prfleet_local.cli import main


def test_the_known_agents_of_the_repo_config_are_the_agents():
    assert set(KNOWN_AGENTS) == set(agents.PROMPTS)
    assert not hasattr(
        agents, "parse_repo_config"
    )  # one name: its users import it from prfleet.config.repo_config


def test_config_check_prints_what_the_file_does_to_each_agent(tmp_path, capsys):
    f = tmp_path / ".prfleet.toml"
    f.write_text('disabled = ["docs"]\nfail_on = "high"\nignore = ["gen/**"]\n[limits]\nmax_iterations = 10\n'
                 "[agents.review]\nmax_tokens = 99999999\n")  # fmt: skip
    assert main(["config", "check", str(f)]) == 0
    out = capsys.readouterr().out
    assert f"{f}: valid" in out and "fail_on: high" in out
    assert "docs: disabled" in out
    review = next(line for line in out.splitlines() if line.strip().startswith("review:"))
    assert "max_iterations 10 (lowered from 30)" in review
    assert f"max_tokens {agents.DEFAULT_LIMITS['review']['max_tokens']}" in review  # clamped, never raised
    assert "ignores gen/**" in review


def test_config_check_fails_on_a_typo_and_names_it(tmp_path, capsys):
    f = tmp_path / ".prfleet.toml"
    f.write_text("[agents.review]\nmax_itrations = 3\n")
    assert main(["config", "check", str(f)]) == 1
    assert "warning: unknown key agents.review.max_itrations ignored" in capsys.readouterr().out


def test_config_check_refuses_a_wrong_fail_on_in_one_line(tmp_path, capsys):
    f = tmp_path / ".prfleet.toml"
    f.write_text('fail_on = "medium"\n')
    assert main(["config", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert err == f"prfleet config check: {f}: fail_on must be one of never, critical, high, got 'medium'\n"


def finding(severity: str) -> dict:
    return {
        "path": "a.py",
        "line": 3,
        "severity": severity,
        "category": "security",
        "title": "t",
        "body": "b",
    }


@pytest.mark.parametrize(
    ("fail_on", "severities", "conclusion"),
    [
        ("never", ["critical", "high"], "success"),
        ("critical", ["high", "high"], "success"),
        ("critical", ["medium", "critical"], "failure"),
        ("high", ["high", "high"], "failure"),
        ("high", ["medium", "low"], "success"),
    ],
)
def test_fail_on_decides_the_check_from_the_findings_severity(fail_on, severities, conclusion):
    counts = {"review": {"succeeded": 1, "findings": len(severities)}}
    got, title, _ = render.check_conclusion(
        counts, findings=[finding(s) for s in severities], fail_on=fail_on
    )
    assert got == conclusion
    if conclusion == "failure":
        assert f"at or above {fail_on}" in title


def test_errors_and_the_budget_still_come_first():
    findings = [finding("critical")]
    assert render.check_conclusion({"failed": 1}, findings=findings, fail_on="high")[0] == "failure"
    assert render.check_conclusion({"deferred": 1}, findings=findings, fail_on="high")[0] == "neutral"


def test_a_repository_chooses_its_own_policy_from_its_base_branch_config():
    assert fail_on_policy("never", 'fail_on = "high"') == "high"
    assert fail_on_policy("high", 'fail_on = "never"') == "never"
    assert fail_on_policy("critical", None) == "critical"
    assert fail_on_policy("critical", "fail_on = [") == "critical"  # a broken file keeps the stack's policy
    with pytest.raises(RepoConfigError):
        parse_repo_config("fail_on = 1")


def webhook_events() -> set[str]:
    """The events prfleet.webhook compares `event_name` with, read from its code (ping needs no subscription)."""
    import ast
    import inspect

    from prfleet.pipeline import webhook

    names: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(webhook))):
        if isinstance(node, ast.Compare) and getattr(node.left, "id", None) == "event_name":
            for right in node.comparators:
                names |= {
                    c.value
                    for c in ast.walk(right)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                }
    return names - {"ping"}


def test_the_manifest_asks_for_exactly_what_prfleet_uses():
    url = "https://abc123.execute-api.us-east-1.amazonaws.com/webhook"
    argv = ["github-app", "manifest", "--webhook-url", url, "--redirect-url", "https://example.com/done"]
    # Its own process: stdout is then the command's alone (a thread an earlier test left could print into capsys).
    proc = subprocess.run(
        [sys.executable, "-m", "prfleet_local.cli", *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["hook_attributes"] == {"url": url, "active": True}
    assert data["default_permissions"] == {
        "pull_requests": "write",
        "checks": "write",
        "contents": "read",
        "issues": "read",
        "metadata": "read",
    }
    assert set(data["default_events"]) == webhook_events()
    assert data["public"] is False and data["redirect_url"] == "https://example.com/done"
    assert {"name", "url"} <= set(data)  # the manifest's required keys


DOC = Path(__file__).resolve().parents[2] / "docs" / "prfleet-toml.md"


def test_the_reference_states_prfleets_own_limits():
    rows = {m.group(1): [int(v) for v in m.groups()[1:]]
            for m in re.finditer(r"^\| `(\w+)` \| (\d+) \| (\d+) \| (\d+) \|", DOC.read_text(), re.M)}  # fmt: skip
    assert set(rows) == set(agents.DEFAULT_LIMITS["review"])
    for key, values in rows.items():
        assert values == [agents.DEFAULT_LIMITS[a][key] for a in ("review", "tests", "docs")], key


def test_the_references_example_checks_as_it_says(tmp_path, capsys, monkeypatch):
    text = DOC.read_text()
    (tmp_path / ".prfleet.toml").write_text(re.search(r"```toml\n(.*?)```", text, re.S).group(1))
    monkeypatch.chdir(tmp_path)
    assert main(["config", "check", ".prfleet.toml"]) == 0
    expected = re.search(r"`prfleet config check` on it:\n\n```\n(.*?)```", text, re.S).group(1)
    assert capsys.readouterr().out == expected


def test_the_template_offers_exactly_the_policies_and_hands_them_to_the_functions():
    from prfleet.config.repo_config import FAIL_ON
    from prfleet_local.stack import template as tpl

    t = tpl.load()
    assert t["Parameters"]["FailOn"]["AllowedValues"] == list(FAIL_ON)
    assert t["Parameters"]["FailOn"]["Default"] == "never"
    assert t["Globals"]["Function"]["Environment"]["Variables"]["FAIL_ON"] == {"Ref": "FailOn"}


def test_max_inline_comments_is_a_bounded_parameter_every_posting_function_reads(monkeypatch):
    from prfleet import config
    from prfleet_local.stack import template as tpl

    t = tpl.load()
    param = t["Parameters"]["MaxInlineComments"]
    assert (param["Default"], param["MinValue"], param["MaxValue"]) == (10, 0, render.MAX_COMMENTS)
    # in Globals: the fan-in posts from the agent function (runner) and the planner (post_if_ready)
    assert t["Globals"]["Function"]["Environment"]["Variables"]["MAX_INLINE_COMMENTS"] == {
        "Ref": "MaxInlineComments"
    }
    for name in ("DELIVERIES_TABLE", "STATE_TABLE", "RESULTS_TABLE", "LEDGER_TABLE", "PR_QUEUE_URL"):
        monkeypatch.setenv(name, "x")
    for name in ("JOBS_QUEUE_URL", "ALERT_TOPIC_ARN", "WEBHOOK_SECRET_ID", "GITHUB_SECRET_ID"):
        monkeypatch.setenv(name, "x")
    config.settings.cache_clear()
    try:
        monkeypatch.delenv("MAX_INLINE_COMMENTS", raising=False)
        assert config.settings().max_inline_comments == 10
        monkeypatch.setenv("MAX_INLINE_COMMENTS", "0")
        config.settings.cache_clear()
        assert config.settings().max_inline_comments == 0
        for bad in ("51", "-1", "ten"):
            monkeypatch.setenv("MAX_INLINE_COMMENTS", bad)
            config.settings.cache_clear()
            with pytest.raises(config.ConfigError, match="MAX_INLINE_COMMENTS"):
                config.settings()
    finally:
        config.settings.cache_clear()


def test_a_repository_can_lower_the_inline_comment_limit_never_raise_it():
    from prfleet.config.repo_config import inline_comment_cap

    assert inline_comment_cap(10, None) == 10
    assert inline_comment_cap(10, "max_inline_comments = 3\n") == 3
    assert inline_comment_cap(10, "max_inline_comments = 0\n") == 0
    assert inline_comment_cap(10, "max_inline_comments = 40\n") == 10  # never above the stack's
    assert inline_comment_cap(10, "max_inline_comments = [\n") == 10  # a broken file: the stack's value
    for bad in ("-1", "2.5", "true", '"5"'):
        with pytest.raises(RepoConfigError, match="max_inline_comments must be an integer of 0 or more"):
            parse_repo_config(f"max_inline_comments = {bad}\n")
