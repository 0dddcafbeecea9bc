"""PR state in DynamoDB: the current head of each PR, one record per head (plan and fan-in), runs, deferred jobs.

Keys (StateTable, pk/sk):
  PR#<repo>#<n> / HEAD            current head sha of the PR (latest head wins)
  PR#<repo>#<n> / SHA#<sha>       planned job count, finished and deferred job id sets, check run id, post claims
  PR#<repo>#<n> / RUN#<sha>#<id>  one agent run: status, findings, usage, cost, heartbeat (updated_at)
  PR#<repo>#<n> / POSTED          fingerprints of findings already posted on this PR (no duplicates across heads)
  DEFERRED / <ts>#<job id>        a job refused by the budget, re-queued by the sweeper after the reset
Runs in progress carry status=running and sit in the `status-index` GSI, so the sweeper finds stuck ones cheaply.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from prfleet.config import now as config_now
from prfleet.config import settings
from prfleet.config.aws import client
from prfleet.cost.booking import BOOKED_PREFIX
from prfleet.jobs import FileJob, pr_key

FINAL = frozenset({"succeeded", "partial", "failed", "cached", "superseded", "skipped"})
RUN_TTL = 30 * 86400
_ser = TypeSerializer()
_de = TypeDeserializer()


def _item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in values.items() if v is not None}


def _plain(item: dict[str, Any] | None) -> dict[str, Any] | None:
    if item is None:
        return None
    out = {k: _de.deserialize(v) for k, v in item.items()}
    for k, v in out.items():
        if hasattr(v, "as_integer_ratio") and not isinstance(v, int | float):  # Decimal -> int/float
            out[k] = int(v) if v == int(v) else float(v)
    return out


def _table() -> str:
    return settings().state_table


def _is_conditional(exc: ClientError) -> bool:
    return exc.response["Error"]["Code"] in (
        "ConditionalCheckFailedException",
        "TransactionCanceledException",
    )


# ---------------------------------------------------------------- heads
def set_head(repo: str, number: int, head_sha: str, *, now: float | None = None) -> None:
    now = config_now() if now is None else now
    client("dynamodb").put_item(
        TableName=_table(),
        Item=_item({"pk": pr_key(repo, number), "sk": "HEAD", "head_sha": head_sha, "updated_at": int(now)}),
    )


def current_head(repo: str, number: int) -> str | None:
    reply = client("dynamodb").get_item(
        TableName=_table(), Key=current_head_key(repo, number), ConsistentRead=True
    )
    return current_head_of(reply.get("Item"))


@dataclass
class HeadRecord:
    repo: str
    number: int
    head_sha: str
    planned: int = 0
    done_ids: set[str] = field(default_factory=set)
    deferred_ids: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    check_run_id: int | None = None
    posted: str | None = None
    repo_config: str | None = None
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    installation_id: int | None = None

    @property
    def complete(self) -> bool:
        """Every planned job has an outcome (deferred ones included)."""
        return len(self.done_ids | self.deferred_ids) >= self.planned

    @property
    def final(self) -> bool:
        return len(self.done_ids) >= self.planned

    @property
    def waiting_on_budget(self) -> int:
        return len(self.deferred_ids - self.done_ids)


def _head_record(item: dict[str, Any]) -> HeadRecord:
    repo, number = item["pk"].split("#", 1)[1].rsplit("#", 1)
    return HeadRecord(
        repo=repo,
        number=int(number),
        head_sha=item["sk"][4:],
        planned=int(item.get("planned", 0)),
        done_ids=set(item.get("done_ids", set())) - {"-"},
        deferred_ids=set(item.get("deferred_ids", set())) - {"-"},
        counts={k[2:]: int(v) for k, v in item.items() if k.startswith("n_")},
        check_run_id=item.get("check_run_id"),
        posted=item.get("posted"),
        repo_config=item.get("repo_config"),
        skipped_files=json.loads(item.get("skipped_files", "[]")),
        installation_id=item.get("installation_id"),
    )


def record_plan(
    repo: str,
    number: int,
    head_sha: str,
    *,
    planned: int,
    skipped_files: list[dict[str, str]],
    repo_config: str | None,
    check_run_id: int | None,
    installation_id: int | None,
    reset: bool = False,
    now: float | None = None,
) -> None:
    """Record how many jobs a head has, once: a redelivered PR job does not reset the fan-in (`reset` does)."""
    now = config_now() if now is None else now
    try:
        client("dynamodb").put_item(
            TableName=_table(),
            Item=_item(
                {
                    "pk": pr_key(repo, number),
                    "sk": f"SHA#{head_sha}",
                    "planned": planned,
                    "skipped_files": json.dumps(skipped_files),
                    "repo_config": repo_config,
                    "check_run_id": check_run_id,
                    "installation_id": installation_id,
                    "created_at": int(now),
                    "expires_at": int(now) + RUN_TTL,
                }
            ),
            **({} if reset else {"ConditionExpression": "attribute_not_exists(pk)"}),
        )
    except ClientError as exc:
        if not _is_conditional(exc):
            raise


def head_record_key(repo: str, number: int, head_sha: str) -> dict[str, Any]:
    return _item({"pk": pr_key(repo, number), "sk": f"SHA#{head_sha}"})


def current_head_key(repo: str, number: int) -> dict[str, Any]:
    return _item({"pk": pr_key(repo, number), "sk": "HEAD"})


def head_record(repo: str, number: int, head_sha: str) -> HeadRecord | None:
    reply = client("dynamodb").get_item(
        TableName=_table(), Key=head_record_key(repo, number, head_sha), ConsistentRead=True
    )
    return head_record_of(reply.get("Item"))


def head_record_of(item: dict[str, Any] | None) -> HeadRecord | None:
    """The head record from its raw item (a GetItem's or a BatchGetItem's), None when absent."""
    plain = _plain(item)
    return _head_record(plain) if plain else None


def current_head_of(item: dict[str, Any] | None) -> str | None:
    """The PR's current head from the raw HEAD item, None when absent."""
    plain = _plain(item)
    return plain["head_sha"] if plain else None


BATCH_ATTEMPTS = 8


def batch_get(tables: dict[str, dict[str, Any]], *, sleep: Any = None) -> dict[str, list[dict[str, Any]]]:
    """One BatchGetItem for up to 100 keys over several tables ({table: {"Keys": [...], "ConsistentRead": bool}});
    the raw items found, per table (a key not found is absent). DynamoDB may answer part of a batch and name the
    rest in UnprocessedKeys (throughput, or the 16 MB response limit), which is sent again with jittered backoff
    (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html); ConsistentRead is per
    table and is kept on the retry, which carries each table's request as DynamoDB returned it."""
    import random
    import time

    sleep = time.sleep if sleep is None else sleep
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in tables}
    request = {t: dict(r) for t, r in tables.items() if r.get("Keys")}
    for attempt in range(BATCH_ATTEMPTS):
        if not request:
            return out
        reply = client("dynamodb").batch_get_item(RequestItems=request)
        for table, items in reply.get("Responses", {}).items():
            out.setdefault(table, []).extend(items)
        request = {t: r for t, r in (reply.get("UnprocessedKeys") or {}).items() if r.get("Keys")}
        if request and attempt < BATCH_ATTEMPTS - 1:
            sleep(random.uniform(0, min(1.0, 0.05 * 2**attempt)))
    if request:
        raise RuntimeError(f"BatchGetItem left keys unprocessed after {BATCH_ATTEMPTS} attempts")
    return out


def record_outcome(job: FileJob, outcome: str) -> HeadRecord | None:
    """Count one job's outcome into its head, idempotently (a redelivered job is not counted twice).

    Returns the head record after the update, or None when this outcome was already counted.
    """
    is_final = outcome in FINAL
    set_name = "done_ids" if is_final else "deferred_ids"
    try:
        reply = client("dynamodb").update_item(
            TableName=_table(),
            Key=_item({"pk": job.pr_key, "sk": f"SHA#{job.head_sha}"}),
            UpdateExpression=f"ADD {set_name} :id, #n :one",
            ConditionExpression=f"attribute_exists(pk) AND NOT contains({set_name}, :jid)",
            ExpressionAttributeNames={"#n": f"n_{job.agent}_{outcome}"},
            ExpressionAttributeValues={
                ":id": {"SS": [job.job_id]},
                ":jid": {"S": job.job_id},
                ":one": {"N": "1"},
            },
            ReturnValues="ALL_NEW",
        )
    except ClientError as exc:
        if _is_conditional(exc):
            return None
        raise
    return _head_record(_plain(reply["Attributes"]))


def claim_post(record: HeadRecord) -> str | None:
    """Let exactly one worker post for a head: 'final' when all jobs ran, 'partial' when some wait on the budget.

    Each claim writes its own token: when DynamoDB applied the claim but the response was lost, botocore's retry
    fails the condition on our own write, and the stored token (ReturnValuesOnConditionCheckFailure) says it is
    ours. Refusing it left the head with nobody to post: a finished head without its review or check (found by
    the default-scale soak, lost_response on UpdateItem)."""
    token = uuid.uuid4().hex
    if record.final:
        want = "final"
        condition = "attribute_not_exists(posted) OR posted = :partial"
        values: dict[str, Any] = {":want": want, ":partial": "partial"}
        if record.planned:
            condition = f"({condition}) AND size(done_ids) >= :planned"
            values[":planned"] = record.planned
    elif record.complete and record.posted is None:
        want, condition, values = "partial", "attribute_not_exists(posted)", {":want": "partial"}
    else:
        return None
    try:
        client("dynamodb").update_item(
            TableName=_table(),
            Key=_item({"pk": pr_key(record.repo, record.number), "sk": f"SHA#{record.head_sha}"}),
            UpdateExpression="SET posted = :want, post_token = :token",
            ConditionExpression=condition,
            ExpressionAttributeValues=_item({**values, ":token": token}),
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if _is_conditional(exc):
            held = _plain(exc.response.get("Item")) or {}
            if held.get("post_token") == token and held.get("posted") == want:
                return want  # our own claim, applied before its response was lost
            return None
        raise
    return want


def _head_key(record: HeadRecord) -> dict[str, Any]:
    return _item({"pk": pr_key(record.repo, record.number), "sk": f"SHA#{record.head_sha}"})


def release_post(record: HeadRecord, claim: str) -> None:
    """Undo claim_post after a failure worth retrying: back to unposted ('partial' stays posted for 'final')."""
    if claim == "final" and record.posted == "partial":
        update, values = "SET posted = :back", {":back": "partial", ":claim": claim}
    else:
        update, values = "REMOVE posted", {":claim": claim}
    try:
        client("dynamodb").update_item(
            TableName=_table(),
            Key=_head_key(record),
            UpdateExpression=update,
            ConditionExpression="posted = :claim",
            ExpressionAttributeValues=_item(values),
        )
    except ClientError as exc:
        if not _is_conditional(exc):
            raise


def review_posted(record: HeadRecord, claim: str) -> bool:
    """Whether the review of this claim already reached GitHub (a retry after a later step failed)."""
    reply = client("dynamodb").get_item(
        TableName=_table(), Key=_head_key(record), ConsistentRead=True, ProjectionExpression="review_posted"
    )
    return claim in (_plain(reply.get("Item")) or {}).get("review_posted", set())


def mark_review_posted(record: HeadRecord, claim: str) -> None:
    client("dynamodb").update_item(
        TableName=_table(),
        Key=_head_key(record),
        UpdateExpression="ADD review_posted :c",
        ExpressionAttributeValues={":c": {"SS": [claim]}},
    )


# ---------------------------------------------------------------- runs
def run_key(job: FileJob) -> dict[str, Any]:
    return _item({"pk": job.pr_key, "sk": f"RUN#{job.head_sha}#{job.job_id}"})


class RunInProgress(Exception):
    """Another worker holds or finished this job's run (SQS delivered the message twice)."""


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
            TableName=_table(),
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
                **_item({f":v{i}": v for i, v in enumerate(fields.values())}),
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
        if _is_conditional(exc):
            held = _plain(exc.response.get("Item")) or {}
            if held.get("run_id") == run_id and held.get("status") == "running":
                # Our own claim: DynamoDB applied it, the response was lost (a 500 after the write) and botocore's
                # retry met the run it had just written. Refusing here would drop the job as a duplicate and leave
                # the run `running` until the sweeper's stuck check (found by the soak: 23 runs at default scale).
                return int(held.get("cost_micros", 0) or 0)
            raise RunInProgress(f"run of job {job.job_id} is taken by another worker") from None
        raise
    return int((_plain(reply.get("Attributes")) or {}).get("cost_micros", 0) or 0)


def heartbeat(job: FileJob, run_id: str, *, now: float | None = None) -> None:
    """Keep our running run out of the stuck sweep; RunInProgress if it is no longer ours (marked stuck and
    re-queued, or taken over by another worker), so the caller stops instead of refreshing someone else's run."""
    now = config_now() if now is None else now
    try:
        client("dynamodb").update_item(
            TableName=_table(),
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
        if _is_conditional(exc):
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
            vals[f":f{i}"] = _ser.serialize(v)
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
        "TableName": _table(),
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
        if _is_conditional(exc):
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
    import random
    import time

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
    reply = client("dynamodb").get_item(TableName=_table(), Key=run_key(job), ConsistentRead=True)
    return _plain(reply.get("Item"))


def runs_of_head(repo: str, number: int, head_sha: str) -> list[dict[str, Any]]:
    return _query(
        KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
        ExpressionAttributeValues=_item({":pk": pr_key(repo, number), ":prefix": f"RUN#{head_sha}#"}),
    )


def runs_with_status(status: str, *, older_than: float) -> list[dict[str, Any]]:
    return _query(
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
        if run.get("status") == "running":
            continue
        try:
            client("dynamodb").update_item(
                TableName=_table(),
                Key=_item({"pk": run["pk"], "sk": run["sk"]}),
                UpdateExpression="SET #s = :requeued, updated_at = :t",
                ConditionExpression="attribute_exists(pk) AND #s <> :running",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=_item(
                    {":requeued": "requeued", ":running": "running", ":t": int(config_now())}
                ),
            )
        except ClientError as exc:
            if _is_conditional(exc):
                continue  # claimed meanwhile: that run is in flight
            raise
        n += 1
    return n


def run_owner(job: FileJob) -> tuple[str, str, str]:
    """(table, pk, sk) of the job's run: the ledger writes each booking of the job's calls onto it, in the same
    transaction as the booking (prfleet.budget.attribution), so the run holds what the job cost even when the
    invocation dies right after a call or the sweeper books a stranded reservation."""
    key = run_key(job)
    return (_table(), key["pk"]["S"], key["sk"]["S"])


def booked_of(run: dict[str, Any]) -> int:
    """Everything the job's model calls booked on the ledger, over all its attempts (`b_<reservation>`)."""

    return sum(int(v) for k, v in run.items() if k.startswith(BOOKED_PREFIX))


def mark_stuck(item: dict[str, Any], *, now: float, reason: str) -> int | None:
    """Move a running run to `stuck` unless it moved on meanwhile (conditional on its last heartbeat).

    Returns how many times this job has now been stuck, or None when the run moved on.
    """
    try:
        reply = client("dynamodb").update_item(
            TableName=_table(),
            Key=_item({"pk": item["pk"], "sk": item["sk"]}),
            UpdateExpression="SET #s = :stuck, updated_at = :now, #e = :reason ADD stuck_count :one",
            ReturnValues="ALL_NEW",
            ConditionExpression="#s = :running AND updated_at = :seen",
            ExpressionAttributeNames={"#s": "status", "#e": "error"},  # both are DynamoDB reserved words
            ExpressionAttributeValues=_item(
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
        if _is_conditional(exc):
            return None
        raise
    return int(_plain(reply["Attributes"]).get("stuck_count", 1))


def _query(**kwargs: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    paginator = client("dynamodb").get_paginator("query")
    for page in paginator.paginate(TableName=_table(), **kwargs):
        out.extend(_plain(i) for i in page.get("Items", []))
    return out


# ---------------------------------------------------------------- posted fingerprints
def posted_fingerprints(repo: str, number: int) -> set[str]:
    reply = client("dynamodb").get_item(
        TableName=_table(), Key=_item({"pk": pr_key(repo, number), "sk": "POSTED"}), ConsistentRead=True
    )
    item = _plain(reply.get("Item")) or {}
    return set(item.get("fingerprints", set()))


# One poster at a time per PR: reading the posted fingerprints, posting the review and recording its fingerprints
# are three requests, so two postings for the same PR at once (a head's final review and the follow-up for outcomes
# it was owed, or two heads) both saw the other's comments as new and posted them twice (found by the soak with a
# spend limit: the same inline comment in two reviews 2 s apart). The lease is taken before the read and given back
# after the record; a poster that died lets the next one in after POST_LEASE_S.
POST_LEASE_S = 120


class PostingBusy(Exception):
    """Another worker is posting for this PR (its lease is held): post later."""


def lease_posting(repo: str, number: int, owner: str, *, now: float | None = None) -> bool:
    """Take the PR's posting lease for `owner`; False while another owner holds an unexpired one (ours again
    is not refused: botocore's retry after a lost response meets our own lease)."""
    now = config_now() if now is None else now
    return _posting_lease(
        repo,
        number,
        "SET #o = :o, #u = :u, expires_at = :x",
        "attribute_not_exists(#u) OR #u < :now OR #o = :o",
        {":o": owner, ":u": int(now) + POST_LEASE_S, ":now": int(now), ":x": int(now) + RUN_TTL},
    )


def release_posting(repo: str, number: int, owner: str) -> None:
    """Give the lease back (only ours: one that expired and was taken since stays with its new owner)."""
    _posting_lease(repo, number, "SET #u = :zero", "#o = :o", {":o": owner, ":zero": 0})


def _posting_lease(repo: str, number: int, update: str, condition: str, values: dict[str, Any]) -> bool:
    """One conditional write of the PR's POSTING item; False when its condition failed."""
    try:
        client("dynamodb").update_item(
            TableName=_table(),
            Key=_item({"pk": pr_key(repo, number), "sk": "POSTING"}),
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames={"#o": "owner", "#u": "until"},
            ExpressionAttributeValues=_item(values),
        )
    except ClientError as exc:
        if _is_conditional(exc):
            return False
        raise
    return True


def add_posted_fingerprints(repo: str, number: int, fingerprints: set[str]) -> None:
    if not fingerprints:
        return
    client("dynamodb").update_item(
        TableName=_table(),
        Key=_item({"pk": pr_key(repo, number), "sk": "POSTED"}),
        UpdateExpression="ADD fingerprints :f",
        ExpressionAttributeValues={":f": {"SS": sorted(fingerprints)}},
    )


# ---------------------------------------------------------------- deferred jobs
def defer(job: FileJob, *, day: str, reason: str, now: float | None = None, until: str = "day") -> None:
    """Keep a job the budget refused; the sweeper re-queues it after the reset (oldest first), or, with
    until="circuit", once the spend-limit circuit has closed again."""
    now = config_now() if now is None else now
    client("dynamodb").put_item(
        TableName=_table(),
        Item=_item(
            {
                "pk": "DEFERRED",
                "sk": f"{now:017.6f}#{job.job_id}",
                "job": job.to_message(),
                "day": day,
                "reason": reason,
                "until": until,
                "repo": job.repo,
                "path": job.path,
                "agent": job.agent,
                "created_at": int(now),
            }
        ),
    )


def deferred_jobs(limit: int = 100) -> list[dict[str, Any]]:
    reply = client("dynamodb").query(
        TableName=_table(),
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "DEFERRED"}},
        Limit=limit,
        ScanIndexForward=True,
    )
    return [_plain(i) for i in reply.get("Items", [])]


def mark_requeued(job: FileJob, *, now: float | None = None) -> None:
    """A deferred run is let out again by the sweeper (only then may a worker claim it)."""
    now = config_now() if now is None else now
    try:
        client("dynamodb").update_item(
            TableName=_table(),
            Key=run_key(job),
            UpdateExpression="SET #s = :requeued, updated_at = :t",
            ConditionExpression="#s = :deferred",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=_item(
                {":requeued": "requeued", ":deferred": "deferred", ":t": int(now)}
            ),
        )
    except ClientError as exc:
        if not _is_conditional(exc):  # not deferred any more (forgotten by a re-run, or already running)
            raise


def drop_deferred(sk: str) -> bool:
    """Remove a deferred entry once; False if another sweeper already took it."""
    try:
        client("dynamodb").delete_item(
            TableName=_table(),
            Key=_item({"pk": "DEFERRED", "sk": sk}),
            ConditionExpression="attribute_exists(pk)",
        )
    except ClientError as exc:
        if _is_conditional(exc):
            return False
        raise
    return True
