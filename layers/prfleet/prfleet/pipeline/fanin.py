"""Fan-in: every job of a PR head reports here; the worker that completes the set posts one review and the check.

A conditional write (posting.claim_post) makes posting happen once per head ('partial' when jobs wait on the budget,
then 'final' when they have run); fingerprints already posted on the PR are never posted again.

What is posted for a head:
- one COMMENT review: at most MaxInlineComments inline comments on lines that are part of the diff (the noise
  budget, a .prfleet.toml may lower it; render's docstring has the ranking), every other finding in the body
  (a 422 on an inline comment re-plans the review with everything folded, render.build_review(inline=False));
- the PR's summary issue comment, edited in place (hidden marker render.SUMMARY_MARKER);
- the check run completed: success, neutral when the budget deferred work or a newer head superseded this one,
  failure only when jobs errored; annotations go 50 per request (prfleet.github.update_check_run).
A superseded head gets nothing but its check completed as neutral with the reason.

The verification pass (issue 24; Verification on, and the head has candidates): before a posting is claimed, its
verify jobs are sent once per head and claim (heads.mark_verify_sent, a conditional write): one, or one per
VerifyCandidatesPerRun candidates, run in parallel (pipeline.verification.split); the posting waits for them and,
once the last has ended (finish_verify), posts only what the verdicts keep (pipeline.verification.decide). A
verify job that could not run (deferred, failed, no verdicts) posts its candidates labelled unverified, or, when
the repository's .prfleet.toml sets require_verification, holds the posting: the check run says so and why, and
it is posted when a later verify run succeeds (a deferred verify job comes back with the sweeper).

GitHub errors while posting: 401/403/404 (and other 4xx) cannot be fixed by retrying, so the check run is completed
as failure with the client's explanation (when GitHub still lets us) and the error is logged; rate limits, 5xx and
network errors release the claim and re-raise, so the SQS redelivery posts later (a review already posted for this
claim is remembered on the head record and not posted twice).
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections import defaultdict
from typing import Any

from prfleet.agents import verify_spec
from prfleet.agents.findings import relation_in
from prfleet.config import repo_config, settings
from prfleet.github import GitHubError, GitHubRateLimited, GitHubUnprocessable
from prfleet.jobs import FileJob, PrJob, sqs
from prfleet.observability import tracing
from prfleet.observability.metrics import make_metrics, publish_feedback
from prfleet.pipeline import render, suppression, verification, verify_text
from prfleet.pipeline.render import CHECK_NAME
from prfleet.repository import instructions
from prfleet.store import feedback, headfiles, heads, job_runs, posting

log = logging.getLogger(__name__)
_COUNTED = frozenset(job_runs.FINAL | {"deferred"})


def start_check(gh: Any, job: PrJob, *, planned: int) -> int | None:
    """Check run for the head: queued, then in progress while its jobs run.

    Only GitHub Apps may write check runs ("Write permission for the REST API to interact with checks is only
    available to GitHub Apps", https://docs.github.com/en/rest/checks/runs): with a plain token (or an app without
    checks: write) GitHub answers 403/404, and the review goes ahead without a check run (None), with a log line.
    """

    try:
        run = gh.create_check_run(
            job.repo,
            CHECK_NAME,
            job.head_sha,
            status="queued",
            external_id=render.check_external_id(job.number, job.delivery_id),
        )
    except GitHubError as exc:
        if exc.status not in (403, 404):
            raise
        log.warning(
            "no check run: GitHub refused to create one (a token cannot write checks; an app needs checks: write)",
            extra={
                "event": "check_run_refused",
                "status": exc.status,
                "reason": str(exc),
                "repository": job.repo,
            },
        )
        return None
    return mark_in_progress(gh, job.repo, int(run["id"]), planned)


def mark_in_progress(gh: Any, repo: str, run_id: int, planned: int) -> int:
    """The check run in progress with its planned job count (a created run, or one a retried planner reuses)."""
    gh.update_check_run(
        repo,
        run_id,
        status="in_progress",
        output={
            "title": f"Reviewing: {planned} jobs",
            "summary": f"{planned} agent jobs planned for this head.",
        },
    )
    return run_id


def finish_job(client_for: Any, job: FileJob, outcome: str) -> str | None:
    """Count a job's outcome; if that completes its head, post. Returns what was posted ('partial'/'final')."""
    if verification.is_verify_job(job):
        return finish_verify(client_for, job, outcome)
    with tracing.subsegment("fan_in") as span:
        record = heads.record_outcome(job, outcome)
        if record is None:  # this outcome was already counted (redelivery): maybe the post is still owed
            record = heads.head_record(job.repo, job.number, job.head_sha)
            if record is None:
                return None
        posted = _post(client_for, record, job.delivery_id)
        span.metadata(outcome=outcome, posted=posted)
        return posted


def finish_verify(client_for: Any, job: FileJob, outcome: str) -> str | None:
    """Count the outcome of a head's verify job (once); then post the posting it verified, if it is still owed."""
    claim, part, parts = verification.part_of(job)
    with tracing.subsegment("fan_in") as span:
        key = verification.part_key(claim, part, parts)
        record = heads.record_verify_outcome(job.repo, job.number, job.head_sha, key, outcome)
        if record is None:  # counted already (redelivery), or the head is gone
            record = heads.head_record(job.repo, job.number, job.head_sha)
            if record is None:
                return None
        posted = _post(client_for, record, job.delivery_id)
        span.metadata(outcome=outcome, posted=posted, verify=key)
        return posted


def post_if_ready(gh: Any, repo: str, number: int, head_sha: str, delivery_id: str = "-") -> str | None:
    record = heads.head_record(repo, number, head_sha)
    return _post(lambda _installation: gh, record, delivery_id) if record else None


def _post(client_for: Any, record: heads.HeadRecord, delivery_id: str = "-") -> str | None:
    if settings().verification and _waits_for_verification(client_for, record, delivery_id):
        return None
    claim = posting.claim_post(record)
    if claim is None:
        return None
    gh = client_for(record.installation_id)
    try:
        _publish(gh, record, claim)
    except Exception as exc:
        permanent = (
            isinstance(exc, GitHubError)
            and not isinstance(exc, GitHubRateLimited)
            and 400 <= exc.status < 500
        )
        if not permanent:
            posting.release_post(record, claim)  # let the redelivered job post
            raise
        log.error(
            "posting the review failed",
            extra={
                "event": "error",
                "error_type": type(exc).__name__,
                "status": exc.status,
                "reason": str(exc),
                "repository": record.repo,
                "pr": record.number,
                "head_sha": record.head_sha,
            },
        )
        try:
            _complete_check(
                gh,
                record,
                "failure",
                f"prfleet could not post its review (GitHub {exc.status})",
                str(exc),
                [],
            )
        except GitHubError:
            pass  # the same credentials usually fail here too; the log line above carries the reason
    return claim


def _waits_for_verification(client_for: Any, record: heads.HeadRecord, delivery_id: str) -> bool:
    """Whether the posting this record owes waits for its verify jobs: sent now (once per head and claim), still
    running, or held for the repository's require_verification. False: post now (verified, unverified, nothing
    to verify, or no posting owed, which claim_post then refuses)."""
    want = posting.wanted_claim(record)
    if want is None:
        return False
    if want in record.verify_sent:
        if not verify_ended(record, want):
            return True  # on their way: the last one's ending posts
        return _hold(client_for, record, want)
    found = verification.to_verify(head_candidates(record))
    if not found:
        return False  # nothing to verify: posted as before
    parts = _verify_parts(record, found)
    if heads.mark_verify_sent(record, want, parts):
        record.verify_parts[want] = parts
        jobs = verification.verify_jobs(record, want, delivery_id)
        try:
            for job in jobs:
                job_runs.reopen_run(job)  # a head planned again verifies again (its earlier run was finished)
            sqs.send_file_jobs(jobs)
        except Exception:
            heads.unmark_verify_sent(record, want)  # let a redelivery send them
            raise
    return True


def _verify_parts(record: heads.HeadRecord, found: list[dict[str, Any]]) -> int:
    """How many verify runs the posting's candidates are split over: VerifyCandidatesPerRun each, as many as the
    PR's budget (PrBudgetUsd less what this head's jobs cost) can hold calls of reserved at once."""
    cfg = settings()
    spec = verify_spec(cfg)
    spent = sum(int(r.get("cost_micros") or 0) for r in _counted_runs(record))
    room = int(cfg.pr_budget_usd * 1_000_000) - spent
    at_once = (
        None
        if spec is None
        else verification.calls_at_once(room, spec.model, spec.max_tokens, cfg.inference_geo)
    )
    return verification.parts_for(found, cfg.verify_candidates_per_run, at_once)


def verify_ended(record: heads.HeadRecord, claim: str) -> bool:
    """Whether every verify job of the posting `claim` has ended (or was deferred: it comes back later)."""
    ended = record.verify_done | record.verify_deferred
    parts = record.verify_parts.get(claim, 1)
    return all(verification.part_key(claim, i, parts) in ended for i in range(parts))


def verify_runs(record: heads.HeadRecord, claim: str) -> list[dict[str, Any] | None]:
    """The run record of each verify job of the posting `claim` (None for a job with no run)."""
    return [job_runs.get_run(job) for job in verification.verify_jobs(record, claim, "-")]


def _hold(client_for: Any, record: heads.HeadRecord, claim: str) -> bool:
    """Hold the posting when one of its verify jobs ended without verdicts and the repository requires
    verification: the check run says what is held and why (completed, neutral). A superseded head is never
    held."""
    if not repo_config.requires_verification(record.repo_config):
        return False
    runs = verify_runs(record, claim)
    if any((run or {}).get("status") == "superseded" for run in runs):
        return False
    missing = [run for run in runs if verification.lacks_verdicts(run)]
    if not missing:
        return False
    found = head_candidates(record)
    if not found:
        return False
    reason = verification.why_unverified(missing[0])
    waiting = any((run or {}).get("status") == "deferred" for run in missing)
    _complete_check(
        client_for(record.installation_id),
        record,
        "neutral",
        f"{len(found)} finding(s) held until they are verified",
        verify_text.held_note(len(found), reason, comes_back=waiting),
        [],
    )
    log.warning(
        "findings held: verification could not run",
        extra={
            "event": "verification_held",
            "reason": reason,
            "repository": record.repo,
            "pr": record.number,
        },
    )
    return True


def head_candidates(record: heads.HeadRecord) -> list[dict[str, Any]]:
    """The head's candidates for the verify run: its counted runs' findings to post (pre-existing ones held back
    unless the repository reports them), less those already posted on the PR (pipeline.verification)."""
    findings, _hidden, _dismissed = _to_post(_counted_runs(record), record)
    return verification.candidates(findings, posting.recorded_fingerprints(record.repo, record.number))


def _to_post(
    runs: list[dict[str, Any]], record: heads.HeadRecord
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The head's findings to post, and those held back: pre-existing ones (unless the repository reports them)
    and those like a finding the team dismissed ("ignore this", issue 25: counted, never posted nor verified)."""
    findings, hidden = split_preexisting(
        [f for r in runs for f in _findings(r)], repo_config.reports_preexisting(record.repo_config)
    )
    findings, dismissed = suppression.suppressed(findings, feedback.rules(record.repo))
    return findings, hidden, dismissed


def _count_suppressed(dismissed: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
    """FindingsSuppressed per agent, model and category (observability.metrics.publish_feedback). A Metrics made
    now shares the handler's metric set, which the handler flushes (one made at import may never be flushed)."""
    models = {(r.get("path"), r.get("agent")): r.get("model") for r in runs}
    metrics = make_metrics()
    for f in dismissed:
        model = models.get((f.get("path"), f.get("agent")))
        publish_feedback(
            metrics, "FindingsSuppressed", 1, agent=f.get("agent"), model=model, category=f.get("category")
        )


# How long a poster waits for another's lease on the PR before leaving the posting to its message's redelivery.
POST_WAIT_S = 15.0


def _lease(
    record: heads.HeadRecord, owner: str, *, clock: Any = time.monotonic, sleep: Any = time.sleep
) -> None:
    """Wait for the PR's posting lease (posting.lease_posting); PostingBusy after POST_WAIT_S."""
    ends = clock() + POST_WAIT_S
    while not posting.lease_posting(record.repo, record.number, owner):
        if clock() >= ends:
            raise posting.PostingBusy(f"another worker is posting on {record.repo}#{record.number}")
        sleep(random.uniform(0.2, 0.6))


def _publish(gh: Any, record: heads.HeadRecord, claim: str) -> None:
    head_now = heads.current_head(record.repo, record.number)
    if head_now and head_now != record.head_sha:
        counts = _counts(_counted_runs(record), record)
        superseded = sum(row.get("superseded", 0) for row in counts.values())
        _complete_check(
            gh,
            record,
            "neutral",
            "Superseded by a newer commit",
            f"A newer head ({head_now[:12]}) replaced this one; its review is posted there. "
            f"{superseded} job(s) of this head were skipped before any model call.",
            [],
        )
        return
    owner = f"{claim}:{uuid.uuid4().hex}"
    _lease(record, owner)
    try:
        _publish_leased(gh, record, claim)
    finally:
        posting.release_posting(record.repo, record.number, owner)


def _publish_leased(gh: Any, record: heads.HeadRecord, claim: str) -> None:
    """The review, the summary and the check, with the PR's posting lease held: what is already posted is read,
    and what this review adds is recorded, before any other poster of the PR reads it."""
    runs = _counted_runs(record)
    counts = _counts(runs, record)
    findings, hidden, dismissed = _to_post(runs, record)
    if claim == "final":  # once per review cycle: a partial posting's are counted again in the final one
        _count_suppressed(dismissed, runs)
    already = posting.recorded_fingerprints(record.repo, record.number)
    checked, ran = _verified(record, claim, findings, already)
    if ran:  # their cost in the table, never a failed job
        counts["verify"] = _verify_row(ran)
    if checked.state != "off":  # the kept (or labelled) candidates, and those already posted (not repeated)
        fresh = {verification.fingerprint_in(f) for f in verification.candidates(findings, already)}
        findings = checked.posted + [f for f in findings if verification.fingerprint_in(f) not in fresh]
    listed = headfiles.load(record.repo, record.number, record.head_sha)
    patches = _patches(gh, record, listed)
    told = applied_instructions(record, listed, [str(r.get("path") or "") for r in runs])
    no_snapshot = snapshot_reasons(runs)

    def plan(inline: bool = True) -> render.ReviewPlan:
        return render.build_review(
            findings,
            patches,
            counts,
            already_posted=already,
            skipped_files=record.skipped_files,
            inline=inline,
            head_sha=record.head_sha,
            repo=record.repo,
            web=render.web_url(settings().github_api_url),
            instructions=told,
            no_snapshot=no_snapshot,
            max_comments=repo_config.inline_comment_cap(settings().max_inline_comments, record.repo_config),
            preexisting_hidden=len(hidden),
            suppressed=len(dismissed),
            verification=checked,
        )

    review = plan()
    if review.comments or review.folded or claim == "final" or record.waiting_on_budget:
        review = _post_review(gh, record, claim, review, plan)
    gh.upsert_issue_comment(record.repo, record.number, render.SUMMARY_MARKER, review.summary)
    posting.record_fingerprints(record.repo, record.number, review.fingerprints)
    fail_on = repo_config.fail_on_policy(settings().fail_on, record.repo_config)
    reasons = [str(r.get("error") or "") for r in runs if r.get("status") == "deferred"]
    conclusion, title, text = render.check_conclusion(
        counts,
        findings=findings,
        fail_on=fail_on,
        deferred_reasons=reasons,
        outside_diff=len(review.outside),
        no_snapshot=no_snapshot,
        placement=review.placement,
        preexisting_hidden=len(hidden),
        suppressed=len(dismissed),
        verification=checked,
    )
    _complete_check(
        gh,
        record,
        conclusion,
        title,
        text,
        render.annotations(findings),
        verify_text.verification_details(checked),
    )


def _verified(
    record: heads.HeadRecord, claim: str, findings: list[dict[str, Any]], already: set[str]
) -> tuple[verification.Verification, list[dict[str, Any]]]:
    """What the verification pass makes of this posting (the verify runs' verdicts applied, or the candidates
    labelled unverified; "off" when no verify job was sent for it: Verification off, nothing to verify), and
    the verify jobs' finished runs."""
    sent = settings().verification and claim in record.verify_sent
    runs = verify_runs(record, claim) if sent else []
    found = verification.candidates(findings, already)
    checked = verification.decide(found, runs, enabled=sent, require=False)
    return checked, [r for r in runs if r and r.get("status") in job_runs.FINAL]


def _verify_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The verify runs' row of the summary table: their cost, counted as ran (or cached) when they produced
    verdicts; a verify run that failed is not a failed review job (its candidates were posted unverified, and
    say so)."""
    statuses = [str(r.get("status")) for r in runs]
    return {
        "findings": 0,
        "cost_micros": sum(int(r.get("cost_micros") or 0) for r in runs),
        "succeeded": sum(s in ("succeeded", "partial") for s in statuses),
        "cached": sum(s == "cached" for s in statuses),
        "skipped": sum(s in ("skipped", "superseded") for s in statuses),
    }


def _post_review(
    gh: Any, record: heads.HeadRecord, claim: str, review: render.ReviewPlan, replan: Any
) -> render.ReviewPlan:

    if posting.review_posted(record, claim):  # a retry after a later step failed: the review is already there
        return review
    marker = render.review_marker(record.head_sha, claim, record.check_run_id or "-")
    # Posted by an attempt that died before it could record it (a timeout after the POST): never twice.
    if gh.find_review(record.repo, record.number, record.head_sha, marker) is not None:
        posting.mark_review_posted(record, claim)
        return review
    try:
        gh.create_review(
            record.repo, record.number, record.head_sha, review.body, review.comments, marker=marker
        )
    except GitHubUnprocessable as exc:
        if not review.comments:
            raise
        # GitHub would not anchor an inline comment (e.g. the line left the diff): same review, all in the body.
        log.warning(
            "inline comments refused; folding them into the review body",
            extra={"event": "review_folded", "reason": str(exc), "comments": len(review.comments)},
        )
        review = replan(inline=False)
        gh.create_review(record.repo, record.number, record.head_sha, review.body, [], marker=marker)
    posting.mark_review_posted(record, claim)
    return review


def _complete_check(
    gh: Any,
    record: heads.HeadRecord,
    conclusion: str,
    title: str,
    text: str,
    annotations: list[dict[str, Any]],
    details: str = "",
) -> None:
    """The check run completed; `details` (the verifier's dropped and merged findings) goes to output.text, the
    check run's details page (Markdown, at most 65,535 characters: verify_text.verification_details keeps to it)."""
    if record.check_run_id is None:
        return
    output: dict[str, Any] = {"title": title, "summary": text[:65_535], "annotations": annotations}
    if details:
        output["text"] = details
    gh.update_check_run(
        record.repo,
        record.check_run_id,
        status="completed",
        conclusion=conclusion,
        output=output,
    )


def _findings(run: dict[str, Any]) -> list[dict[str, Any]]:
    raw = run.get("findings")
    if not raw:
        return []
    items = json.loads(raw) if isinstance(raw, str) else raw
    for f in items:
        f.setdefault("agent", run.get("agent"))
    return items


def split_preexisting(
    findings: list[dict[str, Any]], report_preexisting: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(posted, held back): pre-existing findings are held back unless the repository's .prfleet.toml sets
    report_preexisting. Held-back findings stay in their run records and are counted in the review and the check;
    a finding without a relation (stored before relations existed) reads as "changed" and is posted."""
    if report_preexisting:
        return findings, []
    posted = [f for f in findings if relation_in(f) != "preexisting"]
    return posted, [f for f in findings if relation_in(f) == "preexisting"]


def _job_id(run: dict[str, Any]) -> str:
    return str(run.get("sk", "")).rsplit("#", 1)[-1]


def _counted_runs(record: heads.HeadRecord) -> list[dict[str, Any]]:
    return [
        r for r in job_runs.runs_of_head(record.repo, record.number, record.head_sha) if _counted(r, record)
    ]


def _counted(run: dict[str, Any], record: heads.HeadRecord) -> bool:
    """Only runs whose outcome the head record counted (a late run of a re-planned head is not in the set)."""
    return _job_id(run) in (record.done_ids | record.deferred_ids)


def _counts(runs: list[dict[str, Any]], record: heads.HeadRecord) -> dict[str, dict[str, Any]]:
    """Per agent: findings, cost and outcome counts, for the summary and the check conclusion.

    A complete head has only finished or deferred runs (runs are claimed and finished conditionally); a run seen
    in any other state (a deferred job re-queued and running again) counts as deferred: its outcome is owed,
    it is not a failure.
    """
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
        if status not in _COUNTED:
            status = "deferred"
        row[status] = row.get(status, 0) + 1
        row["findings"] += len(_findings(run))
        row["cost_micros"] += int(run.get("cost_micros") or 0)
    if record.skipped_files:
        rows["(files)"]["skipped"] = len(record.skipped_files)
    return dict(rows)


def snapshot_reasons(runs: list[dict[str, Any]]) -> list[str]:
    """Why the head's jobs ran without the repository's snapshot (each reason once, in run order): the review
    and the check say so, since grep then saw only the changed files and the files read."""
    return list(dict.fromkeys(str(r["snapshot_reason"]) for r in runs if r.get("snapshot_reason")))


def applied_instructions(
    record: heads.HeadRecord, listed: headfiles.HeadFiles | None, paths: list[str]
) -> list[str]:
    """Which of the repository's own instructions the reviewed files were given (the review page lists them):
    the base's instruction files and the .prfleet.toml entries that apply to at least one of `paths`."""
    try:
        files = instructions.load_instructions(listed.instructions) if listed else []
        cfg = repo_config.parse_repo_config(record.repo_config) if record.repo_config else None
    except (ValueError, repo_config.RepoConfigError):  # the jobs reviewed without them too (runner)
        return []
    told = {i.source: None for p in paths if p for i in instructions.for_file(files, cfg, p) if i.text}
    return list(told)


def _patches(gh: Any, record: heads.HeadRecord, listed: headfiles.HeadFiles | None) -> dict[str, str]:
    """The head's patches as the planner listed them (prfleet.headfiles); GitHub only if that list is missing."""

    if listed is not None:
        return {f["filename"]: f.get("patch", "") for f in listed.files}
    files, _more = gh.pr_files(record.repo, record.number, max_files=settings().max_files)
    return {f["filename"]: f.get("patch", "") for f in files}
