"""One attempt at a job, whatever its kind (a file job, the verify job): what it is, how it ends, and the one door
every ending goes through (`finish`: the run's outcome, the event, the deferral, fan-in), shared by the file job's
story (prfleet.pipeline.runner) and the verify job's (prfleet.pipeline.verify_run).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prfleet.config import aws, settings
from prfleet.config import now as config_now
from prfleet.cost import circuit, pricing
from prfleet.cost.guard import CircuitOpen, LedgerGuard, RunCostCapReached, token_counter
from prfleet.cost.ledger import BudgetExceeded, Ledger
from prfleet.jobs import FileJob
from prfleet.observability import tracing
from prfleet.observability.redaction import redact
from prfleet.pipeline import fanin
from prfleet.pipeline.endings import (
    Ending,
    circuit_deferral,
    cost_cap_reached,
    duplicate,
    over_budget,
    over_cost_cap,
    rate_limited,
    unclaimed,
)
from prfleet.repository import snapshot
from prfleet.store import deferrals, dynamo, job_runs, result_cache

DEADLINE_MARGIN_S = 20.0  # leave time to store the result, settle the ledger and post the review


class RetryLater(Exception):
    """The job must come back later (a rate limit longer than the time left, or a budget held by open
    reservations): re-sent with a delay of `delay`, as `body` (the next attempt, carrying what it has cost)."""

    def __init__(self, reason: str, delay: float, body: str | None = None) -> None:
        super().__init__(reason)
        self.delay = delay
        self.body = body


class RunBusy(Exception):
    """A duplicate delivery met the job's run alive in another worker: this copy is handed back to SQS (a batch
    item failure) rather than deleted. Deleted, it left nothing to retry the job when that worker then failed and
    gave its run back as `retrying`: the job was lost, its head never reviewed (found with a core busy, where the
    local queues' 3 s visibility let a copy arrive mid-run). SQS shows the copy again after the visibility timeout
    (6 x the agent's Timeout in the template, so that run has ended by then: done, it is counted; given back, it is
    claimed and retried); on the message's last receive the copy is dropped as before, never dead-lettered."""


@dataclass
class Outcome:
    status: str
    run_id: str
    cost_micros: int = 0
    findings: int = 0
    posted: str | None = None
    reason: str = ""


def run_cost_cap(spec: Any) -> int:
    """The agent's per-run cost cap in micro-dollars: its token cap priced at the worst case."""
    explicit = getattr(spec, "max_run_cost_micros", None)
    if explicit:
        return int(explicit)
    return pricing.worst_case_micros(
        spec.model, int(spec.max_run_tokens), int(spec.max_tokens), inference_geo="us"
    )


def job_snapshot(job: FileJob, emit: Callable[..., None]) -> snapshot.Snapshot | None:
    """The head's snapshot unpacked in this container (once per head, reused while warm), for the agent's tools;
    None when the deployment has no SnapshotBucket (the tools read through GitHub)."""
    cfg = settings()
    if not cfg.snapshot_bucket:
        return None
    return snapshot.open_snapshot(
        aws.client("s3"),
        cfg.snapshot_bucket,
        job.repo,
        job.head_sha,
        root=Path(cfg.snapshot_root),
        max_bytes=cfg.max_repo_bytes,
        max_entries=cfg.max_repo_entries,
        emit=emit,
    )


# ---------------------------------------------------------------------------------------------------- the door


@dataclass(frozen=True)
class Attempt:
    """One attempt at a job: the job, its run id, its event emitter, the GitHub client factory and the clock."""

    job: FileJob
    run_id: str
    emit: Callable[..., None]
    client_for: Callable[[int], Any]
    clock: Callable[[], float]


def finish(at: Attempt, end: Ending) -> Outcome:
    """The one door every ending goes through: the run's outcome, the event, fan-in, in that order."""
    if end.status == "duplicate":
        done = already_done(at) if end.count_theirs else None
        if done:
            return done
        at.emit(end.event, **end.fields)
        return Outcome("duplicate", at.run_id, reason=end.reason)
    if end.deferral and not end.deferral.after_outcome:
        defer(at, end)
    claim = {"owner": True, "now": at.clock()} if end.claimed else {}
    try:
        job_runs.finish_run(at.job, at.run_id, end.status, end.values, with_items=end.with_items, **claim)
    except job_runs.RunInProgress:
        if not end.count_theirs:
            raise
        return already_done(at) or Outcome("duplicate", at.run_id, reason="finished elsewhere")
    if end.deferral and end.deferral.after_outcome:
        defer(at, end)
    at.emit(end.event or end.status, **end.fields)
    if end.retry is not None:
        raise RetryLater(end.reason, end.retry.delay, end.retry.body)
    posted = fanin.finish_job(at.client_for, at.job, end.status)
    return Outcome(end.status, at.run_id, end.cost_micros, end.findings, posted, end.reason)


def defer(at: Attempt, end: Ending) -> None:
    d = end.deferral
    assert d is not None
    with tracing.subsegment("deferred") as span:
        span.metadata(reason=end.reason, day=d.day, until=d.until)
        deferrals.defer(d.job, day=d.day, reason=end.reason, now=at.clock(), until=d.until)


def already_done(at: Attempt) -> Outcome | None:
    """A redelivered message whose work is done: count its outcome (idempotent) so the review is owed once."""
    previous = job_runs.get_run(at.job)
    if not previous or previous.get("status") not in job_runs.FINAL:
        return None
    posted = fanin.finish_job(at.client_for, at.job, previous["status"])
    return Outcome(
        previous["status"], previous.get("run_id", at.run_id), posted=posted, reason="already done"
    )


def give_back(at: Attempt, exc: BaseException, spent: int) -> None:
    """Anything else went wrong (GitHub down, a malformed reply): give the claim back as `retrying` with what the
    attempt spent, so SQS's redelivery can claim the run instead of taking it for another worker's live run and
    dropping it; the caller re-raises, and the last delivery records the failure (`fail`)."""
    values = {"error": redact(f"{type(exc).__name__}: {exc}"), "cost_micros": spent}
    try:
        job_runs.finish_run(at.job, at.run_id, "retrying", values, owner=True, now=at.clock())
    except job_runs.RunInProgress:
        pass  # marked stuck and taken over meanwhile: that worker owns the run now
    except Exception as write_exc:  # noqa: BLE001 - the job's own error is the one to raise and record
        # The claim stays `running` until its heartbeat is stale (the sweeper's stuck check re-queues it);
        # say so, and let the handler see the job's error, not this one.
        at.emit(
            "error",
            error_type="RunNotReleased",
            message=redact(f"{type(write_exc).__name__}: {write_exc}")[:300],
        )


@dataclass
class Claimed:
    """A run this attempt owns and may spend on: its LedgerGuard (every call reserved through it), when it
    started and the deadline its model calls must end by."""

    guard: LedgerGuard
    started: float
    deadline: float


def claim_run(
    at: Attempt,
    spec: Any,
    model_client: Any,
    remaining_ms: Callable[[], int],
    *,
    final_attempt: bool,
    **start: Any,
) -> Claimed | Ending:
    """The door every job's model run goes through once its own checks passed, file job and verify job alike: the
    claim of the run (a duplicate delivery stops here, and goes back to SQS while the first run is alive: RunBusy),
    the spend-limit circuit (read after the claim, so a duplicate cannot defer the job twice), the run's cost cap,
    and the LedgerGuard. `start`: the job's own fields of the `start` event. An Ending when the run may not go on."""
    job, clock, emit = at.job, at.clock, at.emit
    ledger = Ledger.from_settings(settings())
    try:
        claimed_at = clock()
        claimed = job_runs.start_run(job, at.run_id, spec.model, now=claimed_at, last_delivery=final_attempt)
    except job_runs.RunInProgress as exc:
        # A duplicate delivery while the first worker runs (or just finished) the job: leave it to that worker;
        # if it dies, its run goes stale and the sweeper re-queues the job. While that run is alive, this copy
        # goes back to SQS (RunBusy): it is what retries the job if that worker fails.
        if exc.status == "running" and not final_attempt:
            raise RunBusy(str(exc)) from None
        return duplicate(job, str(exc), count_theirs=True)
    carried = max(claimed, job.spent_micros)
    circuit_read_at = clock()
    blocked = circuit.open_reason(ledger)
    if blocked:
        return circuit_deferral(job, spec.model, blocked, carried=carried, day=ledger.day(clock()))
    started = clock()
    emit("start", path=job.path, head_sha=job.head_sha, attempt=job.attempt, **start)
    cap = run_cost_cap(spec)
    ending = over_cost_cap(job, carried, cap)
    if ending:
        return ending
    guard = spending_guard(
        ledger,
        job,
        at.run_id,
        spec.model,
        emit,
        model_client=model_client,
        clock=clock,
        carried=carried,
        cap_micros=cap,
        claimed_at=claimed_at,
        circuit_read_at=circuit_read_at,
    )
    return Claimed(guard, started, clock() + remaining_ms() / 1000.0 - DEADLINE_MARGIN_S)


def spending_guard(
    ledger: Ledger,
    job: FileJob,
    run_id: str,
    model: str,
    emit: Any,
    *,
    model_client: Any,
    clock: Callable[[], float],
    **options: Any,
) -> LedgerGuard:
    """run_guard with what every model run of a job has (file, verify and ask jobs alike): exact input counts when
    ExactInputTokens is on, and the spend-limit circuit, read before each call and opened by a spend-limit error."""
    return run_guard(
        ledger,
        job,
        run_id,
        model,
        emit,
        clock=clock,
        counter=token_counter(model_client) if settings().exact_input_tokens else None,
        circuit_check=lambda: circuit.open_reason(ledger),
        on_spend_limit=lambda reason: circuit.open_circuit(ledger, reason, emit, clock=clock),
        **options,
    )


def run_guard(
    ledger: Ledger, job: FileJob, run_id: str, model: str, emit: Any, **options: Any
) -> LedgerGuard:
    """The LedgerGuard of one claimed run: its heartbeat keeps the run ours (job_runs.heartbeat raises RunInProgress
    once it is not, and nothing more is reserved), and every booking is written onto the run's item."""
    return LedgerGuard(
        ledger,
        job,
        run_id,
        model,
        emit,
        heartbeat=lambda now: job_runs.heartbeat(job, run_id, now=now),
        owner=job_runs.run_owner(job),
        **options,
    )


def killed_reason(silence: str) -> str:
    """Why the sweeper fails a run whose last delivery died: no handler code ran to say it."""
    return (
        "the job's last delivery ended without an outcome (its invocation was killed: Lambda timeout or crash; "
        f"{silence}); its message is in the dead-letter queue"
    )


def fail(
    client_for: Callable[[int], Any], job: FileJob, emitter: Any, reason: str, error_type: str
) -> Outcome:
    """Last delivery of a job that keeps failing: record the failure so the PR's review still completes."""
    run_id = uuid.uuid4().hex[:16]
    # The job's own context too: the sweeper's emitter has none, and whoever drains the DLQ looks up the delivery.
    emit = emitter.bind(
        run_id=run_id,
        agent=job.agent,
        repository=job.repo,
        pr=job.number,
        head_sha=job.head_sha,
        path=job.path,
        delivery_id=job.delivery_id,
    ).emit
    emit("error", error_type=error_type, message=reason)
    return finish(Attempt(job, run_id, emit, client_for, config_now), unclaimed(job, "failed", reason))


T = TypeVar("T")


def guarded_run(at: Attempt, guard: LedgerGuard, model: str, run: Callable[[], T]) -> T | Ending:
    """`run()` (the agent's or the verify run, under `guard`), or the ending its refusal means: the run taken
    over (a duplicate), the run's cost cap, the spend-limit circuit, the budget. Anything else gives the claim
    back and propagates (SQS retries the job)."""
    job = at.job
    try:
        return run()
    except (
        job_runs.RunInProgress
    ) as exc:  # marked stuck and re-queued, or taken over: the other worker owns it
        return duplicate(job, str(exc))
    except RunCostCapReached as exc:
        return cost_cap_reached(
            job, model, str(exc), spent=guard.carried + guard.spent, attempt_cost=guard.spent
        )
    except CircuitOpen as exc:
        day = guard.ledger.day(at.clock())
        return circuit_deferral(job, model, str(exc), carried=guard.carried + guard.spent, day=day)
    except BudgetExceeded as exc:
        delay = settings().pressure_retry_s * (0.5 + random.random())
        day = guard.ledger.day(at.clock())
        return over_budget(job, exc, model, spent=guard.carried + guard.spent, day=day, retry_delay=delay)
    except Exception as exc:
        give_back(at, exc, guard.carried + guard.spent)
        raise


def after_run(
    at: Attempt, guard: LedgerGuard, model: str, result: Any, *, final_attempt: bool
) -> Ending | None:
    """The ending of a run that returned but cannot stand as its outcome: the API's spend limit hit meanwhile
    (deferred until the circuit closes), or a rate limit that outlasted the attempt (re-sent later)."""
    if guard.spend_limited:
        day = guard.ledger.day(at.clock())
        return circuit_deferral(
            at.job, model, guard.spend_limited, carried=guard.carried + guard.spent, day=day
        )
    if result.status == "failed" and result.retry_after and not final_attempt:
        return rate_limited(
            at.job, result, model, spent=guard.carried + guard.spent, estimated=guard.estimated
        )
    return None


def read_cache(key: str) -> dict[str, Any] | None:
    """The cached result under `key` alone (BatchGetItem of one key: the agent's role reads ResultsTable only so)."""
    table = settings().results_table
    got = dynamo.batch_get({table: {"Keys": [result_cache.item_key(key)]}})
    return result_cache.from_item(next(iter(got.get(table, [])), None))
