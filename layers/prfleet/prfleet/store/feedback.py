"""What a team told prfleet not to report (issue 25): suppressions, one item per `/prfleet ignore` or resolved
thread, in StateTable.

Key: FEEDBACK / <repo>#<id>. One partition for the deployment: a fan-in reads one repository's rules with one
Query (`begins_with`), the CLI lists or forgets any rule by its id; a team records a handful a week, so the
partition stays small. No TTL: a suppression lasts until `prfleet feedback forget ID`. The id derives from the
comment (or thread) that taught it, so a redelivered comment records nothing twice (a conditional put).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from botocore.exceptions import ClientError

from prfleet.config.aws import client
from prfleet.store.dynamo import is_conditional, plain, state_table, to_item

PK = "FEEDBACK"


@dataclass(frozen=True)
class Suppression:
    """One rule: findings of `agent` in `category` whose normalised title is `title`, on paths matching
    `path_glob`, are no longer reported on `repo`. Who taught it, when, why, and from which comment."""

    id: str
    repo: str
    agent: str
    category: str
    title: str  # normalised (pipeline.suppression.normalise_title)
    path_glob: str
    who: str
    when: int  # epoch seconds
    why: str  # the reason given after `/prfleet ignore`, or how it was learned
    source: str  # ignore / resolve
    pr: int
    comment_id: int


def rule_id(repo: str, comment_id: int) -> str:
    """The id of the rule a comment teaches: the same for every delivery of that comment."""
    return hashlib.sha256(f"{repo}|{int(comment_id)}".encode()).hexdigest()[:12]


def _key(repo: str, rid: str) -> dict[str, Any]:
    return to_item({"pk": PK, "sk": f"{repo}#{rid}"})


def _from_item(item: dict[str, Any]) -> Suppression:
    return Suppression(
        id=str(item["id"]),
        repo=str(item["repo"]),
        agent=str(item.get("agent") or ""),
        category=str(item.get("category") or ""),
        title=str(item.get("title") or ""),
        path_glob=str(item.get("path_glob") or "*"),
        who=str(item.get("who") or ""),
        when=int(item.get("when") or 0),
        why=str(item.get("why") or ""),
        source=str(item.get("source") or ""),
        pr=int(item.get("pr") or 0),
        comment_id=int(item.get("comment_id") or 0),
    )


def record(rule: Suppression) -> bool:
    """Store a rule once: True when it is new, False when this comment's rule was already recorded."""
    try:
        client("dynamodb").put_item(
            TableName=state_table(),
            Item={**_key(rule.repo, rule.id), **to_item(asdict(rule))},
            ConditionExpression="attribute_not_exists(pk)",
        )
    except ClientError as exc:
        if is_conditional(exc):
            return False
        raise
    return True


def _query(table: str | None, **kwargs: Any) -> list[Suppression]:
    """Every page of a Query of the FEEDBACK partition (`table`: StateTable's name, default the settings')."""
    out: list[Suppression] = []
    paginator = client("dynamodb").get_paginator("query")
    for page in paginator.paginate(TableName=table or state_table(), **kwargs):
        out.extend(_from_item(plain(i) or {}) for i in page.get("Items", []))
    return out


def rules(repo: str, *, table: str | None = None) -> list[Suppression]:
    """The repository's rules (one Query), oldest first."""
    found = _query(
        table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
        ExpressionAttributeValues=to_item({":pk": PK, ":prefix": f"{repo}#"}),
        ConsistentRead=True,
    )
    return sorted(found, key=lambda r: (r.when, r.id))


def all_rules(*, table: str | None = None) -> list[Suppression]:
    """Every repository's rules (the CLI's list), by repository, oldest first. `table`: StateTable's name when
    the caller has no settings (the CLI, given --stack or --local)."""
    found = _query(table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues=to_item({":pk": PK}))
    return sorted(found, key=lambda r: (r.repo, r.when, r.id))


def forget(rid: str, *, table: str | None = None) -> Suppression | None:
    """Delete the rule with id `rid`; the rule deleted, or None when there is none (already forgotten)."""
    found = next((r for r in all_rules(table=table) if r.id == rid), None)
    if found is None:
        return None
    try:
        reply = client("dynamodb").delete_item(
            TableName=table or state_table(),
            Key=_key(found.repo, found.id),
            ConditionExpression="attribute_exists(pk)",
            ReturnValues="ALL_OLD",
        )
    except ClientError as exc:
        if is_conditional(exc):
            return None
        raise
    old = plain(reply.get("Attributes"))
    return _from_item(old) if old else found
