"""What the fake GitHub holds: its pull requests and everything prfleet posted, the tokens it issued, its limits,
and the injected faults; with the helpers a test builds a scenario from and the webhook events it sends.

The routes (routes/) read and write this state; the handler (handler.py) serves it; GitHubServer (server.py) adds
the HTTP server's lifecycle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prfleet_local.github.comment_events import CommentScenarios
from prfleet_local.github.diff import PATCH_MAX_BYTES, PATCH_MAX_LINES, compute_files
from prfleet_local.github.faults import Fault, FaultControls
from prfleet_local.github.gitrepo import GitRepo
from prfleet_local.github.reactions import ReactionStore

# The limits a server starts with; each is an attribute a test may lower (the routes cite GitHub's pages).
CONTENTS_MAX_BYTES = 1024 * 1024
BLOB_MAX_BYTES = 100 * 1024 * 1024
TREE_MAX_ENTRIES = 100_000
RATE_LIMIT = 5000


@dataclass
class PullRequest:
    number: int
    base_ref: str
    base_sha: str
    head_ref: str
    head_sha: str
    title: str
    body: str
    draft: bool = False
    user: str = "octocat"
    state: str = "open"


def run_json(run: dict[str, Any]) -> dict[str, Any]:
    """A check run as the API returns it (its status history and annotation batches are the fake's own)."""
    out = {k: v for k, v in run.items() if k not in ("history", "annotation_batches")}
    out["output"] = {k: v for k, v in run["output"].items() if k != "annotations"}
    return out


class GitHubState(FaultControls, CommentScenarios):
    """The fake's state, locked by `lock`; `GitHubServer` serves it."""

    def __init__(
        self,
        repo_root: Path | str,
        full_name: str = "acme/shop",
        app_public_key_pem: str | bytes | None = None,
        *,
        app_id: str | int | None = None,
        installation_id: int = 1,
        tokens: Iterable[str] = (),
        token_ttl: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repo = repo_root if isinstance(repo_root, GitRepo) else GitRepo(repo_root)
        self.full_name = full_name
        self.app_public_key_pem = app_public_key_pem
        self.app_id = None if app_id is None else str(app_id)
        self.installation_id = installation_id
        self.static_tokens = set(tokens)
        self.token_ttl = token_ttl
        self.clock = clock  # tokens and JWTs are judged by this clock (tests move it forward)
        self.contents_max_bytes = CONTENTS_MAX_BYTES
        self.blob_max_bytes = BLOB_MAX_BYTES
        self.tree_max_entries = TREE_MAX_ENTRIES
        self.patch_max_lines = PATCH_MAX_LINES
        self.patch_max_bytes = PATCH_MAX_BYTES
        self.rate_limit_total = RATE_LIMIT
        self.rate_limit_used = 0
        self.rate_limit_reset = clock() + 3600
        self.not_modified = 0  # 304 answers (free under the primary rate limit)
        self.lock = threading.RLock()
        self.prs: dict[int, PullRequest] = {}
        self.reviews: list[dict[str, Any]] = []
        self.review_comments: list[dict[str, Any]] = []
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.issue_comments: list[dict[str, Any]] = []
        self.reactions = ReactionStore()  # reactions on review and issue comments (routes/reactions.py)
        self.collaborators: dict[str, str] = {}
        self.members: set[str] = set()  # organization members (author_association MEMBER)
        self.resolved_threads: set[int] = set()  # first comment ids of resolved review threads
        self.issued_tokens: dict[str, float] = {}  # token -> expires_at
        self.token_requests: list[dict[str, Any]] = []  # verified JWT claims of each exchange
        self.requests: list[tuple[str, str]] = []  # (method, path) of every call
        self.archive_links: dict[str, tuple[str, float]] = {}  # codeload token -> (commit sha, expires_at)
        self.downloads: list[tuple[str, bool]] = []  # codeload (path, had Authorization): not API calls
        self.faults: list[Fault] = []
        self.archive_faults: list[list[Any]] = []  # hostile_archive (faults.py)
        self._ids = 1000
        self._files_cache: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.api_url = ""  # set when served (GitHubServer.start)

    # -- scenario helpers --

    def next_id(self) -> int:
        with self.lock:
            self._ids += 1
            return self._ids

    def open_pr(
        self,
        repo_full_name: str,
        base: str,
        head: str,
        title: str,
        body: str = "",
        draft: bool = False,
        *,
        user: str = "octocat",
    ) -> int:
        """Open a PR from branch `head` into branch `base`; returns its number."""
        if repo_full_name != self.full_name:
            raise ValueError(f"this server hosts {self.full_name}, not {repo_full_name}")
        base_sha, head_sha = self.repo.sha(base), self.repo.sha(head)
        with self.lock:
            number = len(self.prs) + 1
            self.prs[number] = PullRequest(number, base, base_sha, head, head_sha, title, body, draft, user)
        return number

    def update_head(self, number: int, sha: str | None = None) -> str:
        """Move the PR head to `sha` (default: the head branch's tip), as a push or force-push does."""
        pr = self.prs[number]
        pr.head_sha = sha or self.repo.sha(pr.head_ref)
        return pr.head_sha

    def add_collaborator(self, user: str, permission: str) -> None:
        self.collaborators[user] = permission

    def add_token(self, token: str) -> None:
        self.static_tokens.add(token)

    def user_token(self, login: str) -> str:
        """A token with which a test acts as `login` (e.g. to react to a comment as a user would)."""
        token = self.reactions.token_for(login)
        if self.static_tokens or self.app_public_key_pem is not None:  # a strict server accepts it too
            self.add_token(token)
        return token

    # -- webhook events --

    def webhook_payload(self, action: str, number: int) -> dict[str, Any]:
        """A `pull_request` event payload shaped like GitHub's."""
        pr = self.prs[number]
        return {
            "action": action,
            "number": number,
            "pull_request": self.pr_json(pr),
            "repository": self._repository_json(),
            "installation": {"id": self.installation_id},
            "sender": {"login": pr.user, "type": "User"},
        }

    def _pr_ref(self, pr: PullRequest) -> dict[str, Any]:
        repo = {
            "id": 4242,
            "name": self.full_name.split("/")[1],
            "url": f"{self.api_url}/repos/{self.full_name}",
        }
        return {
            "number": pr.number,
            "head": {"ref": pr.head_ref, "sha": pr.head_sha, "repo": repo},
            "base": {"ref": pr.base_ref, "sha": pr.base_sha, "repo": repo},
        }

    def _repository_json(self) -> dict[str, Any]:
        owner, name = self.full_name.split("/", 1)
        return {
            "id": 4242,
            "name": name,
            "full_name": self.full_name,
            "private": True,
            "owner": {"login": owner, "type": "Organization"},
            "default_branch": self.repo.default_branch,
        }

    def _event_envelope(self, action: str, sender: str) -> dict[str, Any]:
        return {
            "action": action,
            "repository": self._repository_json(),
            "installation": {"id": self.installation_id},
            "sender": {"login": sender, "type": "User"},
        }

    def check_run_payload(
        self, check_run_id: int, *, sender: str, action: str = "rerequested", fork: bool = False
    ) -> dict[str, Any]:
        """A `check_run` event for one recorded run, shaped like GitHub's (Re-run sends `rerequested`); a fork
        PR's run lists no pull request, as GitHub's does."""
        run = self.check_runs[check_run_id]
        prs = [] if fork else [self._pr_ref(p) for p in self.prs.values() if p.head_sha == run["head_sha"]]
        suite = {
            "id": 1,
            "head_sha": run["head_sha"],
            "pull_requests": prs,
            "app": {"id": 1, "slug": "prfleet"},
        }
        body = {**run_json(run), "check_suite": suite, "pull_requests": prs, "app": suite["app"]}
        return {**self._event_envelope(action, sender), "check_run": body}

    def check_suite_payload(
        self, head_sha: str, *, sender: str, action: str = "rerequested"
    ) -> dict[str, Any]:
        """A `check_suite` event for the head (Re-run all checks sends `rerequested`)."""
        prs = [self._pr_ref(p) for p in self.prs.values() if p.head_sha == head_sha]
        suite = {
            "id": 1,
            "head_sha": head_sha,
            "status": "completed",
            "pull_requests": prs,
            "app": {"id": 1, "slug": "prfleet"},
        }
        return {**self._event_envelope(action, sender), "check_suite": suite}

    # -- what the routes read --

    def pr_commits(self, pr: PullRequest) -> set[str]:
        """The PR's commits: reachable from its head, not from its base (`pulls/list-commits`)."""
        out = self.repo.git("rev-list", f"{pr.base_sha}..{pr.head_sha}")
        return set(out.split())

    def check_runs_for(self, head_sha: str) -> list[dict[str, Any]]:
        """Every check run recorded for `head_sha`, in creation order."""
        return [r for r in self.check_runs.values() if r["head_sha"] == head_sha]

    def files_of(self, pr: PullRequest) -> list[dict[str, Any]]:
        """The PR's files (diff.compute_files), computed once per base and head."""
        key = (pr.base_sha, pr.head_sha)
        with self.lock:
            cached = self._files_cache.get(key)
        if cached is None:
            cached = compute_files(
                self.repo,
                pr.base_sha,
                pr.head_sha,
                patch_max_lines=self.patch_max_lines,
                patch_max_bytes=self.patch_max_bytes,
            )
            with self.lock:
                self._files_cache[key] = cached
        return cached

    def pr_json(self, pr: PullRequest) -> dict[str, Any]:
        """The pull request as `pulls/get` returns it (and the `pull_request` event carries it)."""
        files = self.files_of(pr)
        owner = self.full_name.split("/")[0]
        repo_obj = {
            "full_name": self.full_name,
            "name": self.full_name.split("/")[1],
            "owner": {"login": owner},
        }
        return {
            "number": pr.number,
            "state": pr.state,
            "title": pr.title,
            "body": pr.body,
            "draft": pr.draft,
            "user": {"login": pr.user, "type": "User"},
            "head": {"ref": pr.head_ref, "sha": pr.head_sha, "repo": repo_obj},
            "base": {"ref": pr.base_ref, "sha": pr.base_sha, "repo": repo_obj},
            "changed_files": len(files),
            "additions": sum(f["additions"] for f in files),
            "deletions": sum(f["deletions"] for f in files),
            "html_url": f"https://github.com/{self.full_name}/pull/{pr.number}",
        }

    def authorized(self, header: str | None) -> bool:
        """Whether an `Authorization` header carries a token this server accepts (any, when it knows none)."""
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not value:
            return False
        if not self.static_tokens and self.app_public_key_pem is None:
            return True  # lenient: any credential
        if value in self.static_tokens:
            return True
        with self.lock:
            expires = self.issued_tokens.get(value)
        return expires is not None and expires > self.clock()
