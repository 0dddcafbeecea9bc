"""Single comments and threads (issue 25): a review comment, a reply in its thread, an issue comment.

- `pulls/get-review-comment` (GET /repos/{o}/{r}/pulls/comments/{comment_id}): one review comment, with
  `in_reply_to_id` on a reply, `author_association`, `user.type`, `original_line` / `original_commit_id`:
  https://docs.github.com/en/rest/pulls/comments#get-a-review-comment-for-a-pull-request
- `pulls/create-reply-for-review-comment` (POST /repos/{o}/{r}/pulls/{n}/comments/{comment_id}/replies): `body`
  required; the comment must be a TOP-LEVEL review comment of that PR: "This must be the ID of a top-level review
  comment, not a reply to that comment. Replies to replies are not supported." The fake refuses a reply to a
  reply with a 422 rather than guess what GitHub would do with it, and a comment of another PR with a 404:
  https://docs.github.com/en/rest/pulls/comments#create-a-reply-for-a-review-comment
- `issues/get-comment` (GET /repos/{o}/{r}/issues/comments/{comment_id}):
  https://docs.github.com/en/rest/issues/comments#get-an-issue-comment
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
    pull_request,
)


def _review_comment(call: Call, comment_id: int) -> dict:
    for c in call.srv.review_comments:
        if c["id"] == comment_id:
            return c
    raise HttpError(404, "Not Found")


def get_review_comment(call: Call) -> Answer:
    """GET /repos/{o}/{r}/pulls/comments/{comment_id}."""
    with call.srv.lock:
        return 200, dict(_review_comment(call, int(call.params["id"]))), {}


def reply_to_review_comment(call: Call) -> Answer:
    """POST /repos/{o}/{r}/pulls/{n}/comments/{comment_id}/replies, as the app's bot."""
    srv = call.srv
    pr = pull_request(call)
    text = call.body.get("body") or ""
    if not str(text).strip():
        raise HttpError(422, "Validation Failed", ["body can't be blank"])
    if len(text) > MAX_BODY:
        raise HttpError(422, "Validation Failed", [f"body is too long (maximum is {MAX_BODY} characters)"])
    with srv.lock:
        parent = _review_comment(call, int(call.params["id"]))
        if parent["pull_number"] != pr.number:
            raise HttpError(404, "Not Found")
        if parent.get("in_reply_to_id") is not None:
            raise HttpError(422, "Validation Failed", ["Replies to replies are not supported"])
        reply = srv.thread_reply(parent, BOT_LOGIN, str(text), now=time.time())
    return 201, dict(reply), {}


def get_issue_comment(call: Call) -> Answer:
    """GET /repos/{o}/{r}/issues/comments/{comment_id}."""
    with call.srv.lock:
        for c in call.srv.issue_comments:
            if c["id"] == int(call.params["id"]):
                return 200, {**c, "updated_at": c.get("updated_at") or iso(time.time())}, {}
    raise HttpError(404, "Not Found")


ROUTES = [
    Route("GET", re.compile(REPO + r"/pulls/comments/(?P<id>\d+)$"), get_review_comment),
    Route(
        "POST", re.compile(REPO + r"/pulls/(?P<n>\d+)/comments/(?P<id>\d+)/replies$"), reply_to_review_comment
    ),
    Route("GET", re.compile(REPO + r"/issues/comments/(?P<id>\d+)$"), get_issue_comment),
]
