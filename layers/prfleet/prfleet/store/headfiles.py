"""The PR's file list for one head, listed once by the planner and read by every job of that head.

What a job needs of the PR (title, body, every changed file's status, blob sha, previous name, line counts, patch,
tree mode and size, and the head's symlinks) is listed from GitHub once per head; the jobs read it here instead of
listing the PR's file pages again (about four GitHub requests per job before; one blob read per job now).

Storage: StateTable items `PR#<repo>#<n>` / `FILES#<head>#<chunk>`, gzip'd JSON cut into chunks below DynamoDB's
400 KB item limit, with the head's TTL. Why DynamoDB rather than S3: the planner and the agents already read and
write StateTable (no new service, bucket policy, encryption or lifecycle to run), the list expires with the head's
other items, and the common case (a few hundred files; patches compress about 5:1) is one item, read with one
strongly consistent Query (about 1 RCU per 4 KB). S3 would win for lists of tens of MB; GitHub's 3,000-file cap
and the MaxFilesPerPr limit keep the list well below that. Item size limit:
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-items

Beside the list, one small item `PLANNING#<head>` names the delivery that last began to plan the head, written
before the planner creates the head's check run: a planning cut off after creating it (a GitHub rate limit that
re-queued the PR job, a timeout) is then known to its retry, which looks for that check run instead of leaving it
unfinished next to a second one (prfleet.planner).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from prfleet.config import now as config_now
from prfleet.config import settings
from prfleet.config.aws import client
from prfleet.jobs import pr_key

VERSION = 1
CHUNK_BYTES = 350_000  # below the 400 KB item limit with room for the key and attribute names
TTL = 30 * 86400  # as long as the head's runs (prfleet.store.dynamo.RUN_TTL)
KEPT = ("filename", "status", "sha", "previous_filename", "additions", "deletions", "changes", "patch")


@dataclass
class HeadFiles:
    """The head as the planner saw it: the jobs' view of the PR, with no further listing."""

    title: str
    body: str
    files: list[dict[str, Any]]
    symlinks: list[str] = field(default_factory=list)
    tree_complete: bool = True
    # The base's own review instructions (prfleet.repository.instructions.dump_instructions): read once per head
    # by the planner, given to every job of the head.
    instructions: list[dict[str, Any]] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return gzip.compress(json.dumps({"v": VERSION, **asdict(self)}, separators=(",", ":")).encode(), 6)

    def source_args(self) -> dict[str, Any]:
        """Keyword arguments for prfleet.github.GitHubPrSource: the PR as listed, no request needed."""
        return {"title": self.title, "body": self.body, "files": self.files, "symlinks": self.symlinks}

    @classmethod
    def from_bytes(cls, data: bytes) -> HeadFiles:
        raw = json.loads(gzip.decompress(data))
        if raw.pop("v", None) != VERSION:
            raise ValueError("unsupported head file list version")
        return cls(**raw)


def entry(listed: dict[str, Any], tree_entry: dict[str, Any] | None) -> dict[str, Any]:
    """One file as the jobs need it: GitHub's listed fields plus the tree's mode and size."""
    out = {k: listed[k] for k in KEPT if k in listed}
    if tree_entry is not None:
        out["mode"] = tree_entry.get("mode")
        if tree_entry.get("size") is not None:
            out["size"] = int(tree_entry["size"])
    return out


def _sk(head_sha: str, i: int) -> str:
    return f"FILES#{head_sha}#{i:04d}"


def save(repo: str, number: int, head_sha: str, head: HeadFiles, *, now: float | None = None) -> int:
    """Store the head's list (idempotent: a re-plan of the same head writes the same bytes). Returns chunks."""
    now = config_now() if now is None else now
    data = head.to_bytes()
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    ddb = client("dynamodb")
    # The first chunk last: it carries the count, so a reader that sees it sees every chunk.
    for i in [*range(1, len(chunks)), 0]:
        ddb.put_item(
            TableName=settings().state_table,
            Item={
                "pk": {"S": pr_key(repo, number)},
                "sk": {"S": _sk(head_sha, i)},
                "data": {"B": chunks[i]},
                "chunks": {"N": str(len(chunks))},
                "expires_at": {"N": str(int(now) + TTL)},
            },
        )
    return len(chunks)


def first_key(repo: str, number: int, head_sha: str) -> dict[str, Any]:
    """Key of the list's first chunk (it carries the chunk count): a job reads it in its BatchGetItem."""
    return {"pk": {"S": pr_key(repo, number)}, "sk": {"S": _sk(head_sha, 0)}}


def from_first(repo: str, number: int, head_sha: str, first: dict[str, Any] | None) -> HeadFiles | None:
    """The head's list from its first chunk as read (raw item, or None: not stored); a list of one chunk (a few
    hundred files) needs no further request, a longer one is read whole with load()."""
    if first is None:
        return None
    if int(first["chunks"]["N"]) > 1:
        return load(repo, number, head_sha)
    return HeadFiles.from_bytes(bytes(first["data"]["B"]))


def load(repo: str, number: int, head_sha: str) -> HeadFiles | None:
    """The head's list, or None when the planner has not stored it (or not all of it)."""
    paginator = client("dynamodb").get_paginator("query")
    items: list[dict[str, Any]] = []
    for page in paginator.paginate(
        TableName=settings().state_table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
        ExpressionAttributeValues={
            ":pk": {"S": pr_key(repo, number)},
            ":prefix": {"S": f"FILES#{head_sha}#"},
        },
        ConsistentRead=True,
    ):
        items.extend(page.get("Items", []))
    items.sort(key=lambda i: i["sk"]["S"])
    if not items or items[0]["sk"]["S"] != _sk(head_sha, 0):
        return None
    expected = int(items[0]["chunks"]["N"])
    if len(items) < expected:
        return None
    return HeadFiles.from_bytes(b"".join(bytes(i["data"]["B"]) for i in items[:expected]))


def begin_planning(
    repo: str, number: int, head_sha: str, delivery_id: str, *, now: float | None = None
) -> str | None:
    """Note that `delivery_id` is about to create the head's check run; returns the delivery that began planning
    this head before (None for the first planning). One PutItem (its old image answers), no extra read."""
    now = config_now() if now is None else now
    reply = client("dynamodb").put_item(
        TableName=settings().state_table,
        Item={
            "pk": {"S": pr_key(repo, number)},
            "sk": {"S": f"PLANNING#{head_sha}"},
            "delivery_id": {"S": delivery_id},
            "expires_at": {"N": str(int(now) + TTL)},
        },
        ReturnValues="ALL_OLD",
    )
    old = reply.get("Attributes") or {}
    return old["delivery_id"]["S"] if "delivery_id" in old else None
