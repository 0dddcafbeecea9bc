"""An eval corpus: a directory of cases, each `CASE/case.json`, checked in full before any review starts.

case.json = {"repo": path of a git repository or bundle, relative to the case directory and inside it,
"base": REF, "head": REF, "golden": [{"path", "line", "end_line", "severity", "comment"}]}. Every mistake is one
line naming the case. A golden issue without a path (as every one of the Martian benchmark's golden_comments/*.json,
read by martian.py) needs its `comment`: an LLM judge (judge.py) matches it by what it says, not where.
"""

from __future__ import annotations

import json
import posixpath
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prfleet_local.cli.errors import CliError

CASE_FILE = "case.json"
SEVERITIES = ("critical", "high", "medium", "low", "info")


class CorpusError(CliError):
    """Bad corpus input; the message names the case and says what to fix."""


@dataclass(frozen=True)
class Golden:
    """A known issue of a case: a file and a line range at the head ([line, end_line], end_line >= line), or no
    path at all (path, line and end_line None) and only its `comment`, which the LLM judge reads."""

    path: str | None
    line: int | None = None
    end_line: int | None = None
    severity: str = ""
    comment: str = ""

    @property
    def judged(self) -> bool:
        """Whether only the judge can match it (it names no file)."""
        return self.path is None


@dataclass
class Case:
    """One case: where its repository is, the range to review, and its golden issues."""

    name: str
    directory: Path
    repo: Path
    base: str
    head: str
    golden: list[Golden]
    is_bundle: bool = False
    title: str = ""  # the PR's title when the case came from GitHub (martian.py); the local PR's subject
    url: str = ""  # where the case came from (a PR's URL), for the output
    _checkout: Path | None = field(default=None, repr=False)

    def checkout(self) -> Path:
        """A git repository with the case's commits: the repository itself, or a bare clone of the bundle in a
        temporary directory (removed by cleanup())."""
        if not self.is_bundle:
            return self.repo
        if self._checkout is None:
            dest = Path(tempfile.mkdtemp(prefix=f"prfleet-eval-{self.name}-")) / "repo.git"
            proc = _git(None, "clone", "--quiet", "--bare", str(self.repo), str(dest))
            if proc.returncode != 0:
                raise CorpusError(f"case {self.name}: cannot clone {self.repo.name}: {_first(proc.stderr)}")
            self._checkout = dest
        return self._checkout

    def cleanup(self) -> None:
        if self._checkout is not None:
            shutil.rmtree(self._checkout.parent, ignore_errors=True)
            self._checkout = None


def _git(repo: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    where = ["-C", str(repo)] if repo is not None else []
    return subprocess.run(["git", *where, *args], capture_output=True, text=True, check=False)


def _first(text: str) -> str:
    return " ".join(text.split())[:200] or "git failed"


def load_corpus(path: Path) -> list[Case]:
    """Every case of the corpus directory, in name order, each checked (refs resolved) before any is reviewed."""
    if not path.is_dir():
        raise CorpusError(f"{path}: not a directory (a corpus is a directory of CASE/case.json)")
    cases = []
    for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        cases.append(load_case(child))
    if not cases:
        raise CorpusError(f"{path}: no cases (each case is a directory with a {CASE_FILE})")
    return cases


def load_case(directory: Path) -> Case:
    """One case directory, checked: case.json's shape, the repository inside the case, both refs, the goldens."""
    name = directory.name
    file = directory / CASE_FILE
    if not file.is_file():
        raise CorpusError(f"case {name}: no {CASE_FILE} in {directory}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CorpusError(f"case {name}: {CASE_FILE} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CorpusError(f"case {name}: {CASE_FILE} must be a JSON object")
    for key in ("repo", "base", "head"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise CorpusError(f"case {name}: {CASE_FILE} needs {key!r} (a non-empty string)")
    if not isinstance(data.get("golden"), list):
        raise CorpusError(f"case {name}: {CASE_FILE} needs 'golden', a list of issues (may be empty)")
    root = directory.resolve()
    repo = (root / data["repo"]).resolve()
    if not repo.is_relative_to(root):
        raise CorpusError(f"case {name}: repo {data['repo']!r} is outside the case directory")
    if not repo.exists():
        raise CorpusError(f"case {name}: repo {data['repo']!r} does not exist")
    is_bundle = repo.is_file()
    if is_bundle and _git(root, "bundle", "list-heads", str(repo)).returncode != 0:
        raise CorpusError(f"case {name}: repo {data['repo']!r} is neither a git repository nor a git bundle")
    if not is_bundle and _git(repo, "rev-parse", "--git-dir").returncode != 0:
        raise CorpusError(f"case {name}: repo {data['repo']!r} is not a git repository")
    golden = [_golden(name, i, g) for i, g in enumerate(data["golden"])]
    case = Case(name, root, repo, data["base"], data["head"], golden, is_bundle)
    try:
        checkout = case.checkout()
        for key in ("base", "head"):
            ref = data[key]
            if _git(checkout, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
                raise CorpusError(f"case {name}: {key} {ref!r}: no such commit in {data['repo']}")
    except BaseException:
        case.cleanup()
        raise
    return case


def _golden(case: str, i: int, item: Any) -> Golden:
    where = f"case {case}: golden[{i}]"
    if not isinstance(item, dict):
        raise CorpusError(f"{where} must be an object with path, line, end_line, severity, comment")
    severity = str(item.get("severity") or "")
    if severity and severity not in SEVERITIES:
        raise CorpusError(f"{where}: severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    comment = item.get("comment")
    if not item.get("path"):
        if item.get("line") is not None or item.get("end_line") is not None:
            raise CorpusError(f"{where}: a line needs a path (give both, or only a comment for the judge)")
        if not isinstance(comment, str) or not comment.strip():
            raise CorpusError(
                f"{where} has neither a path nor a comment: give path and line, or a comment for the LLM judge"
            )
        return Golden(None, None, None, severity, comment.strip())
    path = str(item["path"])
    if path.startswith("/") or posixpath.normpath(path) != path or path.startswith(".."):
        raise CorpusError(f"{where}: path {path!r} must be repository-relative in normal form")
    line, end = item.get("line"), item.get("end_line", item.get("line"))
    if end is None:
        end = line
    if not isinstance(line, int) or isinstance(line, bool) or line < 1:
        raise CorpusError(f"{where}: line must be an integer >= 1")
    if not isinstance(end, int) or isinstance(end, bool) or end < line:
        raise CorpusError(f"{where}: end_line must be an integer >= line")
    return Golden(path, line, end, severity, str(comment or ""))
