"""Webhook intake: verify GitHub's signature, decide what a delivery means, dedupe it, enqueue one slim PR job.

Pure decisions here; the handler supplies the secret, the dedupe store and the queue. No GitHub or model calls.
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

from prfleet.jobs import PrJob
from prfleet.pipeline.render import CHECK_NAME, pr_from_external_id

# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
SIGNATURE_HEADER = "x-hub-signature-256"
REVIEW_ACTIONS = frozenset({"opened", "synchronize", "reopened", "ready_for_review"})
COMMENT_COMMAND = re.compile(r"^\s*/prfleet\s+review\b", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    job: PrJob | None = None
    log: dict[str, Any] = field(default_factory=dict)


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


def decide(event_name: str, delivery_id: str, payload: Any) -> Reply:
    """What a verified, parsed delivery means: an enqueued PR job (202) or a reasoned no-op (200)."""
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
        return _issue_comment(delivery_id, payload)
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


def _issue_comment(delivery_id: str, payload: dict[str, Any]) -> Reply:
    """`/prfleet review` on a PR: enqueue a re-review; the planner checks the commenter's write access."""
    issue = payload.get("issue") or {}
    comment = payload.get("comment") or {}
    repo, installation = _repo_and_installation(payload)
    if payload.get("action") != "created":
        return Reply(200, {"ignored": True, "reason": "only new comments are read"})
    if "pull_request" not in issue:
        return Reply(200, {"ignored": True, "reason": "comment is not on a pull request"})
    if not COMMENT_COMMAND.search(str(comment.get("body") or "")):
        return Reply(200, {"ignored": True, "reason": "comment has no /prfleet command"})
    login = (comment.get("user") or {}).get("login")
    if not repo or not isinstance(issue.get("number"), int) or not login:
        return Reply(400, {"error": "issue_comment event lacks repository, issue number or user"})
    job = PrJob(repo, issue["number"], "", "", installation, delivery_id, "comment", requested_by=login)
    return Reply(202, {"accepted": True, "repository": repo, "pr": job.number, "command": "review"}, job)


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
    enqueue: Callable[[PrJob], None],
    forget: Callable[[str], None],
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
        reply = decide(event_name, delivery_id, payload)
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
