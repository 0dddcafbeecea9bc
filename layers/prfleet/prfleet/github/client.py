"""The GitHub REST calls prfleet makes (class GitHub), and `client_for`, the client a Lambda uses for an
installation.

Writes that are not idempotent (POST a review, a comment, a check run; PATCH with annotations, which GitHub
appends) are never re-sent blindly after a 5xx or a timeout: GitHub may have applied them. The client first looks
for what it wrote (the hidden marker, the check run's external_id, the annotation count) and re-sends only when it
is not there.

Sources for the facts used here:
- PR files: at most 3000 files, per_page max 100: https://docs.github.com/en/rest/pulls/pulls#list-pull-requests-files
- Contents: above 1 MB `content` is empty (`encoding: none`), use the blob:
  https://docs.github.com/en/rest/repos/contents#get-repository-content and
  https://docs.github.com/en/rest/git/blobs#get-a-blob (up to 100 MB)
- Check run annotations: 50 per request, later updates append:
  https://docs.github.com/en/rest/checks/runs#update-a-check-run
- Recursive trees are cut at 100,000 entries or 7 MB (`truncated: true`):
  https://docs.github.com/en/rest/git/trees#get-a-tree
- The repository archive: `GET /repos/{owner}/{repo}/tarball/{ref}` answers 302 with a Location on
  codeload.github.com, "temporary" for private repositories (five minutes); the tar has one top-level folder:
  https://docs.github.com/en/rest/repos/contents#download-a-repository-archive-tar
"""

from __future__ import annotations

import base64
import itertools
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from prfleet.config import secret_store, settings
from prfleet.github.auth import auth_from_secret
from prfleet.github.transport import (
    PER_PAGE,
    GitHubError,
    GitHubWriteUncertain,
    Transport,
    blob_cache,
    download,
    next_page,
)

FILES_CAP = 3000  # GitHub lists at most 3000 files of a pull request
REVIEW_COMMENTS_CAP = 3000  # review comments read of one PR at most (30 pages): the reactions pass's bound
ANNOTATIONS_PER_REQUEST = 50


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _qpath(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


def _first_annotations(payload: dict[str, Any], output: Mapping[str, Any] | None) -> list[Any]:
    """Put `output` with at most 50 annotations into `payload`; return the annotations left for follow-ups."""
    if output is None:
        return []
    out = dict(output)
    anns = list(out.pop("annotations", None) or [])
    if anns:
        out["annotations"] = anns[:ANNOTATIONS_PER_REQUEST]
    payload["output"] = out
    return anns[ANNOTATIONS_PER_REQUEST:]


def _annotations_count(run: Mapping[str, Any] | None) -> int:
    return int(((run or {}).get("output") or {}).get("annotations_count") or 0)


def _shows_patch(run: Mapping[str, Any], payload: Mapping[str, Any], count_before: int | None) -> bool:
    """The check run as read back shows this PATCH applied: its status, conclusion, title and summary, and for
    a follow-up batch of annotations the count it would have after this batch."""
    out, want = run.get("output") or {}, payload.get("output") or {}
    same = all(run.get(k) == payload[k] for k in ("status", "conclusion") if k in payload) and all(
        out.get(k) == want[k] for k in ("title", "summary") if k in want
    )
    if count_before is not None:
        same = same and _annotations_count(run) >= count_before + len(want.get("annotations") or [])
    return same


class GitHub(Transport):
    """The REST calls prfleet makes, over the transport's auth, retries and caches. `repo` is always
    "owner/name"."""

    # -- writes GitHub may have applied without saying so --

    def _write_once(self, send: Callable[[], Any], find: Callable[[], Any | None] | None) -> Any:
        """Send a non-idempotent write; after an uncertain outcome look for it (`find`) before sending again.
        Without a way to look (`find` None) the uncertainty is raised: a duplicate is worse than a retry later."""
        attempt = 0
        while True:
            try:
                return send()
            except GitHubWriteUncertain:
                if find is None or attempt >= self.max_retries or not self._backoff(attempt):
                    raise
                attempt += 1
                found = find()
                if found is not None:
                    return found

    # -- pull requests --

    def pr(self, repo: str, number: int) -> dict[str, Any]:
        return self._json("GET", f"/repos/{repo}/pulls/{int(number)}")

    def pr_files(
        self, repo: str, number: int, *, max_files: int, changed_files: int | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Up to `max_files` files of the PR and how many more it changes (past our cap or GitHub's 3000)."""
        files: list[dict[str, Any]] = []
        url: str | None = f"/repos/{repo}/pulls/{int(number)}/files"
        query: Mapping[str, Any] | None = {"per_page": PER_PAGE}
        more_pages = False
        while url:
            resp = self.request("GET", url, params=query)
            page = resp.json() or []
            room = max_files - len(files)
            files.extend(page[:room])
            url = next_page(resp)
            query = None
            if len(page) > room or (url and len(files) >= max_files):
                more_pages = True
                break
        if not more_pages and len(files) < FILES_CAP and changed_files is None:
            return files, 0
        if changed_files is None:
            changed_files = int(self.pr(repo, number).get("changed_files") or len(files))
        return files, max(0, changed_files - len(files))

    def list_review_comments(
        self, repo: str, number: int, *, limit: int = REVIEW_COMMENTS_CAP
    ) -> list[dict[str, Any]]:
        """The PR's review comments (at most `limit`, oldest first, 100 a page), each with its `reactions` roll-up; a
        thread is a first comment and the replies whose `in_reply_to_id` names it:
        https://docs.github.com/en/rest/pulls/comments#list-review-comments-on-a-pull-request"""
        return list(itertools.islice(self.paginate(f"/repos/{repo}/pulls/{int(number)}/comments"), limit))

    # -- contents --

    def content(self, repo: str, path: str, ref: str) -> Any | None:
        """The contents API object (file, symlink or directory listing) at `ref`, or None on 404."""
        try:
            return self._json(
                "GET", f"/repos/{repo}/contents/{_qpath(path.lstrip('/'))}", params={"ref": ref}
            )
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise

    def file_at(self, repo: str, path: str, ref: str) -> bytes | None:
        """A file's bytes at `ref` (base64 contents API, git blob for files over 1 MB); None when absent.

        A symlink yields its target path, as git stores it; a directory yields None.
        """
        data = self.content(repo, path, ref)
        if data is None or isinstance(data, list):
            return None
        kind = data.get("type")
        if kind == "symlink":
            return str(data.get("target") or "").encode()
        if kind != "file":
            return None
        if data.get("encoding") == "base64" and (data.get("content") or not data.get("size")):
            return base64.b64decode(data.get("content") or "")
        return self.blob(repo, data["sha"])

    def blob(self, repo: str, sha: str) -> bytes:
        """A git blob by sha (base64, up to 100 MB); kept in a process-wide cache, since a blob never changes."""
        key = (*self.cache_scope(), repo, sha)
        hit = blob_cache.get(key)
        if hit is not None:
            return hit
        data = self._json("GET", f"/repos/{repo}/git/blobs/{_q(sha)}")
        if data.get("encoding") == "base64":
            raw = base64.b64decode(data.get("content") or "")
        else:
            raw = str(data.get("content") or "").encode()
        blob_cache.put(key, raw, len(raw))
        return raw

    def tree_obj(self, repo: str, sha: str, *, recursive: bool = True) -> dict[str, Any]:
        """The tree object at `sha` (a commit, tree or ref): {"sha", "tree": [...], "truncated": bool}."""
        params = {"recursive": "1"} if recursive else None
        return self._json("GET", f"/repos/{repo}/git/trees/{_q(sha)}", params=params) or {}

    def tree(self, repo: str, sha: str) -> list[dict[str, Any]]:
        """Recursive tree at `sha`: entries with path, mode, type, sha, size (possibly truncated by GitHub)."""
        return list(self.tree_obj(repo, sha).get("tree") or [])

    def archive(self, repo: str, ref: str, out: BinaryIO, *, max_bytes: int) -> int:
        """The gzipped tarball of `ref` written into `out` (at most `max_bytes`); returns its size.

        One API request (the 302, counted and rate-limited like any other), then the Location's download, which
        carries its own short-lived token: our Authorization header is never sent there. Past `max_bytes`
        reading stops and ArchiveTooLarge is raised (what was written is the caller's to discard).
        """
        resp = self.request("GET", f"/repos/{repo}/tarball/{_qpath(ref)}", follow_redirects=False)
        location = resp.headers.get("location")
        if resp.status not in (301, 302, 303, 307, 308) or not location:
            raise GitHubError(
                resp.status, f"GitHub gave no archive link for {repo}@{ref} (HTTP {resp.status})"
            )
        scheme = urllib.parse.urlsplit(location).scheme
        if scheme != "https" and urllib.parse.urlsplit(location).hostname not in ("127.0.0.1", "localhost"):
            raise GitHubError(resp.status, f"GitHub's archive link for {repo}@{ref} is not https: refused")
        return download(location, out, max_bytes=max_bytes, timeout=max(self.timeout, 30.0))

    def collaborator_permission(self, repo: str, user: str) -> str:
        """admin / write / read / none (GitHub folds maintain into write, triage into read).

        https://docs.github.com/en/rest/collaborators/collaborators#get-repository-permissions-for-a-user
        """
        try:
            data = self._json("GET", f"/repos/{repo}/collaborators/{_q(user)}/permission")
        except GitHubError as exc:
            if exc.status == 404:
                return "none"
            raise
        return str(data.get("permission") or "none")

    # -- reviews --

    def create_review(
        self,
        repo: str,
        number: int,
        commit_id: str,
        body: str,
        comments: list[dict[str, Any]],
        event: str = "COMMENT",
        *,
        marker: str | None = None,
    ) -> dict[str, Any]:
        """One review with inline comments ({path, line, side, body}); 422 -> GitHubUnprocessable.

        With `marker` (a hidden HTML comment, unique per head and posting) the review is created at most once:
        after a 5xx or a timeout the PR's reviews are searched for the marker before the POST is sent again.
        """
        if marker and marker not in body:
            body = f"{body}\n\n{marker}"
        payload: dict[str, Any] = {"commit_id": commit_id, "body": body, "event": event}
        if comments:
            payload["comments"] = comments
        path = f"/repos/{repo}/pulls/{int(number)}/reviews"
        return self._write_once(
            lambda: self._json("POST", path, body=payload),
            (lambda: self.find_review(repo, number, commit_id, marker or "")) if marker else None,
        )

    def find_review(self, repo: str, number: int, commit_id: str, marker: str) -> dict[str, Any] | None:
        """The PR's review on `commit_id` whose body carries `marker`, if GitHub has one."""
        return next(
            (
                r
                for r in self.list_reviews(repo, number)
                if marker in (r.get("body") or "") and r.get("commit_id") == commit_id
            ),
            None,
        )

    def list_reviews(self, repo: str, number: int) -> list[dict[str, Any]]:
        return list(self.paginate(f"/repos/{repo}/pulls/{int(number)}/reviews"))

    # -- review comments and their threads (issue 25) --

    def review_comment(self, repo: str, comment_id: int) -> dict[str, Any]:
        """One review comment (`in_reply_to_id` on a reply, `author_association`, `user.type`, `commit_id`):
        https://docs.github.com/en/rest/pulls/comments#get-a-review-comment-for-a-pull-request"""
        return self._json("GET", f"/repos/{repo}/pulls/comments/{int(comment_id)}")

    def find_review_comment(self, repo: str, number: int, marker: str) -> dict[str, Any] | None:
        """The PR's oldest review comment carrying the hidden marker, if GitHub has one."""
        return next(
            (c for c in self.list_review_comments(repo, number) if marker in (c.get("body") or "")), None
        )

    def reply_to_review_comment(
        self, repo: str, number: int, comment_id: int, body: str, *, marker: str | None = None
    ) -> dict[str, Any]:
        """A reply in the thread of review comment `comment_id`, which must be the thread's FIRST comment ("Replies
        to replies are not supported": https://docs.github.com/en/rest/pulls/comments#create-a-reply-for-a-review-comment).
        With `marker` (in the body) at most once, even after a 5xx or a timeout."""
        if marker and marker not in body:
            body = f"{body}\n\n{marker}"
        path = f"/repos/{repo}/pulls/{int(number)}/comments/{int(comment_id)}/replies"
        return self._write_once(
            lambda: self._json("POST", path, body={"body": body}),
            (lambda: self.find_review_comment(repo, number, marker or "")) if marker else None,
        )

    def issue_comment(self, repo: str, comment_id: int) -> dict[str, Any]:
        """One issue (PR conversation) comment: https://docs.github.com/en/rest/issues/comments#get-an-issue-comment"""
        return self._json("GET", f"/repos/{repo}/issues/comments/{int(comment_id)}")

    # -- check runs --

    def create_check_run(
        self,
        repo: str,
        name: str,
        head_sha: str,
        status: str = "queued",
        *,
        external_id: str | None = None,
        details_url: str | None = None,
        conclusion: str | None = None,
        output: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a check run; annotations beyond 50 are sent through follow-up updates. With `external_id` it
        is created at most once: after a 5xx or a timeout the head's runs are searched for it first."""
        payload: dict[str, Any] = {"name": name, "head_sha": head_sha, "status": status}
        if external_id:
            payload["external_id"] = external_id
        if details_url:
            payload["details_url"] = details_url
        if conclusion:
            payload["conclusion"] = conclusion
        rest = _first_annotations(payload, output)
        run = self._write_once(
            lambda: self._json("POST", f"/repos/{repo}/check-runs", body=payload),
            (lambda: self.find_check_run(repo, head_sha, name, external_id)) if external_id else None,
        )
        if rest:
            self._append_annotations(repo, run["id"], dict(output or {}), rest, run)
        return run

    def find_check_run(
        self, repo: str, head_sha: str, name: str, external_id: str | None
    ) -> dict[str, Any] | None:
        """The check run `name` on `head_sha` that carries `external_id`, if GitHub has one."""
        return next(
            (
                r
                for r in self.list_check_runs(repo, head_sha, name=name)
                if r.get("external_id") == external_id and r.get("name") == name
            ),
            None,
        )

    def update_check_run(
        self,
        repo: str,
        check_run_id: int,
        *,
        status: str | None = None,
        conclusion: str | None = None,
        output: Mapping[str, Any] | None = None,
        name: str | None = None,
        details_url: str | None = None,
    ) -> dict[str, Any]:
        """Update a check run. The first request carries status/conclusion and up to 50 annotations; the rest
        follow in batches of 50 (GitHub appends them)."""
        payload: dict[str, Any] = {}
        if name:
            payload["name"] = name
        if status:
            payload["status"] = status
        if conclusion:
            payload["conclusion"] = conclusion
        if details_url:
            payload["details_url"] = details_url
        rest = _first_annotations(payload, output)
        run = self._patch_check_run(repo, check_run_id, payload)
        if rest:
            run = self._append_annotations(repo, check_run_id, dict(output or {}), rest, run) or run
        return run

    def get_check_run(self, repo: str, check_run_id: int) -> dict[str, Any]:
        return self._json("GET", f"/repos/{repo}/check-runs/{int(check_run_id)}")

    def _patch_check_run(
        self, repo: str, check_run_id: int, payload: dict[str, Any], *, count_before: int | None = None
    ) -> dict[str, Any]:
        """PATCH a check run. Without annotations it is idempotent; with them GitHub appends, so after an
        uncertain outcome the run is read back and the PATCH re-sent only when the run does not show it."""
        path = f"/repos/{repo}/check-runs/{int(check_run_id)}"
        if not (payload.get("output") or {}).get("annotations"):
            return self._json("PATCH", path, body=payload)

        def find() -> dict[str, Any] | None:
            run = self.get_check_run(repo, check_run_id)
            return run if _shows_patch(run, payload, count_before) else None

        return self._write_once(lambda: self._json("PATCH", path, body=payload, idempotent=False), find)

    def _append_annotations(
        self,
        repo: str,
        check_run_id: int,
        output: Mapping[str, Any],
        annotations: list[Any],
        run: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        title, summary = output.get("title") or "prfleet", output.get("summary") or ""
        count = _annotations_count(run)
        last: dict[str, Any] | None = None
        for i in range(0, len(annotations), ANNOTATIONS_PER_REQUEST):
            batch = annotations[i : i + ANNOTATIONS_PER_REQUEST]
            last = self._patch_check_run(
                repo,
                check_run_id,
                {"output": {"title": title, "summary": summary, "annotations": batch}},
                count_before=count,
            )
            count = int((last.get("output") or {}).get("annotations_count") or count + len(batch))
        return last

    def list_check_runs(self, repo: str, sha: str, *, name: str | None = None) -> list[dict[str, Any]]:
        """Every check run on `sha` (named `name`, if given), newest first. `filter=all`: GitHub's default
        (`latest`) lists only the newest run of each name:
        https://docs.github.com/en/rest/checks/runs#list-check-runs-for-a-git-reference"""
        params = {"filter": "all", **({"check_name": name} if name else {})}
        return list(self.paginate(f"/repos/{repo}/commits/{_q(sha)}/check-runs", params, key="check_runs"))

    # -- issue comments --

    def list_issue_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        return list(self.paginate(f"/repos/{repo}/issues/{int(number)}/comments"))

    def find_issue_comment(self, repo: str, number: int, marker: str) -> dict[str, Any] | None:
        """The oldest comment on the PR containing the hidden marker."""
        for c in self.list_issue_comments(repo, number):
            if marker in (c.get("body") or ""):
                return c
        return None

    def create_issue_comment(
        self, repo: str, number: int, body: str, *, marker: str | None = None
    ) -> dict[str, Any]:
        """Create a PR comment; with `marker` (in the body) at most once, even after a 5xx or a timeout."""
        path = f"/repos/{repo}/issues/{int(number)}/comments"
        return self._write_once(
            lambda: self._json("POST", path, body={"body": body}),
            (lambda: self.find_issue_comment(repo, number, marker or "")) if marker else None,
        )

    def update_issue_comment(self, repo: str, comment_id: int, body: str) -> dict[str, Any]:
        return self._json("PATCH", f"/repos/{repo}/issues/comments/{int(comment_id)}", body={"body": body})

    def upsert_issue_comment(self, repo: str, number: int, marker: str, body: str) -> dict[str, Any]:
        """Edit the comment carrying `marker` in place, else create it (the body always gets the marker)."""
        if marker not in body:
            body = f"{marker}\n{body}"
        existing = self.find_issue_comment(repo, number, marker)
        if existing is not None:
            if existing.get("body") == body:
                return existing
            return self.update_issue_comment(repo, existing["id"], body)
        return self.create_issue_comment(repo, number, body, marker=marker)


# --- the clients the functions use ---

_clients: dict[int | None, GitHub] = {}


def client_for(installation_id: int | None) -> GitHub:
    """A GitHub client for an installation, from the GitHub secret and the configured API URL (cached, so a
    warm Lambda container reuses it)."""
    gh = _clients.get(installation_id)
    if gh is None or gh.api_url != settings().github_api_url:
        api_url = settings().github_api_url
        gh = GitHub(api_url, auth_from_secret(secret_store.github_credentials(), api_url, installation_id))
        _clients[installation_id] = gh
    return gh


def reset_clients() -> None:
    """Forget the cached clients (after the settings or the GitHub secret changed: tests, the local stack)."""
    _clients.clear()
