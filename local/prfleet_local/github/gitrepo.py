"""A real git repository on disk, to build pull-request scenarios in: commit files, branch, force-push.

The fake GitHub reads its pull requests, contents, blobs and trees from it (through the `git` command), so the
blob SHAs and diffs are what GitHub would compute.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


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
