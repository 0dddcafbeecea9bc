"""Reactions the fake GitHub holds: who reacted with what to which comment, and the `reactions` roll-up every
review comment and issue comment carries when GitHub lists it.

GitHub's shapes and rules, each from its page:
- The eight reaction types, by their `content`: `+1` 👍, `-1` 👎, `laugh`, `confused`, `heart`, `hooray`, `rocket`,
  `eyes` ("About reactions", https://docs.github.com/en/rest/reactions/reactions#about-reactions).
- A reaction: `id`, `node_id`, `user` (a simple user), `content`, `created_at` (the `reaction` schema of the same
  page's responses).
- The roll-up (`reaction-rollup` in GitHub's OpenAPI description, github/rest-api-description): `url` (the
  comment's reactions endpoint), `total_count`, `+1`, `-1`, `laugh`, `hooray`, `confused`, `heart`, `rocket`,
  `eyes`, all counts; it is a field of each comment of "List review comments on a pull request"
  (https://docs.github.com/en/rest/pulls/comments#list-review-comments-on-a-pull-request) and of "List issue
  comments" (https://docs.github.com/en/rest/issues/comments#list-issue-comments).
- One user reacts at most once with each content to a subject: "A response with an HTTP `200` status means that
  you already added the reaction type to this pull request review comment" (and the same for an issue comment);
  a new one is a 201 (https://docs.github.com/en/rest/reactions/reactions#create-reaction-for-a-pull-request-review-comment,
  #create-reaction-for-an-issue-comment).

The routes that serve this are in routes/reactions.py; a test reacts as a user would, through HTTP with a user's
token (`token_for`).
"""

from __future__ import annotations

import secrets
import threading
import time
import zlib
from typing import Any

CONTENTS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
ROLLUP_ORDER = ("+1", "-1", "laugh", "hooray", "confused", "heart", "rocket", "eyes")  # as GitHub lists them
SUBJECTS = ("pulls/comments", "issues/comments")  # a review comment, an issue (or PR) comment


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class ReactionStore:
    """Every reaction, by subject (`pulls/comments` or `issues/comments`, and the comment id), and the users the
    tests act as (token -> login)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_subject: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._logins: dict[str, str] = {}  # a user's token -> login
        self._ids = 7_000_000

    def token_for(self, login: str) -> str:
        """A token that acts as `login` (the server must accept it: `GitHubState.user_token` registers it)."""
        token = "ghu_" + secrets.token_hex(18)
        with self._lock:
            self._logins[token] = login
        return token

    def login_of(self, authorization: str | None) -> str | None:
        """The user a request's token acts as, None for any other credential (the App's own)."""
        _, _, token = (authorization or "").partition(" ")
        with self._lock:
            return self._logins.get(token)

    def add(
        self, subject: str, subject_id: int, content: str, login: str, user_type: str
    ) -> tuple[dict, bool]:
        """Record `login`'s reaction; (the reaction, created). A repeat of the same content returns the first."""
        with self._lock:
            held = self._by_subject.setdefault((subject, subject_id), [])
            for r in held:
                if r["content"] == content and r["user"]["login"] == login:
                    return r, False
            self._ids += 1
            reaction = {
                "id": self._ids,
                "node_id": f"REA_{self._ids}",
                "user": {"login": login, "id": zlib.crc32(login.encode()) % 10**8, "type": user_type},
                "content": content,
                "created_at": _iso(time.time()),
            }
            held.append(reaction)
            return reaction, True

    def rollup(self, api_url: str, full_name: str, subject: str, subject_id: int) -> dict[str, Any]:
        """The `reactions` field of one comment, in GitHub's shape."""
        with self._lock:
            held = list(self._by_subject.get((subject, subject_id), ()))
        out: dict[str, Any] = {
            "url": f"{api_url}/repos/{full_name}/{subject}/{subject_id}/reactions",
            "total_count": len(held),
        }
        for content in ROLLUP_ORDER:
            out[content] = sum(1 for r in held if r["content"] == content)
        return out
