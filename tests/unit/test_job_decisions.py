"""The job's decisions (prfleet.pipeline.endings): pure functions of the job and what was read, no AWS. Each says
how an attempt ends: the run's outcome and fields, the event, whether the claim is ours, whether another delivery's
outcome counts instead, what is deferred or re-sent, and what the Outcome reports."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from prfleet.cost.ledger import BudgetExceeded
from prfleet.jobs import FileJob, parse_message
from prfleet.pipeline import endings

SPEC = SimpleNamespace(name="review", model="claude-haiku-5-5")


def job(**kw) -> FileJob:
    fields = dict(
        repo="o/r",
        number=7,
        head_sha="a" * 40,
        base_sha="e" * 40,
        path="src/app.py",
        blob_sha="b" * 40,
        agent="review",
        installation_id=1,
        delivery_id="d-1",
    )
    fields.update(kw)
    return FileJob(**fields)


# ---------------------------------------------------------------- before the claim


def test_a_job_that_may_go_on_has_no_ending_before_its_claim():
    assert endings.before_claim(job(), SPEC, current_head="a" * 40, max_attempts=5) is None
    assert endings.before_claim(job(), SPEC, current_head=None, max_attempts=5) is None  # no head seen yet


def test_a_disabled_agent_is_skipped_without_a_claim_and_a_finished_run_counts_instead():
    end = endings.before_claim(job(agent="security"), None, current_head="a" * 40, max_attempts=5)
    assert end.status == "skipped"
    assert end.reason == "agent 'security' is disabled for this repository"
    assert end.values == {"error": end.reason}
    assert end.fields == {"reason": end.reason, "path": "src/app.py"}
    assert (end.claimed, end.count_theirs, end.deferral, end.retry) == (False, True, None, None)


def test_a_moved_head_supersedes_the_job_before_its_attempts_are_counted():
    end = endings.before_claim(job(attempt=9), SPEC, current_head="c" * 40, max_attempts=5)
    assert end.status == "superseded" and end.reason == "PR head moved to cccccccccccc"
    assert not end.claimed


def test_a_job_out_of_attempts_fails_at_the_limit_not_before():
    assert endings.before_claim(job(attempt=4), SPEC, "a" * 40, max_attempts=5) is None
    end = endings.before_claim(job(attempt=5), SPEC, "a" * 40, max_attempts=5)
    assert end.status == "failed"
    assert end.reason == "gave up after 5 re-queued attempts (MaxJobAttempts 5)"


def test_the_disabled_agent_is_decided_first():
    end = endings.before_claim(job(attempt=9), None, current_head="c" * 40, max_attempts=5)
    assert end.status == "skipped"


def test_a_cached_result_ends_the_job_for_nothing_with_its_findings_on_this_path():
    assert endings.from_cache(job(), SPEC.model, "k" * 64, None) is None
    hit = {"findings": [{"path": "old/name.py", "line": 3, "title": "t"}, {"line": 9}]}
    end = endings.from_cache(job(), SPEC.model, "0123456789abcdefXYZ", hit)
    assert end.status == "cached" and end.findings == 2 and end.reason == ""
    assert json.loads(end.values["findings"]) == [
        {"path": "src/app.py", "line": 3, "title": "t"},
        {"line": 9, "path": "src/app.py"},
    ]
    assert end.values["cost_micros"] == 0 and end.values["model"] == "claude-haiku-5-5"
    assert end.fields == {"cache_key": "0123456789abcdef", "findings": 2, "cost_usd": 0.0}
    assert (end.claimed, end.count_theirs) == (False, True)
    assert hit["findings"][0]["path"] == "old/name.py"  # the cached item is not changed


def test_only_a_result_about_the_reviewed_file_alone_is_cached():
    """A finding in another file (a broken caller) depends on the repository at that head, not on the blob the
    cache is keyed by: such a result is not cached, or a later head that fixed the caller would be told again."""
    own = [{"path": "src/app.py", "line": 3}, {"path": "src/app.py", "line": 9}]
    assert endings.cacheable("src/app.py", own) and endings.cacheable("src/app.py", [])
    assert not endings.cacheable("src/app.py", [*own, {"path": "src/caller.py", "line": 12}])


def test_a_duplicate_is_not_recorded_and_counts_the_finished_run_only_when_asked():
    end = endings.duplicate(job(), "run held by run-x")
    assert (end.status, end.event, end.count_theirs) == ("duplicate", "skipped", False)
    assert end.fields == {"reason": "run held by run-x", "path": "src/app.py", "duplicate": True}
    assert endings.duplicate(job(), "r", count_theirs=True).count_theirs


def test_unclaimed_is_the_sweepers_and_the_last_deliverys_ending_too():
    end = endings.unclaimed(job(), "failed", "stuck twice")
    assert (end.status, end.reason, end.values, end.claimed) == (
        "failed",
        "stuck twice",
        {"error": "stuck twice"},
        False,
    )


# ---------------------------------------------------------------- after the claim


def test_the_cost_cap_reached_by_earlier_attempts_fails_the_claimed_run():
    assert endings.over_cost_cap(job(), carried=999, cap=1000) is None
    end = endings.over_cost_cap(job(), carried=1000, cap=1000)
    assert end.status == "failed" and end.claimed and not end.count_theirs
    assert end.reason == "per-run cost cap $0.0010 reached by earlier attempts ($0.0010)"
    assert end.values == {"error": end.reason, "cost_micros": 1000}
    assert end.cost_micros == 0  # this attempt spent nothing


def test_the_guards_cost_cap_refusal_fails_the_run_with_everything_it_cost():
    end = endings.cost_cap_reached(job(), "m", "cap reached", spent=1500, attempt_cost=500)
    assert end.status == "failed" and end.claimed
    assert end.values == {"error": "cap reached", "model": "m", "cost_micros": 1500}
    assert end.fields == {"reason": "cap reached", "path": "src/app.py"}
    assert end.cost_micros == 500


def test_an_open_circuit_defers_after_the_outcome_is_written_as_the_next_attempt():
    end = endings.circuit_deferral(
        job(attempt=1, spent_micros=100), "m", "limit hit", carried=700, day="2026-01-02"
    )
    assert end.status == "deferred" and end.reason == "model calls paused: limit hit"
    assert end.values == {"error": end.reason, "model": "m", "cost_micros": 700}
    assert end.fields == {"reason": end.reason, "scope": "circuit"}
    assert end.claimed and end.count_theirs  # a run finished elsewhere is counted, not deferred again
    d = end.deferral
    assert (d.day, d.until, d.after_outcome) == ("2026-01-02", "circuit", True)
    assert (d.job.attempt, d.job.spent_micros) == (2, 700)


def test_a_budget_held_by_open_reservations_comes_back_after_the_delay_as_the_next_attempt():
    exc = BudgetExceeded("daily", needed=2_500_000, available=0, cause="reserved")
    end = endings.over_budget(job(), exc, "m", spent=42, day="2026-01-02", retry_delay=37.26)
    assert end.status == "retrying" and end.event == "deferred" and end.deferral is None
    assert end.reason == "budget daily held by open reservations: needs $2.5000, retrying"
    assert end.fields == {"reason": end.reason, "scope": "daily", "until": "retry", "delay_s": 37.3}
    assert end.retry.delay == 37.26
    again = parse_message(end.retry.body)
    assert (again.attempt, again.spent_micros, again.path) == (1, 42, "src/app.py")


def test_a_spent_budget_defers_the_job_to_the_day_before_its_run_says_so():
    exc = BudgetExceeded("pr", needed=3_000_000, available=1_250_000)
    end = endings.over_budget(job(), exc, "m", spent=42, day="2026-01-02", retry_delay=30.0)
    assert end.status == "deferred" and end.retry is None and end.claimed and not end.count_theirs
    assert end.reason == "budget pr reached: needs $3.0000, $1.2500 left"
    assert end.values == {"error": end.reason, "model": "m", "cost_micros": 42}
    assert end.fields == {"reason": end.reason, "scope": "pr"}
    d = end.deferral
    assert (d.day, d.until, d.after_outcome, d.job.attempt) == ("2026-01-02", "day", False, 1)


def test_a_rate_limit_longer_than_the_attempt_re_sends_the_job_after_the_apis_delay():
    result = SimpleNamespace(error="429 rate limited", retry_after=12.0)
    end = endings.rate_limited(job(), result, "m", spent=300, estimated=100)
    assert end.status == "retrying" and end.event == "error" and end.claimed
    assert end.values == {
        "error": "429 rate limited",
        "model": "m",
        "cost_micros": 300,
        "estimated_micros": 100,
    }
    assert end.fields == {"error_type": "RateLimited", "message": "429 rate limited", "retry_after": 12.0}
    assert end.retry.delay == 12.0 and parse_message(end.retry.body).spent_micros == 300
    assert endings.rate_limited(
        job(), SimpleNamespace(error=None, retry_after=1.0), "m", spent=0, estimated=0
    ).reason == ("rate limited")


def _result(status="succeeded", error=None, usage=None):
    return SimpleNamespace(
        status=status, error=error, iterations=3, stop_reason="end_turn", usage=usage or {"input_tokens": 10}
    )


@pytest.mark.parametrize("estimated", [0, 250])
def test_a_completed_run_carries_its_findings_usage_and_every_attempts_cost(estimated):
    guard = SimpleNamespace(
        carried=1000, spent=500, estimated=estimated, estimates=["timeout"] if estimated else []
    )
    findings = [{"path": "src/app.py", "line": 1}]
    items = [{"Put": {}}]
    end = endings.completed(_result(), findings, "m", guard, duration_ms=1234, with_items=items)
    assert (end.status, end.event, end.reason, end.with_items) == ("succeeded", "complete", "", items)
    assert (end.cost_micros, end.findings, end.claimed) == (500, 1, True)
    assert end.values["cost_micros"] == 1500  # the earlier attempts' cost included
    assert end.values["estimated_micros"] == (estimated or None)
    assert end.values["findings"] == json.dumps(findings) and end.values["input_tokens"] == 10
    assert end.fields["cost_usd"] == 0.0005 and end.fields["findings"] == 1
    assert ("estimated_usd" in end.fields) == bool(estimated)


def test_a_failed_run_reports_its_error_as_the_outcomes_reason():
    guard = SimpleNamespace(carried=0, spent=0, estimated=0, estimates=[])
    end = endings.completed(_result("failed", "no report"), [], "m", guard, duration_ms=1, with_items=None)
    assert (end.status, end.reason, end.values["error"]) == ("failed", "no report", "no report")


def test_a_run_without_the_snapshot_records_why_and_one_with_it_clears_an_old_reason():
    guard = SimpleNamespace(carried=0, spent=0, estimated=0, estimates=[])
    why = "the archive was refused: path traversal in 'o-r-1/../x'"
    end = endings.completed(_result(), [], "m", guard, duration_ms=1, with_items=None, snapshot_reason=why)
    assert end.values["snapshot_reason"] == why
    # None removes the attribute (job_runs.finish_run): an earlier attempt's reason does not outlive a snapshot
    again = endings.completed(_result(), [], "m", guard, duration_ms=1, with_items=None)
    assert "snapshot_reason" in again.values and again.values["snapshot_reason"] is None
