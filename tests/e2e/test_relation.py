"""Findings about the change (issue 24, item 1), end to end through the local stack on the demo's sample PR:
`shop/pricing.py` has an old `parse_percent` the PR does not touch (a bare `except`, no docstring, no test). By
default its bare `except` is found but held back as pre-existing: not on GitHub, counted in the review body and the
check, kept in the run record and listed on the review page; no docs or tests finding names it; the caller the PR
breaks stays posted (affected). With `report_preexisting = true` in the base branch's .prfleet.toml it is posted.

Real HTTP to the webhook, moto, the fake GitHub on a real git repository and the offline model (which sets a
relation; prfleet checks it against the diff)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from prfleet_local.demo import sample
from prfleet_local.demo.run import REPO, sandbox
from tests.review_helpers import posted_fingerprints, review_opened

pytestmark = pytest.mark.e2e

((OLD_PATH, OLD_CODE, _WHAT),) = sample.PREEXISTING
NOTE = "1 pre-existing finding(s) not shown"


def _review(tmp_path_factory, name: str, toml: str):
    with sandbox(tmp_path_factory.mktemp(name), sweep_interval=None, visibility_timeout=6) as box:
        box.repo.commit({**sample.BASE_FILES, ".prfleet.toml": toml}, "Initial shop", branch="main")
        box.repo.commit(sample.head_files(), "Add order export and bulk pricing", branch="feature/export")
        number = box.github.open_pr(REPO, "main", "feature/export", sample.PR_TITLE, sample.PR_BODY)
        head, runs = review_opened(box, REPO, number, delivery=name)
        reviews = [r for r in box.github.reviews if r.get("number", number) == number]
        (check,) = box.github.check_runs_for(head)
        with urllib.request.urlopen(box.review_page(number)) as reply:  # noqa: S310 - loopback
            page = reply.read().decode()
        yield runs, reviews, check, page


@pytest.fixture(scope="module")
def by_default(tmp_path_factory):
    yield from _review(tmp_path_factory, "relation-default", sample.BASE_FILES[".prfleet.toml"])


@pytest.fixture(scope="module")
def turned_on(tmp_path_factory):
    toml = "report_preexisting = true\n" + sample.BASE_FILES[".prfleet.toml"]
    yield from _review(tmp_path_factory, "relation-on", toml)


def findings(runs):
    return [f for r in runs for f in json.loads(r["findings"])]


def posted(reviews) -> set[str]:
    return posted_fingerprints([*reviews, *(c for r in reviews for c in r.get("comments") or [])])


def old_problem(runs):
    line = sample.bug_line(OLD_PATH, OLD_CODE)
    (found,) = [f for f in findings(runs) if (f["path"], f["line"]) == (OLD_PATH, line)]
    return found


def test_an_old_problem_on_untouched_lines_is_held_back_counted_and_kept(by_default):
    runs, reviews, check, page = by_default
    old = old_problem(runs)
    assert (old["relation"], old["title"]) == ("preexisting", "Bare `except:`")  # kept in the run record
    assert old["fingerprint"] not in posted(reviews)  # not on GitHub
    assert all(c["line"] != old["line"] or c["path"] != OLD_PATH for r in reviews for c in r["comments"])
    assert any(NOTE in r["body"] for r in reviews)  # counted in the review body
    assert NOTE in check["output"]["summary"] and check["conclusion"] == "success"
    assert all(
        a["path"] != OLD_PATH or a["start_line"] != old["line"] for a in check["output"]["annotations"]
    )
    assert "Pre-existing findings not posted (1)" in page and f"{OLD_PATH}:{old['line']}" in page


def test_findings_on_changed_lines_and_the_broken_caller_are_posted(by_default):
    runs, reviews, _check, _page = by_default
    shown = posted(reviews)
    for f in findings(runs):
        if f["relation"] != "preexisting":
            assert f["fingerprint"] in shown, f
    ((path, code, _what),) = sample.BROKEN_CALLERS
    (caller,) = [f for f in findings(runs) if (f["path"], f["line"]) == (path, sample.bug_line(path, code))]
    assert caller["relation"] == "affected" and caller["fingerprint"] in shown
    for path, code, _what in sample.SEEDED_BUGS:  # on added lines: changed
        line = sample.bug_line(path, code)
        assert {f["relation"] for f in findings(runs) if (f["path"], f["line"]) == (path, line)} == {
            "changed"
        }


def test_docs_and_tests_say_nothing_about_names_the_pr_does_not_touch(by_default):
    runs, _reviews, _check, _page = by_default
    for path, symbol in sample.UNTOUCHED:
        named = [f["title"] for r in runs if r["agent"] in ("docs", "tests") for f in json.loads(r["findings"])
                 if f["path"] == path and f"`{symbol}`" in f["title"]]  # fmt: skip
        assert named == [], named
    assert not [
        f for f in findings(runs) if f["title"] == "Module has no docstring"
    ]  # no module is new and bare


def test_report_preexisting_true_posts_the_old_problem_too(turned_on):
    runs, reviews, check, page = turned_on
    old = old_problem(runs)
    assert old["relation"] == "preexisting" and old["fingerprint"] in posted(reviews)
    assert not any("pre-existing finding(s) not shown" in r["body"] for r in reviews)
    assert "pre-existing finding(s) not shown" not in check["output"]["summary"]
    assert "Pre-existing findings not posted" not in page
