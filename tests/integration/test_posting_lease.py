"""One poster at a time per PR (posting.lease_posting): reading what is already posted, posting the review and recording
its fingerprints happen under the PR's lease, so two postings at once never post the same comment twice (found by
the soak with a spend limit: one inline comment in two reviews 2 s apart). Against the moto server in its own
process (the in-process mock loses concurrent updates; tables from test_budget_billing's env)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from prfleet.pipeline import fanin
from prfleet.store import heads, job_runs, posting
from tests.integration.test_budget_billing import endpoint, env  # noqa: F401 - fixtures

REPO, N, HEAD = "o/r", 7, "c" * 40
PATCH = "@@ -1,2 +1,4 @@\n import os\n+x = eval(s)\n+y = 2\n z = 3"


def test_the_lease_is_one_owners_until_given_back_or_expired(env):  # noqa: F811 - the fixture imported above
    assert posting.lease_posting(REPO, N, "a", now=1000)
    assert not posting.lease_posting(REPO, N, "b", now=1001)  # held
    assert posting.lease_posting(
        REPO, N, "a", now=1001
    )  # ours again: a retry after a lost response is not refused
    posting.release_posting(REPO, N, "b")  # not b's to give back
    assert not posting.lease_posting(REPO, N, "b", now=1002)
    posting.release_posting(REPO, N, "a")
    assert posting.lease_posting(REPO, N, "b", now=1003)
    # a poster that died: the next one gets in after POST_LEASE_S, and the dead one cannot give it back
    assert not posting.lease_posting(REPO, N, "c", now=1003 + posting.POST_LEASE_S - 1)
    assert posting.lease_posting(REPO, N, "c", now=1003 + posting.POST_LEASE_S + 1)
    posting.release_posting(REPO, N, "b")
    assert not posting.lease_posting(REPO, N, "d", now=1003 + posting.POST_LEASE_S + 2)
    assert posting.lease_posting(REPO, 8, "d", now=1003)  # another PR: its own lease


class SlowGitHub:
    """The reviews GitHub received; posting one takes a while, as it does with annotations and retries. With
    `together`, each posting waits inside create_review until the other is there too: both read what was posted
    before either records its own, the overlap the lease must survive, whatever order the threads get the CPU in
    (with the 0.5 s alone, a second thread started late on a busy machine saw the first's fingerprints)."""

    def __init__(self, *, together: bool = False) -> None:
        self.reviews: list[list[dict]] = []
        self.lock = threading.Lock()
        self.together = threading.Barrier(2, timeout=60) if together else None

    def find_review(self, *_a, **_k):
        return None

    def create_review(self, repo, number, head, body, comments, *, marker):
        if self.together is not None:
            self.together.wait()
        time.sleep(0.5)
        with self.lock:
            self.reviews.append(list(comments))

    def upsert_issue_comment(self, *_a, **_k):
        return None


def _run(job_id: str, line: int) -> dict:
    finding = {"path": "app.py", "line": line, "severity": "high", "category": "bug", "title": "eval of input",
               "body": "eval runs whatever the string holds", "suggestion": None}  # fmt: skip
    return {
        "sk": f"RUN#{HEAD}#{job_id}",
        "agent": "review",
        "status": "succeeded",
        "findings": json.dumps([finding]),
    }


@pytest.mark.parametrize("leased", [True, False])
def test_two_postings_at_once_never_post_the_same_comment_twice(env, monkeypatch, leased):  # noqa: F811
    """A head's final review and a follow-up (or two heads of the PR) posting at the same moment, both holding the
    same finding: with the lease the second sees the first's fingerprints and posts no comment again. Without it
    (the `leased=False` case puts the old behaviour back) the comment is posted twice: the test can fail."""
    runs = [_run("j1", 2)]
    monkeypatch.setattr(heads, "current_head", lambda *_: HEAD)
    monkeypatch.setattr(job_runs, "runs_of_head", lambda *_: runs)
    monkeypatch.setattr(fanin, "_patches", lambda *_: {"app.py": PATCH})
    if not leased:
        monkeypatch.setattr(fanin, "_lease", lambda *_a, **_k: None)
    gh = SlowGitHub(together=not leased)  # leased: the second poster waits on the lease, not in the post
    records = [
        heads.HeadRecord(REPO, N, HEAD, planned=1, done_ids={"j1"}, posted=None),
        heads.HeadRecord(REPO, N, HEAD, planned=1, done_ids={"j1"}, posted="partial"),
    ]
    threads = [
        threading.Thread(target=fanin._publish, args=(gh, record, claim))
        for record, claim in zip(records, ("partial", "final"), strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    posted = [f"{c['path']}:{c['line']}" for review in gh.reviews for c in review]
    if leased:
        assert posted == ["app.py:2"], gh.reviews
        # and the lease was given back: the next poster gets it at once
        assert posting.lease_posting(REPO, N, "next")
    else:
        assert posted == ["app.py:2", "app.py:2"], gh.reviews  # the defect the lease removes


def test_a_poster_that_cannot_get_the_lease_leaves_the_posting_to_the_redelivery(env, monkeypatch):  # noqa: F811
    assert posting.lease_posting(REPO, 9, "someone-else")
    record = heads.HeadRecord(REPO, 9, HEAD, planned=1, done_ids={"j1"})
    ticks = iter(range(0, 1000, 5))
    with pytest.raises(posting.PostingBusy):
        fanin._lease(record, "me", clock=lambda: float(next(ticks)), sleep=lambda _s: None)


def test_a_post_claim_whose_response_was_lost_is_still_ours(env, endpoint):  # noqa: F811 - fixtures imported above
    """DynamoDB applies the claim and answers 500; botocore's retry fails the condition on our own write. That is
    our claim: refusing it left the head with nobody to post (a finished head without review or check, found by the
    default-scale soak)."""
    from prfleet_local.stack.moto_proc import FaultPlan, FaultRule
    from tests.integration.test_run_outcome import _faults

    heads.record_plan(REPO, 11, HEAD, planned=1, skipped_files=[], repo_config=None, check_run_id=None,
                      installation_id=None, now=1000)  # fmt: skip
    record = heads.HeadRecord(REPO, 11, HEAD, planned=1, done_ids={"j1"})
    heads.record_outcome(_job(11), "succeeded")
    _faults(endpoint, FaultPlan([FaultRule("lost_response", operations=["UpdateItem"], requests=[1])]))
    try:
        assert posting.claim_post(record) == "final"
    finally:
        _faults(endpoint, FaultPlan())
    assert posting.claim_post(record) is None  # and nobody else gets it


def _job(number: int):
    from prfleet.jobs import FileJob

    return FileJob(REPO, number, HEAD, "b" * 40, "app.py", "blob", "review", None, "d-1")


def test_a_verify_send_whose_response_was_lost_is_still_ours(env, endpoint):  # noqa: F811 - fixtures imported above
    """The right to send a head's verify job (heads.mark_verify_sent), applied by DynamoDB with its answer lost:
    botocore's retry meets our own write. Refusing it meant nobody sent the verify job and the head waited for
    it forever: a finished current head without a review or check (the CI soak on 7078613)."""
    from prfleet_local.stack.moto_proc import FaultPlan, FaultRule
    from tests.integration.test_run_outcome import _faults

    heads.record_plan(REPO, 12, HEAD, planned=1, skipped_files=[], repo_config=None, check_run_id=None,
                      installation_id=None, now=1000)  # fmt: skip
    record = heads.HeadRecord(REPO, 12, HEAD, planned=1, done_ids={"j1"})
    _faults(endpoint, FaultPlan([FaultRule("lost_response", operations=["UpdateItem"], requests=[1])]))
    try:
        assert heads.mark_verify_sent(record, "final")
    finally:
        _faults(endpoint, FaultPlan())
    assert not heads.mark_verify_sent(record, "final")  # and nobody else gets it
    assert heads.mark_verify_sent(record, "partial")  # another claim: its own right
    heads.unmark_verify_sent(record, "final")  # a failed send gives it back
    assert heads.mark_verify_sent(record, "final")
