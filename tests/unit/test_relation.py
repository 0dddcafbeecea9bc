"""A finding's relation to the PR (issue 24): the line rule is prfleet's, not the model's; pre-existing findings are
held back unless the repository's .prfleet.toml asks for them, and counted where the user looks."""

from __future__ import annotations

import difflib

import pytest

from prfleet.agents.findings import (
    RELATIONS,
    REPORT_SCHEMA,
    Finding,
    InvalidReport,
    relation_of,
    validate_report,
)
from prfleet.agents.loop import changed_lines
from prfleet.config.repo_config import RepoConfigError, parse_repo_config, reports_preexisting
from prfleet.pipeline import render
from prfleet.pipeline.fanin import split_preexisting
from prfleet_local.model.analysis import analyse
from prfleet_local.model.callers import added_lines

DIFF = "@@ -1,3 +1,4 @@\n def f(a):\n-    return a\n+    b = a\n+    return b\n x = 1\n"  # adds lines 2, 3


def rel(path: str, line: int, claimed: str | None) -> str:
    return relation_of(path=path, line=line, reviewed="app.py", changed_lines={2, 3}, claimed=claimed)


@pytest.mark.parametrize("claimed", [None, "changed", "affected", "preexisting"])
def test_a_finding_on_an_added_line_of_the_file_under_review_is_changed_whatever_the_model_says(claimed):
    assert rel("app.py", 2, claimed) == "changed"


@pytest.mark.parametrize(
    ("path", "line", "claimed", "expected"),
    [
        ("app.py", 4, "changed", "preexisting"),  # an untouched line called "changed" is corrected
        ("app.py", 4, None, "preexisting"),
        ("app.py", 1, "affected", "affected"),
        ("caller.py", 2, "affected", "affected"),  # a caller the change breaks
        ("caller.py", 2, "changed", "preexisting"),  # line 2 is changed in app.py, not in caller.py
        ("caller.py", 9, "preexisting", "preexisting"),
    ],
)
def test_elsewhere_a_finding_is_affected_only_when_the_model_says_so(path, line, claimed, expected):
    assert rel(path, line, claimed) == expected


def _item(**over):
    return {
        "path": "app.py",
        "line": 2,
        "severity": "low",
        "category": "bug",
        "title": "t",
        "body": "b",
        **over,
    }


def test_validate_report_applies_the_rule_to_each_finding():
    found, _ = validate_report(
        {"findings": [_item(), _item(line=4, relation="changed"), _item(path="c.py", relation="affected")]},
        agent="review",
        allowed_paths={"app.py", "c.py"},
        reviewed="app.py",
        changed_lines={2, 3},
    )
    assert [f.relation for f in found] == ["changed", "preexisting", "affected"]
    assert found[0].to_dict()["relation"] == "changed"  # stored with the run's findings


def test_a_relation_outside_the_enum_is_an_error_for_the_model():
    with pytest.raises(
        InvalidReport, match=r"findings\[0\]\.relation 'new' must be one of: changed, affected"
    ):
        validate_report({"findings": [_item(relation="new")]}, agent="review", reviewed="app.py")
    item_schema = REPORT_SCHEMA["properties"]["findings"]["items"]
    assert item_schema["properties"]["relation"]["enum"] == list(RELATIONS)
    assert "relation" not in item_schema["required"]  # optional for the model; the code decides


def test_a_stored_finding_without_a_relation_reads_as_changed():
    old = {"path": "a.py", "line": 1, "severity": "low", "category": "bug", "title": "t", "body": "b"}
    assert Finding.from_dict(old).relation == "changed"
    assert Finding.from_dict({**old, "relation": "preexisting"}).relation == "preexisting"


def test_changed_lines_are_the_added_lines_or_every_line_when_github_left_the_diff_out():
    assert changed_lines(DIFF, 4) == {2, 3}
    assert changed_lines("", 4) == set()  # no textual change: nothing of the file is the PR's
    too_large = "(GitHub does not show this diff: too large, +900 -3 lines; read the file instead)"
    assert changed_lines(too_large, 5) == {1, 2, 3, 4, 5}  # never hidden for want of a diff
    assert changed_lines("@@ -1,2 +1,1 @@\n-a\n b\n", 1) == set()  # a pure deletion adds nothing


def test_report_preexisting_defaults_to_false_and_must_be_a_boolean():
    assert parse_repo_config("").report_preexisting is False
    assert parse_repo_config("report_preexisting = true\n").report_preexisting is True
    assert parse_repo_config("report_preexisting = true\n").warnings == ()
    with pytest.raises(RepoConfigError, match="report_preexisting must be true or false"):
        parse_repo_config('report_preexisting = "yes"\n')
    assert reports_preexisting("report_preexisting = true\n") is True
    assert reports_preexisting(None) is False
    assert reports_preexisting("report_preexisting = 1\n") is False  # a file that does not apply: the default


def _f(relation: str | None, line: int = 2) -> dict:
    out = {
        "path": "app.py",
        "line": line,
        "severity": "high",
        "category": "bug",
        "title": f"t{line}",
        "body": "b",
    }
    return out if relation is None else {**out, "relation": relation}


def test_the_fan_in_holds_back_preexisting_findings_unless_the_repository_asks_for_them():
    found = [_f("changed"), _f("affected", 3), _f("preexisting", 4), _f(None, 5)]
    posted, held = split_preexisting(found, report_preexisting=False)
    assert [f["line"] for f in posted] == [2, 3, 5]  # a record without a relation is posted, as before
    assert [f["line"] for f in held] == [4]
    assert split_preexisting(found, report_preexisting=True) == (found, [])


def test_held_back_findings_are_counted_in_the_review_and_the_check():
    plan = render.build_review([_f("changed")], {"app.py": DIFF}, {}, preexisting_hidden=3)
    assert "3 pre-existing finding(s) not shown" in plan.body and "report_preexisting = true" in plan.body
    assert "3 pre-existing finding(s) not shown" in plan.summary
    conclusion, _title, text = render.check_conclusion(
        {"succeeded": 1, "findings": 4}, findings=[], preexisting_hidden=3
    )
    assert conclusion == "success" and "3 pre-existing finding(s) not shown" in text
    quiet = render.build_review([_f("changed")], {"app.py": DIFF}, {})
    assert "pre-existing" not in quiet.body


# --------------------------------------------------------------------------- the offline model's side of it

OLD = '''"""Prices."""


def old(x):
    return x


class Box:
    def keep(self):
        return 1
'''
NEW = OLD.replace("        return 1\n", "        return 1\n\n    def grow(self, n):\n        return n\n") + (
    "\n\ndef fresh(y):\n    return y\n"
)


def _diff(before: str, after: str) -> str:
    rows = difflib.unified_diff(before.splitlines(), after.splitlines(), "a/p.py", "b/p.py", lineterm="")
    return "\n".join(rows)


def test_the_offline_docs_and_tests_report_only_the_names_the_diff_touches():
    added = added_lines(_diff(OLD, NEW))
    docs = {(f["title"], f["relation"]) for f in analyse("docs", "p.py", NEW, added=added)}
    # `old` and `Box.keep` are untouched; `Box` holds the added method, `fresh` and `Box.grow` are new
    assert docs == {
        (
            "Public class `Box` has no docstring",
            "affected",
        ),  # its def line is not added: affected, not changed
        ("Public function `Box.grow` has no docstring", "changed"),
        ("Public function `fresh` has no docstring", "changed"),
    }
    tests = {f["title"] for f in analyse("tests", "p.py", NEW, test_texts={}, searched=True, added=added)}
    assert tests == {"No test for `Box`", "No test for `fresh`"}
    everything = {f["title"] for f in analyse("docs", "p.py", NEW, added=None)}  # the diff unknown: the file
    assert "Public function `old` has no docstring" in everything


def test_the_offline_review_marks_old_problems_preexisting_and_new_ones_changed():
    before = "def a():\n    try:\n        pass\n    except:\n        pass\n"
    after = before + "\n\ndef b(x=[]):\n    return x\n"
    found = {
        f["title"]: f["relation"]
        for f in analyse("review", "p.py", after, added=added_lines(_diff(before, after)))
    }
    assert found == {"Bare `except:`": "preexisting", "Mutable default argument in `b`": "changed"}
    assert added_lines("(GitHub does not show this diff: too large)") is None
