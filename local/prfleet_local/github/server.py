"""A git-backed fake of the GitHub REST API, for tests and the offline demo: at least as strict as GitHub.

PR files, contents, blobs and trees come from a real git repository on disk (through the `git` command), so
the diffs, blob SHAs and patches are what GitHub would compute. Everything prfleet posts (reviews, review
comments, check runs with their status history and annotations, issue comments) is recorded for assertions.

Rules copied from GitHub, each with the page or OpenAPI operation it follows (github/rest-api-description):
- every call needs `Authorization` (401 without; the repository is private):
  https://docs.github.com/en/rest/authentication/authenticating-to-the-rest-api
- PR files (`pulls/list-files`): per_page max 100, Link header pagination, at most 3000 files; `patch` left out
  for binary files and for a file diff over `patch_max_lines` lines or `patch_max_bytes` bytes (GitHub documents
  20,000 lines / 500 KB per file for diffs it shows; the API's exact cut is not documented, hence configurable):
  https://docs.github.com/en/rest/pulls/pulls#list-pull-requests-files,
  https://docs.github.com/en/repositories/creating-and-managing-repositories/repository-limits#diff-limits
- contents (`repos/get-content`): base64 up to 1 MB; 1-100 MB `encoding: none` with empty `content` (the
  `raw` media type or the blob has it); over 100 MB 403 `too_large`; a symlink whose target is a normal file in
  the repository answers with that file (its own path and sha), any other symlink as `type: symlink`:
  https://docs.github.com/en/rest/repos/contents#get-repository-content
- trees (`git/get-tree`): a recursive tree over `tree_max_entries` entries (GitHub: 100,000 or 7 MB) is cut and
  says `truncated: true`; `sha` is the tree's own sha: https://docs.github.com/en/rest/git/trees#get-a-tree
- blobs (`git/get-blob`): base64, up to 100 MB: https://docs.github.com/en/rest/git/blobs#get-a-blob
- reviews (`pulls/create-review`): `event` is one of APPROVE, REQUEST_CHANGES, COMMENT (left out: PENDING;
  "PENDING" itself is not a value); `body` required for REQUEST_CHANGES and COMMENT; `commit_id` must be a
  commit of the pull request; each inline comment needs `path` and `body`, and one on a line outside the diff is a
  422 "Pull request review thread line must be part of the diff":
  https://docs.github.com/en/rest/pulls/reviews#create-a-review-for-a-pull-request
- check runs (`checks/create`, `checks/update`): `output` requires `title` and `summary`; `summary` and `text`
  at most 65,535 characters; at most 50 annotations per request, later requests append; an annotation's
  `message` and `raw_details` at most 64 KB, its `title` at most 255 characters, columns only on one line;
  `conclusion` required with `status: completed`, and never `stale` (only GitHub sets it):
  https://docs.github.com/en/rest/checks/runs
- check runs of a ref (`checks/list-for-ref`): `filter` is `latest` unless `all` is asked for (only the newest
  run of each name), `check_name` and `status` filter:
  https://docs.github.com/en/rest/checks/runs#list-check-runs-for-a-git-reference
- issue comments (`issues/create-comment`, `issues/update-comment`): `body` required; over 65,536 characters a 422
  "body is too long (maximum is 65536 characters)" (GitHub's validation answer; the OpenAPI text gives no
  maximum): https://docs.github.com/en/rest/issues/comments
- conditional requests: every GET answers with an `ETag`; `If-None-Match` with it gets a 304, which does not
  count against the primary rate limit:
  https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate
- primary rate limit: `rate_limit_total` requests per hour (5,000 for an installation by default), every answer
  (injected faults too) with x-ratelimit-limit/-remaining/-used/-reset/-resource; past it a 403 with
  x-ratelimit-remaining: 0 and x-ratelimit-reset in UTC epoch seconds; secondary rate limits: a 403 (or 429) "You
  have exceeded a secondary rate limit", with or without retry-after:
  https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit
- installation tokens from POST /app/installations/{id}/access_tokens, given an RS256 JWT signed by the app
  (verified when the app's public key is configured; `exp` at most 10 minutes ahead), expiring after one hour:
  https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app,
  https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-an-installation-access-token-for-a-github-app

Injectable failures, switchable per run from Python or over HTTP (the control endpoint, no auth, loopback only):
- `inject(pattern, status, times, method=..., retry_after=...)`: answer the next N matching calls with `status`
  before doing anything (401/403/404/422, a 5xx, a secondary rate limit);
- `rate_limit(pattern, times, retry_after=None)`: a secondary rate limit (no retry-after when None);
- `primary_limit(pattern, times, reset_in=60)`: the primary limit spent for those calls: 403 (or 429) with
  x-ratelimit-remaining 0 and x-ratelimit-reset `reset_in` seconds after the answer;
- `fail_after_write(pattern, times, status=502, method="POST")`: apply the write, then answer `status`
  (status 0: close the connection without an answer, as a timeout would look);
- `clear_faults()`.
Over HTTP: `POST {api_url}/_fake/faults` with JSON {"kind": "before" | "after_write" | "secondary" | "primary",
"pattern", "status", "times", "method", "retry_after", "reset_in"}; `DELETE {api_url}/_fake/faults`; `GET {api_url}/_fake/requests`
for the calls counted so far ({"total", "by_route"}).
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
import re
import secrets
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FILES_CAP = 3000
MAX_PER_PAGE = 100
MAX_BODY = 65_536
MAX_ANNOTATIONS = 50
MAX_CHECK_TEXT = 65_535
MAX_ANNOTATION_BYTES = 64 * 1024
MAX_ANNOTATION_TITLE = 255
CONTENTS_MAX_BYTES = 1024 * 1024
BLOB_MAX_BYTES = 100 * 1024 * 1024
TREE_MAX_ENTRIES = 100_000
PATCH_MAX_LINES = 20_000
PATCH_MAX_BYTES = 500 * 1024
RATE_LIMIT = 5000
REVIEW_EVENTS = ("APPROVE", "REQUEST_CHANGES", "COMMENT")
BOT_LOGIN = "prfleet[bot]"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- git ---


class GitRepo:
    """A real git repository to build PR scenarios in: commit files, branch, force-push."""

    def __init__(self, path: Path | str, *, default_branch: str = "main") -> None:
        self.path = Path(path)
        self.default_branch = default_branch
        if not (self.path / ".git").exists():
            self.path.mkdir(parents=True, exist_ok=True)
            self.git("init", "-q", "-b", default_branch)
        self.git("config", "user.email", "dev@example.com")
        self.git("config", "user.name", "Dev")
        self.git("config", "commit.gpgsign", "false")
        self.git("config", "core.autocrlf", "false")

    def git(self, *args: str, input: bytes | None = None) -> str:
        """Run git in the repository; raises with git's stderr on failure."""
        return self.git_bytes(*args, input=input).decode("utf-8", "surrogateescape")

    def git_bytes(self, *args: str, input: bytes | None = None) -> bytes:
        proc = subprocess.run(
            ["git", "-C", str(self.path), *args], input=input, capture_output=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout

    def current_branch(self) -> str | None:
        out = subprocess.run(
            ["git", "-C", str(self.path), "symbolic-ref", "--short", "-q", "HEAD"],
            capture_output=True,
            check=False,
        )
        return out.stdout.decode().strip() or None

    def checkout(self, branch: str, *, create_from: str | None = None) -> None:
        """Switch the work tree to `branch` (creating it at `create_from` if given)."""
        if create_from is not None:
            self.git("checkout", "-q", "-B", branch, create_from)
        else:
            self.git("checkout", "-q", branch)

    def branch(self, name: str, at: str | None = None) -> str:
        """Create (or move) branch `name` at `at` (default: HEAD) and check it out; returns its sha."""
        self.checkout(name, create_from=at or "HEAD")
        return self.sha(name)

    def commit(
        self,
        files: dict[str, str | bytes | None],
        message: str = "change",
        *,
        branch: str | None = None,
        symlinks: dict[str, str] | None = None,
    ) -> str:
        """Write `files` (None deletes) and `symlinks` (path -> target), commit on `branch`; the new sha."""
        if branch is not None and branch != self.current_branch():
            exists = subprocess.run(
                ["git", "-C", str(self.path), "rev-parse", "-q", "--verify", f"refs/heads/{branch}"],
                capture_output=True,
                check=False,
            )
            if exists.returncode == 0:
                self.checkout(branch)
            else:
                self.git("checkout", "-q", "-b", branch)
        for rel, content in files.items():
            target = self.path / rel
            if content is None:
                if target.is_symlink() or target.exists():
                    target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():
                target.unlink()
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_bytes(content.encode("utf-8"))
        for rel, dest in (symlinks or {}).items():
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            target.symlink_to(dest)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.sha("HEAD")

    def import_commit(
        self, files: dict[str, str | bytes | None], message: str, *, branch: str, parent: str | None = None
    ) -> str:
        """Commit `files` on `branch` (from `parent`, default the branch tip) through `git fast-import`.

        One pack instead of thousands of loose files: the way to build a 3,000-file PR in well under a second.
        The work tree is not touched, so `branch` must not be the checked-out branch.
        """
        if self.current_branch() == branch:
            raise ValueError(f"{branch} is checked out; import_commit leaves the work tree alone")
        base = parent or self.resolve(branch)
        msg = message.encode()
        stamp = f"Dev <dev@example.com> {int(time.time())} +0000".encode()
        chunks = [b"commit refs/heads/" + branch.encode() + b"\n", b"committer " + stamp + b"\n"]
        chunks.append(b"data %d\n%s\n" % (len(msg), msg))
        if base:
            chunks.append(b"from " + base.encode() + b"\n")
        for path, content in files.items():
            if content is None:
                chunks.append(b"D " + path.encode() + b"\n")
                continue
            data = content if isinstance(content, bytes) else content.encode("utf-8")
            chunks.append(b"M 100644 inline " + path.encode() + b"\n")
            chunks.append(b"data %d\n%s\n" % (len(data), data))
        self.git_bytes("fast-import", "--quiet", "--force", input=b"".join(chunks))
        return self.sha(branch)

    def sha(self, ref: str) -> str:
        return self.git("rev-parse", f"{ref}^{{commit}}").strip()

    def force_push(self, branch: str, sha: str) -> str:
        """Reset `branch` to `sha`, as `git push --force` would on GitHub."""
        if self.current_branch() == branch:
            self.git("reset", "-q", "--hard", sha)
        else:
            self.git("branch", "-f", branch, sha)
        return self.sha(branch)

    def resolve(self, ref: str) -> str | None:
        proc = subprocess.run(
            ["git", "-C", str(self.path), "rev-parse", "-q", "--verify", f"{ref}^{{commit}}"],
            capture_output=True,
            check=False,
        )
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def ls_tree(self, ref: str, path: str) -> tuple[str, str, str, int] | None:
        """(mode, type, sha, size) of `path` at `ref`, or None."""
        proc = subprocess.run(
            ["git", "-C", str(self.path), "ls-tree", "-l", "-z", ref, "--", path],
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0 or not proc.stdout:
            return None
        meta, _, name = proc.stdout.split(b"\0")[0].decode("utf-8", "surrogateescape").partition("\t")
        if name != path:
            return None
        mode, kind, sha, size = meta.split()
        return mode, kind, sha, (0 if size == "-" else int(size))

    def tree_sha(self, ref: str) -> str | None:
        """The sha of the tree `ref` is or points to (a tree, a commit, a branch), or None."""
        proc = subprocess.run(
            ["git", "-C", str(self.path), "rev-parse", "-q", "--verify", f"{ref}^{{tree}}"],
            capture_output=True,
            check=False,
        )
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def object_type(self, sha: str) -> str | None:
        proc = subprocess.run(
            ["git", "-C", str(self.path), "cat-file", "-t", sha], capture_output=True, check=False
        )
        return proc.stdout.decode().strip() if proc.returncode == 0 else None


# --- diff computation ---


_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_STATUS = {"A": "added", "M": "modified", "D": "removed", "R": "renamed", "C": "copied", "T": "changed"}


def _diff_sides(patch: str | None) -> tuple[set[int], set[int]]:
    """(LEFT lines, RIGHT lines) that are part of the patch, as GitHub validates review comments."""
    left: set[int] = set()
    right: set[int] = set()
    old = new = 0
    for line in (patch or "").split("\n"):
        m = _HUNK.match(line)
        if m:
            old, new = int(m.group(1)), int(m.group(3))
            continue
        if line.startswith("+"):
            right.add(new)
            new += 1
        elif line.startswith("-"):
            left.add(old)
            old += 1
        elif line.startswith(" "):
            left.add(old)
            right.add(new)
            old += 1
            new += 1
    return left, right


def compute_files(
    repo: GitRepo,
    base_sha: str,
    head_sha: str,
    *,
    patch_max_lines: int = PATCH_MAX_LINES,
    patch_max_bytes: int = PATCH_MAX_BYTES,
) -> list[dict[str, Any]]:
    """PR files as GitHub lists them: diff from the merge base to the head, renames detected, no `patch` for
    binary files or file diffs over `patch_max_lines` lines / `patch_max_bytes` bytes."""
    merge_base = repo.git("merge-base", base_sha, head_sha).strip()
    raw = repo.git_bytes("diff", "--raw", "-z", "-M", "--no-abbrev", merge_base, head_sha).split(b"\0")
    entries: list[dict[str, Any]] = []
    i = 0
    while i < len(raw) and raw[i]:
        meta = raw[i].decode()
        _old_mode, new_mode, old_sha, new_sha, status = meta[1:].split()
        letter = status[0]
        if letter in "RC":
            old_path, new_path = (
                raw[i + 1].decode("utf-8", "surrogateescape"),
                raw[i + 2].decode("utf-8", "surrogateescape"),
            )
            i += 3
        else:
            old_path = new_path = raw[i + 1].decode("utf-8", "surrogateescape")
            i += 2
        entry: dict[str, Any] = {
            "sha": old_sha if letter == "D" else new_sha,
            "filename": new_path,
            "status": _STATUS.get(letter, "modified"),
            "mode": new_mode,
        }
        if letter in "RC":
            entry["previous_filename"] = old_path
        entries.append(entry)
    numstat = repo.git_bytes("diff", "--numstat", "-z", "-M", merge_base, head_sha).split(b"\0")
    counts: list[tuple[int | None, int | None]] = []
    j = 0
    while j < len(numstat) and numstat[j]:
        add, dele, rest = numstat[j].decode("utf-8", "surrogateescape").split("\t", 2)
        j += 3 if rest == "" else 1  # renames: "a\td\t\0old\0new\0"
        counts.append((None if add == "-" else int(add), None if dele == "-" else int(dele)))
    patch_text = repo.git("diff", "-M", "--no-color", "--no-ext-diff", merge_base, head_sha)
    blocks = re.split(r"(?m)^diff --git ", patch_text)[1:]
    if not (len(entries) == len(counts) == len(blocks)):
        raise RuntimeError(
            f"diff outputs disagree: {len(entries)} raw, {len(counts)} numstat, {len(blocks)} patches"
        )
    for entry, (add, dele), block in zip(entries, counts, blocks, strict=True):
        binary = add is None
        entry["additions"] = add or 0
        entry["deletions"] = dele or 0
        entry["changes"] = entry["additions"] + entry["deletions"]
        if not binary:
            at = block.find("\n@@")
            if at >= 0:
                patch = block[at + 1 :].rstrip("\n")
                too_big = len(patch.encode("utf-8", "surrogateescape")) > patch_max_bytes
                if not too_big and patch.count("\n") + 1 <= patch_max_lines:
                    entry["patch"] = patch
    return entries


# --- server state ---


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


@dataclass
class Fault:
    pattern: re.Pattern[str]
    status: int
    remaining: int
    method: str | None
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    after_write: bool = False  # apply the request, then answer `status` (0: drop the connection)
    reset_in: float | None = None  # a primary rate limit: remaining 0 until this long after the answer


class GitHubServer:
    """The fake GitHub: `start()` -> api_url, `stop()`, or use as a context manager."""

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
        self.collaborators: dict[str, str] = {}
        self.issued_tokens: dict[str, float] = {}  # token -> expires_at
        self.token_requests: list[dict[str, Any]] = []  # verified JWT claims of each exchange
        self.requests: list[tuple[str, str]] = []  # (method, path) of every call
        self._faults: list[Fault] = []
        self._ids = 1000
        self._files_cache: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.api_url = ""

    # -- lifecycle --

    def start(self) -> str:
        """Serve on 127.0.0.1 (free port) in a daemon thread; returns the API base URL."""
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        host, port = self._httpd.server_address[:2]
        self.api_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="fake-github", daemon=True
        )
        self._thread.start()
        return self.api_url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GitHubServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scenario helpers --

    def _next_id(self) -> int:
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

    def inject(
        self,
        pattern: str,
        status: int,
        times: int = 1,
        *,
        method: str | None = None,
        message: str | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
        after_write: bool = False,
        reset_in: float | None = None,
    ) -> None:
        """Answer the next `times` calls whose path matches regex `pattern` with `status` (after applying
        them, with `after_write`; as a primary rate limit resetting `reset_in` seconds after the answer, with
        `reset_in`)."""
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["Retry-After"] = str(retry_after)
        default = {
            0: "",
            401: "Bad credentials",
            403: "Resource not accessible by integration",
            404: "Not Found",
            422: "Unprocessable Entity",
            429: "You have exceeded a secondary rate limit",
            500: "Internal Server Error",
            502: "Server Error",
            503: "Service Unavailable",
            504: "We couldn't respond to your request in time",
        }.get(status, "error")
        with self.lock:
            self._faults.append(
                Fault(
                    re.compile(pattern),
                    status,
                    times,
                    method.upper() if method else None,
                    message or default,
                    hdrs,
                    after_write,
                    reset_in,
                )
            )

    def rate_limit(
        self,
        pattern: str,
        times: int = 1,
        *,
        retry_after: int | None = 1,
        status: int = 403,
        method: str | None = None,
    ) -> None:
        """A secondary rate limit on the next `times` matching calls (of `method`, if given; no retry-after
        header when `retry_after` is None)."""
        self.inject(
            pattern,
            status,
            times,
            method=method,
            retry_after=retry_after,
            message="You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        )

    def primary_limit(
        self, pattern: str, times: int = 1, *, reset_in: float = 60.0, status: int = 403
    ) -> None:
        """The primary rate limit spent, for the next `times` matching calls: `status` (403 or 429) with
        x-ratelimit-remaining 0 and x-ratelimit-reset `reset_in` seconds after each answer (UTC epoch seconds), as
        GitHub answers past an installation's hourly limit; other routes keep being served (a scoped stand-in for
        the installation-wide limit, which `rate_limit_total` models)."""
        if status not in (403, 429):
            raise ValueError("GitHub answers a primary rate limit with 403 or 429")
        self.inject(
            pattern,
            status,
            times,
            message=f"API rate limit exceeded for installation ID {self.installation_id}.",
            reset_in=reset_in,
        )

    def fail_after_write(
        self, pattern: str, times: int = 1, *, status: int = 502, method: str | None = "POST"
    ) -> None:
        """Apply the next `times` matching writes, then answer `status` (0: close without answering)."""
        self.inject(pattern, status, times, method=method, after_write=True)

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    def add_fault(self, spec: dict[str, Any]) -> None:
        """A fault from its JSON form (the control endpoint): kind before | after_write | secondary | primary."""
        kind = spec.get("kind", "before")
        pattern, times = str(spec["pattern"]), int(spec.get("times", 1))
        if kind == "secondary":
            self.rate_limit(
                pattern,
                times,
                retry_after=spec.get("retry_after"),
                status=int(spec.get("status", 403)),
                method=spec.get("method"),
            )
        elif kind == "primary":
            self.primary_limit(
                pattern,
                times,
                reset_in=float(spec.get("reset_in", 60)),
                status=int(spec.get("status", 403)),
            )
        elif kind == "after_write":
            self.fail_after_write(
                pattern, times, status=int(spec.get("status", 502)), method=spec.get("method", "POST")
            )
        elif kind == "before":
            self.inject(
                pattern,
                int(spec["status"]),
                times,
                method=spec.get("method"),
                message=spec.get("message"),
                retry_after=spec.get("retry_after"),
            )
        else:
            raise ValueError(f"unknown fault kind {kind!r}: before, after_write, secondary or primary")

    def webhook_payload(self, action: str, number: int) -> dict[str, Any]:
        """A `pull_request` event payload shaped like GitHub's."""
        pr = self.prs[number]
        owner, name = self.full_name.split("/", 1)
        repository = {
            "id": 4242,
            "name": name,
            "full_name": self.full_name,
            "private": True,
            "owner": {"login": owner, "type": "Organization"},
            "default_branch": self.repo.default_branch,
        }
        return {
            "action": action,
            "number": number,
            "pull_request": self._pr_json(pr),
            "repository": repository,
            "installation": {"id": self.installation_id},
            "sender": {"login": pr.user, "type": "User"},
        }

    def pr_commits(self, pr: PullRequest) -> set[str]:
        """The PR's commits: reachable from its head, not from its base (`pulls/list-commits`)."""
        out = self.repo.git("rev-list", f"{pr.base_sha}..{pr.head_sha}")
        return set(out.split())

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

    def _event_envelope(self, action: str, sender: str) -> dict[str, Any]:
        owner, name = self.full_name.split("/", 1)
        return {
            "action": action,
            "repository": {
                "id": 4242,
                "name": name,
                "full_name": self.full_name,
                "private": True,
                "owner": {"login": owner, "type": "Organization"},
                "default_branch": self.repo.default_branch,
            },
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
        body = {**_Handler._run_json(run), "check_suite": suite, "pull_requests": prs, "app": suite["app"]}
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

    def check_runs_for(self, head_sha: str) -> list[dict[str, Any]]:
        return [r for r in self.check_runs.values() if r["head_sha"] == head_sha]

    # -- model --

    def files_of(self, pr: PullRequest) -> list[dict[str, Any]]:
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

    def _pr_json(self, pr: PullRequest) -> dict[str, Any]:
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

    def _take_fault(self, method: str, path: str, *, after_write: bool = False) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.after_write != after_write:
                    continue
                if fault.remaining > 0 and (fault.method in (None, method)) and fault.pattern.search(path):
                    fault.remaining -= 1
                    return fault
        return None

    def _authorized(self, header: str | None) -> bool:
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


# --- HTTP handler ---


class HttpError(Exception):
    def __init__(
        self, status: int, message: str, errors: list[Any] | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}


Route = tuple[str, re.Pattern[str], str]
_R = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
ROUTES: list[Route] = [
    ("POST", re.compile(r"^/app/installations/(?P<id>\d+)/access_tokens$"), "access_token"),
    ("GET", re.compile(_R + r"/pulls/(?P<n>\d+)$"), "get_pr"),
    ("GET", re.compile(_R + r"/pulls/(?P<n>\d+)/files$"), "pr_files"),
    ("GET", re.compile(_R + r"/pulls/(?P<n>\d+)/reviews$"), "list_reviews"),
    ("POST", re.compile(_R + r"/pulls/(?P<n>\d+)/reviews$"), "create_review"),
    ("GET", re.compile(_R + r"/pulls/(?P<n>\d+)/comments$"), "list_review_comments"),
    ("GET", re.compile(_R + r"/contents/(?P<path>.+)$"), "contents"),
    ("GET", re.compile(_R + r"/git/blobs/(?P<sha>[0-9a-f]{40})$"), "blob"),
    ("GET", re.compile(_R + r"/git/trees/(?P<sha>[^/]+)$"), "tree"),
    ("GET", re.compile(_R + r"/compare/(?P<base>[^/]+)\.\.\.(?P<head>[^/]+)$"), "compare"),
    ("POST", re.compile(_R + r"/check-runs$"), "create_check_run"),
    ("PATCH", re.compile(_R + r"/check-runs/(?P<id>\d+)$"), "update_check_run"),
    ("GET", re.compile(_R + r"/check-runs/(?P<id>\d+)$"), "get_check_run"),
    ("GET", re.compile(_R + r"/commits/(?P<sha>[^/]+)/check-runs$"), "list_check_runs"),
    ("GET", re.compile(_R + r"/issues/(?P<n>\d+)/comments$"), "list_issue_comments"),
    ("POST", re.compile(_R + r"/issues/(?P<n>\d+)/comments$"), "create_issue_comment"),
    ("PATCH", re.compile(_R + r"/issues/comments/(?P<id>\d+)$"), "update_issue_comment"),
    ("GET", re.compile(_R + r"/collaborators/(?P<user>[^/]+)/permission$"), "permission"),
]


class _Handler(BaseHTTPRequestHandler):
    owner: GitHubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # -- plumbing --

    def _send(
        self, status: int, data: Any, headers: dict[str, str] | None = None, *, raw: bytes | None = None
    ) -> None:
        body = raw if raw is not None else (b"" if data is None else json.dumps(data).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-GitHub-Request-Id", secrets.token_hex(8).upper())
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _rate_headers(self) -> dict[str, str]:
        srv = self.owner
        return {
            "X-RateLimit-Limit": str(srv.rate_limit_total),
            "X-RateLimit-Remaining": str(max(0, srv.rate_limit_total - srv.rate_limit_used)),
            "X-RateLimit-Used": str(srv.rate_limit_used),
            "X-RateLimit-Reset": str(int(srv.rate_limit_reset)),
            "X-RateLimit-Resource": "core",
        }

    def _fault_headers(self, fault: Fault) -> dict[str, str]:
        """An injected answer carries the x-ratelimit-* headers every API answer has (a secondary limit leaves the
        primary one untouched); a primary limit says remaining 0 until its reset, in UTC epoch seconds."""
        headers = {**self._rate_headers(), **fault.headers}
        if fault.reset_in is not None:
            headers.update(
                {
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Used": headers["X-RateLimit-Limit"],
                    "X-RateLimit-Reset": str(int(self.owner.clock() + fault.reset_in + 0.999)),
                }
            )
        return headers

    def _count_request(self) -> None:
        """Primary rate limit: one more request in the hour, or a 403 with x-ratelimit-remaining: 0
        (https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit)."""
        srv = self.owner
        with srv.lock:
            now = srv.clock()
            if now >= srv.rate_limit_reset:
                srv.rate_limit_used, srv.rate_limit_reset = 0, now + 3600
            if srv.rate_limit_used >= srv.rate_limit_total:
                raise HttpError(
                    403,
                    "API rate limit exceeded for installation.",
                    headers=self._rate_headers(),
                )
            srv.rate_limit_used += 1

    def _control(self, method: str, path: str, raw: bytes) -> None:
        """The fake's own control endpoint (not GitHub's): faults and request counts, see the module doc."""
        srv = self.owner
        if path == "/_fake/faults" and method == "POST":
            try:
                srv.add_fault(json.loads(raw or b"{}"))
            except (KeyError, TypeError, ValueError) as exc:
                self._send(400, {"message": f"bad fault: {exc}"})
                return
            self._send(201, {"faults": len(srv._faults)})
        elif path == "/_fake/faults" and method == "DELETE":
            srv.clear_faults()
            self._send(204, None)
        elif path == "/_fake/requests" and method == "GET":
            by_route: dict[str, int] = {}
            with srv.lock:
                for m, p in srv.requests:
                    key = f"{m} {p}"
                    by_route[key] = by_route.get(key, 0) + 1
                total = len(srv.requests)
            self._send(200, {"total": total, "by_route": by_route, "not_modified": srv.not_modified})
        else:
            self._send(404, {"message": f"Not Found: {method} {path}"})

    def _dispatch(self, method: str) -> None:
        srv = self.owner
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        query = dict(urllib.parse.parse_qsl(split.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if split.path.startswith("/_fake/"):
            self._control(method, split.path, raw)
            return
        if method == "GET" and split.path.startswith(
            "/prfleet/"
        ):  # the read-only review page (github/page.py)
            from prfleet_local.github.page import serve_page

            serve_page(self, split.path)
            return
        with srv.lock:
            srv.requests.append((method, split.path))
        try:
            fault = srv._take_fault(method, split.path)
            if fault is not None:
                raise HttpError(fault.status, fault.message, headers=self._fault_headers(fault))
            auth = self.headers.get("Authorization")
            for verb, pattern, name in ROUTES:
                m = pattern.match(split.path)
                if not m or verb != method:
                    continue
                params = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
                if name != "access_token":
                    if not srv._authorized(auth):
                        raise HttpError(401, "Requires authentication" if not auth else "Bad credentials")
                    if f"{params['owner']}/{params['repo']}" != srv.full_name:
                        raise HttpError(404, "Not Found")
                    self._count_request()
                body = json.loads(raw) if raw else {}
                status, data, headers = getattr(self, "h_" + name)(params, query, body, auth)
                headers = {**self._rate_headers(), **(headers or {})} if name != "access_token" else headers
                after = srv._take_fault(method, split.path, after_write=True)
                if after is not None:  # the write is applied; the answer is lost
                    if after.status == 0:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    raise HttpError(after.status, after.message, headers=self._fault_headers(after))
                out = json.dumps(data).encode() if data is not None else b""
                if method == "GET" and status == 200:
                    # Conditional requests: a 304 for a matching If-None-Match, free under the primary limit
                    # (best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate).
                    etag = '"' + hashlib.sha1(out).hexdigest() + '"'  # noqa: S324 - an ETag, not security
                    headers["ETag"] = etag
                    if self.headers.get("If-None-Match") == etag:
                        with srv.lock:  # a 304 is free under the primary rate limit
                            srv.rate_limit_used = max(0, srv.rate_limit_used - 1)
                            srv.not_modified += 1
                        headers.update(self._rate_headers())
                        self._send(304, None, headers)
                        return
                self._send(status, None, headers, raw=out)
                return
            raise HttpError(404, f"Not Found: {method} {path}")
        except HttpError as exc:
            payload: dict[str, Any] = {
                "message": exc.message,
                "documentation_url": "https://docs.github.com/rest",
                "status": str(exc.status),
            }
            if exc.errors is not None:
                payload["errors"] = exc.errors
            self._send(exc.status, payload, exc.headers)
        except Exception as exc:  # noqa: BLE001 - a fake server reports its own bugs as 500s
            self._send(500, {"message": f"fake github error: {type(exc).__name__}: {exc}"})

    def _pr(self, params: dict[str, str]) -> PullRequest:
        pr = self.owner.prs.get(int(params["n"]))
        if pr is None:
            raise HttpError(404, "Not Found")
        return pr

    def _paginate(
        self, items: list[Any], query: dict[str, str], *, wrap: Callable[[list[Any]], Any] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        per_page = max(1, min(MAX_PER_PAGE, int(query.get("per_page") or 30)))
        page = max(1, int(query.get("page") or 1))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        base = self.owner.api_url + urllib.parse.urlsplit(self.path).path

        def link(p: int) -> str:
            q = dict(query, per_page=str(per_page), page=str(p))
            return f"<{base}?{urllib.parse.urlencode(q)}>"

        rels = []
        if page < last:
            rels += [f'{link(page + 1)}; rel="next"', f'{link(last)}; rel="last"']
        if page > 1:
            rels += [f'{link(1)}; rel="first"', f'{link(page - 1)}; rel="prev"']
        headers = {"Link": ", ".join(rels)} if rels else {}
        return 200, (wrap(chunk) if wrap else chunk), headers

    # -- app auth --

    def h_access_token(
        self, params: dict, query: dict, body: dict, auth: str | None
    ) -> tuple[int, Any, dict]:
        srv = self.owner
        scheme, _, token = (auth or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HttpError(401, "A JSON web token could not be decoded")
        claims: dict[str, Any] = {}
        if srv.app_public_key_pem is not None:
            import jwt

            try:
                claims = jwt.decode(
                    token,
                    srv.app_public_key_pem,
                    algorithms=["RS256"],
                    options={"require": ["iat", "exp", "iss"], "verify_iat": False, "verify_exp": False},
                    leeway=0,
                )
            except jwt.PyJWTError as exc:
                raise HttpError(401, f"A JSON web token could not be decoded ({exc})") from None
            now = srv.clock()
            if claims["exp"] <= now:
                raise HttpError(401, "'Expiration time' claim ('exp') must be a numeric value in the future")
            # "The time must be no more than 10 minutes into the future."
            if claims["exp"] - now > 600 + 5 or claims["exp"] - claims["iat"] > 660:
                raise HttpError(401, "'Expiration time' claim ('exp') is too far in the future")
            if claims["iat"] > now + 5:
                raise HttpError(
                    401, "'Issued at' claim ('iat') must be an Integer representing a time in the past"
                )
            if srv.app_id is not None and str(claims["iss"]) != srv.app_id:
                raise HttpError(401, "'Issuer' claim ('iss') must be the app's id")
        if int(params["id"]) != srv.installation_id:
            raise HttpError(404, "Not Found")
        new = "ghs_" + secrets.token_hex(18)
        expires = srv.clock() + srv.token_ttl
        with srv.lock:
            srv.issued_tokens[new] = expires
            srv.token_requests.append(claims)
        return (
            201,
            {"token": new, "expires_at": _iso(expires), "permissions": {}, "repository_selection": "all"},
            {},
        )

    # -- pulls --

    def h_get_pr(self, params: dict, query: dict, body: dict, auth: str | None) -> tuple[int, Any, dict]:
        return 200, self.owner._pr_json(self._pr(params)), {}

    def h_pr_files(self, params: dict, query: dict, body: dict, auth: str | None) -> tuple[int, Any, dict]:
        # pulls/list-files: "Responses include a maximum of 3000 files", 100 a page at most; `patch` left out
        # by compute_files: https://docs.github.com/en/rest/pulls/pulls#list-pull-requests-files
        files = self.owner.files_of(self._pr(params))[:FILES_CAP]
        api, name = self.owner.api_url, self.owner.full_name
        out = []
        for f in files:
            entry = {k: v for k, v in f.items() if k != "mode"}
            entry["contents_url"] = f"{api}/repos/{name}/contents/{urllib.parse.quote(f['filename'])}"
            out.append(entry)
        return self._paginate(out, query)

    def h_list_reviews(
        self, params: dict, query: dict, body: dict, auth: str | None
    ) -> tuple[int, Any, dict]:
        n = int(params["n"])
        return self._paginate([r for r in self.owner.reviews if r["pull_number"] == n], query)

    def h_list_review_comments(
        self, params: dict, query: dict, body: dict, auth: str | None
    ) -> tuple[int, Any, dict]:
        n = int(params["n"])
        return self._paginate([c for c in self.owner.review_comments if c["pull_number"] == n], query)

    def h_create_review(
        self, params: dict, query: dict, body: dict, auth: str | None
    ) -> tuple[int, Any, dict]:
        srv = self.owner
        pr = self._pr(params)
        commit_id = body.get("commit_id") or pr.head_sha
        # pulls/create-review: commit_id "The SHA of the commit that needs a review" - a commit of this PR.
        if srv.repo.object_type(commit_id) != "commit" or commit_id not in srv.pr_commits(pr):
            raise HttpError(422, "Unprocessable Entity", ["commit_id is not part of the pull request"])
        event = body.get("event")
        text = body.get("body") or ""
        comments = body.get("comments") or []
        # event enum: APPROVE, REQUEST_CHANGES, COMMENT; "By leaving this blank, you set the review action
        # state to PENDING" - PENDING is a state, not a value of `event`.
        if event is not None and event not in REVIEW_EVENTS:
            raise HttpError(
                422,
                "Unprocessable Entity",
                [
                    f"event {event!r} is not one of {', '.join(REVIEW_EVENTS)} (leave it out for a pending review)"
                ],
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
            left, right = _diff_sides(f.get("patch"))
            if not isinstance(line, int) or line not in (right if side == "RIGHT" else left):
                errors.append("Pull request review thread line must be part of the diff")
            if len(c.get("body") or "") > MAX_BODY:
                errors.append(f"body is too long (maximum is {MAX_BODY} characters)")
        if errors:
            raise HttpError(422, "Unprocessable Entity", errors)
        review_id = srv._next_id()
        now = _iso(time.time())
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
                        "id": srv._next_id(),
                        "pull_request_review_id": review_id,
                        "pull_number": pr.number,
                        "path": c["path"],
                        "line": c["line"],
                        "side": (c.get("side") or "RIGHT").upper(),
                        "body": c.get("body") or "",
                        "commit_id": commit_id,
                        "user": {"login": BOT_LOGIN, "type": "Bot"},
                        "created_at": now,
                    }
                )
        return 200, {k: v for k, v in review.items() if k != "comments"}, {}

    # -- contents, blobs, trees --

    def h_contents(self, params: dict, query: dict, body: dict, auth: str | None) -> tuple[int, Any, dict]:
        srv = self.owner
        ref = query.get("ref") or srv.repo.default_branch
        path = params["path"].strip("/")
        if srv.repo.resolve(ref) is None:
            raise HttpError(404, f"No commit found for the ref {ref}")
        info = srv.repo.ls_tree(ref, path)
        if info is None:
            raise HttpError(404, "Not Found")
        mode, kind, sha, size = info
        name = path.rsplit("/", 1)[-1]
        common = {"name": name, "path": path, "sha": sha, "size": size}
        if kind == "tree":
            listing = srv.repo.git("ls-tree", "-l", ref, path + "/").splitlines()
            entries = []
            for line in listing:
                meta, _, p = line.partition("\t")
                m, k, s, sz = meta.split()
                entries.append(
                    {
                        "name": p.rsplit("/", 1)[-1],
                        "path": p,
                        "sha": s,
                        "size": 0 if sz == "-" else int(sz),
                        "type": "dir" if k == "tree" else "file",
                    }
                )
            return 200, entries, {}
        if kind != "blob":
            return 200, {**common, "type": "submodule"}, {}
        if mode == "120000":
            target = srv.repo.git_bytes("cat-file", "blob", sha).decode("utf-8", "surrogateescape")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            real = None
            if not target.startswith("/") and not resolved.startswith("..") and resolved != path:
                real = srv.repo.ls_tree(ref, resolved)
            if real is None or real[0] not in ("100644", "100755"):
                return 200, {**common, "type": "symlink", "target": target}, {}
            # "If the requested {path} points to a symlink, and the symlink's target is a normal file in the
            # repository, then the API responds with the content of the file."
            mode, kind, sha, size = real
            path, name = resolved, resolved.rsplit("/", 1)[-1]
            common = {"name": name, "path": path, "sha": sha, "size": size}
        # repos/get-content: up to 1 MB every feature; 1-100 MB no `content` ("encoding": "none"); over 100 MB
        # not supported: https://docs.github.com/en/rest/repos/contents#get-repository-content
        if size > srv.blob_max_bytes:
            raise HttpError(
                403,
                "This API returns blobs up to 100 MB in size. The requested blob is too large to fetch via the API",
                [{"resource": "Blob", "field": "data", "code": "too_large"}],
            )
        if size > srv.contents_max_bytes:
            return 200, {**common, "type": "file", "encoding": "none", "content": ""}, {}
        content = srv.repo.git_bytes("cat-file", "blob", sha)
        b64 = base64.encodebytes(content).decode()  # 76-char lines, like GitHub's wrapped base64
        return 200, {**common, "type": "file", "encoding": "base64", "content": b64}, {}

    def h_blob(self, params: dict, query: dict, body: dict, auth: str | None) -> tuple[int, Any, dict]:
        srv = self.owner
        sha = params["sha"]
        if srv.repo.object_type(sha) != "blob":
            raise HttpError(404, "Not Found")
        if (
            int(srv.repo.git("cat-file", "-s", sha).strip()) > srv.blob_max_bytes
        ):  # git/get-blob: up to 100 MB
            raise HttpError(
                403,
                "This API returns blobs up to 100 MB in size.",
                [{"resource": "Blob", "code": "too_large"}],
            )
        content = srv.repo.git_bytes("cat-file", "blob", sha)
        return (
            200,
            {
                "sha": sha,
                "size": len(content),
                "encoding": "base64",
                "content": base64.encodebytes(content).decode(),
            },
            {},
        )

    def h_tree(self, params: dict, query: dict, body: dict, auth: str | None) -> tuple[int, Any, dict]:
        srv = self.owner
        ref = params["sha"]
        own = srv.repo.tree_sha(ref)  # git/get-tree takes a tree sha, or a commit or ref for its tree
        if own is None:
            raise HttpError(404, "Not Found")
        recursive = bool(query.get("recursive"))
        args = ["ls-tree", "-l", "-z"] + (["-r", "-t"] if recursive else []) + [ref]
        tree = []
        for item in srv.repo.git_bytes(*args).split(b"\0"):
            if not item:
                continue
            meta, _, p = item.decode("utf-8", "surrogateescape").partition("\t")
            m, k, s, sz = meta.split()
            entry = {"path": p, "mode": m, "type": k, "sha": s}
            if k == "blob":
                entry["size"] = int(sz)
            tree.append(entry)
        # git/get-tree: "If truncated is true in the response then the number of items in the tree array exceeded
        # our maximum limit" (100,000 entries or 7 MB): https://docs.github.com/en/rest/git/trees#get-a-tree
        truncated = recursive and len(tree) > srv.tree_max_entries
        if truncated:
            tree = tree[: srv.tree_max_entries]
        return 200, {"sha": own, "tree": tree, "truncated": truncated}, {}

    def h_compare(self, params: dict, query: dict, body: dict, auth: str | None) -> tuple[int, Any, dict]:
        srv = self.owner
        base, head = srv.repo.resolve(params["base"]), srv.repo.resolve(params["head"])
        if base is None or head is None:
            raise HttpError(404, "Not Found")
        files = [{k: v for k, v in f.items() if k != "mode"} for f in compute_files(srv.repo, base, head)]
        ahead = int(srv.repo.git("rev-list", "--count", f"{base}..{head}").strip())
        behind = int(srv.repo.git("rev-list", "--count", f"{head}..{base}").strip())
        status = (
            "identical" if base == head else "ahead" if not behind else "behind" if not ahead else "diverged"
        )
        return (
            200,
            {
                "status": status,
                "ahead_by": ahead,
                "behind_by": behind,
                "merge_base_commit": {"sha": srv.repo.git("merge-base", base, head).strip()},
                "files": files[:FILES_CAP],
            },
            {},
        )

    # -- check runs --

    def _check_output(self, run: dict[str, Any], output: dict[str, Any] | None) -> None:
        if output is None:
            return
        # checks/create, checks/update: output requires title and summary; summary and text maxLength 65535.
        missing = [k for k in ("title", "summary") if not isinstance(output.get(k), str)]
        if missing:
            raise HttpError(
                422, "Invalid request.", [f"output is missing required key(s): {', '.join(missing)}"]
            )
        for key in ("summary", "text"):
            if len(output.get(key) or "") > MAX_CHECK_TEXT:
                raise HttpError(
                    422, "Invalid request.", [f"output.{key} is longer than {MAX_CHECK_TEXT} characters"]
                )
        annotations = output.get("annotations") or []
        if len(annotations) > MAX_ANNOTATIONS:
            raise HttpError(
                422, "Unprocessable Entity", [f"Only {MAX_ANNOTATIONS} annotations are allowed per request"]
            )
        for a in annotations:
            missing = [
                k for k in ("path", "start_line", "end_line", "annotation_level", "message") if k not in a
            ]
            if missing or a.get("annotation_level") not in ("notice", "warning", "failure"):
                raise HttpError(422, "Unprocessable Entity", [f"invalid annotation {a!r}"])
            # The annotation object of checks/create and checks/update: `message` and `raw_details` "The maximum
            # size is 64 KB", `title` "The maximum size is 255 characters", line numbers start at 1, and
            # `start_column` / `end_column` only "on the same line" (start_line == end_line).
            problems = [
                f"annotation {k} is larger than 64 KB"
                for k in ("message", "raw_details")
                if len(str(a.get(k) or "").encode("utf-8")) > MAX_ANNOTATION_BYTES
            ]
            if len(str(a.get("title") or "")) > MAX_ANNOTATION_TITLE:
                problems.append(f"annotation title is longer than {MAX_ANNOTATION_TITLE} characters")
            lines = (a.get("start_line"), a.get("end_line"))
            if not all(isinstance(n, int) and n >= 1 for n in lines):
                problems.append("annotation start_line and end_line are line numbers starting at 1")
            elif ("start_column" in a or "end_column" in a) and lines[0] != lines[1]:
                problems.append("annotation columns are only supported when start_line equals end_line")
            if problems:
                raise HttpError(422, "Unprocessable Entity", problems)
        for key in ("title", "summary", "text"):
            if key in output:
                run["output"][key] = output[key]
        run["output"]["annotations"].extend(annotations)
        run["output"]["annotations_count"] = len(run["output"]["annotations"])
        if annotations:
            run["annotation_batches"].append(len(annotations))

    def _apply_status(self, run: dict[str, Any], body: dict[str, Any]) -> None:
        status = body.get("status")
        conclusion = body.get("conclusion")
        if conclusion is not None and status is None:
            status = "completed"
        if status is not None:
            if status not in ("queued", "in_progress", "completed"):
                raise HttpError(422, "Unprocessable Entity", [f"status {status!r} is not valid"])
            if status == "completed" and conclusion not in (
                "success",
                "failure",
                "neutral",
                "cancelled",
                "skipped",
                "timed_out",
                "action_required",
            ):
                raise HttpError(
                    422, "Unprocessable Entity", ["conclusion is required when status is completed"]
                )
            run["status"] = status
            run["conclusion"] = conclusion if status == "completed" else None
            if status == "completed":
                run["completed_at"] = _iso(time.time())
            run["history"].append((status, run["conclusion"]))

    def h_create_check_run(
        self, params: dict, query: dict, body: dict, auth: str | None
    ) -> tuple[int, Any, dict]:
        srv = self.owner
        if not body.get("name") or not body.get("head_sha"):
            raise HttpError(422, "Unprocessable Entity", ["name and head_sha are required"])
        if srv.repo.object_type(body["head_sha"]) != "commit":
            raise HttpError(422, "Unprocessable Entity", ["No commit found for SHA: " + body["head_sha"]])
        run = {
            "id": srv._next_id(),
            "name": body["name"],
            "head_sha": body["head_sha"],
            "external_id": body.get("external_id"),
            "details_url": body.get("details_url"),
            "status": "queued",
            "conclusion": None,
            "started_at": _iso(time.time()),
            "completed_at": None,
            "output": {
                "title": None,
                "summary": None,
                "text": None,
                "annotations": [],
                "annotations_count": 0,
            },
            "history": [],
            "annotation_batches": [],
        }
        self._check_output(run, body.get("output"))
        self._apply_status(
            run, {"status": body.get("status") or "queued", "conclusion": body.get("conclusion")}
        )
        with srv.lock:
            srv.check_runs[run["id"]] = run
        return 201, self._run_json(run), {}

    def h_update_check_run(
        self, params: dict, query: dict, body: dict, auth: str | None
    ) -> tuple[int, Any, dict]:
        srv = self.owner
        run = srv.check_runs.get(int(params["id"]))
        if run is None:
            raise HttpError(404, "Not Found")
        with srv.lock:
            self._check_output(run, body.get("output"))
            self._apply_status(run, body)
            for key in ("name", "details_url", "external_id"):
                if key in body:
                    run[key] = body[key]
        return 200, self._run_json(run), {}

    def h_get_check_run(
        self, params: dict, query: dict, body: dict, auth: str | None
    ) -> tuple[int, Any, dict]:
        run = self.owner.check_runs.get(int(params["id"]))
        if run is None:
            raise HttpError(404, "Not Found")
        return 200, self._run_json(run), {}

    def h_list_check_runs(
        self, params: dict, query: dict, body: dict, auth: str | None
    ) -> tuple[int, Any, dict]:
        sha = self.owner.repo.resolve(params["sha"]) or params["sha"]
        # checks/list-for-ref: `check_name` and `status` filter; `filter` is `latest` (the default: only the most
        # recent run of each name) or `all`: https://docs.github.com/en/rest/checks/runs#list-check-runs-for-a-git-reference
        which = query.get("filter") or "latest"
        if which not in ("latest", "all"):
            raise HttpError(422, "Validation Failed", [f"filter {which!r} is not one of latest, all"])
        status = query.get("status")
        if status is not None and status not in ("queued", "in_progress", "completed"):
            raise HttpError(
                422, "Validation Failed", [f"status {status!r} is not one of queued, in_progress, completed"]
            )
        runs = sorted(self.owner.check_runs_for(sha), key=lambda r: r["id"], reverse=True)
        if "check_name" in query:
            runs = [r for r in runs if r["name"] == query["check_name"]]
        if which == "latest":
            newest: dict[str, dict[str, Any]] = {}
            for r in runs:
                newest.setdefault(r["name"], r)
            runs = list(newest.values())
        if status is not None:
            runs = [r for r in runs if r["status"] == status]
        out = [self._run_json(r) for r in runs]
        return self._paginate(out, query, wrap=lambda chunk: {"total_count": len(out), "check_runs": chunk})

    @staticmethod
    def _run_json(run: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in run.items() if k not in ("history", "annotation_batches")}
        out["output"] = {k: v for k, v in run["output"].items() if k != "annotations"}
        return out

    # -- issue comments, permissions --

    def h_list_issue_comments(
        self, params: dict, query: dict, body: dict, auth: str | None
    ) -> tuple[int, Any, dict]:
        n = int(params["n"])
        return self._paginate([c for c in self.owner.issue_comments if c["issue_number"] == n], query)

    def h_create_issue_comment(
        self, params: dict, query: dict, body: dict, auth: str | None
    ) -> tuple[int, Any, dict]:
        srv = self.owner
        self._pr(params)
        text = body.get("body") or ""
        if not text:
            raise HttpError(422, "Validation Failed", ["body can't be blank"])
        if len(text) > MAX_BODY:
            raise HttpError(
                422, "Validation Failed", [f"body is too long (maximum is {MAX_BODY} characters)"]
            )
        now = _iso(time.time())
        comment = {
            "id": srv._next_id(),
            "issue_number": int(params["n"]),
            "body": text,
            "user": {"login": BOT_LOGIN, "type": "Bot"},
            "created_at": now,
            "updated_at": now,
            "edits": 0,
        }
        with srv.lock:
            srv.issue_comments.append(comment)
        return 201, comment, {}

    def h_update_issue_comment(
        self, params: dict, query: dict, body: dict, auth: str | None
    ) -> tuple[int, Any, dict]:
        srv = self.owner
        text = body.get("body") or ""
        if not text:  # issues/update-comment: `body` is required
            raise HttpError(422, "Validation Failed", ["body can't be blank"])
        if len(text) > MAX_BODY:
            raise HttpError(
                422, "Validation Failed", [f"body is too long (maximum is {MAX_BODY} characters)"]
            )
        with srv.lock:
            for c in srv.issue_comments:
                if c["id"] == int(params["id"]):
                    c["body"] = text
                    c["updated_at"] = _iso(time.time())
                    c["edits"] += 1
                    return 200, c, {}
        raise HttpError(404, "Not Found")

    def h_permission(self, params: dict, query: dict, body: dict, auth: str | None) -> tuple[int, Any, dict]:
        user = params["user"]
        role = self.owner.collaborators.get(user)
        if role is None:
            raise HttpError(404, f"{user} is not a user")
        permission = {"maintain": "write", "triage": "read"}.get(role, role)
        return 200, {"permission": permission, "role_name": role, "user": {"login": user}}, {}
