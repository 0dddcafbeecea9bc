"""GitHub at scale and under its real failure modes, through the whole local stack (webhook over HTTP, moto in its
own process, the pollers, the offline model, the strict git-backed fake GitHub):

a 300-file PR listed once with every GitHub request of its 30 jobs counted (at most one per job, amortised; the
same count with 300 jobs runs in `make bench`); a 3 MB file; a truncated tree;
a rename; a symlink to a file in the repository; a review GitHub wrote but answered with a 502 (exactly one
review); a secondary rate limit in the planner (the job is delayed, not killed); Re-run on the check run and on
the check suite (a re-review).
"""

from __future__ import annotations

import json
import time

import pytest

from prfleet.agents.tools import PrTools
from prfleet.github import GitHub, GitHubPrSource, TokenAuth
from prfleet.store import headfiles, heads, job_runs
from prfleet_local.bench.github import STACK_BASE, STACK_PARAMETERS, stack_problems, stack_requests
from prfleet_local.demo.run import REPO, sandbox

pytestmark = pytest.mark.e2e

BASE_FILES = {
    ".prfleet.toml": 'ignore = ["bulk/**"]\n',  # the 300-file PR's bulk/ files are listed, never reviewed
    "docs/guide.md": "# Guide\n\nHow to use the shop.\n",
    "shop/pricing.py": "def price(amount, rate):\n    return amount * rate\n\n\ndef total(items):\n"
    "    return sum(items)\n",
    "shop/cart.py": "class Cart:\n    def __init__(self):\n        self.items = []\n",
    **STACK_BASE,  # mod/m000.txt ... mod/m099.txt
}


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    with sandbox(
        tmp_path_factory.mktemp("github-scale"),
        parameters=STACK_PARAMETERS,
        sweep_interval=None,
        visibility_timeout=30,  # a 300-file plan takes seconds on two shared cores: no redelivery mid-plan
    ) as b:
        b.repo.commit(BASE_FILES, "Base", branch="main")
        yield b


def gh(box) -> GitHub:
    return GitHub(box.github.api_url, TokenAuth("local-token"))


def open_pr(box, branch: str, files: dict, *, title: str, symlinks: dict | None = None) -> tuple[int, str]:
    if symlinks:
        box.repo.commit(files, title, branch=branch, symlinks=symlinks)
        box.repo.checkout("main")
    else:
        box.repo.import_commit(files, title, branch=branch, parent=box.repo.sha("main"))
    number = box.github.open_pr(REPO, "main", branch, title, "")
    return number, box.github.prs[number].head_sha


def deliver(box, number: int, action: str = "opened") -> None:
    status, reply = box.deliver("pull_request", box.github.webhook_payload(action, number))
    assert status == 202, reply


def reviews_of(box, number: int, head: str) -> list[dict]:
    return [r for r in box.github.reviews if r["number"] == number and r["commit_id"] == head]


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_300_file_pr_is_listed_once_and_its_jobs_cost_at_most_one_github_request_each(box):
    # 300 changed files listed by the planner (three pages of 100); the base's .prfleet.toml ignores the 270 under
    # bulk/, so 30 run as jobs (10 modified: a blob read each; 20 added: no request) through the whole stack.
    # The same count with all 300 as jobs (900 model calls, about 9 minutes on two shared cores) runs in
    # `make bench` (prfleet_local.bench.github.bench_stack, docs/performance.md).
    result = stack_requests(box, modified=10, added=20, ignored=270, branch="many", timeout=300)
    assert result["files"] == result["listed"] == 300
    assert stack_problems(result, jobs=30) == []
    assert result["file_pages"] == 3 * result["plannings"]
    # The agents read the head's snapshot (one tarball request per planning), not the blobs of the changed files.
    tarballs = sum(n for r, n in result["per_route"].items() if r.startswith("GET /tarball/"))
    assert tarballs == 1, result["per_route"]  # once per head, however often it is planned
    assert result["per_route"].get("GET /git/blobs", 0) == 0, result["per_route"]


def test_a_3mb_file_is_read_from_the_snapshot_never_the_contents_api(box):
    """Over 1 MB GitHub's contents API sends no content: the agent reads the file from the head's snapshot (and,
    without one, by blob sha: tests/integration/test_github_client.py), never through the contents API."""
    big = "".join(f"line of text number {i:07d}\n" for i in range(110_000))  # 3.1 MB, 110,000 lines
    number, head = open_pr(box, "big-file", {"data/big.txt": big}, title="A 3 MB file")
    start = len(box.github.requests)
    deliver(box, number)
    assert box.wait_for_review(number, head_sha=head, timeout=300)
    calls = box.github.requests[start:]

    (entry,) = [f for f in headfiles.load(REPO, number, head).files if f["filename"] == "data/big.txt"]
    assert "patch" not in entry and entry["size"] == len(big)  # GitHub leaves out a diff this large
    (run,) = job_runs.runs_of_head(REPO, number, head)
    assert run["path"] == "data/big.txt" and run["status"] == "succeeded"
    assert not [p for m, p in calls if p.endswith(f"/git/blobs/{entry['sha']}")]  # the snapshot had it
    assert not [p for m, p in calls if "/contents/data/big.txt" in p]
    served = gh(box).content(REPO, "data/big.txt", head)  # what the contents API would have given
    assert served["encoding"] == "none" and served["content"] == ""
    assert len(reviews_of(box, number, head)) == 1


def test_a_truncated_tree_is_walked_per_directory_and_the_review_says_so(box):
    box.github.tree_max_entries = 20  # the base alone has 104 files
    try:
        files = {"deep/a/b/c.txt": "deep\n", "shop/cart.py": BASE_FILES["shop/cart.py"] + "\nLIMIT = 3\n"}
        number, head = open_pr(box, "truncated", files, title="Truncated tree")
        start = len(box.github.requests)
        deliver(box, number)
        assert box.wait_for_review(number, head_sha=head, timeout=180)
    finally:
        box.github.tree_max_entries = 100_000
    calls = box.github.requests[start:]
    record = heads.head_record(REPO, number, head)
    notes = [s for s in record.skipped_files if s["path"] == "(repository tree)"]
    assert notes and "truncated" in notes[0]["reason"]
    listed = {f["filename"]: f for f in headfiles.load(REPO, number, head).files}
    assert listed["deep/a/b/c.txt"]["size"] == 5 and listed["shop/cart.py"]["mode"] == "100644"
    trees = [p for m, p in calls if "/git/trees/" in p]
    assert len(trees) == 1 + 5  # the truncated recursive tree, then "", deep, deep/a, deep/a/b and shop
    assert {r["path"] for r in job_runs.runs_of_head(REPO, number, head)} == set(files)
    (review,) = reviews_of(box, number, head)
    assert "(repository tree)" in review["body"]


def test_a_symlink_to_a_file_in_the_repository_is_never_read_as_that_file(box):
    number, head = open_pr(
        box,
        "symlink",
        {"docs/usage.md": "# Usage\n\nSee the guide.\n"},
        title="Symlink",
        symlinks={"docs/link.md": "guide.md"},
    )
    deliver(box, number)
    assert box.wait_for_review(number, head_sha=head, timeout=180)
    served = gh(box).content(REPO, "docs/link.md", head)
    assert served["type"] == "file" and "How to use" in gh(box).file_at(REPO, "docs/link.md", head).decode()

    record = heads.head_record(REPO, number, head)
    assert {"path": "docs/link.md", "reason": "symlink"} in record.skipped_files
    assert "docs/link.md" not in {r["path"] for r in job_runs.runs_of_head(REPO, number, head)}
    listed = headfiles.load(REPO, number, head)
    assert "docs/link.md" in listed.symlinks
    tools = PrTools(GitHubPrSource(gh(box), REPO, number, head, **listed.source_args()))
    refused = tools.call("read_file", {"path": "docs/link.md"})
    assert refused.is_error and "symlink" in refused.content and "How to use" not in refused.content
    assert not tools.call("read_file", {"path": "docs/guide.md"}).is_error


def test_a_rename_is_reviewed_as_a_rename_and_a_pure_rename_says_so(box):
    prices = BASE_FILES["shop/pricing.py"].replace("amount * rate", "round(amount * rate, 2)")
    files = {
        "shop/pricing.py": None,
        "shop/prices.py": prices,
        "shop/cart.py": None,
        "shop/basket.py": BASE_FILES["shop/cart.py"],
    }
    number, head = open_pr(box, "rename", files, title="Renames")
    deliver(box, number)
    assert box.wait_for_review(number, head_sha=head, timeout=180)

    listed = {f["filename"]: f for f in headfiles.load(REPO, number, head).files}
    moved = listed["shop/prices.py"]
    assert moved["status"] == "renamed" and moved["previous_filename"] == "shop/pricing.py"
    assert "-    return amount * rate" in moved["patch"]  # the diff is against the old name
    runs = job_runs.runs_of_head(REPO, number, head)
    assert {r["path"] for r in runs if r["agent"] != "verify"} == {"shop/prices.py"}  # and its verify run
    assert {r["status"] for r in runs} == {"succeeded"}
    record = heads.head_record(REPO, number, head)
    assert {"path": "shop/basket.py", "reason": "renamed from shop/cart.py without changes"} in (
        record.skipped_files
    )
    source = GitHubPrSource(gh(box), REPO, number, head, **headfiles.load(REPO, number, head).source_args())
    diff = PrTools(source).call("get_diff", {"path": "shop/prices.py"})
    assert 'renamed_from="shop/pricing.py"' in diff.content


@pytest.fixture(scope="module")
def posted_once(box):
    """A PR whose review GitHub wrote but answered with a 502."""
    cart = BASE_FILES["shop/cart.py"] + "\n    def add(self, item, into=[]):\n        into.append(item)\n"
    number, head = open_pr(box, "five-oh-two", {"shop/cart.py": cart}, title="502 after the write")
    box.github.fail_after_write(rf"/pulls/{number}/reviews$", status=502)
    start = len(box.github.requests)
    deliver(box, number)
    assert box.wait_for_review(number, head_sha=head, timeout=180)
    return number, head, box.github.requests[start:]


def test_a_review_github_wrote_but_answered_with_a_502_is_posted_exactly_once(box, posted_once):
    number, head, calls = posted_once
    (review,) = reviews_of(box, number, head)
    posts = [p for m, p in calls if m == "POST" and p.endswith(f"/pulls/{number}/reviews")]
    lookups = [p for m, p in calls if m == "GET" and p.endswith(f"/pulls/{number}/reviews")]
    assert len(posts) == 1 and lookups  # looked for, found, not sent again
    assert "prfleet:review head=" in review["body"]
    (check,) = box.github.check_runs_for(head)
    assert check["conclusion"] == "success"
    assert heads.head_record(REPO, number, head).posted == "final"


def test_rerun_on_the_check_run_and_on_the_suite_rereviews_the_head(box, posted_once):
    number, head, _ = posted_once
    box.github.add_collaborator("wendy-writer", "write")
    box.github.add_collaborator("rita-reader", "read")
    (first,) = box.github.check_runs_for(head)
    reviews = len(reviews_of(box, number, head))

    # A fork PR's check_run event lists no pull request: the check's external_id names it.
    payload = box.github.check_run_payload(first["id"], sender="wendy-writer", fork=True)
    status, reply = box.deliver("check_run", payload)
    assert status == 202 and reply["pr"] == number
    assert wait_for(lambda: len(box.github.check_runs_for(head)) == 2, 60)
    assert box.wait_for_review(number, head_sha=head, timeout=180)
    rerun = max(box.github.check_runs_for(head), key=lambda c: c["id"])
    assert [s for s, _ in rerun["history"]] == ["queued", "in_progress", "completed"]
    assert rerun["conclusion"] == "success"
    runs = job_runs.runs_of_head(REPO, number, head)
    assert {r["status"] for r in runs if r["agent"] != "verify"} == {"cached"}  # from the cache
    # every finding is on the PR already: nothing to verify again, the verify run stays as it ended
    assert {r["status"] for r in runs if r["agent"] == "verify"} == {"succeeded"}
    assert len(reviews_of(box, number, head)) == reviews + 1
    assert heads.head_record(REPO, number, head).check_run_id == rerun["id"]

    status, _ = box.deliver("check_suite", box.github.check_suite_payload(head, sender="wendy-writer"))
    assert status == 202
    assert wait_for(lambda: len(box.github.check_runs_for(head)) == 3, 60)
    assert box.wait_for_review(number, head_sha=head, timeout=180)
    assert len(reviews_of(box, number, head)) == reviews + 2

    # Re-run by someone without write access: accepted by the webhook, refused by the planner.
    lines = len(box.stack.log_lines)
    status, _ = box.deliver("check_run", box.github.check_run_payload(first["id"], sender="rita-reader"))
    assert status == 202
    assert wait_for(lambda: any("rita-reader" in line for line in box.stack.log_lines[lines:]), 60)
    assert box.stack.wait_idle(timeout=120)
    assert len(box.github.check_runs_for(head)) == 3


def test_a_secondary_rate_limit_in_the_planner_delays_the_job_and_does_not_kill_it(box):
    number, head = open_pr(box, "limited", {"docs/faq.md": "# FAQ\n\nNone yet.\n"}, title="Rate limited")
    # No retry-after: GitHub says wait at least a minute, longer than the planner has left (60 s timeout).
    box.github.rate_limit(rf"/pulls/{number}/files$", times=1, retry_after=None)
    lines = len(box.stack.log_lines)
    sent = time.monotonic()
    deliver(box, number)

    def requeued() -> list[dict]:
        out = []
        for line in box.stack.log_lines[lines:]:
            if '"requeued"' in line and "rate limit" in line:
                out.append(json.loads(line))
        return out

    assert wait_for(lambda: requeued(), 30)
    assert time.monotonic() - sent < 30  # re-queued at once, no sleep towards the timeout
    assert requeued()[0]["delay_s"] == 60
    assert box.github.check_runs_for(head) == []
    assert box.wait_for_review(number, head_sha=head, timeout=240)
    assert time.monotonic() - sent >= 55  # it came back after the delay GitHub asked for
    assert len(reviews_of(box, number, head)) == 1
    dlq = box.stack.client("sqs").get_queue_attributes(
        QueueUrl=box.stack.queue_url("PrDLQ"), AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert dlq["Attributes"]["ApproximateNumberOfMessages"] == "0"
