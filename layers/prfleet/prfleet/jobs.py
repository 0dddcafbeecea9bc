"""Slim queue messages: a PR job per accepted delivery, a file job per (file, agent). Never the raw payload."""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import Any

VERSION = 1


class BadMessage(ValueError):
    """A queue message that is not a prfleet job; the reason says what is wrong."""


@dataclass(frozen=True)
class PrJob:
    repo: str
    number: int
    head_sha: str
    base_sha: str
    installation_id: int | None
    delivery_id: str
    action: str
    requested_by: str | None = None  # login of a `/prfleet review` commenter; the planner checks their access

    def to_message(self) -> str:
        return json.dumps({"kind": "pr", "v": VERSION, **asdict(self)}, separators=(",", ":"))


@dataclass(frozen=True)
class FileJob:
    repo: str
    number: int
    head_sha: str
    base_sha: str
    path: str
    blob_sha: str
    agent: str
    installation_id: int | None
    delivery_id: str
    attempt: int = 0  # how many times this job was re-queued (rate limit, budget pressure, stuck, deferral)
    spent_micros: int = 0  # what its earlier attempts cost: the bound holds even if the run record is gone

    @property
    def job_id(self) -> str:
        """Stable across redeliveries, so fan-in can count each job once."""
        key = "|".join([self.repo, str(self.number), self.head_sha, self.path, self.agent])
        return hashlib.sha256(key.encode()).hexdigest()[:24]

    @property
    def pr_key(self) -> str:
        return pr_key(self.repo, self.number)

    def to_message(self) -> str:
        return json.dumps({"kind": "file", "v": VERSION, **asdict(self)}, separators=(",", ":"))

    def next_attempt(self, spent_micros: int) -> FileJob:
        """The copy to re-queue: one more attempt, carrying what the job has cost so far (never less)."""
        return replace(self, attempt=self.attempt + 1, spent_micros=max(self.spent_micros, int(spent_micros)))


def requeue_body(body: str, spent_micros: int = 0) -> str:
    """A stored file-job message with its attempt count raised (for the sweeper's re-queues)."""
    job = parse_message(body)
    return job.next_attempt(spent_micros).to_message() if isinstance(job, FileJob) else body


def pr_key(repo: str, number: int) -> str:
    return f"PR#{repo}#{number}"


_KINDS: dict[str, type[PrJob] | type[FileJob]] = {"pr": PrJob, "file": FileJob}


def parse_message(body: str) -> PrJob | FileJob:
    """Parse and validate one SQS body; BadMessage names what is wrong."""
    try:
        data: Any = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise BadMessage(f"message is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadMessage("message is not a JSON object")
    kind = data.get("kind")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise BadMessage(f"unknown job kind {kind!r}")
    if data.get("v") != VERSION:
        raise BadMessage(f"unsupported job version {data.get('v')!r}")
    values = {}
    for f in fields(cls):
        if f.name in data:
            values[f.name] = data[f.name]
        elif f.default is MISSING:
            raise BadMessage(f"{kind} job lacks {f.name!r}")
    if not isinstance(values["number"], int) or values["number"] <= 0:
        raise BadMessage("number must be a positive integer")
    for name in (
        ("repo", "delivery_id") if cls is PrJob else ("repo", "head_sha", "delivery_id", "path", "agent")
    ):
        if not isinstance(values[name], str) or not values[name]:
            raise BadMessage(f"{name} must be a non-empty string")
    for name in ("attempt", "spent_micros"):
        if name in values and (
            not isinstance(values[name], int) or isinstance(values[name], bool) or values[name] < 0
        ):
            raise BadMessage(f"{name} must be a non-negative integer")
    return cls(**values)
