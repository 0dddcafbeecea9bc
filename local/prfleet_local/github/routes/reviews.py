"""Pull request reviews and their inline comments.

Creating a review (`pulls/create-review`): `event` is one of APPROVE, REQUEST_CHANGES, COMMENT (left out:
PENDING; "PENDING" itself is not a value); `body` required for REQUEST_CHANGES and COMMENT, at most 65,536
characters; `commit_id` must be a commit of the pull request; each inline comment needs `path` and `body`, and one
on a line outside the diff is a 422 "Pull request review thread line must be part of the diff":
https://docs.github.com/en/rest/pulls/reviews#create-a-review-for-a-pull-request
"""

from __future__ import annotations

import re
import time

from prfleet_local.github.diff import compute_files, diff_sides
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

REVIEW_EVENTS = ("APPROVE", "REQUEST_CHANGES", "COMMENT")


def list_reviews(call: Call) -> Answer:
    """GET /repos/{o}/{r}/pulls/{n}/reviews, paginated."""
    n = int(call.params["n"])
    return paginate(call, [r for r in call.srv.reviews if r["pull_number"] == n])


def create_review(call: Call) -> Answer:
    """POST /repos/{o}/{r}/pulls/{n}/reviews: validated as GitHub does, then recorded with its comments."""
    srv = call.srv
    pr = pull_request(call)
    commit_id = call.body.get("commit_id") or pr.head_sha
    # pulls/create-review: commit_id "The SHA of the commit that needs a review" - a commit of this PR.
    if srv.repo.object_type(commit_id) != "commit" or commit_id not in srv.pr_commits(pr):
        raise HttpError(422, "Unprocessable Entity", ["commit_id is not part of the pull request"])
    event = call.body.get("event")
    text = call.body.get("body") or ""
    comments = call.body.get("comments") or []
    # event enum: APPROVE, REQUEST_CHANGES, COMMENT; "By leaving this blank, you set the review action
    # state to PENDING" - PENDING is a state, not a value of `event`.
    if event is not None and event not in REVIEW_EVENTS:
        raise HttpError(
            422,
            "Unprocessable Entity",
            [f"event {event!r} is not one of {', '.join(REVIEW_EVENTS)} (leave it out for a pending review)"],
        )
    event = event or "PENDING"
    # body: "Required when using REQUEST_CHANGES or COMMENT for the event parameter."
    if event in ("COMMENT", "REQUEST_CHANGES") and not text.strip():
        raise HttpError(422, "Unprocessable Entity", [f"Review body is required for event {event}"])
    if len(text) > MAX_BODY:
        raise HttpError(
            422,
            "Validation Failed",
            [
                {
                    "resource": "PullRequestReview",
                    "field": "body",
                    "code": "custom",
                    "message": f"body is too long (maximum is {MAX_BODY} characters)",
                }
            ],
        )
    files = {
        f["filename"]: f
        for f in compute_files(
            srv.repo,
            pr.base_sha,
            commit_id,
            patch_max_lines=srv.patch_max_lines,
            patch_max_bytes=srv.patch_max_bytes,
        )
    }
    errors = []
    for c in comments:
        f = files.get(c.get("path", ""))
        side = (c.get("side") or "RIGHT").upper()
        line = c.get("line")
        # comments[]: `path` and `body` are required (pulls/create-review request body).
        if not str(c.get("body") or "").strip():
            errors.append("comments[].body is required")
        if f is None:
            errors.append("Path could not be resolved")
            continue
        left, right = diff_sides(f.get("patch"))
        if not isinstance(line, int) or line not in (right if side == "RIGHT" else left):
            errors.append("Pull request review thread line must be part of the diff")
        if len(c.get("body") or "") > MAX_BODY:
            errors.append(f"body is too long (maximum is {MAX_BODY} characters)")
    if errors:
        raise HttpError(422, "Unprocessable Entity", errors)
    review_id = srv.next_id()
    now = iso(time.time())
    review = {
        "id": review_id,
        "pull_number": pr.number,
        "number": pr.number,
        "event": event,
        "user": {"login": BOT_LOGIN, "type": "Bot"},
        "body": text,
        "state": "COMMENTED" if event == "COMMENT" else event,
        "commit_id": commit_id,
        "submitted_at": now,
        "comments": comments,
    }
    with srv.lock:
        srv.reviews.append(review)
        for c in comments:
            srv.review_comments.append(
                {
                    "id": srv.next_id(),
                    "pull_request_review_id": review_id,
                    "pull_number": pr.number,
                    "path": c["path"],
                    "line": c["line"],
                    "original_line": c["line"],
                    "side": (c.get("side") or "RIGHT").upper(),
                    "body": c.get("body") or "",
                    "commit_id": commit_id,
                    "original_commit_id": commit_id,  # pulls/comments: the commit it was made on
                    "user": {"login": BOT_LOGIN, "type": "Bot"},
                    "author_association": "NONE",  # the app's bot account is no collaborator
                    "created_at": now,
                }
            )
    return 200, {k: v for k, v in review.items() if k != "comments"}, {}


def list_review_comments(call: Call) -> Answer:
    """GET /repos/{o}/{r}/pulls/{n}/comments, paginated; each comment with its `reactions` roll-up."""
    n = int(call.params["n"])
    comments = [c for c in call.srv.review_comments if c["pull_number"] == n]
    return paginate(call, with_rollups(call, "pulls/comments", comments))


ROUTES = [
    Route("GET", re.compile(REPO + r"/pulls/(?P<n>\d+)/reviews$"), list_reviews),
    Route("POST", re.compile(REPO + r"/pulls/(?P<n>\d+)/reviews$"), create_review),
    Route("GET", re.compile(REPO + r"/pulls/(?P<n>\d+)/comments$"), list_review_comments),
]
