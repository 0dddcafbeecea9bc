"""A review without the repository's snapshot completes and says so (issue 23), end to end through the local stack:
(a) a repository over MaxRepoBytes (the template's smallest value, 1 MiB, against a 1.3 MB incompressible file in
the base): the planner stores a too_large manifest, the agents read through GitHub; (b) the fake GitHub serves the
head's archive with a path-traversal entry (its `hostile_archive` fault): the planner stores it as served, every
agent container refuses to unpack it, logs the `snapshot` event with the reason and falls back, and nothing is
written outside the snapshot root. Both: every job succeeds, and the review body, the summary comment, the check
run and the review page say in one line that the review ran without a snapshot, and why.

Real HTTP to the webhook, moto, the fake GitHub on a real git repository and the offline model; SNAPSHOT_ROOT (the
agent's /tmp in Lambda) is set to a folder of the test's own, so the filesystem can be checked."""

from __future__ import annotations

import json
import random

import pytest

from prfleet_local.demo.run import REPO, sandbox
from prfleet_local.github import hostile, page
from tests.review_helpers import review_opened

pytestmark = pytest.mark.e2e

NOTE = "Reviewed without a snapshot of the repository: "
COVERED = "grep covered only the changed files and the files read."
MIN_REPO_BYTES = 1_048_576  # template.yaml MaxRepoBytes MinValue: the smallest a deployment can set


def review(box, number):
    """Deliver the PR's `opened` event and wait for its review; the head and its runs."""
    return review_opened(box, REPO, number, delivery=f"fallback-{number}")


def told(box, number, head):
    """The one line each place a user reads says about the snapshot: review body, summary, check, page."""
    (posted,) = [r for r in box.github.reviews if r["number"] == number]
    (check,) = box.github.check_runs_for(head)
    summary = [c["body"] for c in box.github.issue_comments if "prfleet:summary" in c["body"]]
    html = page.render_pr(box.github, number) or ""
    return posted["body"], check, summary, html


def snapshot_events(box):
    lines = [json.loads(x) for x in box.stack.log_lines if '"snapshot"' in x]
    return [x for x in lines if x.get("message") == "snapshot"]


def fallbacks_counted(box):
    return sum(
        p.value
        for p in box.stack.metrics.datapoints()
        if p.name == "SnapshotFallbacks" and dict(p.dimensions) == {"service": "prfleet"}
    )


@pytest.fixture
def snapshot_root(tmp_path, monkeypatch):
    root = tmp_path / "lambda-tmp" / "prfleet-snapshots"
    monkeypatch.setenv("SNAPSHOT_ROOT", str(root))  # not a template variable: the stack leaves it alone
    return root


def test_a_repository_over_max_repo_bytes_is_reviewed_through_the_fallback_and_says_so(
    tmp_path, snapshot_root
):
    noise = random.Random(23).randbytes(1_300_000)  # incompressible: the archive stays over 1 MiB
    with sandbox(
        tmp_path / "box",
        parameters={"MaxRepoBytes": MIN_REPO_BYTES},
        sweep_interval=None,
        visibility_timeout=6,
    ) as box:
        box.repo.commit({"assets/fixtures.bin": noise}, "Test fixtures", branch="main")
        number = box.open_sample_pr()
        head, runs = review(box, number)
        why = f"the repository is over MaxRepoBytes ({MIN_REPO_BYTES:,} bytes; no snapshot)"
        assert {r.get("snapshot_reason") for r in runs} == {why}
        line = f"{NOTE}{why}; {COVERED}"
        body, check, summary, html = told(box, number, head)
        assert body.count(line) == 1 and summary and line in summary[-1]
        assert (check["conclusion"], line in check["output"]["summary"]) == ("success", True)
        assert "Reviewed without a snapshot of the repository" in html and "over MaxRepoBytes" in html
        stored = [e for e in snapshot_events(box) if e.get("action") == "stored"]
        assert [e["outcome"] for e in stored] == ["too_large"]
        assert fallbacks_counted(box) >= 1
        assert not any(snapshot_root.glob(f"{head}*"))  # nothing was unpacked


def test_a_hostile_archive_is_refused_with_its_reason_the_review_falls_back_and_nothing_escapes(
    tmp_path, snapshot_root
):
    with sandbox(tmp_path / "box", sweep_interval=None, visibility_timeout=6) as box:
        box.github.hostile_archive("traversal")
        number = box.open_sample_pr()
        head, runs = review(box, number)
        assert box.github.take_archive_fault() is None  # the planner downloaded the head once
        reasons = {r.get("snapshot_reason") for r in runs}
        assert len(reasons) == 1
        (why,) = reasons
        assert why.startswith("the archive was refused: path traversal in ") and "../" in why
        body, check, summary, html = told(box, number, head)
        line = f"{NOTE}{why}; {COVERED}"
        assert body.count(line) == 1 and summary and line in summary[-1]
        assert (check["conclusion"], line in check["output"]["summary"]) == ("success", True)
        assert "Reviewed without a snapshot of the repository" in html and "path traversal" in html
        opened = [e for e in snapshot_events(box) if e.get("action") == "opened"]
        assert opened and {(e["outcome"], e["reason"]) for e in opened} == {("fallback", why)}
        assert fallbacks_counted(box) == len(opened)
        # nothing unpacked, nothing half-unpacked, nothing written beside or above the root
        assert list(snapshot_root.iterdir()) == []
        assert list(tmp_path.rglob(hostile.ESCAPED_NAME)) == []
