"""Fan-in: every job of a PR head reports here; the worker that completes the set posts one review and the check.

A conditional write (state.claim_post) makes posting happen once per head ('partial' when jobs wait on the budget,
then 'final' when they have run); fingerprints already posted on the PR are never posted again.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Any

from prfleet import report, state
from prfleet.jobs import FileJob, PrJob

CHECK_NAME = "prfleet"
log = logging.getLogger(__name__)


def start_check(gh: Any, job: PrJob, *, planned: int) -> int | None:
    """Check run for the head: queued, then in progress while its jobs run."""
    run = gh.create_check_run(
        job.repo, CHECK_NAME, job.head_sha, status="queued", external_id=job.delivery_id
    )
    gh.update_check_run(
        job.repo,
        run["id"],
        status="in_progress",
        output={
            "title": f"Reviewing: {planned} jobs",
            "summary": f"{planned} agent jobs planned for this head.",
        },
    )
    return int(run["id"])


def finish_job(gh_for: Any, job: FileJob, outcome: str) -> str | None:
    """Count a job's outcome; if that completes its head, post. Returns what was posted ('partial'/'final')."""
    record = state.record_outcome(job, outcome)
    if record is None:  # this outcome was already counted (redelivery): maybe the post is still owed
        record = state.head_record(job.repo, job.number, job.head_sha)
        if record is None:
            return None
    return _post(gh_for, record)


def post_if_ready(gh: Any, repo: str, number: int, head_sha: str) -> str | None:
    record = state.head_record(repo, number, head_sha)
    return _post(lambda _installation: gh, record) if record else None


def _post(gh_for: Any, record: state.HeadRecord) -> str | None:
    claim = state.claim_post(record)
    if claim is None:
        return None
    gh = gh_for(record.installation_id)
    head_now = state.current_head(record.repo, record.number)
    runs = state.runs_of_head(record.repo, record.number, record.head_sha)
    counts = _counts(runs, record)
    if head_now and head_now != record.head_sha:
        _complete_check(
            gh,
            record,
            "neutral",
            "Superseded by a newer commit",
            f"A newer head ({head_now[:12]}) replaced this one; its review is posted there.",
            [],
        )
        return claim
    findings = [f for r in runs for f in _findings(r)]
    already = state.posted_fingerprints(record.repo, record.number)
    patches = _patches(gh, record)
    plan = report.build_review(
        findings, patches, counts, already_posted=already, skipped_files=record.skipped_files
    )
    new_fps = {f["fingerprint"] for f in findings if f.get("fingerprint")} - already
    if plan.comments or plan.folded or claim == "final" or record.waiting_on_budget:
        _post_review(gh, record, plan)
    gh.upsert_issue_comment(record.repo, record.number, report.SUMMARY_MARKER, plan.summary)
    state.add_posted_fingerprints(record.repo, record.number, new_fps)
    conclusion, title, text = report.check_conclusion(counts)
    _complete_check(gh, record, conclusion, title, text, report.annotations(findings))
    return claim


def _post_review(gh: Any, record: state.HeadRecord, plan: Any) -> None:
    from prfleet.github import GitHubUnprocessable

    try:
        gh.create_review(record.repo, record.number, record.head_sha, plan.body, plan.comments)
    except GitHubUnprocessable:
        # A line GitHub will not anchor: fold every inline comment into the body rather than lose it.
        body = (
            plan.body
            + "\n\n"
            + "\n\n".join(f"**{c['path']}:{c['line']}**\n{c['body']}" for c in plan.comments)
        )
        gh.create_review(record.repo, record.number, record.head_sha, body[: report.MAX_BODY], [])


def _complete_check(
    gh: Any,
    record: state.HeadRecord,
    conclusion: str,
    title: str,
    text: str,
    annotations: list[dict[str, Any]],
) -> None:
    if record.check_run_id is None:
        return
    gh.update_check_run(
        record.repo,
        record.check_run_id,
        status="completed",
        conclusion=conclusion,
        output={"title": title, "summary": text, "annotations": annotations},
    )


def _findings(run: dict[str, Any]) -> list[dict[str, Any]]:
    raw = run.get("findings")
    if not raw:
        return []
    items = json.loads(raw) if isinstance(raw, str) else raw
    for f in items:
        f.setdefault("agent", run.get("agent"))
    return items


def _counts(runs: list[dict[str, Any]], record: state.HeadRecord) -> dict[str, dict[str, Any]]:
    """Per agent: findings, cost and outcome counts, for the summary and the check conclusion."""
    rows: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "findings": 0,
            "cost_micros": 0,
            "succeeded": 0,
            "partial": 0,
            "failed": 0,
            "cached": 0,
            "deferred": 0,
            "skipped": 0,
            "superseded": 0,
        }
    )
    for run in runs:
        row = rows[run.get("agent", "?")]
        status = run.get("status", "failed")
        if status == "running" or status == "stuck":
            status = "failed"
        row[status] = row.get(status, 0) + 1
        row["findings"] += len(_findings(run))
        row["cost_micros"] += int(run.get("cost_micros") or 0)
    if record.skipped_files:
        rows["(files)"]["skipped"] = len(record.skipped_files)
    return dict(rows)


def _patches(gh: Any, record: state.HeadRecord) -> dict[str, str]:
    from prfleet.config import settings

    files, _more = gh.pr_files(record.repo, record.number, max_files=settings().max_files)
    return {f["filename"]: f.get("patch", "") for f in files}
