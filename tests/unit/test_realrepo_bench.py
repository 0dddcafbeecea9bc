"""bench/realrepo.py's independent check of a "No test for X" claim: which test files at the head name X."""

import subprocess
from pathlib import Path

from prfleet_local.bench import realrepo


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_tests_naming_lists_the_test_files_that_name_the_symbol_as_a_word_at_the_commit(tmp_path):
    repo = tmp_path / "r"
    (repo / "tests").mkdir(parents=True)
    (repo / "lib.py").write_text("def quote(s):\n    return s\n")
    (repo / "tests" / "test_lib.py").write_text("from lib import quote\n")
    (repo / "tests" / "test_other.py").write_text("def test_unquote():\n    pass\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one")
    head = _git(repo, "rev-parse", "HEAD").strip()
    (repo / "tests" / "test_lib.py").write_text(
        "nothing\n"
    )  # the working tree does not count, the commit does
    assert realrepo.tests_naming(repo, head, "quote") == [
        "tests/test_lib.py"
    ]  # lib.py is no test; `unquote` no match
    assert realrepo.tests_naming(repo, head, "absent") == []
