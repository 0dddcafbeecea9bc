"""Slim queue messages: a PR job per accepted delivery, a file job per (file, agent), a comment job per accepted
comment (PrQueue) and an ask job per question to answer (JobsQueue). Never the raw payload, never a comment's text:
a comment is read back from GitHub by its id, so a queue message cannot carry what GitHub does not hold."""

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


# What a comment asks of prfleet (pipeline.webhook decides it, pipeline.conversation carries it out):
#   ask      a question to answer (a reply in a thread, `/prfleet ask`, or a mention of the App)
#   ignore   `/prfleet ignore [reason]` in reply to a finding: suppress findings like it on the repository
#   resolve  a review thread resolved (pull_request_review_thread): suppress the finding if its lines are unchanged
COMMENT_KINDS = ("ask", "ignore", "resolve")
# Where the comment is: a review comment (in a thread on a line) or an issue comment (on the PR's conversation).
COMMENT_PLACES = ("review", "issue")


@dataclass(frozen=True)
class CommentJob:
    """A comment addressed to prfleet, accepted by the webhook's cheap checks (PrQueue). The planner reads the
    comment, its thread and the repository's config back from GitHub and decides the rest."""

    repo: str
    number: int
    comment_id: int
    command: str  # COMMENT_KINDS (not `kind`: that key names the message's own kind)
    on: str  # COMMENT_PLACES
    author: str  # the commenter's login (for resolve: who resolved the thread)
    association: str  # the comment's author_association as GitHub sent it ("" when the event carries none)
    installation_id: int | None
    delivery_id: str

    def to_message(self) -> str:
        return json.dumps({"kind": "comment", "v": VERSION, **asdict(self)}, separators=(",", ":"))


@dataclass(frozen=True)
class AskJob:
    """One question to answer with one agent run (JobsQueue): the comment, the thread it is in (`thread_id`, the
    thread's first comment, 0 on the PR conversation), the finding's file (`path`, "" when there is none) and the
    PR's head when the planner read it. Claimed, budgeted and booked like a file job (same run records, ledger and
    PR budget); its run key and job id derive from the comment, so a question is answered once."""

    repo: str
    number: int
    head_sha: str
    base_sha: str
    comment_id: int
    on: str
    thread_id: int
    path: str
    author: str
    installation_id: int | None
    delivery_id: str
    attempt: int = 0
    spent_micros: int = 0

    agent = "ask"  # the run record's agent and the ledger's attribution

    @property
    def job_id(self) -> str:
        """Stable across redeliveries and re-plans (whatever the head then): one run per comment."""
        key = "|".join(["ask", self.repo, str(self.number), str(self.comment_id)])
        return hashlib.sha256(key.encode()).hexdigest()[:24]

    @property
    def pr_key(self) -> str:
        return pr_key(self.repo, self.number)

    def to_message(self) -> str:
        return json.dumps({"kind": "ask", "v": VERSION, **asdict(self)}, separators=(",", ":"))

    def next_attempt(self, spent_micros: int) -> AskJob:
        """The copy to re-queue: one more attempt, carrying what the job has cost so far (never less)."""
        return replace(self, attempt=self.attempt + 1, spent_micros=max(self.spent_micros, int(spent_micros)))


def requeue_body(body: str, spent_micros: int = 0) -> str:
    """A stored job message (file or ask job) with its attempt count raised (for the sweeper's re-queues)."""
    job = parse_message(body)
    return job.next_attempt(spent_micros).to_message() if isinstance(job, FileJob | AskJob) else body


EXCERPT_CHARS = 200


def excerpt(body: str, limit: int = EXCERPT_CHARS) -> str:
    """The start of a message body for a log line: enough to recognise it, never a whole huge body."""
    text = body if isinstance(body, str) else repr(body)
    return text if len(text) <= limit else f"{text[:limit]}...[{len(text) - limit} more characters]"


def pr_key(repo: str, number: int) -> str:
    return f"PR#{repo}#{number}"


Job = PrJob | FileJob | CommentJob | AskJob
_KINDS: dict[str, type[Job]] = {"pr": PrJob, "file": FileJob, "comment": CommentJob, "ask": AskJob}

# Bounds past which a field cannot name anything real, so such a job is refused here rather than failing later
# (a 200 KB path made the run item pass DynamoDB's 400 KB item limit, so its failure could not be recorded).
# - Git stores tree paths unbounded (git's fsck.h: "no limits at all on the size of the path we find in a tree"),
#   but no file system checks out a path over Linux's PATH_MAX, 4096 bytes including the NUL
#   (include/uapi/linux/limits.h), so neither a clone nor GitHub's diff can show one: 4095 bytes of UTF-8.
# - A GitHub owner is at most 39 characters and a repository name at most 100 ("Repository limits",
#   https://docs.github.com/en/repositories/creating-and-managing-repositories/repository-limits): 140 for both.
# - A git object name is 40 hex digits (SHA-1) or 64 (SHA-256 repositories, git's hash-function-transition doc).
MAX_PATH_BYTES = 4095
MAX_REPO_CHARS = 39 + 1 + 100
MAX_SHA_CHARS = 64
MAX_NAME_CHARS = 200  # delivery ids (GUIDs), agent names, actions, logins: generous, far below any item limit
# A whole message: every field at its bound is under 14 KB even with the path JSON-escaped (\uXXXX, up to 6
# characters per byte pair), so a longer body is not a prfleet job, whatever fields it carries.
MAX_BODY_CHARS = 32 * 1024

_STRINGS: dict[type, dict[str, tuple[bool, int]]] = {  # field -> (may be empty, max characters)
    PrJob: {
        "repo": (False, MAX_REPO_CHARS),
        "head_sha": (True, MAX_SHA_CHARS),  # empty: `/prfleet review` or Re-run, the planner reads the head
        "base_sha": (True, MAX_SHA_CHARS),
        "delivery_id": (False, MAX_NAME_CHARS),
        "action": (False, MAX_NAME_CHARS),
    },
    FileJob: {
        "repo": (False, MAX_REPO_CHARS),
        "head_sha": (False, MAX_SHA_CHARS),
        "base_sha": (True, MAX_SHA_CHARS),
        "path": (False, MAX_PATH_BYTES),
        "blob_sha": (True, MAX_SHA_CHARS),  # empty: the file has no blob at the head (nothing cacheable)
        "agent": (False, MAX_NAME_CHARS),
        "delivery_id": (False, MAX_NAME_CHARS),
    },
    CommentJob: {
        "repo": (False, MAX_REPO_CHARS),
        "command": (False, MAX_NAME_CHARS),
        "on": (False, MAX_NAME_CHARS),
        "author": (False, MAX_NAME_CHARS),
        "association": (True, MAX_NAME_CHARS),
        "delivery_id": (False, MAX_NAME_CHARS),
    },
    AskJob: {
        "repo": (False, MAX_REPO_CHARS),
        "head_sha": (False, MAX_SHA_CHARS),
        "base_sha": (True, MAX_SHA_CHARS),
        "on": (False, MAX_NAME_CHARS),
        "path": (True, MAX_PATH_BYTES),
        "author": (False, MAX_NAME_CHARS),
        "delivery_id": (False, MAX_NAME_CHARS),
    },
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a number


def _check(cls: type[Job], kind: str, values: dict[str, Any]) -> None:
    """Every field of its JSON type and within what it could ever be; BadMessage names the first that is not."""
    if not _is_int(values["number"]) or values["number"] <= 0:
        raise BadMessage(f"{kind} job: number must be a positive integer")
    for name, (may_be_empty, limit) in _STRINGS[cls].items():
        value = values[name]
        if not isinstance(value, str):
            raise BadMessage(f"{kind} job: {name} must be a string, not {type(value).__name__}")
        if not value and not may_be_empty:
            raise BadMessage(f"{kind} job: {name} must be a non-empty string")
        size = len(value.encode("utf-8", "surrogatepass")) if name == "path" else len(value)
        if size > limit:
            unit = "bytes" if name == "path" else "characters"
            raise BadMessage(f"{kind} job: {name} is {size} {unit}, more than any real one ({limit})")
    if "/" not in values["repo"].strip("/"):
        raise BadMessage(f"{kind} job: repo must be owner/name")
    if "\x00" in values.get("path", ""):
        raise BadMessage(f"{kind} job: path contains a NUL character")
    inst = values["installation_id"]
    if inst is not None and (not _is_int(inst) or inst <= 0):
        raise BadMessage(f"{kind} job: installation_id must be a positive integer or null")
    by = values.get("requested_by")
    if by is not None and (not isinstance(by, str) or not by or len(by) > MAX_NAME_CHARS):
        raise BadMessage(f"{kind} job: requested_by must be a login or null")
    for name in ("attempt", "spent_micros", "thread_id"):
        if name in values and (not _is_int(values[name]) or values[name] < 0):
            raise BadMessage(f"{kind} job: {name} must be a non-negative integer")
    if "comment_id" in values and (not _is_int(values["comment_id"]) or values["comment_id"] <= 0):
        raise BadMessage(f"{kind} job: comment_id must be a positive integer")
    if "command" in values and values["command"] not in COMMENT_KINDS:
        raise BadMessage(f"{kind} job: command must be one of {', '.join(COMMENT_KINDS)}")
    if "on" in values and values["on"] not in COMMENT_PLACES:
        raise BadMessage(f"{kind} job: on must be one of {', '.join(COMMENT_PLACES)}")


def parse_message(body: str) -> Job:
    """Parse and validate one SQS body; BadMessage names what is wrong.

    Every field is checked for its JSON type and bounds here, so a job that could never run is refused at once,
    with its reason, instead of failing far from the cause (and going to the DLQ unexplained)."""
    if isinstance(body, str) and len(body) > MAX_BODY_CHARS:
        raise BadMessage(f"message is {len(body)} characters, more than any job ({MAX_BODY_CHARS})")
    try:
        data: Any = json.loads(body)
    except (TypeError, ValueError, RecursionError) as exc:
        raise BadMessage(f"message is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadMessage("message is not a JSON object")
    kind = data.get("kind")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise BadMessage(f"unknown job kind {str(kind)[:40]!r}")
    if data.get("v") != VERSION:
        raise BadMessage(f"unsupported job version {str(data.get('v'))[:40]!r}")
    values = {}
    for f in fields(cls):
        if f.name in data:
            values[f.name] = data[f.name]
        elif f.default is MISSING:
            raise BadMessage(f"{kind} job lacks {f.name!r}")
    _check(cls, kind, values)
    return cls(**values)
