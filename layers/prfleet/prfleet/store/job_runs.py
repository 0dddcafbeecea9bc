"""The runs of jobs in StateTable: one item per job of a head, claimed by a worker, kept alive by its heartbeat,
finished with the job's outcome, and found by the sweeper when stuck.

Key: PR#<repo>#<n> / RUN#<sha>#<job id>: status, findings, usage, cost, heartbeat (updated_at). Runs in progress
carry status=running and sit in the `status-index` GSI, so the sweeper finds stuck ones cheaply.
"""

from __future__ import annotations

import random
import time
from typing import Any

from botocore.exceptions import ClientError

from prfleet.config import now as config_now
from prfleet.config.aws import client
from prfleet.jobs import FileJob, pr_key
from prfleet.store.dynamo import RUN_TTL, is_conditional, plain, query, serialize, state_table, to_item

# Outcomes that end a job: its head counts it done (any other, such as deferred, leaves it owed).
FINAL = frozenset({"succeeded", "partial", "failed", "cached", "superseded", "skipped"})
VERIFY_AGENT = (
    "verify"  # the agent of a head's verify job (prfleet.agents.specs.VERIFY_AGENT; store sits beside agents)
)


def run_key(job: FileJob) -> dict[str, Any]:
    """The key of the job's run item (one per job of a head)."""
    return to_item({"pk": job.pr_key, "sk": f"RUN#{job.head_sha}#{job.job_id}"})


class RunInProgress(Exception):
    """Another worker holds or finished this job's run (SQS delivered the message twice). `status`: the run's
    status as the refused write found it, when known."""

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status


def start_run(
    job: FileJob,
    run_id: str,
    model: str,
    *,
    now: float | None = None,
    stale_after: int = 300,
    last_delivery: bool = False,
) -> int:
    """Claim the job's run: refused while another worker's run is alive (heartbeat newer than `stale_after`).

    `last_delivery`: this is the message's last receive before SQS dead-letters it. Stored on the run, so that if
    this invocation is killed (Lambda timeout, crash: no handler code runs to record anything) the sweeper's stuck
    check fails the run with that reason instead of re-queuing a copy of a message that is already in the DLQ.
    Returns what earlier attempts of this job already spent (a deferred or rate-limited attempt pays for the calls
    it made), so the run's cost stays the sum of everything the job cost.
    """
    now = config_now() if now is None else now
    fields = {
        "run_id": run_id,
        "job": job.to_message(),
        "repo": job.repo,
        "path": job.path,
        "agent": job.agent,
        "model": model,
        "status": "running",
        "last_delivery": bool(last_delivery),
        "created_at": int(now),
        "updated_at": int(now),
        "expires_at": int(now) + RUN_TTL,
    }
    names = {f"#a{i}": k for i, k in enumerate(fields)}
    try:
        reply = client("dynamodb").update_item(  # an update, so a stuck run keeps its stuck_count
            TableName=state_table(),
            Key=run_key(job),
            UpdateExpression="SET " + ", ".join(f"{n} = :v{i}" for i, n in enumerate(names)),
            ReturnValues="ALL_OLD",
            # Free, or left unfinished (retrying, stuck, re-queued after a deferral), or running with a dead
            # heartbeat; never a finished run: a duplicate delivery racing the first worker must not redo (and
            # re-pay) its job, and a deferred one waits for the sweeper (mark_requeued) rather than deferring twice.
            ConditionExpression="attribute_not_exists(pk) OR #s IN (:retrying, :stuck, :requeued) "
            "OR (#s = :running AND updated_at < :stale)",
            ExpressionAttributeNames={"#s": "status", **names},
            ExpressionAttributeValues={
                **to_item({f":v{i}": v for i, v in enumerate(fields.values())}),
                ":running": {"S": "running"},
                ":retrying": {"S": "retrying"},
                ":stuck": {"S": "stuck"},
                ":requeued": {"S": "requeued"},
                ":stale": {"N": str(int(now) - stale_after)},
            },
            # The item as it is when the condition fails, in the exception's `Item`
            # (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_UpdateItem.html).
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if is_conditional(exc):
            held = plain(exc.response.get("Item")) or {}
            if held.get("run_id") == run_id and held.get("status") == "running":
                # Our own claim: DynamoDB applied it, the response was lost (a 500 after the write) and botocore's
                # retry met the run it had just written. Refusing here would drop the job as a duplicate and leave
                # the run `running` until the sweeper's stuck check (found by the soak: 23 runs at default scale).
                return int(held.get("cost_micros", 0) or 0)
            raise RunInProgress(
                f"run of job {job.job_id} is taken by another worker", held.get("status")
            ) from None
        raise
    return int((plain(reply.get("Attributes")) or {}).get("cost_micros", 0) or 0)


def heartbeat(job: FileJob, run_id: str, *, now: float | None = None) -> None:
    """Keep our running run out of the stuck sweep; RunInProgress if it is no longer ours (marked stuck and
    re-queued, or taken over by another worker), so the caller stops instead of refreshing someone else's run."""
    now = config_now() if now is None else now
    try:
        client("dynamodb").update_item(
            TableName=state_table(),
            Key=run_key(job),
            UpdateExpression="SET updated_at = :t",
            ConditionExpression="#s = :running AND run_id = :rid",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":t": {"N": str(int(now))},
                ":running": {"S": "running"},
                ":rid": {"S": run_id},
            },
        )
    except ClientError as exc:
        if is_conditional(exc):
            raise RunInProgress(f"run {run_id} of job {job.job_id} is no longer ours") from None
        raise


def finish_run(
    job: FileJob,
    run_id: str,
    status: str,
    values: dict[str, Any],
    *,
    owner: bool = False,
    now: float | None = None,
    with_items: list[dict[str, Any]] | None = None,
) -> None:
    """Store a run's outcome (findings as JSON), never over a finished one.

    The run item is UPDATED, never replaced: what earlier attempts spent (`cost_micros`, `estimated_micros`) and
    the stuck count survive every ending (superseded, cached, skipped, failed), so the runs of a day still add up
    to its ledger. A value of None removes that attribute (a stale error from an earlier attempt).
    `owner`: this worker claimed the run with start_run, so only a write by the same run_id is accepted; otherwise
    (cached, skipped, superseded, a last-attempt failure) only a run that has not finished may be written.
    Raises RunInProgress when the write is refused: another worker's outcome stands.
    `with_items`: unconditional TransactWriteItems items written with the outcome, in the same request and only if
    the outcome is (the result cache's Put of a succeeded run: one request, not two; nothing cached when refused).
    """
    now = config_now() if now is None else now
    fields = {
        "run_id": run_id,
        "job": job.to_message(),
        "repo": job.repo,
        "path": job.path,
        "agent": job.agent,
        "status": status,
        "updated_at": int(now),
        "expires_at": int(now) + RUN_TTL,
        **values,
    }
    names: dict[str, str] = {"#s": "status", "#created": "created_at"}
    vals: dict[str, Any] = {":created": {"N": str(int(now))}}
    sets = ["#created = if_not_exists(#created, :created)"]
    removes = []
    for i, (k, v) in enumerate(fields.items()):
        name = "#s" if k == "status" else f"#f{i}"
        names[name] = k
        if v is None:
            removes.append(name)
        else:
            vals[f":f{i}"] = serialize(v)
            sets.append(f"{name} = :f{i}")
    if owner:
        condition = "run_id = :rid"
        vals[":rid"] = {"S": run_id}
    else:
        finals = {f":x{i}": {"S": s} for i, s in enumerate(sorted(FINAL))}
        condition = f"attribute_not_exists(pk) OR NOT (#s IN ({', '.join(finals)}))"
        vals.update(finals)
    update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
    request = {
        "TableName": state_table(),
        "Key": run_key(job),
        "UpdateExpression": update,
        "ConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": vals,
    }
    if with_items:
        _finish_with(job, request, with_items)
        return
    try:
        client("dynamodb").update_item(**request)
    except ClientError as exc:
        if is_conditional(exc):
            raise RunInProgress(f"run of job {job.job_id} was finished by another worker") from None
        raise


TRANSACT_ATTEMPTS = 6


def _finish_with(
    job: FileJob, update: dict[str, Any], items: list[dict[str, Any]], *, sleep: Any = None
) -> None:
    """finish_run's update and `items` in one TransactWriteItems. The run's condition is the first item's: its
    cancellation reason ConditionalCheckFailed is the refusal (RunInProgress, nothing written); a conflict with
    another request on one of the items (TransactionConflict: e.g. two files of the same content cached at once)
    is sent again with jittered backoff, and the condition decides again. So is a transaction cancelled by
    throttling (a `ThrottlingError` reason: botocore does not retry a cancellation, and the default-scale soak
    failed 51 finished jobs that way, each back only after its visibility timeout), as the ledger's are."""
    sleep = time.sleep if sleep is None else sleep
    for attempt in range(TRANSACT_ATTEMPTS):
        try:
            client("dynamodb").transact_write_items(TransactItems=[{"Update": update}, *items])
            return
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            reasons = [str(r.get("Code") or "None") for r in exc.response.get("CancellationReasons", [])]
            if code == "TransactionCanceledException" and reasons[:1] == ["ConditionalCheckFailed"]:
                raise RunInProgress(f"run of job {job.job_id} was finished by another worker") from None
            retry = code == "TransactionConflictException" or (
                code == "TransactionCanceledException" and "ConditionalCheckFailed" not in reasons
            )
            if not retry or attempt == TRANSACT_ATTEMPTS - 1:
                raise
            sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))


def get_run(job: FileJob) -> dict[str, Any] | None:
    """The job's run as stored (strongly consistent read), None before it was claimed."""
    reply = client("dynamodb").get_item(TableName=state_table(), Key=run_key(job), ConsistentRead=True)
    return plain(reply.get("Item"))


def runs_of_head(repo: str, number: int, head_sha: str) -> list[dict[str, Any]]:
    """Every run of one head (the fan-in counts and renders them)."""
    return query(
        KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
        ExpressionAttributeValues=to_item({":pk": pr_key(repo, number), ":prefix": f"RUN#{head_sha}#"}),
    )


def runs_with_status(status: str, *, older_than: float) -> list[dict[str, Any]]:
    """Runs in `status` last updated before `older_than` (the sweeper's stuck check, through status-index)."""
    return query(
        IndexName="status-index",
        KeyConditionExpression="#s = :s AND updated_at < :t",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": status}, ":t": {"N": str(int(older_than))}},
    )


def forget_runs(repo: str, number: int, head_sha: str) -> int:
    """Open the head's finished runs again so a requested re-run runs every job again (runs in flight are kept).

    The run items are UPDATED to `requeued` (which start_run may claim), never deleted: what the jobs already
    spent (`cost_micros`, the `b_<reservation>` bookings) stays on them, so the runs of a day still add up to its
    ledger after a `/prfleet review` or a Re-run; the new run's cost adds to it."""
    n = 0
    for run in runs_of_head(repo, number, head_sha):
        if run.get("status") == "running" or run.get("agent") == VERIFY_AGENT:
            continue  # the head's verify runs are reopened by the fan-in when it sends their job again (reopen_run)
        try:
            client("dynamodb").update_item(
                TableName=state_table(),
                Key=to_item({"pk": run["pk"], "sk": run["sk"]}),
                UpdateExpression="SET #s = :requeued, updated_at = :t",
                ConditionExpression="attribute_exists(pk) AND #s <> :running",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=to_item(
                    {":requeued": "requeued", ":running": "running", ":t": int(config_now())}
                ),
            )
        except ClientError as exc:
            if is_conditional(exc):
                continue  # claimed meanwhile: that run is in flight
            raise
        n += 1
    return n


def reopen_run(job: FileJob, *, now: float | None = None) -> None:
    """Open the job's finished run again (`requeued`, which start_run may claim) before its job is sent anew: the
    fan-in's verify job of a head planned again. What it spent stays on the item, as forget_runs keeps it; a run
    in flight or absent is left alone."""
    try:
        client("dynamodb").update_item(
            TableName=state_table(),
            Key=run_key(job),
            UpdateExpression="SET #s = :requeued, updated_at = :t",
            ConditionExpression="attribute_exists(pk) AND #s <> :running",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=to_item(
                {
                    ":requeued": "requeued",
                    ":running": "running",
                    ":t": int(config_now() if now is None else now),
                }
            ),
        )
    except ClientError as exc:
        if not is_conditional(exc):
            raise


def run_owner(job: FileJob) -> tuple[str, str, str]:
    """(table, pk, sk) of the job's run: the ledger writes each booking of the job's calls onto it, in the same
    transaction as the booking (prfleet.cost.ledger), so the run holds what the job cost even when the
    invocation dies right after a call or the sweeper books a stranded reservation."""
    key = run_key(job)
    return (state_table(), key["pk"]["S"], key["sk"]["S"])


def mark_stuck(item: dict[str, Any], *, now: float, reason: str) -> int | None:
    """Move a running run to `stuck` unless it moved on meanwhile (conditional on its last heartbeat).

    Returns how many times this job has now been stuck, or None when the run moved on.
    """
    try:
        reply = client("dynamodb").update_item(
            TableName=state_table(),
            Key=to_item({"pk": item["pk"], "sk": item["sk"]}),
            UpdateExpression="SET #s = :stuck, updated_at = :now, #e = :reason ADD stuck_count :one",
            ReturnValues="ALL_NEW",
            ConditionExpression="#s = :running AND updated_at = :seen",
            ExpressionAttributeNames={"#s": "status", "#e": "error"},  # both are DynamoDB reserved words
            ExpressionAttributeValues=to_item(
                {
                    ":stuck": "stuck",
                    ":now": int(now),
                    ":reason": reason,
                    ":running": "running",
                    ":seen": item["updated_at"],
                    ":one": 1,
                }
            ),
        )
    except ClientError as exc:
        if is_conditional(exc):
            return None
        raise
    return int(plain(reply["Attributes"]).get("stuck_count", 1))


def mark_requeued(job: FileJob, *, now: float | None = None) -> None:
    """A deferred run is let out again by the sweeper (only then may a worker claim it)."""
    now = config_now() if now is None else now
    try:
        client("dynamodb").update_item(
            TableName=state_table(),
            Key=run_key(job),
            UpdateExpression="SET #s = :requeued, updated_at = :t",
            ConditionExpression="#s = :deferred",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=to_item(
                {":requeued": "requeued", ":deferred": "deferred", ":t": int(now)}
            ),
        )
    except ClientError as exc:
        if not is_conditional(exc):  # not deferred any more (forgotten by a re-run, or already running)
            raise
