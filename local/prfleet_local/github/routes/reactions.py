"""Reactions: add one to a review comment or an issue comment, and the roll-up the comment lists carry.

- `POST /repos/{o}/{r}/pulls/comments/{id}/reactions` and `POST /repos/{o}/{r}/issues/comments/{id}/reactions`:
  `content` is required and one of `+1`, `-1`, `laugh`, `confused`, `heart`, `hooray`, `rocket`, `eyes`; 201
  "Reaction created", 200 "Reaction exists" (this user already reacted with this content), 422 "Validation failed,
  or the endpoint has been spammed", 404 for a comment that does not exist:
  https://docs.github.com/en/rest/reactions/reactions#create-reaction-for-a-pull-request-review-comment,
  https://docs.github.com/en/rest/reactions/reactions#create-reaction-for-an-issue-comment
- The reacting user is the token's: a token made by `GitHubState.user_token(login)` acts as that user; any other
  accepted credential (the App's installation token, the local stack's token) acts as the App's bot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from prfleet_local.github.reactions import CONTENTS
from prfleet_local.github.routes.common import BOT_LOGIN, REPO, Answer, Call, HttpError, Route


def with_rollups(call: Call, subject: str, comments: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `comments` carrying their `reactions` roll-up, as the list endpoints return them."""
    srv = call.srv
    return [
        {**c, "reactions": srv.reactions.rollup(srv.api_url, srv.full_name, subject, c["id"])}
        for c in comments
    ]


def _create(call: Call, subject: str, comments: list[dict[str, Any]]) -> Answer:
    srv = call.srv
    comment_id = int(call.params["id"])
    with srv.lock:
        exists = any(c["id"] == comment_id for c in comments)
    if not exists:
        raise HttpError(404, "Not Found")
    content = call.body.get("content")
    if content not in CONTENTS:
        raise HttpError(
            422,
            "Validation Failed",
            [{"resource": "Reaction", "code": "invalid" if content else "missing_field", "field": "content"}],
        )
    login = srv.reactions.login_of(call.auth)
    user, kind = (login, "User") if login else (BOT_LOGIN, "Bot")
    reaction, created = srv.reactions.add(subject, comment_id, content, user, kind)
    return (201 if created else 200), reaction, {}


def create_for_review_comment(call: Call) -> Answer:
    """POST /repos/{o}/{r}/pulls/comments/{id}/reactions."""
    return _create(call, "pulls/comments", call.srv.review_comments)


def create_for_issue_comment(call: Call) -> Answer:
    """POST /repos/{o}/{r}/issues/comments/{id}/reactions."""
    return _create(call, "issues/comments", call.srv.issue_comments)


ROUTES = [
    Route("POST", re.compile(REPO + r"/pulls/comments/(?P<id>\d+)/reactions$"), create_for_review_comment),
    Route("POST", re.compile(REPO + r"/issues/comments/(?P<id>\d+)/reactions$"), create_for_issue_comment),
]
