"""The PR's heads in StateTable: which head is current, and one record per head (its plan and the outcomes the
fan-in has counted).

Keys (pk PR#<repo>#<n>):
  HEAD          the current head sha of the PR (latest head wins)
  SHA#<sha>     planned job count, finished and deferred job id sets, per-agent outcome counts (n_<agent>_<outcome>),
                the check run id, the head's repo config and skipped files; the verify state (the posting claims
                whose verify job was sent, and how many parts it was split in, verify_parts_<claim>; the verify
                jobs that have ended, or were deferred: verify_done, verify_deferred);
                prfleet.store.posting keeps its post claims on the same item
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from prfleet.config import now as config_now
from prfleet.config.aws import client
from prfleet.jobs import FileJob, pr_key
from prfleet.store.dynamo import RUN_TTL, is_conditional, plain, state_table, to_item
from prfleet.store.job_runs import FINAL


def set_head(repo: str, number: int, head_sha: str, *, now: float | None = None) -> None:
    """Make `head_sha` the PR's current head: the runs and fan-in of older heads see they were superseded."""
    now = config_now() if now is None else now
    client("dynamodb").put_item(
        TableName=state_table(),
        Item=to_item(
            {"pk": pr_key(repo, number), "sk": "HEAD", "head_sha": head_sha, "updated_at": int(now)}
        ),
    )


def current_head(repo: str, number: int) -> str | None:
    """The PR's current head sha (strongly consistent read), None before the PR was planned."""
    reply = client("dynamodb").get_item(
        TableName=state_table(), Key=current_head_key(repo, number), ConsistentRead=True
    )
    return current_head_of(reply.get("Item"))


def current_head_key(repo: str, number: int) -> dict[str, Any]:
    return to_item({"pk": pr_key(repo, number), "sk": "HEAD"})


def current_head_of(item: dict[str, Any] | None) -> str | None:
    """The PR's current head from the raw HEAD item, None when absent."""
    found = plain(item)
    return found["head_sha"] if found else None


@dataclass
class HeadRecord:
    """One head as planned (job count, check run, repo config) and as far as the fan-in has counted it."""

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
    # the verification pass (issue 24): posting claims ('partial', 'final') whose verify job was sent, has ended
    # (a final outcome: its verdicts, or none), or was deferred (budget, spend limit) and will come back
    verify_sent: set[str] = field(default_factory=set)
    verify_done: set[str] = field(default_factory=set)
    verify_deferred: set[str] = field(default_factory=set)
    # how many verify runs each claim's candidates were split over (VerifyCandidatesPerRun); verify_done and
    # verify_deferred then count each part ('final/2of3': pipeline.verification.part_key)
    verify_parts: dict[str, int] = field(default_factory=dict)

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


_PARTS = "verify_parts_"  # + claim: the number of verify runs its candidates were split over


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
        verify_sent=set(item.get("verify_sent", set())),
        verify_done=set(item.get("verify_done", set())),
        verify_deferred=set(item.get("verify_deferred", set())),
        verify_parts={k.removeprefix(_PARTS): int(v) for k, v in item.items() if k.startswith(_PARTS)},
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
            TableName=state_table(),
            Item=to_item(
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
        if not is_conditional(exc):
            raise


def head_record_key(repo: str, number: int, head_sha: str) -> dict[str, Any]:
    return to_item({"pk": pr_key(repo, number), "sk": f"SHA#{head_sha}"})


def head_record(repo: str, number: int, head_sha: str) -> HeadRecord | None:
    """The head's record (strongly consistent read), None when the head was never planned."""
    reply = client("dynamodb").get_item(
        TableName=state_table(), Key=head_record_key(repo, number, head_sha), ConsistentRead=True
    )
    return head_record_of(reply.get("Item"))


def head_record_of(item: dict[str, Any] | None) -> HeadRecord | None:
    """The head record from its raw item (a GetItem's or a BatchGetItem's), None when absent."""
    found = plain(item)
    return _head_record(found) if found else None


def record_outcome(job: FileJob, outcome: str) -> HeadRecord | None:
    """Count one job's outcome into its head, idempotently (a redelivered job is not counted twice).

    Returns the head record after the update, or None when this outcome was already counted.
    """
    is_final = outcome in FINAL
    set_name = "done_ids" if is_final else "deferred_ids"
    try:
        reply = client("dynamodb").update_item(
            TableName=state_table(),
            Key=head_record_key(job.repo, job.number, job.head_sha),
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
        if is_conditional(exc):
            return None
        raise
    return _head_record(plain(reply["Attributes"]))


def mark_verify_sent(record: HeadRecord, claim: str, parts: int = 1) -> bool:
    """Take the right to send the verify jobs of this head's posting `claim` (`parts` of them), once: False when
    another worker took it (the head's last outcome counted twice, a redelivery). The caller sends the jobs, and
    gives the right back (unmark_verify_sent) if the send fails, so a redelivery sends them instead.

    Each take writes its own token, as posting.claim_post does: when DynamoDB applied it and the response was
    lost, botocore's retry fails the condition on our own write, and the stored token says it is ours. Refusing
    it left nobody to send the verify job, and the head waited for it for ever (the CI soak on 7078613)."""
    token = uuid.uuid4().hex
    try:
        client("dynamodb").update_item(
            TableName=state_table(),
            Key=head_record_key(record.repo, record.number, record.head_sha),
            UpdateExpression="ADD verify_sent :c SET #token = :token, #parts = :parts",
            ConditionExpression="attribute_exists(pk) AND NOT contains(verify_sent, :claim)",
            ExpressionAttributeNames={"#token": _verify_token(claim), "#parts": _PARTS + claim},
            ExpressionAttributeValues={
                ":c": {"SS": [claim]},
                ":claim": {"S": claim},
                ":token": {"S": token},
                ":parts": {"N": str(int(parts))},
            },
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if is_conditional(exc):
            held = plain(exc.response.get("Item")) or {}
            return held.get(_verify_token(claim)) == token and claim in (held.get("verify_sent") or ())
        raise
    return True


def _verify_token(claim: str) -> str:
    return f"verify_token_{claim}"


def unmark_verify_sent(record: HeadRecord, claim: str) -> None:
    """Give back mark_verify_sent after the send failed."""
    client("dynamodb").update_item(
        TableName=state_table(),
        Key=head_record_key(record.repo, record.number, record.head_sha),
        UpdateExpression="DELETE verify_sent :c REMOVE #token, #parts",
        ExpressionAttributeNames={"#token": _verify_token(claim), "#parts": _PARTS + claim},
        ExpressionAttributeValues={":c": {"SS": [claim]}},
    )


def record_verify_outcome(
    repo: str, number: int, head_sha: str, claim: str, outcome: str
) -> HeadRecord | None:
    """Count the outcome of the verify job `claim` (a posting claim, or one part of it: 'final/2of3'),
    idempotently (a redelivery is not counted twice):
    a final outcome into verify_done, a deferral into verify_deferred. Returns the head record after the update,
    or None when this outcome was already counted (or the head is gone)."""
    set_name = "verify_done" if outcome in FINAL else "verify_deferred"
    try:
        reply = client("dynamodb").update_item(
            TableName=state_table(),
            Key=head_record_key(repo, number, head_sha),
            UpdateExpression=f"ADD {set_name} :c",
            ConditionExpression=f"attribute_exists(pk) AND NOT contains({set_name}, :claim)",
            ExpressionAttributeValues={":c": {"SS": [claim]}, ":claim": {"S": claim}},
            ReturnValues="ALL_NEW",
        )
    except ClientError as exc:
        if is_conditional(exc):
            return None
        raise
    return _head_record(plain(reply["Attributes"]))
