"""The fake GitHub's people and conversations (issue 25): who is who to the repository (`author_association`), the
comments a test's people write (replies in a thread, line comments, PR conversation comments) and the webhook
events GitHub sends for them, shaped like GitHub's.

Facts followed (GitHub's "Webhook events and payloads", https://docs.github.com/en/webhooks/webhook-events-and-payloads,
and the REST pages cited in routes/comments.py):
- `issue_comment` and `pull_request_review_comment` carry `action`, `comment` (with `user.login`, `user.type`,
  `author_association`, and on a reply `in_reply_to_id`), the issue or `pull_request` (with `state`),
  `repository`, `installation` and `sender`;
- `pull_request_review_thread` (`resolved` / `unresolved`) carries `thread.node_id` and `thread.comments`, the
  thread's comments, first one first; `sender` is who resolved it;
- `author_association`: OWNER (the repository's owner), MEMBER (of its organization), COLLABORATOR (an outside
  collaborator), else CONTRIBUTOR / FIRST_TIME_CONTRIBUTOR / NONE (the OpenAPI `author-association` enum); a bot
  account is of `type` "Bot" and its login ends in `[bot]`.
Thread resolution itself is a GraphQL mutation GitHub offers no REST route for; the fake only records it and
sends the event (`resolve_thread`).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any


def iso(ts: float) -> str:
    """GitHub's timestamp format (as routes.common.iso, which imports the state this module is part of)."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class CommentScenarios:
    """Mixed into GitHubState: needs its lock, prs, review_comments, issue_comments, collaborators, full_name,
    installation_id, next_id(), pr_json() and _repository_json()."""

    # GitHubState's own (declared for the reader; set by GitHubState.__init__)
    lock: Any
    prs: dict[int, Any]
    review_comments: list[dict[str, Any]]
    issue_comments: list[dict[str, Any]]
    collaborators: dict[str, str]
    members: set[str]
    resolved_threads: set[int]
    full_name: str
    installation_id: int
    api_url: str
    next_id: Any
    pr_json: Any
    _repository_json: Any

    # -- who is who --

    def add_member(self, login: str) -> None:
        """An organization member (author_association MEMBER)."""
        self.members.add(login)

    def association_of(self, login: str) -> str:
        """The author_association GitHub gives `login` on this repository."""
        if login.endswith("[bot]"):
            return "NONE"
        if login == self.full_name.split("/")[0]:
            return "OWNER"
        if login in self.members:
            return "MEMBER"
        if login in self.collaborators:
            return "COLLABORATOR"
        return "NONE"

    @staticmethod
    def user_json(login: str, *, bot: bool | None = None) -> dict[str, Any]:
        is_bot = login.endswith("[bot]") if bot is None else bot
        return {"login": login, "type": "Bot" if is_bot else "User"}

    # -- comments --

    def thread_reply(self, parent: dict[str, Any], login: str, body: str, *, now: float) -> dict[str, Any]:
        """A reply in the thread of `parent` (a top-level review comment), recorded as GitHub would: the thread's
        path, line and commit, `in_reply_to_id` naming the first comment. Call with the lock held."""
        reply = {
            "id": self.next_id(),
            "pull_request_review_id": parent.get("pull_request_review_id"),
            "pull_number": parent["pull_number"],
            "in_reply_to_id": parent["id"],
            "path": parent["path"],
            "line": parent.get("line"),
            "original_line": parent.get("original_line", parent.get("line")),
            "side": parent.get("side", "RIGHT"),
            "body": body,
            "commit_id": parent["commit_id"],
            "original_commit_id": parent.get("original_commit_id", parent["commit_id"]),
            "user": self.user_json(login),
            "author_association": self.association_of(login),
            "created_at": iso(now),
        }
        self.review_comments.append(reply)
        return reply

    def reply_in_thread(
        self, number: int, first_id: int, login: str, body: str, *, bot: bool | None = None
    ) -> dict[str, Any]:
        """`login` replies in the thread of review comment `first_id`; returns the `pull_request_review_comment`
        `created` event GitHub sends for it."""
        with self.lock:
            parent = next(c for c in self.review_comments if c["id"] == first_id)
            while parent.get("in_reply_to_id") is not None:  # GitHub threads a reply under the first comment
                parent = next(c for c in self.review_comments if c["id"] == parent["in_reply_to_id"])
            reply = self.thread_reply(parent, login, body, now=time.time())
            if bot is not None:
                reply["user"] = self.user_json(login, bot=bot)
        return self.review_comment_event(number, reply)

    def comment_on_pr(self, number: int, login: str, body: str, *, bot: bool | None = None) -> dict[str, Any]:
        """`login` comments on the PR's conversation; returns the `issue_comment` `created` event."""
        now = iso(time.time())
        comment = {
            "id": self.next_id(),
            "issue_number": number,
            "body": body,
            "user": self.user_json(login, bot=bot),
            "author_association": self.association_of(login),
            "created_at": now,
            "updated_at": now,
            "edits": 0,
        }
        with self.lock:
            self.issue_comments.append(comment)
        pr = self.prs[number]
        issue = {
            "number": number,
            "title": pr.title,
            "state": pr.state,
            "user": self.user_json(pr.user),
            "pull_request": {"url": f"{self.api_url}/repos/{self.full_name}/pulls/{number}"},
        }
        return {
            "action": "created",
            "issue": issue,
            "comment": dict(comment),
            "repository": self._repository_json(),
            "installation": {"id": self.installation_id},
            "sender": comment["user"],
        }

    def review_comment_event(
        self, number: int, comment: dict[str, Any], action: str = "created"
    ) -> dict[str, Any]:
        """The `pull_request_review_comment` event for one recorded review comment."""
        pr = self.prs[number]
        return {
            "action": action,
            "comment": dict(comment),
            "pull_request": self.pr_json(pr),
            "repository": self._repository_json(),
            "installation": {"id": self.installation_id},
            "sender": comment["user"],
        }

    def resolve_thread(self, number: int, first_id: int, sender: str) -> dict[str, Any]:
        """`sender` resolves the thread of review comment `first_id`; returns the `pull_request_review_thread`
        `resolved` event."""
        with self.lock:
            self.resolved_threads.add(first_id)
            thread = [
                dict(c)
                for c in self.review_comments
                if c["id"] == first_id or c.get("in_reply_to_id") == first_id
            ]
        pr = self.prs[number]
        return {
            "action": "resolved",
            "thread": {"node_id": f"PRRT_fake{first_id}", "comments": thread},
            "pull_request": self.pr_json(pr),
            "repository": self._repository_json(),
            "installation": {"id": self.installation_id},
            "sender": self.user_json(sender),
        }
