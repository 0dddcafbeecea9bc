"""Posting a head's review, once: the claim on the head record that lets one worker post, the PR's posting lease
that lets one poster at a time read and record, and the fingerprints of the findings already posted on the PR.

Keys (pk PR#<repo>#<n>):
  SHA#<sha>     `posted` (the claim: partial or final), `post_token`, `review_posted` (claims whose review is on
                GitHub), on the head record of prfleet.store.heads
  POSTING       the posting lease: owner and until
  POSTED        fingerprints of findings already posted on this PR (no duplicates across heads)
"""

from __future__ import annotations

import uuid
from typing import Any

from botocore.exceptions import ClientError

from prfleet.config import now as config_now
from prfleet.config.aws import client
from prfleet.jobs import pr_key
from prfleet.store.dynamo import RUN_TTL, is_conditional, plain, state_table, to_item
from prfleet.store.heads import HeadRecord, head_record_key


def _head_key(record: HeadRecord) -> dict[str, Any]:
    return head_record_key(record.repo, record.number, record.head_sha)


def wanted_claim(record: HeadRecord) -> str | None:
    """The claim claim_post would try for this record ('final', 'partial'), None when it would try none: the
    verify job of that posting is sent before the claim is taken (prfleet.pipeline.fanin)."""
    if record.final and record.posted != "final":
        return "final"
    if record.complete and record.posted is None:
        return "partial"
    return None


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
            TableName=state_table(),
            Key=_head_key(record),
            UpdateExpression="SET posted = :want, post_token = :token",
            ConditionExpression=condition,
            ExpressionAttributeValues=to_item({**values, ":token": token}),
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if is_conditional(exc):
            held = plain(exc.response.get("Item")) or {}
            if held.get("post_token") == token and held.get("posted") == want:
                return want  # our own claim, applied before its response was lost
            return None
        raise
    return want


def release_post(record: HeadRecord, claim: str) -> None:
    """Undo claim_post after a failure worth retrying: back to unposted ('partial' stays posted for 'final')."""
    if claim == "final" and record.posted == "partial":
        update, values = "SET posted = :back", {":back": "partial", ":claim": claim}
    else:
        update, values = "REMOVE posted", {":claim": claim}
    try:
        client("dynamodb").update_item(
            TableName=state_table(),
            Key=_head_key(record),
            UpdateExpression=update,
            ConditionExpression="posted = :claim",
            ExpressionAttributeValues=to_item(values),
        )
    except ClientError as exc:
        if not is_conditional(exc):
            raise


def review_posted(record: HeadRecord, claim: str) -> bool:
    """Whether the review of this claim already reached GitHub (a retry after a later step failed)."""
    reply = client("dynamodb").get_item(
        TableName=state_table(),
        Key=_head_key(record),
        ConsistentRead=True,
        ProjectionExpression="review_posted",
    )
    return claim in (plain(reply.get("Item")) or {}).get("review_posted", set())


def mark_review_posted(record: HeadRecord, claim: str) -> None:
    """Note that the review of this claim is on GitHub, so a retry of a later step does not post it again."""
    client("dynamodb").update_item(
        TableName=state_table(),
        Key=_head_key(record),
        UpdateExpression="ADD review_posted :c",
        ExpressionAttributeValues={":c": {"SS": [claim]}},
    )


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
            TableName=state_table(),
            Key=to_item({"pk": pr_key(repo, number), "sk": "POSTING"}),
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames={"#o": "owner", "#u": "until"},
            ExpressionAttributeValues=to_item(values),
        )
    except ClientError as exc:
        if is_conditional(exc):
            return False
        raise
    return True


def recorded_fingerprints(repo: str, number: int) -> set[str]:
    """The fingerprints recorded on the PR's POSTED item: findings some review of this PR already posted."""
    reply = client("dynamodb").get_item(
        TableName=state_table(),
        Key=to_item({"pk": pr_key(repo, number), "sk": "POSTED"}),
        ConsistentRead=True,
    )
    item = plain(reply.get("Item")) or {}
    return set(item.get("fingerprints", set()))


def record_fingerprints(repo: str, number: int, fingerprints: set[str]) -> None:
    """Add a posted review's fingerprints to the PR's POSTED item (read with recorded_fingerprints)."""
    if not fingerprints:
        return
    client("dynamodb").update_item(
        TableName=state_table(),
        Key=to_item({"pk": pr_key(repo, number), "sk": "POSTED"}),
        UpdateExpression="ADD fingerprints :f",
        ExpressionAttributeValues={":f": {"SS": sorted(fingerprints)}},
    )
