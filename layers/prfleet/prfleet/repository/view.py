"""What the agents' tools can see of the repository at the PR head: a `RepoView`.

Two views: `DirectoryView` over an unpacked snapshot (every file, read from the local disk, symlinks listed but never
followed), and `FallbackView` when there is no snapshot (paths from the head's git tree, contents read through the
PR source one request at a time, so grep covers only the PR's changed files and the files read so far, and says
so). `view_for` picks one from an optional snapshot.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

from prfleet.github.files import SYMLINK_MODE, ChangedFile

SYMLINK_NOTE = "(symlink: not followed)"
BINARY_PROBE = (
    8192  # a NUL in the first 8 KB marks a binary file, as git's own heuristic does (buffer_is_binary)
)
MAX_READ_BYTES = 4 * 1024 * 1024  # one file read for a tool; bigger files are listed, not read


@runtime_checkable
class RepoView(Protocol):
    """The repository as the tools see it; every path is repo-relative POSIX, already confined by the caller."""

    def paths(self) -> list[str]:
        """Every regular file and symlink path the view knows, sorted."""
        ...

    def read(self, path: str) -> str | None:
        """The file's text; None when absent; a short note for a symlink or a binary or oversized file."""
        ...

    def is_symlink(self, path: str) -> bool:
        """Whether the path, or a directory on the way to it, is a symlink."""
        ...

    def searchable(self) -> list[str]:
        """The paths grep covers, sorted."""
        ...

    def coverage_note(self) -> str | None:
        """None when grep covers the whole repository; else what it covers and why."""
        ...


class Snapshotish(Protocol):
    """What view_for needs of repository.snapshot.Snapshot (a Protocol, so this module does not depend on it)."""

    root: Path | None
    reason: str | None


class PrSourceish(Protocol):
    """What FallbackView needs of a PR source (GitHubPrSource, or a test's in-memory source)."""

    def read_file(self, path: str) -> str | None: ...

    def changed_files(self) -> list[ChangedFile]: ...


def is_binary(head: bytes) -> bool:
    """Whether bytes from the start of a file look binary (a NUL in the first 8 KB)."""
    return b"\x00" in head[:BINARY_PROBE]


def _under_link(path: str, links: set[str] | frozenset[str]) -> bool:
    parts = path.split("/")
    return any("/".join(parts[:i]) in links for i in range(1, len(parts) + 1))


class DirectoryView:
    """The unpacked snapshot under `root`: walked once with os.scandir and lstat (a symlink is listed, never
    followed, never descended into), `.git` skipped, devices and FIFOs ignored."""

    def __init__(self, root: Path, *, max_read_bytes: int = MAX_READ_BYTES) -> None:
        self.root = Path(root)
        self._prefix = str(self.root).rstrip("/") + "/"
        self.max_read_bytes = max_read_bytes
        self._files: list[str] | None = None
        self._links: frozenset[str] = frozenset()
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()

    def _walk(self) -> None:
        files: list[str] = []
        links: set[str] = set()
        sizes: dict[str, int] = {}
        stack = [("", str(self.root))]
        while stack:
            prefix, directory = stack.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    rel = prefix + entry.name
                    if entry.is_symlink():
                        links.add(rel)
                    elif entry.is_dir(follow_symlinks=False):
                        if entry.name != ".git":
                            stack.append((rel + "/", entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        files.append(rel)
                        sizes[rel] = entry.stat(follow_symlinks=False).st_size
        self._files = sorted(files)
        self._links = frozenset(links)
        self._sizes = sizes

    def _index(self) -> list[str]:
        with self._lock:
            if self._files is None:
                self._walk()
            return self._files  # type: ignore[return-value]

    def paths(self) -> list[str]:
        return sorted([*self._index(), *self._links])

    def searchable(self) -> list[str]:
        return list(self._index())

    def size(self, path: str) -> int | None:
        """The file's size in bytes (lstat), None when it is not a regular file of the view."""
        self._index()
        return self._sizes.get(path)

    def is_symlink(self, path: str) -> bool:
        self._index()
        return _under_link(path, self._links)

    def read_bytes(self, path: str, limit: int | None = None) -> bytes | None:
        """Raw bytes of a regular file of the view, at most `limit`. O_NOFOLLOW and an fstat: a symlink or a
        special file swapped in after the walk is not followed, and a FIFO never blocks the read (O_NONBLOCK)."""
        size = self._sizes_view().get(path)
        if size is None:
            return None
        want = size if limit is None else min(size, limit)
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(f"{self._prefix}{path}", flags)
        except OSError:  # gone since the walk, or a link swapped in (ELOOP under O_NOFOLLOW)
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            chunks: list[bytes] = []
            got = 0
            while got < want:  # sized from the walk's lstat: no over-allocation per file
                chunk = os.read(fd, want - got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            return b"".join(chunks) if len(chunks) != 1 else chunks[0]
        finally:
            os.close(fd)

    def _sizes_view(self) -> dict[str, int]:
        self._index()
        return self._sizes

    def read(self, path: str) -> str | None:
        if self.is_symlink(path):
            return SYMLINK_NOTE
        size = self.size(path)
        if size is None:
            return None
        if size > self.max_read_bytes:
            return f"(file of {size} bytes is over the limit of {self.max_read_bytes}; not read)"
        data = self.read_bytes(path)
        if data is None:
            return None
        if is_binary(data):
            return f"(binary file of {size} bytes; not shown)"
        return data.decode("utf-8", "replace")

    def coverage_note(self) -> str | None:
        return None


class FallbackView:
    """No snapshot: the head's tree gives the paths, `source.read_file` the contents (one request per file), so
    grep covers only the PR's changed files plus the files read so far; `coverage_note` says how many."""

    def __init__(
        self,
        source: PrSourceish,
        tree_paths: Iterable[str] | Callable[[], Iterable[str]] | None,
        *,
        reason: str | None = None,
    ) -> None:
        self.source = source
        self.reason = reason
        # The tree is read lazily (a callable): the planner's file list already names the symlinks, so a job
        # whose model never globs or greps makes no tree request.
        self._tree_source = tree_paths
        self._tree: list[str] | None = None
        self._read: set[str] = set()
        self._changed: list[ChangedFile] | None = None

    def tree(self) -> list[str] | None:
        """The head tree's paths (read on first use), None when the source cannot list them."""
        if self._tree is None and self._tree_source is not None:
            got = self._tree_source() if callable(self._tree_source) else self._tree_source
            self._tree = sorted(set(got))
            self._tree_source = None
        return self._tree

    def changed(self) -> list[ChangedFile]:
        if self._changed is None:
            self._changed = list(self.source.changed_files())
        return self._changed

    def _live_changed(self) -> list[str]:
        return [f.path for f in self.changed() if f.status != "removed"]

    def paths(self) -> list[str]:
        tree = self.tree()
        if tree is not None:
            return list(tree)
        return sorted({*self._live_changed(), *self._read})

    def _mode(self, path: str) -> str | None:
        for f in self.changed():
            if f.path == path and f.mode:
                return f.mode
        for attr in ("mode", "file_mode"):
            fn = getattr(self.source, attr, None)
            if callable(fn):
                return fn(path)
        return None

    def is_symlink(self, path: str) -> bool:
        return self._mode(path) == SYMLINK_MODE

    def read(self, path: str) -> str | None:
        if self.is_symlink(path):
            return SYMLINK_NOTE
        text = self.source.read_file(path)
        if text is not None and text != SYMLINK_NOTE:
            self._read.add(path)
        return text

    def searchable(self) -> list[str]:
        live = {p for p in self._live_changed() if not self.is_symlink(p)}
        return sorted(live | self._read)

    def coverage_note(self) -> str | None:
        changed = len(self._live_changed())
        read = len(self._read - set(self._live_changed()))
        tree = self.tree()
        total = f"{len(tree):,}" if tree is not None else "an unknown number"
        why = self.reason or "no snapshot of the repository"
        also = f" and {read:,} file{_s(read)} read so far" if read else ""
        reach = (
            "glob lists every file of the head's tree; read_file reaches any file"
            if tree is not None
            else "glob lists only those files; read_file reaches any file"
        )
        return f"grep covers the PR's {changed:,} changed file{_s(changed)}{also} of {total}: {why}; {reach}"


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def view_for(source: PrSourceish, snapshot: Snapshotish | None) -> RepoView:
    """The view over the snapshot's tree when there is one; else the fallback over the source, with the
    snapshot's reason (too large, refused archive, missing) in its coverage note."""
    root = getattr(snapshot, "root", None) if snapshot is not None else None
    if root is not None:
        return DirectoryView(Path(root))
    reason = getattr(snapshot, "reason", None) if snapshot is not None else None
    tree_paths = getattr(source, "tree_paths", None)
    return FallbackView(source, tree_paths if callable(tree_paths) else None, reason=reason)
