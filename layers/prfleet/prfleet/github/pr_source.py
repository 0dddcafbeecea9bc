"""The PR at its head SHA as the agents read it, over the GitHub client: its files, their diffs and contents,
symlinks never followed; and how an added file's bytes are rebuilt from its patch without a request."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Iterable
from typing import Any

from prfleet.github.client import FILES_CAP, GitHub
from prfleet.github.files import SYMLINK_MODE, ChangedFile

_ADDED_HUNK = re.compile(r"^@@ -0,0 \+1(?:,\d+)? @@")


def git_blob_sha(data: bytes) -> str:
    """Git's object id of a blob: sha1 of "blob <size>\\0" + data (how a reconstruction is verified)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def added_content(patch: str | None, blob_sha: str) -> bytes | None:
    """An added file's bytes rebuilt from its patch (one hunk of "+" lines), only if they hash to `blob_sha`;
    else None (read the blob)."""
    lines = (patch or "").split("\n")
    if not blob_sha or not _ADDED_HUNK.match(lines[0]):
        return None
    body, newline = [], True
    for line in lines[1:]:
        if line.startswith("+"):
            body.append(line[1:])
        elif line.startswith("\\"):
            newline = False  # "\\ No newline at end of file"
        else:
            return None
    data = ("\n".join(body) + ("\n" if newline and body else "")).encode("utf-8", "surrogateescape")
    return data if git_blob_sha(data) == blob_sha else None


class GitHubPrSource:
    """Read-only view of a PR at its head SHA over the REST API.

    Files: the list the planner stored for the head (`files`, from prfleet.store.headfiles), else listed from GitHub
    once, lazily. Contents: changed files by blob sha (git blobs API: up to 100 MB, cached by sha, never by path
    and ref); other paths through the contents API at the head sha (over 1 MB its `content` is empty: the blob).
    Symlinks are known from the tree's mode 120000 (`symlinks`, and each file's `mode`), never from the contents
    API's `type`: GitHub serves a symlink to a file in the repository as that file. An answer for another path
    than the one asked is treated as a symlink too. Symlinks are never followed.
    """

    def __init__(
        self,
        gh: GitHub,
        repo: str,
        number: int,
        head_sha: str,
        *,
        title: str | None = None,
        body: str | None = None,
        files: list[dict[str, Any]] | None = None,
        symlinks: Iterable[str] | None = None,
        max_files: int = FILES_CAP,
        max_file_bytes: int | None = None,
    ) -> None:
        self.gh = gh
        self.repo = repo
        self.number = int(number)
        self.head_sha = head_sha
        self._title = title
        self._body = body
        self._raw_files = files
        self._symlinks = set(symlinks or ())
        self._tree_known = symlinks is not None  # else read once from the head's tree, when first needed
        self._tree_paths: list[str] | None = None  # blobs and symlinks of the head's tree, once read
        self.tree_truncated = False  # GitHub cut the recursive tree (over its 100,000 entries / 7 MB limit)
        self._max_files = max_files
        self._max_file_bytes = max_file_bytes
        self._files: dict[str, ChangedFile] | None = None
        self._sizes: dict[str, int] = {}
        self._contents: dict[str, str | None] = {}
        self._modes: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def _pr_meta(self) -> None:
        pr = self.gh.pr(self.repo, self.number)
        if self._title is None:
            self._title = str(pr.get("title") or "")
        if self._body is None:
            self._body = str(pr.get("body") or "")

    @property
    def title(self) -> str:
        if self._title is None:
            self._pr_meta()
        return self._title or ""

    @property
    def body(self) -> str:
        if self._body is None:
            self._pr_meta()
        return self._body or ""

    def _load(self) -> dict[str, ChangedFile]:
        with self._lock:
            if self._files is None:
                raw = self._raw_files
                if raw is None:
                    raw, _more = self.gh.pr_files(self.repo, self.number, max_files=self._max_files)
                files = {}
                for entry in raw:
                    f = ChangedFile.from_listing(entry)
                    files[f.path] = f
                    if f.mode == SYMLINK_MODE:
                        self._symlinks.add(f.path)
                    if entry.get("size") is not None:
                        self._sizes[f.path] = int(entry["size"])
                self._files = files
            return self._files

    def changed_files(self) -> list[ChangedFile]:
        return list(self._load().values())

    def file_diff(self, path: str) -> str:
        """GitHub's `patch` for the file; for a diff GitHub left out as too large, a note saying so (the file is
        read instead); empty for a file without textual changes or not in the PR."""
        f = self._load().get(path)
        if f is None:
            return ""
        if not f.patch and (f.additions or f.deletions):
            return (
                f"(GitHub does not show this diff: too large, +{f.additions} -{f.deletions} lines; "
                "read the file instead)"
            )
        return f.patch or ""

    def _is_symlink(self, path: str) -> bool:
        """The path, or a directory on the way to it, is a symlink in the head's tree."""
        self._load()
        if not self._tree_known:
            self._read_tree()
        parts = path.split("/")
        return any("/".join(parts[:i]) in self._symlinks for i in range(1, len(parts) + 1))

    def _read_tree(self) -> None:
        """The head's recursive tree, once: its symlinks (mode 120000) and its file paths."""
        with self._lock:
            if self._tree_paths is None:
                obj = self.gh.tree_obj(self.repo, self.head_sha)
                tree = list(obj.get("tree") or [])
                self._symlinks.update(e["path"] for e in tree if e.get("mode") == SYMLINK_MODE)
                self._tree_paths = sorted(e["path"] for e in tree if e.get("type") == "blob")
                self.tree_truncated = bool(obj.get("truncated"))
                self._tree_known = True

    def tree_paths(self) -> list[str]:
        """Every file and symlink path of the head's tree (git trees API, recursive; one request, shared with
        the symlink check). GitHub cuts a recursive tree past its limits: `tree_truncated` says so.
        https://docs.github.com/en/rest/git/trees#get-a-tree"""
        if self._tree_paths is None:
            self._read_tree()
        return list(self._tree_paths or [])

    def mode(self, path: str) -> str | None:
        """'120000' for a symlink, '100644' for a file, None when unknown or absent (reads the file)."""
        path = path.lstrip("/")
        if self._is_symlink(path):
            return SYMLINK_MODE
        if path not in self._modes:
            self.read_file(path)
        return self._modes.get(path)

    def read_file(self, path: str) -> str | None:
        """The file's text at the head SHA; None when absent; a short note for a symlink (never followed)."""
        path = path.lstrip("/")
        if path not in self._contents:
            self._contents[path] = self._read(path)
        return self._contents[path]

    def _too_big(self, size: int) -> str | None:
        if self._max_file_bytes is not None and size > self._max_file_bytes:
            return f"(file of {size} bytes is over the limit of {self._max_file_bytes}; not read)"
        return None

    def _read(self, path: str) -> str | None:
        if self._is_symlink(path):
            self._modes[path] = SYMLINK_MODE
            return "(symlink: not followed)"
        changed = self._load().get(path)
        if changed is not None and changed.blob_sha:
            if changed.status == "removed":
                self._modes[path] = None
                return None
            self._modes[path] = changed.mode
            note = self._too_big(self._sizes.get(path, 0))
            if note:
                return note
            whole = added_content(changed.patch, changed.blob_sha) if changed.status == "added" else None
            if whole is not None:  # an added file's patch is the whole file: no request
                return whole.decode("utf-8", "replace")
            return self.gh.blob(self.repo, changed.blob_sha).decode("utf-8", "replace")
        data = self.gh.content(self.repo, path, self.head_sha)
        if data is None or isinstance(data, list) or data.get("type") not in ("file", "symlink"):
            self._modes[path] = None
            return None
        if data.get("type") == "symlink" or str(data.get("path") or path) != path:
            # GitHub answered with the symlink itself, or with the file it points to.
            self._modes[path] = SYMLINK_MODE
            self._symlinks.add(path)
            return "(symlink: not followed)"
        self._modes[path] = "100644"
        size = int(data.get("size") or 0)
        note = self._too_big(size)
        if note:
            return note
        if data.get("encoding") == "base64" and (data.get("content") or not size):
            raw = base64.b64decode(data.get("content") or "")
        else:
            raw = self.gh.blob(self.repo, data["sha"])
        return raw.decode("utf-8", "replace")
