"""What "findings like this" matches (issue 25): the rule a dismissed finding teaches and the findings it
suppresses (pure), and the `[conversation]` table of .prfleet.toml."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from prfleet.config.repo_config import RepoConfigError, parse_repo_config
from prfleet.pipeline import render
from prfleet.pipeline.suppression import matches, normalise_title, path_glob_for, suppressed, suppressed_note


@dataclass(frozen=True)
class Rule:
    agent: str = "tests"
    category: str = "tests"
    title: str = "no test for `*`"
    path_glob: str = "shop/*.py"


def finding(**kw):
    base = {
        "agent": "tests",
        "category": "tests",
        "title": "No test for `bulk_price`",
        "path": "shop/pricing.py",
    }
    return {**base, **kw}


def test_titles_normalise_names_numbers_case_and_spaces():
    assert normalise_title("No test for `bulk_price`") == "no test for `*`"
    assert normalise_title("  No  TEST for `export_csv` ") == "no test for `*`"
    assert normalise_title("Line 42 exceeds 120 chars") == "line # exceeds # chars"
    assert normalise_title("Unused import 'os'") == "unused import `*`"


@pytest.mark.parametrize(
    ("path", "glob"),
    [
        ("shop/pricing.py", "shop/*.py"),
        ("setup.py", "*.py"),
        ("src/a/Makefile", "src/a/Makefile"),
        ("x", "x"),
    ],
)
def test_a_rule_covers_the_findings_directory_and_extension(path, glob):
    assert path_glob_for(path) == glob


def test_a_rule_matches_the_same_kind_of_finding_on_a_sibling_file_only():
    rule = Rule()
    assert matches(finding(), rule)
    assert matches(finding(title="No test for `apply_discount`", path="shop/cart.py"), rule)
    assert matches(finding(category="Tests"), rule)  # categories compare case-insensitively
    assert not matches(finding(agent="review"), rule)
    assert not matches(finding(category="docs"), rule)
    assert not matches(finding(title="Missing docstring"), rule)
    assert not matches(finding(path="shop/sub/pricing.py"), rule)  # a subdirectory is not covered
    assert not matches(finding(path="shop/pricing.js"), rule)
    assert not matches(finding(path="other/pricing.py"), rule)


def test_suppressed_splits_kept_and_suppressed_and_nothing_is_lost():
    items = [
        finding(),
        finding(agent="review", category="bug", title="Bare except"),
        finding(path="lib/x.py"),
    ]
    kept, dropped = suppressed(items, [Rule()])
    assert dropped == [items[0]] and kept == items[1:]
    assert suppressed(items, []) == (items, [])


def test_the_review_and_the_check_count_suppressed_findings():
    assert suppressed_note(0) == ""
    plan = render.build_review([], {}, {}, suppressed=2, head_sha="a" * 40)
    assert "2 suppressed by the team" in plan.body and "2 suppressed by the team" in plan.summary
    _, _, text = render.check_conclusion({}, suppressed=2)
    assert "2 suppressed by the team" in text


def test_conversation_table_of_prfleet_toml():
    cfg = parse_repo_config('[conversation]\ntrusted = ["Outside-Dev"]\nlearn = false\n')
    assert cfg.trusted == frozenset({"outside-dev"}) and cfg.learn is False
    assert parse_repo_config("").learn is True and parse_repo_config("").trusted == frozenset()
    assert parse_repo_config("[conversation]\nspeak = 1\n").warnings == (
        "unknown key conversation.speak ignored",
    )
    for bad in ("conversation = 1", '[conversation]\ntrusted = "me"', "[conversation]\nlearn = 1"):
        with pytest.raises(RepoConfigError, match="conversation"):
            parse_repo_config(bad)
