"""The scheduled sweep: stuck runs, stranded reservations, the spend-limit circuit, deferred jobs, spend metric,
the reactions of PRs that went quiet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prfleet.config import now as config_now
from prfleet.config import settings
from prfleet.cost import circuit
from prfleet.cost.ledger import Ledger
from prfleet.jobs import AskJob, parse_message, requeue_body, sqs
from prfleet.observability import events
from prfleet.pipeline import answering, reactions, runner
from prfleet.store import deferrals, job_runs

STUCK_AFTER_S = 300  # a run with no event for 5 minutes is stuck
MAX_STUCK_RETRIES = 1
# Deferred entries are taken one at a time while more than this is left of the invocation (an entry is three
# requests: its delete, the run's mark, the send); the rest waits for the next sweep, a minute later.
REQUEUE_MARGIN_S = 10.0


def sweep(
    *,
    client_for: Any,
    emitter: Any,
    now: float | None = None,
    probe: Any = None,
    time_left: Callable[[], float] | None = None,
) -> dict[str, int]:
    """`probe(ledger)`: one minimal, budgeted model call (raises if the API still refuses); used while the
    spend-limit circuit is open. `time_left()`: seconds until the invocation's timeout (the Lambda context's
    remaining time), which bounds how many deferred jobs one sweep re-queues."""

    now = config_now() if now is None else now
    ledger = Ledger.from_settings(settings())
    counts = {
        "stuck": 0,
        "stuck_failed": 0,
        "expired": 0,
        "requeued": 0,
        "moved": 0,
        "probed": 0,
        "reactions": 0,
    }

    for run in job_runs.runs_with_status("running", older_than=now - STUCK_AFTER_S):
        silent = int(now - run["updated_at"])
        reason = f"no event for {silent} s (limit {STUCK_AFTER_S} s)"
        times = job_runs.mark_stuck(run, now=now, reason=reason)
        if times is None:
            continue
        job = parse_message(run["job"])
        # An ask job's failure is also said in its thread (pipeline.answering.fail).
        fail = answering.fail if isinstance(job, AskJob) else runner.fail
        counts["stuck"] += 1
        emitter.bind(run_id=run.get("run_id"), agent=job.agent).emit("stuck", path=job.path, reason=reason)
        if run.get("last_delivery"):
            # Killed on the message's last receive: SQS dead-letters it; a re-queued copy would run it twice.
            fail(client_for, job, emitter, runner.killed_reason(reason), "InvocationKilled")
            counts["stuck_failed"] += 1
        elif times <= MAX_STUCK_RETRIES:
            # retried once, as the next attempt; the next worker's claim keeps stuck_count
            sqs.send_raw(requeue_body(run["job"], int(run.get("cost_micros", 0) or 0)))
        else:
            fail(client_for, job, emitter, f"stuck twice: {reason}", "Stuck")
            counts["stuck_failed"] += 1

    # Stranded reservations are booked at their worst case, never released: the call may have been billed.
    counts["expired"] = ledger.release_expired(now=now)

    st = circuit.read(ledger.ddb, ledger.table)
    if st.open and st.probe_due(now) and circuit.claim_probe(ledger.ddb, ledger.table, st, now=now):
        counts["probed"] = 1
        emit = emitter.bind(run_id="circuit-probe").emit
        try:
            if probe is not None:
                probe(ledger)
        except Exception as exc:  # still refused (or unreachable): stays open, next probe in PROBE_EVERY_S
            emit(
                "error",
                error_type="CircuitProbe",
                circuit="open",
                message=f"{type(exc).__name__}: {exc}"[:300],
            )
        else:
            # No probe (a provider without the Claude API's spend limits): the next worker call is the probe.
            if circuit.close_circuit(ledger.ddb, ledger.table, now=now):
                emit("heartbeat", circuit="closed", probe="succeeded" if probe is not None else "interval")
            st = circuit.read(ledger.ddb, ledger.table)

    counts["moved"], counts["requeued"] = requeue_due(
        now=now, circuit_closed=not st.open, time_left=time_left
    )
    events.spend(ledger.status("daily", now=now))
    counts["reactions"] = reactions.sweep_quiet(client_for, now=now, time_left=time_left)
    return counts


def requeue_due(
    *, now: float, circuit_closed: bool, time_left: Callable[[], float] | None = None
) -> tuple[int, int]:
    """Move the entries a deployment of the old layout wrote, then re-queue every entry due at `now`, page after
    page, until none is due or the invocation's time runs short. Returns (moved, re-queued)."""

    def enough() -> bool:
        return time_left is None or time_left() > REQUEUE_MARGIN_S

    moved = requeued = 0
    for entry in deferrals.waiting(deferrals.LEGACY_PK):
        if not enough():
            return moved, requeued
        moved += deferrals.move_legacy(entry)
    for entry in deferrals.due_jobs(now, circuit_closed=circuit_closed):
        if not enough():
            break
        job = parse_message(entry["job"])
        # Taken once by the entry's conditional delete. A refused delete whose run still waits as `deferred` was our
        # own delete with its response lost (applied, answered 500, the retry refused: the default-scale soak left
        # a job deferred for good that way); at worst two sweepers both send it, and the claim keeps one.
        if deferrals.drop_deferred(entry) or (job_runs.get_run(job) or {}).get("status") == "deferred":
            job_runs.mark_requeued(job, now=now)
            sqs.send_raw(entry["job"])  # stored as its next attempt by the runner (deferrals.defer)
            requeued += 1
    return moved, requeued
