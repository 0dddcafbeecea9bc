"""The verification pass end to end (issue 24 item 2): after the sample PR's file jobs, one verify job weighs every
candidate against the code before anything is posted.

The file agents run in the offline model's scripted-reply mode, so the candidates are known in advance: a real
shell-injection finding reported by two agents on the same line (merged into one comment), and a finding naming
`eval` on a line that has none (dropped by the offline verifier after it read the line). Then: a failed verify run
and an unaffordable one post the candidates labelled unverified; a repository's require_verification holds them
until a later verify run succeeds; Verification=off posts as before; a redelivered verify job posts nothing twice.

Real HTTP to the webhook, moto, the fake GitHub on a real git repository and the offline model (its verdicts
measure the pipeline, not Claude)."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from prfleet.jobs import parse_message
from prfleet.store import deferrals, heads, job_runs
from prfleet_local.demo import sample
from prfleet_local.demo.run import REPO, sandbox
from prfleet_local.model.faults import FaultPlan, FaultRule
from tests.review_helpers import posted_fingerprints

pytestmark = pytest.mark.e2e

EXPORT = "shop/export.py"
SHELL = sample.bug_line(EXPORT, 'subprocess.run(f"gzip -f {filename}", shell=True, check=True)')
TOKEN = sample.bug_line(EXPORT, 'WAREHOUSE_TOKEN = "whk_live_4f9a8c7e2b1d"')
SCRIPT = [
    {
        "agent": "review",
        "path": EXPORT,
        "line": SHELL,
        "severity": "high",
        "category": "security",
        "title": "Shell command built from `filename`",
        "body": "shell=True with a caller's file name: injection.",
    },
    {
        "agent": "docs",
        "path": EXPORT,
        "line": SHELL,
        "severity": "medium",
        "category": "security",
        "title": "Unquoted `filename` in a shell command",
        "body": "The same line runs a shell on a file name.",
    },
    {
        "agent": "review",
        "path": EXPORT,
        "line": TOKEN,
        "severity": "critical",
        "category": "bug",
        "title": "Use of `eval` on input",
        "body": "eval runs arbitrary code.",
    },
]
DROPPED = "Use of `eval` on input"


def _open(box, toml: str | None = None) -> int:
    base = dict(sample.BASE_FILES)
    if toml is not None:
        base[".prfleet.toml"] = toml + base.get(".prfleet.toml", "")
    box.repo.commit(base, "Initial shop", branch="main")
    box.repo.commit(sample.head_files(), "Add order export and bulk pricing", branch="feature/export")
    return box.github.open_pr(REPO, "main", "feature/export", sample.PR_TITLE, sample.PR_BODY)


def _review(box, number: int, delivery: str) -> str:
    payload = box.github.webhook_payload("opened", number)
    assert box.deliver("pull_request", payload, delivery=delivery)[0] == 202
    head = payload["pull_request"]["head"]["sha"]
    assert box.wait_for_review(number, head_sha=head, timeout=300)
    return head


def _verify_run(number: int, head: str) -> dict:
    (run,) = [r for r in job_runs.runs_of_head(REPO, number, head) if r["agent"] == "verify"]
    return run


def _posted_text(box, number: int) -> str:
    reviews = [r for r in box.github.reviews if r["number"] == number]
    return "\n".join(r["body"] + "\n" + "\n".join(c["body"] for c in r["comments"]) for r in reviews)


def test_the_verifier_drops_and_merges_and_the_check_run_says_why(tmp_path):
    with sandbox(
        tmp_path, faults=FaultPlan(scripted=SCRIPT), sweep_interval=None, visibility_timeout=6
    ) as box:
        number = _open(box)
        head = _review(box, number, "verify-kept")
        (review,) = [r for r in box.github.reviews if r["number"] == number]
        (check,) = box.github.check_runs_for(head)
        with urllib.request.urlopen(box.review_page(number)) as reply:  # noqa: S310 - loopback
            page = reply.read().decode()
        run = _verify_run(number, head)
        # Redelivery of the verify job (SQS at-least-once): nothing is run or posted twice.
        reviews, comments = len(box.github.reviews), len(box.github.issue_comments)
        box.stack.client("sqs").send_message(
            QueueUrl=box.stack.queue_url("JobsQueue"), MessageBody=run["job"]
        )
        assert box.stack.wait_idle(timeout=120)
        again = job_runs.get_run(parse_message(run["job"]))
        model_log = box.model.model_log()

    assert run["status"] == "succeeded" and int(run["candidates"]) == 3 and int(run["cost_micros"]) > 0
    # the merged pair is one inline comment naming both agents; the dropped finding is not on GitHub at all
    (comment,) = review["comments"]
    assert comment["line"] == SHELL and "found by review, docs" in comment["body"]
    assert "unverified" not in comment["body"].lower()
    assert DROPPED not in review["body"] and DROPPED not in comment["body"]
    assert len(posted_fingerprints([review["body"], comment["body"]])) == 1
    assert "Verified: 3 candidate(s): 1 kept, 1 dropped, 1 merged" in review["body"]
    # ... and it is in the check run's details with the verifier's reason, counted in its summary
    assert "3 candidate(s): 1 kept, 1 dropped, 1 merged" in check["output"]["summary"]
    text = check["output"]["text"]
    assert DROPPED in text and f"`eval` is not on {EXPORT}:{TOKEN}" in text
    assert "Merged into another finding (1)" in text and "Unquoted `filename` in a shell command" in text
    # the review page shows the check run's details, reasons included
    assert "Dropped by the verifier" in page and f"is not on {EXPORT}:{TOKEN}" in page
    # the verifier decided from tool results it asked for: a read of every candidate's line
    (entry,) = [e for e in model_log if e["agent"] == "verify" and e["verdicts"]]
    asked = {a["id"] for e in model_log if e["agent"] == "verify" for a in e["asked"]}
    assert len(entry["facts"]) == 3 and all(f["tool_use_id"] in asked for f in entry["facts"])
    assert all(f["tool"] == "read_file" and entry["evidence"][f["tool_use_id"]] for f in entry["facts"])
    assert len(box.github.reviews) == reviews and len(box.github.issue_comments) == comments
    assert again["run_id"] == run["run_id"] and again["status"] == "succeeded"


CART = "shop/cart.py"
MUTABLE = {
    "agent": "review",
    "path": CART,
    "line": sample.bug_line(CART, "def add_many(self, skus, seen=[]):"),
    "severity": "medium",
    "category": "bug",
    "title": "Mutable default `seen`",
    "body": "The list is shared between calls.",
}


def test_a_heads_candidates_split_over_verify_runs_in_parallel_are_all_judged_in_one_review(tmp_path):
    """VerifyCandidatesPerRun 2 and four candidates on two files: two verify runs, each shown one file's
    candidates (the merged pair stays together), every verdict applied in the one review."""
    with sandbox(
        tmp_path,
        parameters={"VerifyCandidatesPerRun": 2},
        faults=FaultPlan(scripted=[*SCRIPT, MUTABLE]),
        sweep_interval=None,
        visibility_timeout=6,
    ) as box:
        number = _open(box)
        head = _review(box, number, "verify-parts")
        runs = sorted(
            (r for r in job_runs.runs_of_head(REPO, number, head) if r["agent"] == "verify"),
            key=lambda r: r["path"],
        )
        (review,) = [r for r in box.github.reviews if r["number"] == number]
        (check,) = box.github.check_runs_for(head)
        shown = [  # the files each verify run's verdicts rest on (facts: the tool results that decided them)
            sorted({f["path"] for f in e["facts"]})
            for e in box.model.model_log()
            if e["agent"] == "verify" and e["verdicts"]
        ]
        record = heads.head_record(REPO, number, head)

    assert [(r["path"], r["status"], int(r["candidates"])) for r in runs] == [
        ("/verify/final/1of2", "succeeded", 3),
        ("/verify/final/2of2", "succeeded", 1),
    ]
    assert record.verify_parts == {"final": 2} and record.verify_done == {"final/1of2", "final/2of2"}
    assert "Verified: 4 candidate(s): 2 kept, 1 dropped, 1 merged" in review["body"]
    assert "4 candidate(s): 2 kept, 1 dropped, 1 merged" in check["output"]["summary"]
    by_line = {c["line"]: c["body"] for c in review["comments"]}
    assert "found by review, docs" in by_line[SHELL] and "Mutable default `seen`" in by_line[MUTABLE["line"]]
    assert "unverified" not in _posted_text(box, number).lower()
    assert DROPPED not in _posted_text(box, number)
    assert sorted(shown) == [[CART], [EXPORT]]  # each run weighed only its part


def _verify_calls(box) -> int:
    return sum(str(b.get("system", "")).find("You are the verify agent") >= 0 for b in box.model.requests)


def test_the_same_candidates_on_another_pr_reuse_the_cached_verdicts(tmp_path):
    """The verify run's verdicts are cached under the sorted candidates' fingerprints, the model and the prompt
    version: PR 2, opened later with the same change, has the same three candidates; its verify job reuses the
    verdicts for nothing (no verify call, $0) and posts as PR 1 did."""
    with sandbox(
        tmp_path, faults=FaultPlan(scripted=SCRIPT), sweep_interval=None, visibility_timeout=6
    ) as box:
        first = _review(box, _open(box), "verify-cache-1")
        calls = _verify_calls(box)
        assert calls > 0 and _verify_run(1, first)["status"] == "succeeded"
        box.repo.commit(
            {"notes/again.txt": "again\n"}, "The same change again", branch="feature/export-again"
        )
        number = box.github.open_pr(REPO, "main", "feature/export-again", "Export, again")
        head = _review(box, number, "verify-cache-2")
        run = _verify_run(number, head)
        (review,) = [r for r in box.github.reviews if r["number"] == number]
        verify_calls = _verify_calls(box)

    assert run["status"] == "cached" and int(run["cost_micros"]) == 0 and int(run["candidates"]) == 3
    assert verify_calls == calls  # no verify call for PR 2
    assert "Verified: 3 candidate(s): 1 kept, 1 dropped, 1 merged" in review["body"]
    assert DROPPED not in _posted_text(box, number)


def _assert_unverified(box, number: int, head: str, why: str) -> None:
    (review,) = [r for r in box.github.reviews if r["number"] == number]
    (check,) = box.github.check_runs_for(head)
    line = "**Unverified**: 3 candidate finding(s) posted without verification, because " + why
    assert line in review["body"], review["body"][:600]
    assert review["comments"] and all("**unverified**" in c["body"] for c in review["comments"])
    assert len(posted_fingerprints(_posted_text(box, number).split("\n"))) == 3  # every candidate, none lost
    assert check["conclusion"] == "success" and check["output"]["title"].endswith("(unverified)")
    assert "Unverified" in check["output"]["summary"]


def test_a_failed_verify_run_posts_the_candidates_labelled_unverified(tmp_path):
    fault = FaultRule("stop_reason", probability=1.0, stop_reason="bogus_stop", agent="verify")
    plan = FaultPlan(rules=[fault], scripted=SCRIPT)
    with sandbox(tmp_path, faults=plan, sweep_interval=None, visibility_timeout=6) as box:
        number = _open(box)
        head = _review(box, number, "verify-failed")
        run = _verify_run(number, head)
        assert run["status"] == "failed" and "bogus_stop" in run["error"]
        _assert_unverified(box, number, head, "verification failed (unknown stop_reason 'bogus_stop')")


def test_an_unaffordable_verify_run_posts_the_candidates_labelled_unverified(tmp_path):
    # The file jobs' calls fit the day's $1.20 (each reserved at its worst case, two at a time: a review call's is
    # about $0.45); the verify run's first call on a dearer model (its worst case $1.50 at 16,000 max_tokens) does
    # not: it is deferred to the next budget day.
    params = {"DailyBudgetUsd": 1.2, "AgentMaxConcurrency": 2, "VerifyModel": "claude-opus-4-1"}
    with sandbox(
        tmp_path,
        parameters=params,
        faults=FaultPlan(scripted=SCRIPT),
        sweep_interval=None,
        visibility_timeout=6,
    ) as box:
        number = _open(box)
        head = _review(box, number, "verify-budget")
        run = _verify_run(number, head)
        assert run["status"] == "deferred" and "budget daily reached" in run["error"], run.get("error")
        assert [parse_message(e["job"]).path for e in deferrals.deferred_jobs()] == ["/verify/final"]
        _assert_unverified(box, number, head, "verification deferred (budget daily reached")


def test_require_verification_holds_the_findings_until_a_later_verify_run_succeeds(tmp_path, clock_offset):
    from prfleet.cost import circuit

    # The verify run's first call meets the API's spend limit: the circuit opens and the verify job waits for it.
    limit = FaultRule("spend_limit_workspace", probability=1.0, agent="verify")
    plan = FaultPlan(rules=[limit], scripted=SCRIPT)
    with sandbox(tmp_path, faults=plan, sweep_interval=None, visibility_timeout=6) as box:
        number = _open(box, "require_verification = true\n")
        head = _review(box, number, "verify-held")
        assert _verify_run(number, head)["status"] == "deferred"
        (check,) = json.loads(
            json.dumps(box.github.check_runs_for(head))
        )  # as it is now (the fake updates it)
        held = [r for r in box.github.reviews if r["number"] == number]
        assert heads.head_record(REPO, number, head).posted is None  # the posting is not claimed while held
        # The limit is raised: the sweeper's probe closes the circuit and re-queues the verify job, which posts.
        box.model.set_faults(FaultPlan(scripted=SCRIPT))
        clock_offset(circuit.PROBE_EVERY_S + 1)
        counts = box.stack.sweep()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not [r for r in box.github.reviews if r["number"] == number]:
            time.sleep(0.5)
        assert box.stack.wait_idle(timeout=120)
        reviews = [r for r in box.github.reviews if r["number"] == number]
        (after,) = box.github.check_runs_for(head)

    assert held == [] and (check["status"], check["conclusion"]) == ("completed", "neutral")
    assert check["output"]["title"] == "3 finding(s) held until they are verified"
    summary = check["output"]["summary"]
    assert "require_verification" in summary and "verification deferred (model calls paused" in summary
    assert counts["probed"] == 1 and counts["requeued"] == 1
    (review,) = reviews  # posted once, verified
    assert "Verified: 3 candidate(s): 1 kept, 1 dropped, 1 merged" in review["body"]
    assert DROPPED not in json.dumps(review)
    assert after["conclusion"] == "success" and "1 dropped" in after["output"]["summary"]


def test_verification_off_posts_every_candidate_as_before(tmp_path):
    with sandbox(
        tmp_path,
        parameters={"Verification": "off"},
        faults=FaultPlan(scripted=SCRIPT),
        sweep_interval=None,
        visibility_timeout=6,
    ) as box:
        number = _open(box)
        head = _review(box, number, "verify-off")
        runs = job_runs.runs_of_head(REPO, number, head)
        (review,) = [r for r in box.github.reviews if r["number"] == number]
        (check,) = box.github.check_runs_for(head)

    assert "verify" not in {r["agent"] for r in runs}  # no verify job, no cost
    assert len(posted_fingerprints(_posted_text(box, number).split("\n"))) == 3
    assert DROPPED in json.dumps(review)
    for text in (review["body"], check["output"]["summary"], *[c["body"] for c in review["comments"]]):
        assert "erified" not in text  # neither "Verified" nor "unverified": exactly as before
    assert "text" not in check["output"] or not check["output"]["text"]
