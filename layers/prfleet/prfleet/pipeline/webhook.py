"""Webhook intake: verify GitHub's signature, decide what a delivery means, dedupe it, enqueue one slim job.

Pure decisions here; the handler supplies the secret, the dedupe store and the queue. No GitHub or model calls.

Comments addressed to prfleet (issue 25) become a slim CommentJob after the cheap checks a payload allows; the
planner (pipeline.conversation) reads the comment back and checks what needs the API or the repository's config.
The payload fields relied on, from GitHub's "Webhook events and payloads"
(https://docs.github.com/en/webhooks/webhook-events-and-payloads):
- `issue_comment` (#issue_comment): `action` created / edited / deleted; `issue.pull_request` present only when
  the issue is a pull request; `issue.state` open / closed; `comment.id`, `comment.body`, `comment.user.login`,
  `comment.user.type` ("Bot" for an App's bot account) and `comment.author_association`.
- `pull_request_review_comment` (#pull_request_review_comment): the same `comment` fields plus `in_reply_to_id` on
  a reply in a thread; `pull_request.number` and `pull_request.state`.
- `pull_request_review_thread` (#pull_request_review_thread): `action` resolved / unresolved; `thread.comments`
  (the thread's comments, the first one its start); `sender` is who resolved it (no author_association).
- `author_association` is one of COLLABORATOR, CONTRIBUTOR, FIRST_TIMER, FIRST_TIME_CONTRIBUTOR, MANNEQUIN,
  MEMBER, NONE, OWNER (the `author-association` schema of github/rest-api-description).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prfleet.jobs import CommentJob, PrJob
from prfleet.pipeline.render import CHECK_NAME, pr_from_external_id

# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
SIGNATURE_HEADER = "x-hub-signature-256"
REVIEW_ACTIONS = frozenset({"opened", "synchronize", "reopened", "ready_for_review"})
COMMENT_COMMAND = re.compile(r"^\s*/prfleet\s+review\b", re.IGNORECASE | re.MULTILINE)
ASK_COMMAND = re.compile(r"^\s*/prfleet\s+ask\b", re.IGNORECASE)
IGNORE_COMMAND = re.compile(r"^\s*/prfleet\s+ignore\b", re.IGNORECASE)
# The associations GitHub gives the repository's own people; anyone else needs `[conversation] trusted` in the
# base branch's .prfleet.toml, which only the planner reads.
TRUSTED_ASSOCIATIONS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    job: PrJob | CommentJob | None = None
    log: dict[str, Any] = field(default_factory=dict)


def refused(reason: str, why: str) -> Reply:
    """A comment addressed to prfleet that it will not act on: `comment_ignored` is the reason the handler logs
    and counts (CommentsIgnored): bot, self, closed, edited, deleted, not_a_reply."""
    return Reply(200, {"ignored": True, "reason": why, "comment_ignored": reason})


def signature_for(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """Constant-time check of X-Hub-Signature-256 against the raw body."""
    if not header or not secret:
        return False
    # Bytes on both sides: compare_digest refuses a str with non-ASCII characters (TypeError), and a header is
    # whatever the sender put there.
    given = header.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(signature_for(secret, body).encode("ascii"), given)


def raw_body(event: Mapping[str, Any]) -> bytes:
    """The exact bytes GitHub signed: API Gateway may hand them over base64-encoded."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return base64.b64decode(body)
    return body.encode("utf-8")


def lower_headers(event: Mapping[str, Any]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}


def decide(event_name: str, delivery_id: str, payload: Any, *, app_slug: str = "prfleet") -> Reply:
    """What a verified, parsed delivery means: an enqueued job (202) or a reasoned no-op (200). `app_slug`: the
    GitHub App's slug (`<slug>[bot]` is prfleet itself, `@<slug>` asks it)."""
    if event_name == "ping":
        return Reply(
            200,
            {
                "ok": True,
                "pong": True,
                "hook_id": payload.get("hook_id") if isinstance(payload, dict) else None,
            },
        )
    if not isinstance(payload, dict):
        return Reply(400, {"error": "payload must be a JSON object"})
    if event_name == "pull_request":
        return _pull_request(delivery_id, payload)
    if event_name == "issue_comment":
        return _issue_comment(delivery_id, payload, app_slug)
    if event_name == "pull_request_review_comment":
        return _review_comment(delivery_id, payload, app_slug)
    if event_name == "pull_request_review_thread":
        return _review_thread(delivery_id, payload, app_slug)
    if event_name in ("check_run", "check_suite"):
        return _rerequested(event_name, delivery_id, payload)
    return Reply(200, {"ignored": True, "reason": f"event {event_name!r} is not handled"})


def _repo_and_installation(payload: dict[str, Any]) -> tuple[str | None, int | None]:
    repo = (payload.get("repository") or {}).get("full_name")
    installation = (payload.get("installation") or {}).get("id")
    return repo, installation if isinstance(installation, int) else None


def _pull_request(delivery_id: str, payload: dict[str, Any]) -> Reply:
    action = payload.get("action")
    pr = payload.get("pull_request")
    repo, installation = _repo_and_installation(payload)
    if not isinstance(pr, dict) or not repo:
        return Reply(400, {"error": "pull_request event lacks pull_request or repository"})
    if action not in REVIEW_ACTIONS:
        return Reply(200, {"ignored": True, "reason": f"action {action!r} does not trigger a review"})
    if pr.get("draft"):
        return Reply(200, {"ignored": True, "reason": "pull request is a draft"})
    try:
        job = PrJob(
            repo=repo,
            number=int(pr["number"]),
            head_sha=str(pr["head"]["sha"]),
            base_sha=str(pr["base"]["sha"]),
            installation_id=installation,
            delivery_id=delivery_id,
            action=str(action),
        )
    except (KeyError, TypeError, ValueError) as exc:
        return Reply(400, {"error": f"pull_request event lacks {exc}"})
    return Reply(202, {"accepted": True, "repository": repo, "pr": job.number, "head_sha": job.head_sha}, job)


def mentions(body: str, app_slug: str) -> bool:
    """Whether a comment mentions the App (`@slug`, not `@slug-other` nor an e-mail address)."""
    return re.search(rf"(?<![\w/.-])@{re.escape(app_slug)}(?![\w-])", body, re.IGNORECASE) is not None


def addressed(body: str, app_slug: str) -> bool:
    """A comment that asks prfleet something: `/prfleet ask`, `/prfleet ignore`, or a mention of the App."""
    return bool(ASK_COMMAND.match(body) or IGNORE_COMMAND.match(body) or mentions(body, app_slug))


def bot_reason(user: Any, app_slug: str) -> str | None:
    """ "self" for prfleet's own bot account, "bot" for any other bot (an App's `<slug>[bot]` login, or a user of
    type Bot): prfleet never answers a bot, so two bots cannot talk each other into a loop."""
    user = user if isinstance(user, dict) else {}
    login = str(user.get("login") or "")
    if login.lower() == f"{app_slug}[bot]".lower():
        return "self"
    if user.get("type") == "Bot" or login.lower().endswith("[bot]"):
        return "bot"
    return None


def _comment_job(
    payload: dict[str, Any], delivery_id: str, *, number: Any, kind: str, on: str, user: Any, association: Any
) -> Reply:
    repo, installation = _repo_and_installation(payload)
    comment = payload.get("comment") or {}
    login = (user or {}).get("login") if isinstance(user, dict) else None
    comment_id = comment.get("id") if kind != "resolve" else payload["thread"]["comments"][0].get("id")
    if not repo or not isinstance(number, int) or not isinstance(comment_id, int) or not login:
        return Reply(
            400, {"error": "comment event lacks repository, pull request number, comment id or user"}
        )
    job = CommentJob(
        repo, number, comment_id, kind, on, str(login), str(association or ""), installation, delivery_id
    )
    body = {"accepted": True, "repository": repo, "pr": number, "command": kind, "comment": comment_id}
    return Reply(202, body, job)


def _issue_comment(delivery_id: str, payload: dict[str, Any], app_slug: str = "prfleet") -> Reply:
    """`/prfleet review` on a PR: enqueue a re-review; the planner checks the commenter's write access.
    `/prfleet ask ...` or a mention of the App on the PR's conversation: a question (CommentJob)."""
    issue = payload.get("issue") or {}
    comment = payload.get("comment") or {}
    repo, installation = _repo_and_installation(payload)
    text = str(comment.get("body") or "")
    if payload.get("action") != "created":
        if "pull_request" in issue and addressed(text, app_slug):
            return refused(str(payload.get("action")), "only new comments are read, not edits or deletions")
        return Reply(200, {"ignored": True, "reason": "only new comments are read"})
    if "pull_request" not in issue:
        return Reply(200, {"ignored": True, "reason": "comment is not on a pull request"})
    if COMMENT_COMMAND.search(text):
        login = (comment.get("user") or {}).get("login")
        if not repo or not isinstance(issue.get("number"), int) or not login:
            return Reply(400, {"error": "issue_comment event lacks repository, issue number or user"})
        job = PrJob(repo, issue["number"], "", "", installation, delivery_id, "comment", requested_by=login)
        return Reply(202, {"accepted": True, "repository": repo, "pr": job.number, "command": "review"}, job)
    if not addressed(text, app_slug):
        return Reply(200, {"ignored": True, "reason": "comment has no /prfleet command"})
    bot = bot_reason(comment.get("user"), app_slug)
    if bot:
        return refused(bot, f"comment by a bot ({(comment.get('user') or {}).get('login')}): never answered")
    if issue.get("state") == "closed":
        return refused("closed", "the pull request is closed")
    if IGNORE_COMMAND.match(text):
        return refused(
            "not_a_reply", "`/prfleet ignore` works as a reply to a prfleet finding, in its thread"
        )
    return _comment_job(
        payload,
        delivery_id,
        number=issue.get("number"),
        kind="ask",
        on="issue",
        user=comment.get("user"),
        association=comment.get("author_association"),
    )


def _review_comment(delivery_id: str, payload: dict[str, Any], app_slug: str) -> Reply:
    """A review comment: a reply in a thread (`in_reply_to_id`; whether the thread is prfleet's is decided later,
    from its first comment) is a question, or `/prfleet ignore [reason]`; a new line comment is a question only
    when it says `/prfleet ask` or mentions the App."""
    comment = payload.get("comment") or {}
    pr = payload.get("pull_request") or {}
    text = str(comment.get("body") or "")
    reply = isinstance(comment.get("in_reply_to_id"), int)
    if payload.get("action") != "created":
        if addressed(text, app_slug):
            return refused(str(payload.get("action")), "only new comments are read, not edits or deletions")
        return Reply(200, {"ignored": True, "reason": "only new comments are read"})
    if not reply and not (ASK_COMMAND.match(text) or mentions(text, app_slug)):
        return Reply(200, {"ignored": True, "reason": "a new review comment not addressed to prfleet"})
    bot = bot_reason(comment.get("user"), app_slug)
    if bot:
        return refused(bot, f"comment by a bot ({(comment.get('user') or {}).get('login')}): never answered")
    if pr.get("state") == "closed":
        return refused("closed", "the pull request is closed")
    return _comment_job(
        payload,
        delivery_id,
        number=pr.get("number"),
        kind="ignore" if reply and IGNORE_COMMAND.match(text) else "ask",
        on="review",
        user=comment.get("user"),
        association=comment.get("author_association"),
    )


def _review_thread(delivery_id: str, payload: dict[str, Any], app_slug: str) -> Reply:
    """A review thread resolved: a finding the team dismissed, if the thread is prfleet's (its first comment is
    by prfleet's bot) and its lines did not change (checked by the planner). Unresolving teaches nothing."""
    if payload.get("action") != "resolved":
        return Reply(
            200, {"ignored": True, "reason": f"thread {payload.get('action')!r}: only resolving is read"}
        )
    thread = payload.get("thread") or {}
    first = (thread.get("comments") or [None])[0]
    if not isinstance(first, dict):
        return Reply(400, {"error": "pull_request_review_thread event lacks thread.comments"})
    if bot_reason(first.get("user"), app_slug) != "self":
        return Reply(200, {"ignored": True, "reason": "the thread is not prfleet's"})
    bot = bot_reason(payload.get("sender"), app_slug)
    if bot:
        return refused(bot, f"resolved by a bot ({(payload.get('sender') or {}).get('login')}): not learned")
    pr = payload.get("pull_request") or {}
    if pr.get("state") == "closed":
        return refused("closed", "the pull request is closed")
    return _comment_job(
        payload,
        delivery_id,
        number=pr.get("number"),
        kind="resolve",
        on="review",
        user=payload.get("sender"),
        association="",
    )


def _rerequested(event_name: str, delivery_id: str, payload: dict[str, Any]) -> Reply:
    """Re-run on prfleet's check run (`check_run` rerequested) or on its suite (`check_suite` rerequested):
    re-review the PR's current head like `/prfleet review`, for the sender (the planner checks write access).

    https://docs.github.com/en/webhooks/webhook-events-and-payloads#check_run and #check_suite. The payload's
    `pull_requests` is empty when the head branch is in a fork, so the check run's external_id carries the PR
    number too (prfleet.report.check_external_id).
    """

    obj = payload.get(event_name)
    repo, installation = _repo_and_installation(payload)
    if payload.get("action") != "rerequested":
        return Reply(
            200, {"ignored": True, "reason": f"{event_name} action {payload.get('action')!r} is not a re-run"}
        )
    if not isinstance(obj, dict) or not repo:
        return Reply(400, {"error": f"{event_name} event lacks {event_name} or repository"})
    if event_name == "check_run" and obj.get("name") != CHECK_NAME:
        return Reply(200, {"ignored": True, "reason": f"check run {obj.get('name')!r} is not prfleet's"})
    number = pr_from_external_id(obj.get("external_id")) if event_name == "check_run" else None
    prs = obj.get("pull_requests") or []
    if number is None and prs and isinstance(prs[0], dict) and isinstance(prs[0].get("number"), int):
        number = prs[0]["number"]
    if number is None:
        return Reply(
            200,
            {"ignored": True, "reason": f"{event_name} names no pull request (GitHub lists none for forks)"},
        )
    login = (payload.get("sender") or {}).get("login")
    if not login:
        return Reply(400, {"error": f"{event_name} event lacks sender.login"})
    head = str(obj.get("head_sha") or "")
    job = PrJob(repo, number, head, "", installation, delivery_id, "rerequested", requested_by=login)
    return Reply(202, {"accepted": True, "repository": repo, "pr": number, "command": "rerun"}, job)


def handle(
    event: Mapping[str, Any],
    *,
    secret: bytes,
    first_seen: Callable[[str], bool],
    enqueue: Callable[[PrJob | CommentJob], None],
    forget: Callable[[str], None],
    app_slug: str = "prfleet",
) -> Reply:
    """The whole intake for one API Gateway proxy event (HTTP API payload 2.0 or REST 1.0)."""
    headers = lower_headers(event)
    try:
        body = raw_body(event)
    except ValueError:  # isBase64Encoded with a body that is not base64
        return Reply(400, {"error": "body is not valid base64"})
    if not verify_signature(secret, body, headers.get(SIGNATURE_HEADER)):
        reason = "missing signature" if not headers.get(SIGNATURE_HEADER) else "signature does not match"
        return Reply(401, {"error": reason})
    event_name = headers.get("x-github-event")
    delivery_id = headers.get("x-github-delivery")
    if not event_name or not delivery_id:
        return Reply(400, {"error": "X-GitHub-Event and X-GitHub-Delivery headers are required"})
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser goes
        return Reply(400, {"error": "body is not JSON"})
    if not isinstance(payload, dict):
        return Reply(400, {"error": "body is not a JSON object"})
    try:
        reply = decide(event_name, delivery_id, payload, app_slug=app_slug)
    except (
        AttributeError,
        TypeError,
        KeyError,
    ):  # e.g. "repository" as a string: signed, but not GitHub's shape
        return Reply(400, {"error": f"payload is not a GitHub {event_name} event"})
    if reply.job is None:
        return reply
    if not first_seen(delivery_id):
        return Reply(200, {"duplicate": True, "delivery": delivery_id})
    try:
        enqueue(reply.job)
    except Exception:
        forget(delivery_id)  # let GitHub's redelivery through
        raise
    return reply
