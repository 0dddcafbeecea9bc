"""The scheduled sweep: stuck runs, stranded budget reservations, deferred jobs after the budget reset, spend metric."""

from __future__ import annotations

from typing import Any

from prfleet import queue, state
from prfleet.jobs import parse_message

STUCK_AFTER_S = 300  # a run with no event for 5 minutes is stuck
MAX_STUCK_RETRIES = 1
REQUEUE_BATCH = 100


def sweep(*, gh_for: Any, emitter: Any, now: float | None = None) -> dict[str, int]:
    from prfleet import events, runner
    from prfleet.config import now as config_now

    now = config_now() if now is None else now
    ledger = runner.make_ledger()
    counts = {"stuck": 0, "stuck_failed": 0, "released": 0, "requeued": 0}

    for run in state.runs_with_status("running", older_than=now - STUCK_AFTER_S):
        silent = int(now - run["updated_at"])
        reason = f"no event for {silent} s (limit {STUCK_AFTER_S} s)"
        times = state.mark_stuck(run, now=now, reason=reason)
        if times is None:
            continue
        job = parse_message(run["job"])
        counts["stuck"] += 1
        emitter.bind(run_id=run.get("run_id"), agent=job.agent).emit("stuck", path=job.path, reason=reason)
        if times <= MAX_STUCK_RETRIES:
            queue.send_raw(run["job"])  # retried once; the next worker's claim keeps stuck_count
        else:
            runner.fail(gh_for, job, emitter, f"stuck twice: {reason}", "Stuck")
            counts["stuck_failed"] += 1

    counts["released"] = ledger.release_expired(now=now)

    today = ledger.day(now)
    for entry in state.deferred_jobs(limit=REQUEUE_BATCH):  # oldest first
        if entry["day"] >= today:
            break
        if state.drop_deferred(entry["sk"]):
            state.mark_requeued(parse_message(entry["job"]), now=now)
            queue.send_raw(entry["job"])
            counts["requeued"] += 1

    events.spend(ledger.status("daily", now=now))
    return counts
