"""Issue comments on a pull request (prfleet's summary comment): list, create, update.

`issues/create-comment`, `issues/update-comment`: `body` required; over 65,536 characters a 422 "body is too long
(maximum is 65536 characters)" (GitHub's validation answer; the OpenAPI text gives no maximum):
https://docs.github.com/en/rest/issues/comments
"""

from __future__ import annotations

import re
import time

from prfleet_local.github.routes.common import (
    BOT_LOGIN,
    MAX_BODY,
    REPO,
    Answer,
    Call,
    HttpError,
    Route,
    iso,
    paginate,
    pull_request,
)
from prfleet_local.github.routes.reactions import with_rollups


def list_issue_comments(call: Call) -> Answer:
    """GET /repos/{o}/{r}/issues/{n}/comments, paginated; each comment with its `reactions` roll-up."""
    n = int(call.params["n"])
    comments = [c for c in call.srv.issue_comments if c["issue_number"] == n]
    return paginate(call, with_rollups(call, "issues/comments", comments))


def create_issue_comment(call: Call) -> Answer:
    """POST /repos/{o}/{r}/issues/{n}/comments."""
    srv = call.srv
    pull_request(call)
    text = call.body.get("body") or ""
    if not text:
        raise HttpError(422, "Validation Failed", ["body can't be blank"])
    if len(text) > MAX_BODY:
        raise HttpError(422, "Validation Failed", [f"body is too long (maximum is {MAX_BODY} characters)"])
    now = iso(time.time())
    comment = {
        "id": srv.next_id(),
        "issue_number": int(call.params["n"]),
        "body": text,
        "user": {"login": BOT_LOGIN, "type": "Bot"},
        "author_association": "NONE",  # the app's bot account is no collaborator
        "created_at": now,
        "updated_at": now,
        "edits": 0,
    }
    with srv.lock:
        srv.issue_comments.append(comment)
    return 201, comment, {}


def update_issue_comment(call: Call) -> Answer:
    """PATCH /repos/{o}/{r}/issues/comments/{id}."""
    srv = call.srv
    text = call.body.get("body") or ""
    if not text:  # issues/update-comment: `body` is required
        raise HttpError(422, "Validation Failed", ["body can't be blank"])
    if len(text) > MAX_BODY:
        raise HttpError(422, "Validation Failed", [f"body is too long (maximum is {MAX_BODY} characters)"])
    with srv.lock:
        for c in srv.issue_comments:
            if c["id"] == int(call.params["id"]):
                c["body"] = text
                c["updated_at"] = iso(time.time())
                c["edits"] += 1
                return 200, c, {}
    raise HttpError(404, "Not Found")


ROUTES = [
    Route("GET", re.compile(REPO + r"/issues/(?P<n>\d+)/comments$"), list_issue_comments),
    Route("POST", re.compile(REPO + r"/issues/(?P<n>\d+)/comments$"), create_issue_comment),
    Route("PATCH", re.compile(REPO + r"/issues/comments/(?P<id>\d+)$"), update_issue_comment),
]
