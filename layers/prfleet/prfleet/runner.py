"""One file job, start to end: superseded? cached? within budget? run the agent, store, settle, fan in.

Every path ends in a recorded outcome (succeeded / partial / failed / cached / superseded / skipped / deferred) or
in an exception that SQS retries and, after maxReceiveCount, moves to the dead-letter queue with the job intact.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from prfleet import budget, cache, fanin, pricing, state
from prfleet.config import now as config_now
from prfleet.config import settings
from prfleet.jobs import FileJob

DEADLINE_MARGIN_S = 20.0  # leave time to store the result, settle the ledger and post the review


class RetryLater(Exception):
    """The job must come back later (a rate limit longer than the time left): re-sent with a delay of `delay`."""

    def __init__(self, reason: str, delay: float) -> None:
        super().__init__(reason)
        self.delay = delay


@dataclass
class Outcome:
    status: str
    run_id: str
    cost_micros: int = 0
    findings: int = 0
    posted: str | None = None
    reason: str = ""


class LedgerGuard:
    """The agents' CallGuard: reserve the worst case before each model call, settle to the real cost after."""

    def __init__(
        self,
        ledger: budget.Ledger,
        job: FileJob,
        run_id: str,
        model: str,
        emit: Any,
        *,
        clock: Any = config_now,
    ) -> None:
        self.ledger = ledger
        self.model = model
        self.job = job
        self.run_id = run_id
        self.spent = 0  # micro-dollars settled by this attempt
        self.emit = emit
        self.clock = clock
        self.pr_scope = f"pr#{job.repo}#{job.number}"

    def before_call(self, model: str, params: dict[str, Any]) -> budget.Reservation:
        text = json.dumps(
            {k: params.get(k) for k in ("system", "messages", "tools")}, default=str, separators=(",", ":")
        )
        amount = pricing.worst_case_micros(
            model, pricing.estimate_input_tokens(text), int(params["max_tokens"])
        )
        state.heartbeat(
            self.job, self.run_id, now=self.clock()
        )  # first: a run no longer ours reserves nothing
        return self.ledger.reserve(self.pr_scope, amount, now=self.clock())

    def after_call(self, token: budget.Reservation, usage: Any, *, model: str) -> int:
        cost = pricing.cost_micros(model, usage)
        status = self.ledger.settle(token, cost, now=self.clock())
        self.spent += cost
        _spend_signal(status, self.emit)
        state.heartbeat(self.job, self.run_id, now=self.clock())
        return cost

    def on_error(self, token: budget.Reservation, exc: BaseException) -> int:
        self.ledger.release(token, now=self.clock())
        return 0


def _spend_signal(status: Any, emit: Any) -> None:
    """Spend metrics after each settlement, and one `spend` notice event per scope and day when it first reaches 80 %.

    The notice is a log event (Logs Insights, the serve console), not a page: the one page for a daily crossing is
    SpendAlarm on DailySpendPercent, which only the daily scope publishes (one page per crossing, not two), and a
    PR reaching 80 % of its own budget is worth a line, not waking anybody (docs/runbook.md#spendalarm)."""
    from prfleet import events

    events.spend(status)
    for scope in (status, *getattr(status, "others", ())):
        if getattr(scope, "crossed_80", False):
            emit(
                "spend",
                scope=scope.scope,
                percent=round(scope.percent, 1),
                notice="budget-80-percent",
                limit_usd=scope.limit / 1e6,
                spent_usd=scope.settled / 1e6,
                paged_by="SpendAlarm" if scope.scope == "daily" else None,
            )


def make_ledger() -> budget.Ledger:
    cfg = settings()
    return budget.Ledger(
        cfg.ledger_table,
        daily_limit_micros=round(cfg.daily_budget_usd * 1_000_000),
        pr_limit_micros=round(cfg.pr_budget_usd * 1_000_000),
        tz=cfg.budget_timezone,
    )


def process(
    job: FileJob,
    *,
    remaining_ms: Any,
    gh_for: Any,
    anthropic_client: Any,
    emitter: Any,
    final_attempt: bool = False,
    clock: Any = config_now,
) -> Outcome:
    """Run one file job. `remaining_ms()` is the Lambda's remaining time; `gh_for(installation_id)` a GitHub client."""
    from prfleet import agents
    from prfleet.github import GitHubPrSource

    run_id = uuid.uuid4().hex[:16]
    record = state.head_record(job.repo, job.number, job.head_sha)
    repo_config = agents.parse_repo_config(record.repo_config) if record and record.repo_config else None
    specs = agents.agent_specs(settings(), repo_config)
    spec = specs.get(job.agent)
    emit = emitter.bind(run_id=run_id, agent=job.agent, model=getattr(spec, "model", None)).emit

    done = _already_done(gh_for, job, run_id)
    if done:
        return done

    if spec is None:
        return _end(
            gh_for,
            job,
            run_id,
            "skipped",
            emit,
            reason=f"agent {job.agent!r} is disabled for this repository",
        )
    head = state.current_head(job.repo, job.number)
    if head and head != job.head_sha:
        return _end(gh_for, job, run_id, "superseded", emit, reason=f"PR head moved to {head[:12]}")

    key = cache.cache_key(job.blob_sha, spec.name, spec.model, spec.prompt_version)
    hit = cache.get(key) if job.blob_sha else None
    if hit is not None:
        findings = [dict(f, path=job.path) for f in hit.get("findings", [])]
        try:
            state.finish_run(
                job,
                run_id,
                "cached",
                {"findings": json.dumps(findings), "cost_micros": 0, "model": spec.model},
            )
        except state.RunInProgress:
            return _already_done(gh_for, job, run_id) or Outcome(
                "duplicate", run_id, reason="finished elsewhere"
            )
        emit("cached", cache_key=key[:16], findings=len(findings), cost_usd=0.0)
        posted = fanin.finish_job(gh_for, job, "cached")
        return Outcome("cached", run_id, findings=len(findings), posted=posted)

    gh = gh_for(job.installation_id)
    pr = gh.pr(job.repo, job.number)
    source = GitHubPrSource(
        gh, job.repo, job.number, job.head_sha, title=pr.get("title", ""), body=pr.get("body") or ""
    )
    try:
        carried = state.start_run(job, run_id, spec.model, now=clock())
    except state.RunInProgress as exc:
        # A duplicate delivery while the first worker runs (or just finished) the job: leave it to that worker;
        # if it dies, its run goes stale and the sweeper re-queues the job.
        done = _already_done(gh_for, job, run_id)
        if done:
            return done
        emit("skipped", reason=str(exc), path=job.path, duplicate=True)
        return Outcome("duplicate", run_id, reason=str(exc))
    started = clock()
    emit("start", path=job.path, head_sha=job.head_sha, blob_sha=job.blob_sha)
    guard = LedgerGuard(make_ledger(), job, run_id, spec.model, emit, clock=clock)
    deadline = clock() + remaining_ms() / 1000.0 - DEADLINE_MARGIN_S
    try:
        result = agents.run_agent(
            job, spec, source, anthropic_client, deadline=deadline, guard=guard, emit=emit
        )
    except (
        state.RunInProgress
    ) as exc:  # marked stuck and re-queued, or taken over: the other worker owns it now
        emit("skipped", reason=str(exc), path=job.path, duplicate=True)
        return Outcome("duplicate", run_id, reason=str(exc))
    except budget.BudgetExceeded as exc:
        day = make_ledger().day(clock())
        reason = f"budget {exc.scope} reached: needs ${exc.needed / 1e6:.4f}, ${exc.available / 1e6:.4f} left"
        state.defer(job, day=day, reason=reason, now=clock())
        values = {"error": reason, "model": spec.model, "cost_micros": carried + guard.spent}
        state.finish_run(job, run_id, "deferred", values, owner=True, now=clock())
        emit("deferred", reason=reason, scope=exc.scope)
        posted = fanin.finish_job(gh_for, job, "deferred")
        return Outcome("deferred", run_id, posted=posted, reason=reason)

    duration_ms = int((clock() - started) * 1000)
    if result.status == "failed" and result.retry_after and not final_attempt:
        state.finish_run(
            job,
            run_id,
            "retrying",
            {"error": result.error, "model": spec.model, "cost_micros": carried + result.cost_micros},
            owner=True,
            now=clock(),
        )
        emit("error", error_type="RateLimited", message=result.error, retry_after=result.retry_after)
        raise RetryLater(result.error or "rate limited", result.retry_after)

    findings = [_with_fingerprint(f, source) for f in result.findings]
    values = {
        "findings": json.dumps(findings),
        "model": spec.model,
        "cost_micros": carried + result.cost_micros,  # earlier attempts (deferred, rate-limited) included
        "iterations": result.iterations,
        "duration_ms": duration_ms,
        "error": result.error,
        "stop_reason": result.stop_reason,
        **{f"{k}": int(v) for k, v in (result.usage or {}).items()},
    }
    state.finish_run(job, run_id, result.status, values, owner=True, now=clock())
    if result.status == "succeeded":
        cache.put(key, {"findings": findings, "usage": result.usage, "model": spec.model})
    emit(
        "complete",
        status=result.status,
        duration_ms=duration_ms,
        iterations=result.iterations,
        findings=len(findings),
        cost_usd=result.cost_micros / 1e6,
        error=result.error,
        **{k: v for k, v in (result.usage or {}).items()},
    )
    posted = fanin.finish_job(gh_for, job, result.status)
    return Outcome(result.status, run_id, result.cost_micros, len(findings), posted, result.error or "")


def _already_done(gh_for: Any, job: FileJob, run_id: str) -> Outcome | None:
    """A redelivered message whose work is done: count its outcome (idempotent) so the review is owed once."""
    previous = state.get_run(job)
    if not previous or previous.get("status") not in state.FINAL:
        return None
    posted = fanin.finish_job(gh_for, job, previous["status"])
    return Outcome(previous["status"], previous.get("run_id", run_id), posted=posted, reason="already done")


def fail(gh_for: Any, job: FileJob, emitter: Any, reason: str, error_type: str) -> Outcome:
    """Last delivery of a job that keeps failing: record the failure so the PR's review still completes."""
    run_id = uuid.uuid4().hex[:16]
    emit = emitter.bind(run_id=run_id, agent=job.agent).emit
    emit("error", error_type=error_type, message=reason)
    return _end(gh_for, job, run_id, "failed", emit, reason=reason)


def _end(gh_for: Any, job: FileJob, run_id: str, status: str, emit: Any, *, reason: str) -> Outcome:
    try:
        state.finish_run(job, run_id, status, {"error": reason})
    except state.RunInProgress:
        return _already_done(gh_for, job, run_id) or Outcome("duplicate", run_id, reason="finished elsewhere")
    emit(status, reason=reason, path=job.path)
    posted = fanin.finish_job(gh_for, job, status)
    return Outcome(status, run_id, posted=posted, reason=reason)


def _with_fingerprint(finding: Any, source: Any) -> dict[str, Any]:
    data = finding.to_dict() if hasattr(finding, "to_dict") else dict(finding)
    if not data.get("fingerprint"):
        text = source.read_file(data["path"]) or ""
        lines = text.splitlines()
        line = lines[data["line"] - 1] if 0 < int(data.get("line") or 0) <= len(lines) else ""
        data["fingerprint"] = finding.fingerprint(line) if hasattr(finding, "fingerprint") else ""
    return data
