"""What the team thinks of prfleet's findings, in StateTable: the latest 👍 / 👎 counts of each inline finding, and
the PRs whose reactions the sweeper reads again once they have gone quiet.

Keys:
  QUALITY#<day> / <repo>#<n>#<fingerprint>   one posted inline finding: agent, model, category, severity, title,
                                             path, line, head, comment id, posted_at, `up` and `down` (the counts
                                             the latest read saw) and `read_at`. <day> is the UTC day the comment
                                             was posted, so `prfleet quality report --days N` reads N partitions,
                                             and a repository's findings of one day are one key range (the sort
                                             key starts with the repository: `recent_rejections`).
  REACTIONS#DUE / <due>#<repo>#<n>           a PR whose reactions the sweeper reads at <due> (10-digit epoch
                                             seconds, so the due ones are the sort keys below `due_bound(now)`)
  PR#<repo>#<n> / REACTIONS                  which REACTIONS#DUE entry is the PR's current one (`due_sk`): a new
                                             head replaces it, and an entry that is not current is dropped

A read replaces the counts (`record`): the write is conditional on no later read having been stored and returns the
counts it replaced, so two readers at once (the planner and the sweeper) each publish only their own change and
the changes add up to the stored counts. Items expire QUALITY_TTL after the posting (the report reaches back at most
that far). Query and pagination: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Query.Pagination.html
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from prfleet.config import now as config_now
from prfleet.config.aws import client
from prfleet.jobs import pr_key
from prfleet.store.dynamo import batch_get, is_conditional, plain, state_table, to_item

QUALITY_TTL = 90 * 86400  # findings are kept (and reported) this long after they were posted
REJECTION_DAYS = 30  # how far back recent_rejections looks
DUE_PK = "REACTIONS#DUE"
_BATCH = 100  # BatchGetItem takes at most 100 keys


@dataclass(frozen=True)
class FindingReactions:
    """One of prfleet's inline findings as a read of the PR's review comments saw it."""

    repo: str
    number: int
    fingerprint: str
    comment_id: int
    agent: str
    category: str
    severity: str
    title: str
    path: str
    line: int | None
    head_sha: str  # the commit the comment was posted on (GitHub's original_commit_id)
    posted_at: float  # when GitHub created the comment
    up: int  # 👍 (`+1`) in its roll-up
    down: int  # 👎 (`-1`)


@dataclass(frozen=True)
class Rejection:
    """A finding the team turned down (more 👎 than 👍): what the verification pass is shown as unwanted."""

    title: str
    category: str
    agent: str
    path: str
    up: int
    down: int
    number: int
    posted_at: float


def day_of(ts: float) -> str:
    """The UTC day (YYYY-MM-DD) of an epoch time: the partition of the findings posted then."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d")


def quality_pk(day: str) -> str:
    """The partition of the findings posted on one UTC day (YYYY-MM-DD)."""
    return f"QUALITY#{day}"


def finding_key(f: FindingReactions) -> dict[str, Any]:
    """The key of a finding's item."""
    return to_item({"pk": quality_pk(day_of(f.posted_at)), "sk": f"{f.repo}#{f.number}#{f.fingerprint}"})


def stored(findings: Iterable[FindingReactions]) -> dict[str, dict[str, Any]]:
    """The stored items of these findings (strongly consistent), by fingerprint; BatchGetItem, 100 keys a call."""
    keys = [finding_key(f) for f in findings]
    out: dict[str, dict[str, Any]] = {}
    table = state_table()
    for start in range(0, len(keys), _BATCH):
        chunk = keys[start : start + _BATCH]
        got = batch_get({table: {"Keys": chunk, "ConsistentRead": True}})
        for raw in got.get(table, []):
            item = plain(raw) or {}
            out[str(item.get("fingerprint"))] = item
    return out


def record(f: FindingReactions, *, model: str, read_at: float) -> tuple[int, int] | None:
    """Store what a read saw of one finding; returns the (up, down) it replaced ((0, 0) for a new finding), or None
    when a later read is already stored (then this read's change is not published: the later one's is).

    `model` is written only when the item is new (a later read cannot turn a known model into "unknown")."""
    fields: dict[str, Any] = {
        "repo": f.repo,
        "number": f.number,
        "fingerprint": f.fingerprint,
        "comment_id": f.comment_id,
        "agent": f.agent,
        "category": f.category,
        "severity": f.severity,
        "title": f.title,
        "path": f.path,
        "line": f.line if f.line is not None else 0,
        "head_sha": f.head_sha,
        "posted_at": int(f.posted_at),
        "up": f.up,
        "down": f.down,
        "read_at": int(read_at),
        "expires_at": int(f.posted_at) + QUALITY_TTL,
    }
    # every name aliased: several are DynamoDB reserved words (agent, number, path, line, ...)
    names = {f"#a{i}": k for i, k in enumerate(fields)}
    values = {f":v{i}": v for i, v in enumerate(fields.values())}
    sets = [f"#a{i} = :v{i}" for i in range(len(fields))] + ["#model = if_not_exists(#model, :model)"]
    try:
        reply = client("dynamodb").update_item(
            TableName=state_table(),
            Key=finding_key(f),
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="attribute_not_exists(pk) OR #read <= :read",
            ExpressionAttributeNames={**names, "#model": "model", "#read": "read_at"},
            ExpressionAttributeValues=to_item(
                {**values, ":model": model or "unknown", ":read": int(read_at)}
            ),
            ReturnValues="ALL_OLD",  # the whole item as it was: its counts even where unchanged
        )
    except ClientError as exc:
        if is_conditional(exc):
            return None
        raise
    old = plain(reply.get("Attributes")) or {}
    return int(old.get("up", 0) or 0), int(old.get("down", 0) or 0)


def _query(**kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item of a StateTable Query, one page at a time (as far as the caller reads)."""
    for page in client("dynamodb").get_paginator("query").paginate(TableName=state_table(), **kwargs):
        for raw in page.get("Items", []):
            yield plain(raw) or {}


def recent_rejections(
    repo: str, limit: int, *, now: float | None = None, days: int = REJECTION_DAYS
) -> list[Rejection]:
    """The repository's most recently posted findings the team turned down (more 👎 than 👍), newest first, at most
    `limit`: for the verification pass, as examples of what this team does not want. One Query per day looked at
    (the repository's key range of that day), from today back at most `days` days, until `limit` are found."""
    if limit <= 0:
        return []
    now = config_now() if now is None else now
    found: list[Rejection] = []
    for back in range(days):
        day = day_of(now - back * 86400)
        items = _query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :repo)",
            FilterExpression="#down > #up",
            ExpressionAttributeNames={"#up": "up", "#down": "down"},
            ExpressionAttributeValues=to_item({":pk": quality_pk(day), ":repo": f"{repo}#"}),
        )
        rows = [
            Rejection(
                title=str(i.get("title", "")),
                category=str(i.get("category", "")),
                agent=str(i.get("agent", "")),
                path=str(i.get("path", "")),
                up=int(i.get("up", 0) or 0),
                down=int(i.get("down", 0) or 0),
                number=int(i.get("number", 0) or 0),
                posted_at=float(i.get("posted_at", 0) or 0),
            )
            for i in items
            if i.get("repo") == repo  # the key range of "acme/shop#" cannot hold "acme/shop-x", but be exact
        ]
        found.extend(sorted(rows, key=lambda r: -r.posted_at))
        if len(found) >= limit:
            break
    return found[:limit]


# ----------------------------------------------------------------------------------------- the quiet reads


@dataclass(frozen=True)
class QuietRead:
    """A PR whose reactions the sweeper reads when it has been quiet: the `round`-th read after `since`."""

    repo: str
    number: int
    installation_id: int | None
    since: float  # when the PR's latest head was planned
    round: int
    due: float
    sk: str


def due_sk(due: float, repo: str, number: int) -> str:
    return f"{int(due):010d}#{repo}#{number}"


def due_bound(now: float) -> str:
    """Every entry due at `now` has a sort key below this one (the due time is its 10-digit prefix)."""
    return f"{int(now) + 1:010d}"


def schedule_quiet(
    repo: str,
    number: int,
    installation_id: int | None,
    *,
    since: float,
    round_: int,
    due: float,
    replacing: str | None = None,
) -> bool:
    """Make this the PR's next quiet read: write its entry, point the PR at it, drop the entry it replaces.

    `replacing`: the sweeper's next round, only while the PR still points at the entry it took (a head planned
    meanwhile scheduled its own read, which stands); False when it did not, and nothing is left behind."""
    sk = due_sk(due, repo, number)
    ddb, table = client("dynamodb"), state_table()
    ddb.put_item(
        TableName=table,
        Item=to_item(
            {
                "pk": DUE_PK,
                "sk": sk,
                "repo": repo,
                "number": number,
                "installation_id": installation_id,
                "since": int(since),
                "round": round_,
                "expires_at": int(due) + QUALITY_TTL,
            }
        ),
    )
    update: dict[str, Any] = {
        "TableName": table,
        "Key": to_item({"pk": pr_key(repo, number), "sk": "REACTIONS"}),
        "UpdateExpression": "SET due_sk = :sk, expires_at = :exp",
        "ExpressionAttributeValues": to_item({":sk": sk, ":exp": int(due) + QUALITY_TTL}),
        "ReturnValues": "UPDATED_OLD",
    }
    if replacing is not None:
        update["ConditionExpression"] = "due_sk = :was"
        update["ExpressionAttributeValues"].update(to_item({":was": replacing}))
    try:
        reply = ddb.update_item(**update)
    except ClientError as exc:
        if not is_conditional(exc):
            raise
        ddb.delete_item(TableName=table, Key=to_item({"pk": DUE_PK, "sk": sk}))
        return False
    old = (plain(reply.get("Attributes")) or {}).get("due_sk")
    if old and old != sk:
        ddb.delete_item(TableName=table, Key=to_item({"pk": DUE_PK, "sk": old}))
    return True


def due_quiet(now: float, *, page: int = 20) -> Iterator[QuietRead]:
    """The entries due at `now`, earliest first, read `page` at a time as far as the caller goes."""
    for item in _query(
        KeyConditionExpression="pk = :pk AND sk < :bound",
        ExpressionAttributeValues=to_item({":pk": DUE_PK, ":bound": due_bound(now)}),
        Limit=page,
    ):
        sk = str(item["sk"])
        inst = item.get("installation_id")
        yield QuietRead(
            repo=str(item["repo"]),
            number=int(item["number"]),
            installation_id=int(inst) if inst is not None else None,
            since=float(item.get("since", 0) or 0),
            round=int(item.get("round", 0) or 0),
            due=float(sk.split("#", 1)[0]),
            sk=sk,
        )


def take_quiet(entry: QuietRead) -> bool:
    """Take a due entry (its conditional delete: one sweeper only); True when it is still the PR's current one
    (a newer head replaced it otherwise: its own entry will come)."""
    ddb, table = client("dynamodb"), state_table()
    try:
        ddb.delete_item(
            TableName=table,
            Key=to_item({"pk": DUE_PK, "sk": entry.sk}),
            ConditionExpression="attribute_exists(pk)",
        )
    except ClientError as exc:
        if is_conditional(exc):
            return False
        raise
    reply = ddb.get_item(
        TableName=table,
        Key=to_item({"pk": pr_key(entry.repo, entry.number), "sk": "REACTIONS"}),
        ConsistentRead=True,
    )
    return (plain(reply.get("Item")) or {}).get("due_sk") == entry.sk
