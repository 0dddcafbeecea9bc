"""prfleet's replies to comments (issue 25): one item per comment it answered, so a question, an `ignore` or a
resolved thread gets one reply, whatever redelivers it (GitHub, SQS, a re-plan after a push).

Key: PR#<repo>#<n> / ANSWER#<comment id>: the reply's comment id, the outcome (answered, refused, noted) and the
run that wrote it. Written with a conditional put after the reply is posted; before posting, prfleet also looks
for the reply's hidden marker (`answer_marker`) on GitHub, so a reply posted by an attempt that died before this
write is found rather than posted again.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from prfleet.config import now as config_now
from prfleet.config.aws import client
from prfleet.jobs import pr_key
from prfleet.store.dynamo import RUN_TTL, is_conditional, plain, state_table, to_item


def answer_marker(comment_id: int) -> str:
    """The hidden marker of prfleet's reply to one comment: looked for on GitHub before a reply is sent."""
    return f"<!-- prfleet:answer to={int(comment_id)} -->"


def _key(repo: str, number: int, comment_id: int) -> dict[str, Any]:
    return to_item({"pk": pr_key(repo, number), "sk": f"ANSWER#{int(comment_id)}"})


def answer_of(repo: str, number: int, comment_id: int) -> dict[str, Any] | None:
    """The recorded reply to a comment (strongly consistent), None when it has none yet."""
    reply = client("dynamodb").get_item(
        TableName=state_table(), Key=_key(repo, number, comment_id), ConsistentRead=True
    )
    return plain(reply.get("Item"))


def record_answer(
    repo: str,
    number: int,
    comment_id: int,
    *,
    outcome: str,
    reply_id: int | None,
    run_id: str,
    now: float | None = None,
) -> bool:
    """Record the reply once: True when this call recorded it, False when the comment was already answered."""
    now = config_now() if now is None else now
    item = {
        **_key(repo, number, comment_id),
        **to_item(
            {
                "outcome": outcome,
                "reply_id": reply_id,
                "run_id": run_id,
                "answered_at": int(now),
                "expires_at": int(now) + RUN_TTL,
            }
        ),
    }
    try:
        client("dynamodb").put_item(
            TableName=state_table(), Item=item, ConditionExpression="attribute_not_exists(pk)"
        )
    except ClientError as exc:
        if is_conditional(exc):
            return False
        raise
    return True
