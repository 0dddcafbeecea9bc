"""The views the tools read the repository through: an unpacked snapshot never lets a symlink lead out of the
tree, and without a snapshot the fallback says how much grep covers."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from prfleet.github.files import ChangedFile
from prfleet.repository.view import SYMLINK_NOTE, DirectoryView, FallbackView, view_for


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    outside = tmp_path / "secret.txt"
    outside.write_text("TOKEN=hunter2\n")
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("def f():\n    return 1\n")
    (root / "pkg" / "sub" / "x.py").write_text("x = 1\n")
    (root / "img.png").write_bytes(b"\x89PNG\x00\x00data")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    os.symlink(outside, root / "leak.txt")  # a file link leaving the tree
    os.symlink(tmp_path, root / "up")  # a directory link leaving the tree
    return root


def test_directory_view_lists_files_and_links_but_never_follows_a_link(tree: Path) -> None:
    view = DirectoryView(tree)
    assert view.paths() == ["img.png", "leak.txt", "pkg/mod.py", "pkg/sub/x.py", "up"]
    assert view.searchable() == ["img.png", "pkg/mod.py", "pkg/sub/x.py"]  # links are not searched
    assert view.read("leak.txt") == SYMLINK_NOTE
    assert view.is_symlink("up/secret.txt") and view.read("up/secret.txt") == SYMLINK_NOTE
    assert view.read_bytes("leak.txt") is None and view.read_bytes("up/secret.txt") is None
    assert view.read("pkg/mod.py") == "def f():\n    return 1\n"
    assert view.read(".git/config") is None  # .git is not part of the repository's files
    assert view.read("nope.py") is None
    assert view.coverage_note() is None


def test_binary_and_oversized_files_are_listed_but_not_shown(tree: Path) -> None:
    (tree / "big.txt").write_text("x" * 2000)
    view = DirectoryView(tree, max_read_bytes=1000)
    assert view.read("img.png") == "(binary file of 10 bytes; not shown)"
    assert view.read("big.txt") == "(file of 2000 bytes is over the limit of 1000; not read)"
    assert "big.txt" in view.paths()


def test_a_link_swapped_in_after_the_walk_is_not_followed(tree: Path) -> None:
    view = DirectoryView(tree)
    view.paths()
    target = tree / "pkg" / "mod.py"
    target.unlink()
    os.symlink(tree.parent / "secret.txt", target)
    assert view.read_bytes("pkg/mod.py") is None
    assert view.read("pkg/mod.py") is None


def test_view_for_picks_the_snapshot_tree_or_the_fallback_with_its_reason(tree: Path) -> None:
    source = Source({"a.py": "x"})
    assert isinstance(view_for(source, SimpleNamespace(root=tree, reason=None)), DirectoryView)
    fallback = view_for(source, SimpleNamespace(root=None, reason="the repository is over MaxRepoBytes"))
    assert isinstance(fallback, FallbackView)
    assert "the repository is over MaxRepoBytes" in (fallback.coverage_note() or "")
    assert isinstance(view_for(source, None), FallbackView)


class Source:
    title = body = ""

    def __init__(self, files: dict[str, str], tree: list[str] | None = None, removed: tuple[str, ...] = ()):
        self.files = files
        self.reads: list[str] = []
        self._tree = tree
        self._changed = [ChangedFile(p, "modified", "s") for p in files if p.startswith("src/")]
        self._changed += [ChangedFile(p, "removed", "s") for p in removed]

    def read_file(self, path: str) -> str | None:
        self.reads.append(path)
        return self.files.get(path)

    def changed_files(self) -> list[ChangedFile]:
        return self._changed

    def tree_paths(self) -> list[str]:
        return list(self._tree or self.files)


def test_fallback_covers_the_changed_files_plus_what_was_read_and_says_so() -> None:
    files = {"src/a.py": "a", "src/b.py": "b", "lib/c.py": "c", "lib/d.py": "d"}
    source = Source(files, tree=[*files, "docs/e.md"], removed=("src/gone.py",))
    view = view_for(
        source, SimpleNamespace(root=None, reason="the repository is over MaxRepoBytes (no snapshot)")
    )
    assert view.paths() == ["docs/e.md", "lib/c.py", "lib/d.py", "src/a.py", "src/b.py"]
    assert view.searchable() == ["src/a.py", "src/b.py"]  # a removed file is not at the head
    assert view.coverage_note() == (
        "grep covers the PR's 2 changed files of 5: the repository is over MaxRepoBytes (no snapshot); "
        "glob lists every file of the head's tree; read_file reaches any file"
    )
    assert view.read("lib/c.py") == "c"
    assert view.searchable() == ["lib/c.py", "src/a.py", "src/b.py"]
    assert "and 1 file read so far of 5" in (view.coverage_note() or "")
    assert source.reads == ["lib/c.py"]  # listing and the note read nothing


def test_fallback_without_a_tree_lists_what_it_knows() -> None:
    class NoTree(Source):
        tree_paths = None  # type: ignore[assignment]

    view = view_for(NoTree({"src/a.py": "a"}), None)
    assert view.paths() == ["src/a.py"]
    assert "of an unknown number: no snapshot of the repository; glob lists only those files" in (
        view.coverage_note() or ""
    )


def test_the_fallback_reads_the_tree_only_when_a_tool_needs_it() -> None:
    calls: list[int] = []

    class Counting(Source):
        def tree_paths(self) -> list[str]:
            calls.append(1)
            return ["src/a.py", "lib/b.py"]

    view = view_for(Counting({"src/a.py": "a"}), None)
    assert view.searchable() == ["src/a.py"] and calls == []  # the planner's list is enough for this
    assert view.paths() == ["lib/b.py", "src/a.py"] and view.paths() and calls == [1]
