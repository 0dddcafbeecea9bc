"""How one attempt at a file job ends: the `Ending` the job's decisions return, and the decisions themselves.

Each decision is a pure function of the job and what was read (no AWS): the agent disabled, the head superseded,
the job out of attempts, its result cached, the run's cost cap spent, the budget refusing, the spend-limit circuit
open, the API's rate limit, the agent's result. The runner sends every Ending through one door (runner._finish),
which records the run, emits the event and counts the outcome for fan-in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from prfleet.cost.guard import LedgerGuard
from prfleet.cost.ledger import BudgetExceeded
from prfleet.jobs import FileJob


@dataclass(frozen=True)
class Retry:
    """Re-send the job after `delay` seconds as `body` (its next attempt, carrying what it has cost)."""

    delay: float
    body: str


@dataclass(frozen=True)
class Deferral:
    """The job kept for later (state.defer), as its next attempt: the sweeper re-queues it after the budget's day
    (`until="day"`) or once the circuit has closed (`until="circuit"`).

    after_outcome: written only once the run's outcome is (a refused outcome, the run finished by another
    delivery, must not defer the job again). Otherwise written first: an attempt that dies in between leaves a
    running run that the sweeper re-queues, never a deferred run with nothing to re-queue it."""

    job: FileJob
    day: str
    until: str = "day"
    after_outcome: bool = False


@dataclass(frozen=True)
class Ending:
    """What the runner's door (runner._finish) writes on the run, emits, and reports to fan-in.

    status: the run's outcome (state.finish_run), or "duplicate": another delivery owns the run, nothing is written.
    claimed: the run is this attempt's claim (the outcome is written as its owner).
    count_theirs: a refused write means another delivery may have finished the run: count that outcome
        (runner._already_done); otherwise the refusal (state.RunInProgress) propagates and SQS redelivers the job.
    retry: the job is re-sent after a delay once the run says `retrying` (fan-in counts nothing: it is not over).
    cost_micros, findings: what this attempt spent and found (the Outcome's)."""

    status: str
    reason: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    event: str = ""  # the event emitted; the status when empty
    fields: dict[str, Any] = field(default_factory=dict)
    claimed: bool = True
    count_theirs: bool = False
    deferral: Deferral | None = None
    with_items: list[dict[str, Any]] | None = None
    retry: Retry | None = None
    cost_micros: int = 0
    findings: int = 0


def unclaimed(job: FileJob, status: str, reason: str) -> Ending:
    """An ending written without a claim: before it, or by the sweeper or the last delivery (runner.fail)."""
    return Ending(
        status,
        reason,
        {"error": reason},
        fields={"reason": reason, "path": job.path},
        claimed=False,
        count_theirs=True,
    )


def duplicate(job: FileJob, reason: str, *, count_theirs: bool = False) -> Ending:
    """Another worker owns the run (a duplicate delivery, or this run marked stuck and taken over): leave it."""
    fields = {"reason": reason, "path": job.path, "duplicate": True}
    return Ending("duplicate", reason, event="skipped", fields=fields, count_theirs=count_theirs)


def before_claim(job: FileJob, spec: Any, current_head: str | None, max_attempts: int) -> Ending | None:
    """The job ends before anything is claimed: its agent is disabled, its head superseded, or it has used up its
    re-queued attempts. None: it goes on."""
    if spec is None:
        return unclaimed(job, "skipped", f"agent {job.agent!r} is disabled for this repository")
    if current_head and current_head != job.head_sha:
        return unclaimed(job, "superseded", f"PR head moved to {current_head[:12]}")
    if job.attempt >= max_attempts:
        reason = f"gave up after {job.attempt} re-queued attempts (MaxJobAttempts {max_attempts})"
        return unclaimed(job, "failed", reason)
    return None


def cacheable(path: str, findings: list[dict[str, Any]]) -> bool:
    """Whether a run's result may answer later jobs of the same blob (the cache key: blob, agent, model, prompt):
    only when every finding is on the reviewed file itself. A finding elsewhere (a caller the change breaks)
    depends on the rest of the repository at this head, which the key does not name: a later head may have fixed
    that caller, so such a result is not cached and the next head reviews the file again."""
    return all(f.get("path") == path for f in findings)


def from_cache(job: FileJob, model: str, key: str, hit: dict[str, Any] | None) -> Ending | None:
    """A result cached under the job's key (same blob, agent, model, prompt): its findings, for nothing."""
    if hit is None:
        return None
    findings = [dict(f, path=job.path) for f in hit.get("findings", [])]
    return Ending(
        "cached",
        values={"findings": json.dumps(findings), "cost_micros": 0, "model": model},
        fields={"cache_key": key[:16], "findings": len(findings), "cost_usd": 0.0},
        claimed=False,
        count_theirs=True,
        findings=len(findings),
    )


def over_cost_cap(job: FileJob, carried: int, cap: int) -> Ending | None:
    """Earlier attempts of the job have already spent its run's cost cap: it fails without a model call."""
    if carried < cap:
        return None
    reason = f"per-run cost cap ${cap / 1e6:.4f} reached by earlier attempts (${carried / 1e6:.4f})"
    return Ending(
        "failed",
        reason,
        {"error": reason, "cost_micros": carried},
        fields={"reason": reason, "path": job.path},
    )


def cost_cap_reached(job: FileJob, model: str, reason: str, *, spent: int, attempt_cost: int) -> Ending:
    """The guard refused a call that could pass the run's cost cap: the job fails."""
    values = {"error": reason, "model": model, "cost_micros": spent}
    return Ending(
        "failed", reason, values, fields={"reason": reason, "path": job.path}, cost_micros=attempt_cost
    )


def circuit_deferral(job: FileJob, model: str, reason: str, *, carried: int, day: str) -> Ending:
    """The spend-limit circuit is open: deferred (a neutral check with the reason) until the sweeper's probe
    closes it and re-queues the job."""
    reason = f"model calls paused: {reason}"
    return Ending(
        "deferred",
        reason,
        {"error": reason, "model": model, "cost_micros": carried},
        fields={"reason": reason, "scope": "circuit"},
        count_theirs=True,
        deferral=Deferral(job.next_attempt(carried), day, until="circuit", after_outcome=True),
    )


def over_budget(
    job: FileJob, exc: BudgetExceeded, model: str, *, spent: int, day: str, retry_delay: float
) -> Ending:
    """The ledger refused a reservation. Open reservations, not settled spend, fill the scope: the day has room,
    the job comes back after `retry_delay`. The budget is spent: deferred to the budget's next day."""
    if exc.cause == "reserved":
        reason = f"budget {exc.scope} held by open reservations: needs ${exc.needed / 1e6:.4f}, retrying"
        return Ending(
            "retrying",
            reason,
            {"error": reason, "model": model, "cost_micros": spent},
            event="deferred",
            fields={"reason": reason, "scope": exc.scope, "until": "retry", "delay_s": round(retry_delay, 1)},
            retry=Retry(retry_delay, job.next_attempt(spent).to_message()),
        )
    reason = f"budget {exc.scope} reached: needs ${exc.needed / 1e6:.4f}, ${exc.available / 1e6:.4f} left"
    return Ending(
        "deferred",
        reason,
        {"error": reason, "model": model, "cost_micros": spent},
        fields={"reason": reason, "scope": exc.scope},
        deferral=Deferral(job.next_attempt(spent), day),
    )


def rate_limited(job: FileJob, result: Any, model: str, *, spent: int, estimated: int) -> Ending:
    """The API's rate limit outlasted the attempt (not its last delivery): re-sent after the API's retry-after."""
    reason = result.error or "rate limited"
    return Ending(
        "retrying",
        reason,
        {"error": result.error, "model": model, "cost_micros": spent, "estimated_micros": estimated},
        event="error",
        fields={"error_type": "RateLimited", "message": result.error, "retry_after": result.retry_after},
        retry=Retry(result.retry_after, job.next_attempt(spent).to_message()),
    )


def completed(
    result: Any,
    findings: list[dict[str, Any]],
    model: str,
    guard: LedgerGuard,
    *,
    duration_ms: int,
    with_items: list[dict[str, Any]] | None,
    snapshot_reason: str | None = None,
) -> Ending:
    """The agent's run ended (succeeded, partial or failed): its findings, usage and cost on the run, and why it
    ran without the repository's snapshot (`snapshot_reason`, for the review's note; None removes an old one)."""
    usage = result.usage or {}
    values = {
        "findings": json.dumps(findings),
        "model": model,
        "cost_micros": guard.carried + guard.spent,  # earlier attempts (deferred, rate-limited) included
        "estimated_micros": guard.estimated or None,  # booked at a worst case: the call may have been billed
        "iterations": result.iterations,
        "duration_ms": duration_ms,
        "error": result.error,
        "stop_reason": result.stop_reason,
        "snapshot_reason": snapshot_reason,
        **{f"{k}": int(v) for k, v in usage.items()},
    }
    estimated = {"estimated_usd": guard.estimated / 1e6, "estimated_reasons": guard.estimates}
    fields = {
        "status": result.status,
        "duration_ms": duration_ms,
        "iterations": result.iterations,
        "findings": len(findings),
        "cost_usd": guard.spent / 1e6,
        "error": result.error,
        **(estimated if guard.estimated else {}),
        **usage,
    }
    return Ending(
        result.status,
        result.error or "",
        values,
        event="complete",
        fields=fields,
        with_items=with_items,
        cost_micros=guard.spent,
        findings=len(findings),
    )


def verify_from_cache(
    job: FileJob, model: str, key: str, hit: dict[str, Any] | None, candidates: int
) -> Ending | None:
    """The verify run's verdicts cached under its key (the same candidates, model and prompt): reused, for
    nothing."""
    if hit is None or not isinstance(hit.get("verdicts"), list):
        return None
    values = {
        "findings": "[]",
        "verdicts": json.dumps(hit["verdicts"]),
        "candidates": candidates,
        "cost_micros": 0,
        "model": model,
    }
    return Ending(
        "cached",
        values=values,
        fields={"cache_key": key[:24], "verdicts": len(hit["verdicts"]), "cost_usd": 0.0},
        claimed=False,
        count_theirs=True,
    )


def verified(
    result: Any,
    verdicts: list[dict[str, Any]],
    model: str,
    guard: LedgerGuard,
    *,
    candidates: int,
    duration_ms: int,
    with_items: list[dict[str, Any]] | None,
    snapshot_reason: str | None = None,
) -> Ending:
    """The verify run ended: its verdicts (by fingerprint) when it succeeded, none otherwise (the posting then
    labels the candidates unverified, or holds them); `findings` is [] (the verifier reports no finding of its
    own), so every reader of a head's runs counts the agents' findings once."""
    ending = completed(
        result,
        [],
        model,
        guard,
        duration_ms=duration_ms,
        with_items=with_items,
        snapshot_reason=snapshot_reason,
    )
    values = dict(ending.values, candidates=candidates)
    values["verdicts"] = json.dumps(verdicts) if result.status == "succeeded" else None
    return replace(ending, values=values, fields=dict(ending.fields, verdicts=len(verdicts)))
