"""GitHub integration end to end: a pull request's life on the git-backed fake GitHub, through the whole local stack.

Real HTTP deliveries to the webhook, moto in its own process, the pollers, the offline model server, and a real git
history (commits, a force-push, a 3,050-file commit). The tests run in order and share one PR's history:
opened -> a second commit -> a newer head superseding queued jobs of an older one -> a force-push -> duplicate
SQS messages -> `/prfleet review` from a reader and a writer -> a 403 while posting. A 3,050-file PR and a budget
deferral (in its own sandbox) follow; then GitHub rate limits (in a sandbox with short function timeouts, so a
limit outlasts the time a Lambda may wait): agent jobs and a review post re-queued with GitHub's delay, a planner
cut off after creating its check run reusing it on the retry.
"""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from prfleet.github import GitHub, TokenAuth
from prfleet.jobs import PrJob, sqs
from prfleet.pipeline import planner, render
from prfleet.store import deferrals, heads, job_runs, posting
from prfleet_local.demo import sample
from prfleet_local.demo.run import REPO, sandbox
from tests import review_helpers

pytestmark = pytest.mark.e2e

BRANCH = "feature/export"


@pytest.fixture(scope="class")
def box(tmp_path_factory):
    with sandbox(
        tmp_path_factory.mktemp("github-flow"),
        parameters={"MaxFilesPerPr": 250, "MaxReceiveCount": 2},
        sweep_interval=None,
        visibility_timeout=2,
    ) as b:
        yield b


@pytest.fixture(scope="class")
def flow():
    """What earlier steps of the PR's life hand to later ones (the tests of a class run in file order)."""
    return {}


def gh_client(box) -> GitHub:
    return GitHub(box.github.api_url, TokenAuth("local-token"))


def deliver_pr(box, action: str, number: int) -> str:
    payload = box.github.webhook_payload(action, number)
    status, reply = box.deliver("pull_request", payload)
    assert status == 202, reply
    return payload["pull_request"]["head"]["sha"]


def comment_payload(box, number: int, login: str, body: str = "/prfleet review") -> dict:
    owner, name = REPO.split("/")
    return {
        "action": "created",
        "issue": {
            "number": number,
            "title": "x",
            "pull_request": {"url": f"{box.github.api_url}/repos/{REPO}/pulls/{number}"},
        },
        "comment": {"id": 1, "body": body, "user": {"login": login, "type": "User"}},
        "repository": {"full_name": REPO, "name": name, "owner": {"login": owner}},
        "installation": {"id": box.github.installation_id},
        "sender": {"login": login},
    }


def reviews_of(box, number: int, head: str | None = None) -> list[dict]:
    return [r for r in box.github.reviews if r["number"] == number and head in (None, r["commit_id"])]


def posted_fingerprints(box, number: int) -> list[str]:
    """Every fingerprint marker GitHub holds for the PR, one entry per posting (duplicates show up twice)."""
    out: list[str] = []
    for item in [c for c in box.github.review_comments if c["pull_number"] == number] + reviews_of(
        box, number
    ):
        out.extend(sorted(review_helpers.posted_fingerprints([item["body"]])))
    return out


def summary_comments(box, number: int) -> list[dict]:
    return [
        c
        for c in box.github.issue_comments
        if c["issue_number"] == number and render.SUMMARY_MARKER in c["body"]
    ]


def runs_by_path(number: int, head: str) -> dict[tuple[str, str], dict]:
    """The head's file jobs' runs by (path, agent); its verify run (issue 24) is verify_run's."""
    return {
        (r["path"], r["agent"]): r
        for r in job_runs.runs_of_head(REPO, number, head)
        if r["agent"] != "verify"
    }


def verify_runs(number: int, head: str) -> list[dict]:
    """The head's verify runs of its final posting (one per part: VerifyCandidatesPerRun)."""
    return [
        r
        for r in job_runs.runs_of_head(REPO, number, head)
        if r["agent"] == "verify" and r["path"].startswith("/verify/final")
    ]


def wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def check_of(box, head: str) -> dict:
    (check,) = box.github.check_runs_for(head)
    return check


# The sample's review of shop/pricing.py reports the caller it breaks in shop/checkout.py: a result that reaches
# another file is not cached (prfleet.pipeline.endings.cacheable), so that job runs again on every head.
UNCACHED = {(path, "review") for path in ("shop/pricing.py",)}


def cached_statuses(runs: list) -> set:
    """The statuses of the runs the result cache may answer (all but UNCACHED), each asserted to have run."""
    for r in runs:
        if (r["path"], r["agent"]) in UNCACHED:
            assert r["status"] == "succeeded", (r["path"], r["agent"], r["status"])
    return {r["status"] for r in runs if (r["path"], r["agent"]) not in UNCACHED}


class TestPullRequestLife:
    def test_opened_gets_one_review_on_diff_lines_a_summary_and_a_completed_check(self, box, flow):
        number = box.open_sample_pr()
        head = deliver_pr(box, "opened", number)
        assert box.wait_for_review(number, head_sha=head, timeout=120)
        flow.update(number=number, heads=[head])

        (review,) = reviews_of(box, number)
        assert review["event"] == "COMMENT" and review["commit_id"] == head
        assert review["comments"], "the seeded bugs are on added lines: inline comments expected"
        files = {f["filename"]: f for f in box.github.files_of(box.github.prs[number])}
        for c in review["comments"]:
            assert c["side"] == "RIGHT" and c["line"] in review_helpers.diff_lines(
                files[c["path"]].get("patch")
            )
        check = check_of(box, head)
        assert [s for s, _ in check["history"]] == ["queued", "in_progress", "completed"]
        assert check["conclusion"] == "success"
        found = [f for r in job_runs.runs_of_head(REPO, number, head) for f in json.loads(r["findings"])]
        held = [
            f for f in found if f.get("relation") == "preexisting"
        ]  # old problems: counted, not annotated
        assert held and f"{len(held)} pre-existing finding(s) not shown" in check["output"]["summary"]
        assert check["output"]["annotations_count"] == len(found) - len(held)
        assert all(n <= 50 for n in check["annotation_batches"])
        (summary,) = summary_comments(box, number)
        assert "| agent |" in summary["body"] and "cost" in summary["body"]
        fps = posted_fingerprints(box, number)
        assert fps and len(fps) == len(set(fps))
        assert posting.recorded_fingerprints(REPO, number) == set(fps)

    def test_second_commit_rereviews_only_the_changed_file_and_repeats_no_finding(self, box, flow):
        number = flow["number"]
        old = flow["heads"][-1]
        pricing = sample.HEAD_CHANGES["shop/pricing.py"] + (
            "\n\ndef parse_percent(text):\n    try:\n        return float(text)\n    except:\n        return 0.0\n"
        )
        box.repo.commit({"shop/pricing.py": pricing}, "Parse percentages", branch=BRANCH)
        box.github.update_head(number)
        head = deliver_pr(box, "synchronize", number)
        assert box.wait_for_review(number, head_sha=head, timeout=120)
        flow["heads"].append(head)

        runs = runs_by_path(number, head)
        changed = {k: r for k, r in runs.items() if k[0] == "shop/pricing.py"}
        others = {k: r for k, r in runs.items() if k[0] != "shop/pricing.py"}
        assert changed and others
        assert all(r["status"] == "succeeded" and int(r["cost_micros"]) > 0 for r in changed.values())
        assert all(r["status"] == "cached" and int(r.get("cost_micros") or 0) == 0 for r in others.values())
        assert set(others) == {k for k in runs_by_path(number, old) if k[0] != "shop/pricing.py"}

        (review,) = reviews_of(box, number, head)
        fps = posted_fingerprints(box, number)
        assert len(fps) == len(set(fps)), "a finding was posted twice"
        new = review_helpers.posted_fingerprints([review["body"], *[c["body"] for c in review["comments"]]])
        assert new, "the bare except added in this commit is a new finding"
        assert all(c["path"] == "shop/pricing.py" for c in review["comments"])
        assert "already posted on an earlier commit" in review["body"]
        # the verify pass weighed only what this head adds: findings already on the PR are not verified again
        first, second = verify_runs(number, old), verify_runs(number, head)
        assert first and second and all(r["status"] == "succeeded" for r in second)
        assert 0 < sum(int(r["candidates"]) for r in second) < sum(int(r["candidates"]) for r in first)
        (summary,) = summary_comments(box, number)  # edited in place, not posted anew
        assert summary["edits"] >= 1 and head[:12] in summary["body"]
        assert check_of(box, head)["conclusion"] == "success"

    def test_a_newer_head_supersedes_the_queued_jobs_of_an_older_one(self, box, flow):
        number = flow["number"]
        cart = sample.HEAD_CHANGES["shop/cart.py"].replace("Sum of all lines.", "Sum of every line.")
        box.repo.commit({"shop/cart.py": cart}, "Reword", branch=BRANCH)
        older = box.github.update_head(number)
        # The older head is planned for real; its jobs are held back until the newer head has been planned.
        held: list = []
        base = box.github.prs[number].base_sha
        plan = planner.plan_pr(
            PrJob(REPO, number, older, base, box.github.installation_id, "held", "synchronize"),
            gh_client(box),
            send=held.extend,
        )
        assert plan.status == "planned" and held
        export = sample.HEAD_CHANGES["shop/export.py"] + "\n\ndef noop():\n    return None\n"
        box.repo.commit({"shop/export.py": export}, "Add noop", branch=BRANCH)
        box.github.update_head(number)
        newer = deliver_pr(box, "synchronize", number)
        assert box.wait_for_review(number, head_sha=newer, timeout=120)
        sqs.send_file_jobs(held)
        assert wait_for(lambda: check_of(box, older)["status"] == "completed")
        assert box.stack.wait_idle(timeout=120)
        flow["heads"] += [older, newer]

        runs = job_runs.runs_of_head(REPO, number, older)
        assert len(runs) == len(held)
        assert {r["status"] for r in runs} == {"superseded"}
        assert sum(int(r.get("cost_micros") or 0) for r in runs) == 0
        check = check_of(box, older)
        assert check["conclusion"] == "neutral" and "Superseded" in check["output"]["title"]
        assert reviews_of(box, number, older) == []  # nothing posted for a superseded head
        assert heads.head_record(REPO, number, older).final
        newer_runs = runs_by_path(number, newer)
        assert newer_runs[("shop/cart.py", "review")]["status"] == "succeeded"  # the older head never ran it
        assert (
            newer_runs[("shop/pricing.py", "review")]["status"] == "succeeded"
        )  # its result reaches checkout.py
        fps = posted_fingerprints(box, number)
        assert len(fps) == len(set(fps))

    def test_a_force_push_of_the_same_content_comes_from_the_cache_at_no_cost(self, box, flow):
        number = flow["number"]
        previous = flow["heads"][-1]
        main = box.repo.sha("main")
        squashed = box.repo.git("commit-tree", f"{previous}^{{tree}}", "-p", main, "-m", "Squashed").strip()
        box.repo.force_push(BRANCH, squashed)
        head = box.github.update_head(number)
        assert head == squashed
        assert box.repo.git("merge-base", previous, head).strip() == main  # history rewritten, not extended
        fps_before = posted_fingerprints(box, number)
        deliver_pr(box, "synchronize", number)
        assert box.wait_for_review(number, head_sha=head, timeout=120)
        flow["heads"].append(head)

        runs = job_runs.runs_of_head(REPO, number, head)
        assert runs and cached_statuses(runs) == {"cached"}
        assert (
            sum(int(r.get("cost_micros") or 0) for r in runs if (r["path"], r["agent"]) not in UNCACHED) == 0
        )
        (review,) = reviews_of(box, number, head)
        assert review["comments"] == [] and "0 new finding(s)" in review["body"]
        assert posted_fingerprints(box, number) == fps_before  # nothing posted again
        assert check_of(box, head)["conclusion"] == "success"

    def test_the_same_sqs_message_delivered_twice_posts_nothing_twice(self, box, flow):
        number, head = flow["number"], flow["heads"][-1]
        before = (
            len(box.github.reviews),
            len(box.github.check_runs),
            [c["body"] for c in box.github.issue_comments],
        )
        run = job_runs.runs_of_head(REPO, number, head)[0]
        sqs = box.stack.client("sqs")
        url = box.stack.queue_url("JobsQueue")
        senders = [
            threading.Thread(target=sqs.send_message, kwargs={"QueueUrl": url, "MessageBody": run["job"]})
            for _ in range(2)
        ]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        time.sleep(0.5)
        assert box.stack.wait_idle(timeout=120)
        after = (
            len(box.github.reviews),
            len(box.github.check_runs),
            [c["body"] for c in box.github.issue_comments],
        )
        assert after == before
        again = [r for r in job_runs.runs_of_head(REPO, number, head) if r["sk"] == run["sk"]]
        assert again[0]["run_id"] == run["run_id"] and again[0]["status"] == run["status"]

    def test_comment_command_from_a_reader_is_ignored_with_a_log_line(self, box, flow):
        number = flow["number"]
        box.github.add_collaborator("rita-reader", "triage")  # GitHub reports triage as read
        checks = len(box.github.check_runs)
        lines = len(box.stack.log_lines)
        status, reply = box.deliver("issue_comment", comment_payload(box, number, "rita-reader"))
        assert status == 202, reply
        assert wait_for(
            lambda: any("rita-reader" in line and "ignored" in line for line in box.stack.log_lines[lines:]),
            30,
        )
        assert box.stack.wait_idle(timeout=120)
        assert len(box.github.check_runs) == checks
        # An outsider (not a collaborator at all) is ignored the same way.
        status, _ = box.deliver("issue_comment", comment_payload(box, number, "mallory"))
        assert status == 202
        assert wait_for(lambda: any("mallory" in line for line in box.stack.log_lines[lines:]), 30)
        assert box.stack.wait_idle(timeout=120)
        assert len(box.github.check_runs) == checks

    def test_comment_command_from_a_writer_reruns_the_current_head(self, box, flow):
        number, head = flow["number"], flow["heads"][-1]
        box.github.add_collaborator("wendy-writer", "maintain")  # GitHub reports maintain as write
        reviews = len(reviews_of(box, number, head))
        status, reply = box.deliver("issue_comment", comment_payload(box, number, "wendy-writer"))
        assert status == 202 and reply["command"] == "review"
        assert wait_for(lambda: len(box.github.check_runs_for(head)) == 2, 30)
        assert box.wait_for_review(number, head_sha=head, timeout=120)

        first, rerun = sorted(box.github.check_runs_for(head), key=lambda c: c["id"])
        assert [s for s, _ in rerun["history"]] == ["queued", "in_progress", "completed"]
        assert rerun["conclusion"] == "success" and first["conclusion"] == "success"
        runs = job_runs.runs_of_head(REPO, number, head)
        assert runs and cached_statuses(runs) == {"cached"}  # ran again, from the cache
        assert heads.head_record(REPO, number, head).check_run_id == rerun["id"]
        assert len(reviews_of(box, number, head)) == reviews + 1
        fps = posted_fingerprints(box, number)
        assert len(fps) == len(set(fps))
        assert len(summary_comments(box, number)) == 1

    def test_a_403_while_posting_fails_the_check_with_the_reason(self, box, flow):
        number, head = flow["number"], flow["heads"][-1]
        reviews = len(box.github.reviews)
        box.github.inject(
            rf"/pulls/{number}/reviews$",
            403,
            1,
            method="POST",
            message="Resource not accessible by integration",
        )
        status, _ = box.deliver("issue_comment", comment_payload(box, number, "wendy-writer"))
        assert status == 202
        assert wait_for(lambda: len(box.github.check_runs_for(head)) == 3, 30)
        assert box.wait_for_review(number, head_sha=head, timeout=120)
        latest = max(box.github.check_runs_for(head), key=lambda c: c["id"])
        assert latest["conclusion"] == "failure"
        assert "403" in latest["output"]["title"]
        assert "permission" in latest["output"]["summary"]  # says what to fix
        assert "Resource not accessible by integration" in latest["output"]["summary"]
        assert len(box.github.reviews) == reviews

    def test_without_permission_to_write_checks_the_review_is_still_posted(self, box, flow):
        # Only GitHub Apps may write check runs; a token (or an app without checks: write) gets a 403.
        number, head = flow["number"], flow["heads"][-1]
        checks, reviews = len(box.github.check_runs), len(reviews_of(box, number, head))
        box.github.inject(
            r"/check-runs$", 403, 1, method="POST", message="Resource not accessible by integration"
        )
        status, _ = box.deliver("issue_comment", comment_payload(box, number, "wendy-writer"))
        assert status == 202
        assert wait_for(lambda: len(reviews_of(box, number, head)) == reviews + 1, 60)
        assert box.stack.wait_idle(timeout=120)
        assert len(box.github.check_runs) == checks
        assert heads.head_record(REPO, number, head).check_run_id is None
        assert cached_statuses(job_runs.runs_of_head(REPO, number, head)) == {"cached"}

    def test_a_3050_file_pr_is_listed_page_by_page_and_capped_with_the_rest_reported(self, box, flow):
        main = box.repo.sha("main")
        box.repo.git("branch", "-f", "big", main)
        files: dict[str, str | bytes | None] = {
            "a_first.py": "def collect(items, into=[]):\n    into.extend(items)\n    return into\n"
        }
        files.update({f"gen/bundle_{i:04d}.min.js": f"var v{i}={i};\n" for i in range(3049)})
        box.repo.import_commit(files, "Vendor bundles", branch="big")
        number = box.github.open_pr(REPO, "main", "big", "Bundles", "3,050 files")
        flow["big"] = number
        # GitHub refuses the first inline comment: the same review is posted with every finding in its body.
        box.github.inject(rf"/pulls/{number}/reviews$", 422, 1, method="POST", message="Unprocessable Entity")
        requests_before = len(box.github.requests)
        head = deliver_pr(box, "opened", number)
        assert box.wait_for_review(number, head_sha=head, timeout=120)

        record = heads.head_record(REPO, number, head)
        assert gh_client(box).pr(REPO, number)["changed_files"] == 3050
        assert record.skipped_files[0]["path"] == "(2800 more files)"
        assert "250 files" in record.skipped_files[0]["reason"]
        assert sum(s["reason"] == "ignored by pattern" for s in record.skipped_files) == 249
        assert {p for p, _agent in runs_by_path(number, head)} == {"a_first.py"}
        pages = [
            p
            for m, p in box.github.requests[requests_before:]
            if m == "GET" and p == f"/repos/{REPO}/pulls/{number}/files"
        ]
        assert len(pages) >= 3  # 250 files at 100 per page
        (review,) = reviews_of(box, number, head)
        assert review["comments"] == []
        assert "inline comments were refused" in review["body"]
        assert "Mutable default" in review["body"]
        assert "(2800 more files)" in review["body"]
        check = check_of(box, head)
        assert check["conclusion"] == "success"
        assert "skipped" in check["output"]["summary"]


class TestBudget:
    def test_jobs_refused_by_the_budget_are_deferred_with_a_partial_review_and_a_neutral_check(
        self, tmp_path_factory
    ):
        with sandbox(
            tmp_path_factory.mktemp("budget"),
            parameters={"DailyBudgetUsd": 0.01},
            sweep_interval=None,
            visibility_timeout=2,
        ) as box:
            number = box.open_sample_pr()
            head = deliver_pr(box, "opened", number)
            assert box.wait_for_review(number, head_sha=head, timeout=120)
            runs = job_runs.runs_of_head(REPO, number, head)
            deferred = [r for r in runs if r["status"] == "deferred"]
            # The cheaper agents' worst case fits in one cent; the review agent's stronger model does not.
            assert deferred and {r["status"] for r in runs} <= {"deferred", "succeeded"}
            # A run deferred after some calls keeps what those calls cost: the runs add up to the ledger.
            spent = sum(int(r.get("cost_micros") or 0) for r in runs)
            ledger = box.stack.client("dynamodb").scan(TableName=box.stack.table("LedgerTable"))["Items"]
            assert spent == sum(int(i["settled"]["N"]) for i in ledger if i["scope"]["S"] == "daily")
            assert spent <= 10_000  # never past the limit
            record = heads.head_record(REPO, number, head)
            assert record.posted == "partial" and record.waiting_on_budget == len(deferred)
            check = check_of(box, head)
            assert check["status"] == "completed" and check["conclusion"] == "neutral"
            assert "deferred by the budget" in check["output"]["title"]
            assert "not failing" in check["output"]["summary"]
            (review,) = reviews_of(box, number, head)
            ran = {r["agent"] for r in runs if r["status"] == "succeeded"}
            assert "review" not in ran  # the stronger model's worst case does not fit
            assert all(
                f"_{'_'.join(ran)}_" in c["body"] or any(f"_{a}_" in c["body"] for a in ran)
                for c in review["comments"]
            )
            assert "| deferred |" in review["body"]  # the summary table's column, counted per agent
            waiting = {e["sk"].rsplit("#", 1)[1] for e in deferrals.deferred_jobs()}
            assert {r["sk"].rsplit("#", 1)[1] for r in deferred} <= waiting  # kept for the sweeper


# --- GitHub rate limits in the agents and the planner (a stack with short timeouts, so a limit outlasts them) ---

AGENT_TIMEOUT, PLANNER_TIMEOUT = 40, 20  # agent: 20 s for GitHub waits (runner margin 20 s); planner: 15 s


@pytest.fixture(scope="class")
def limited_box(tmp_path_factory):
    """Agent jobs that read through GitHub: with a snapshot of the head they make no GitHub request at all, so the
    repository is kept over MaxRepoBytes (the template's smallest value, 1 MiB, against 1.3 MB of incompressible
    bytes in the base) and the agents read the changed files by blob sha, as they do for any repository that size."""
    with sandbox(
        tmp_path_factory.mktemp("github-limits"),
        sweep_interval=None,
        visibility_timeout=60,  # no redelivery while a delayed copy waits: a re-queue is the only way back
        function_timeouts={"AgentFunction": AGENT_TIMEOUT, "PlannerFunction": PLANNER_TIMEOUT},
        parameters={"MaxRepoBytes": 1_048_576},
    ) as b:
        b.repo.commit(
            {
                "notes/a.txt": "alpha\n",
                "notes/b.txt": "beta\n",
                "notes/c.txt": "gamma\n",
                "data/noise.bin": random.Random(7).randbytes(1_300_000),
            },
            "Base",
            branch="main",
        )
        yield b


def open_limited_pr(box, branch: str, files: dict) -> tuple[int, str]:
    box.repo.import_commit(files, branch, branch=branch, parent=box.repo.sha("main"))
    number = box.github.open_pr(REPO, "main", branch, branch, "")
    return number, box.github.prs[number].head_sha


def requeued_lines(box, since: int) -> list[dict]:
    """The handlers' `requeued` events (a PR or file job sent back to its queue with a delay)."""
    out = []
    for line in box.stack.log_lines[since:]:
        if '"requeued"' in line:
            event = json.loads(line)
            if event.get("event") == "requeued":
                out.append(event)
    return out


def dlq_depth(box, queue_name: str) -> int:
    attrs = box.stack.client("sqs").get_queue_attributes(
        QueueUrl=box.stack.queue_url(queue_name), AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


class TestRateLimits:
    def test_agent_jobs_meeting_githubs_primary_and_secondary_limits_come_back_after_the_delay_asked(
        self, limited_box
    ):
        box = limited_box
        number, head = open_limited_pr(
            box, "limits-agents", {"notes/a.txt": "alpha changed\n", "notes/b.txt": "beta changed\n"}
        )
        blobs = {f["filename"]: f["sha"] for f in box.github.files_of(box.github.prs[number])}
        # Each modified file is read by blob sha: one job meets a spent primary limit (403, x-ratelimit-remaining
        # 0, reset in 30 s), the other a secondary limit (429, retry-after 25); both outlast the 20 s the agent
        # may wait, so the jobs must go back to SQS with those delays, not fail or sleep into the timeout.
        box.github.primary_limit(rf"/git/blobs/{blobs['notes/a.txt']}$", reset_in=30)
        box.github.rate_limit(rf"/git/blobs/{blobs['notes/b.txt']}$", retry_after=25, status=429)
        lines = len(box.stack.log_lines)
        sent = time.monotonic()
        deliver_pr(box, "opened", number)

        assert wait_for(lambda: len(requeued_lines(box, lines)) == 2, 120)
        delays = sorted(e["delay_s"] for e in requeued_lines(box, lines))
        assert (
            delays[0] == 25 and 30 <= delays[1] <= 33
        )  # the retry-after; the reset (+1 s), in epoch seconds
        assert all("rate limit" in e["reason"] for e in requeued_lines(box, lines))
        # Given back, not failed: `retrying` until the delayed copy claims the run again.
        waiting = {r["path"]: r["status"] for r in job_runs.runs_of_head(REPO, number, head)}
        assert set(waiting) == {"notes/a.txt", "notes/b.txt"} and "failed" not in waiting.values()

        assert box.wait_for_review(number, head_sha=head, timeout=180)
        assert time.monotonic() - sent >= 25  # not before GitHub said
        runs = job_runs.runs_of_head(REPO, number, head)
        assert {r["status"] for r in runs} == {"succeeded"}
        assert {json.loads(r["job"])["attempt"] for r in runs} == {
            1
        }  # the re-queued copy is the next attempt
        assert len(reviews_of(box, number, head)) == 1
        assert check_of(box, head)["conclusion"] == "success"
        assert dlq_depth(box, "JobsDLQ") == 0

    def test_a_rate_limited_review_post_is_delayed_and_posted_once(self, limited_box):
        box = limited_box
        number, head = open_limited_pr(box, "limits-post", {"notes/c.txt": "gamma changed\n"})
        # The last job's fan-in meets a secondary limit on the review (its marker lookup or the POST).
        box.github.rate_limit(rf"/pulls/{number}/reviews$", retry_after=25)
        lines = len(box.stack.log_lines)
        deliver_pr(box, "opened", number)
        assert wait_for(lambda: requeued_lines(box, lines), 120)
        assert requeued_lines(box, lines)[0]["delay_s"] == 25
        assert reviews_of(box, number, head) == []
        assert box.wait_for_review(number, head_sha=head, timeout=180)
        assert len(reviews_of(box, number, head)) == 1
        (run,) = job_runs.runs_of_head(REPO, number, head)
        assert run["status"] == "succeeded"
        assert dlq_depth(box, "JobsDLQ") == 0

    def test_a_planner_limited_after_creating_the_check_run_reuses_it_on_its_retry(self, limited_box):
        box = limited_box
        box.github.add_collaborator("wendy-writer", "write")
        number, head = open_limited_pr(box, "limits-planner", {"notes/a.txt": "alpha planned\n"})
        # The check run is created, then its move to in_progress meets a secondary limit longer than the
        # planner's 15 s: the PR job goes back to PrQueue, and its retry must finish that check run, not add one.
        box.github.rate_limit(r"/check-runs/\d+$", retry_after=20, method="PATCH")
        lines = len(box.stack.log_lines)
        deliver_pr(box, "opened", number)
        assert wait_for(lambda: requeued_lines(box, lines), 90)
        assert requeued_lines(box, lines)[0]["delay_s"] == 20
        (waiting,) = box.github.check_runs_for(head)
        assert waiting["status"] == "queued"
        assert box.wait_for_review(number, head_sha=head, timeout=180)
        (check,) = box.github.check_runs_for(head)  # one check run per head
        assert check["id"] == waiting["id"] and check["conclusion"] == "success"
        assert [s for s, _ in check["history"]] == ["queued", "in_progress", "completed"]
        assert heads.head_record(REPO, number, head).check_run_id == check["id"]
        assert len(reviews_of(box, number, head)) == 1

        # Re-run limited the same way: one fresh check run for the Re-run, reused by its own retry.
        box.github.rate_limit(r"/check-runs/\d+$", retry_after=20, method="PATCH")
        lines = len(box.stack.log_lines)
        status, _ = box.deliver("check_run", box.github.check_run_payload(check["id"], sender="wendy-writer"))
        assert status == 202
        assert wait_for(lambda: requeued_lines(box, lines), 90)
        assert wait_for(lambda: len(box.github.check_runs_for(head)) == 2, 30)
        assert box.wait_for_review(number, head_sha=head, timeout=180)
        runs = sorted(box.github.check_runs_for(head), key=lambda c: c["id"])
        assert len(runs) == 2 and runs[0]["id"] == check["id"]
        rerun = runs[1]
        assert [s for s, _ in rerun["history"]] == ["queued", "in_progress", "completed"]
        assert rerun["conclusion"] == "success"
        assert heads.head_record(REPO, number, head).check_run_id == rerun["id"]
        assert len(reviews_of(box, number, head)) == 2
        assert dlq_depth(box, "PrDLQ") == 0

    def test_a_reset_further_away_than_sqs_can_delay_is_waited_for_900_s_at_a_time(self, limited_box):
        box = limited_box
        number, _head = open_limited_pr(box, "limits-far", {"notes/b.txt": "beta far\n"})
        blob = {f["filename"]: f["sha"] for f in box.github.files_of(box.github.prs[number])}["notes/b.txt"]
        box.github.primary_limit(rf"/git/blobs/{blob}$", reset_in=2400)  # 40 minutes to the reset
        lines = len(box.stack.log_lines)
        deliver_pr(box, "opened", number)
        assert wait_for(lambda: requeued_lines(box, lines), 120)
        (event,) = requeued_lines(box, lines)
        assert event["delay_s"] == 900  # SQS's DelaySeconds maximum; the next attempt meets the limit again
        assert dlq_depth(box, "JobsDLQ") == 0
