"""Read-only tools the agents use to look at a PR and its repository at the head SHA (read_file, grep, glob over
the repository; get_diff, list_changed_files over the PR), plus the report_findings output tool.

Every path the model sends is untrusted: it is confined to the repository (no "..", no absolute paths, no
backslashes or NUL, no symlinks), and every result is size-capped and wrapped in an untrusted block whose
closing-tag lookalikes are neutralised, so file contents can never pose as instructions.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from prfleet.agents.findings import REPORT_SCHEMA
from prfleet.github.files import SYMLINK_MODE, ChangedFile
from prfleet.repository import search
from prfleet.repository.untrusted import neutralise as neutralise  # re-exported: moved below agents
from prfleet.repository.untrusted import path_problem, untrusted_block
from prfleet.repository.view import RepoView, Snapshotish, view_for

DEFAULT_MAX_CHARS = 20_000


@runtime_checkable
class PrSource(Protocol):
    """Read-only view of the PR at its head SHA (over GitHub, the local git server, or in memory in tests)."""

    title: str
    body: str

    def read_file(self, path: str) -> str | None: ...

    def file_diff(self, path: str) -> str: ...

    def changed_files(self) -> list[ChangedFile]: ...


class ToolError(Exception):
    """A tool call the model made wrongly; the message goes back to it as an is_error tool_result."""


class PathError(ToolError):
    """A path outside the repository, malformed, or a symlink."""


@dataclass(frozen=True)
class ToolResult:
    content: str
    truncated: bool = False
    is_error: bool = False


def confine_path(path: object) -> str:
    """Normalise a model-supplied path or raise PathError: relative, inside the repo, no tricks
    (prfleet.repository.untrusted.path_problem)."""
    problem = path_problem(path)
    if problem is not None:
        raise PathError(problem)
    return posixpath.normpath(str(path))


def _cap(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def number_lines(text: str, start: int = 1) -> str:
    """Prefix each line with its 1-based number, so the model can cite lines on the new side of the diff."""
    lines = text.splitlines()
    width = len(str(start + len(lines)))
    return "\n".join(f"{n:>{width}}| {line}" for n, line in enumerate(lines, start))


def _optional_path(path: object, name: str = "path") -> str | None:
    """A grep/glob scope: None for the repository root, else a confined path."""
    if path is None or path in ("", ".", "./"):
        return None
    if not isinstance(path, str):
        raise PathError(f"{name} must be a string")
    return confine_path(path.rstrip("/") or ".")


class PrTools:
    """The tool implementations bound to one PR; `call` dispatches a tool_use block and never raises.

    They see the repository through a RepoView: the unpacked snapshot when `snapshot` has a tree, else the
    fallback over the PR source (grep then covers the changed files and the files read, and says so)."""

    def __init__(
        self,
        source: PrSource,
        *,
        snapshot: Snapshotish | None = None,
        view: RepoView | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        self.source = source
        self.max_chars = max_chars
        self.view: RepoView = view if view is not None else view_for(source, snapshot)
        self._changed: list[ChangedFile] | None = None

    def changed(self) -> list[ChangedFile]:
        if self._changed is None:
            self._changed = list(self.source.changed_files())
        return self._changed

    def _is_symlink(self, path: str) -> bool:
        """A symlink by the changed-file entry's mode or by the view (the tree's lstat, or the source's modes)."""
        for f in self.changed():
            if f.path == path and getattr(f, "mode", None) == SYMLINK_MODE:
                return True
        return self.view.is_symlink(path)

    def _readable(self, path: object) -> tuple[str, str]:
        norm = confine_path(path)
        if self._is_symlink(norm):
            raise PathError(f"{norm} is a symlink; symlinks are not followed")
        text = self.view.read(norm)
        if text is None:
            raise ToolError(f"{norm} does not exist at the PR head")
        return norm, text

    def read_file(self, path: str, start_line: int | None = None, end_line: int | None = None) -> ToolResult:
        """Any file of the repository at the head SHA with line numbers, optionally lines start_line..end_line."""
        norm, text = self._readable(path)
        lines = text.splitlines()
        total = len(lines)
        for name, value in (("start_line", start_line), ("end_line", end_line)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ToolError(f"{name} must be an integer >= 1")
        start = start_line or 1
        end = min(end_line or total, total)
        if total and start > total:
            raise ToolError(f"start_line {start} is past the end of {norm} ({total} lines)")
        if end < start and total:
            raise ToolError("end_line must be >= start_line")
        width = len(str(end + 1))
        shown: list[str] = []
        size = 0
        shown_end = start - 1
        for n in range(start, end + 1):
            row = f"{n:>{width}}| {lines[n - 1]}"
            if size + len(row) + 1 > self.max_chars:
                break
            shown.append(row)
            size += len(row) + 1
            shown_end = n
        cut = shown_end < end
        note = (
            f"\n[truncated: showing lines {start}-{shown_end} of {total}; ask for start_line={shown_end + 1}]"
            if cut
            else ""
        )
        block = untrusted_block(
            "file", "\n".join(shown), path=norm, lines=f"{start}-{shown_end}", total=total
        )
        return ToolResult(block + note, truncated=cut)

    def get_diff(self, path: str) -> ToolResult:
        """The unified diff of one changed file (GitHub's patch)."""
        norm = confine_path(path)
        if norm not in {f.path for f in self.changed()}:
            raise ToolError(f"{norm} is not changed in this PR; use list_changed_files")
        if self._is_symlink(norm):
            raise PathError(f"{norm} is a symlink; symlinks are not followed")
        diff, cut = _cap(self.source.file_diff(norm) or "", self.max_chars)
        note = f"\n[truncated: diff cut at {self.max_chars} characters]" if cut else ""
        previous = next((f.previous_path for f in self.changed() if f.path == norm), None)
        # A renamed file's patch is against its previous name: say so, so the diff reads as a rename.
        block = untrusted_block("diff", diff, path=norm, renamed_from=previous)
        return ToolResult(block + note, truncated=cut)

    def list_changed_files(self) -> ToolResult:
        """Every changed file with status and line counts (paths are untrusted data too)."""
        rows = [
            f"{f.status}\t+{f.additions}\t-{f.deletions}\t{f.path}"
            + (f"\t(from {f.previous_path})" if f.previous_path else "")
            + ("\t(symlink)" if getattr(f, "mode", None) == SYMLINK_MODE else "")
            for f in self.changed()
        ]
        text, cut = _cap("\n".join(rows), self.max_chars)
        note = "\n[truncated: file list cut]" if cut else ""
        return ToolResult(untrusted_block("file_list", text, count=len(rows)) + note, truncated=cut)

    def grep(self, args: Mapping[str, Any]) -> ToolResult:
        """A regex over the repository's files (Claude Code's Grep inputs), in an untrusted_grep block."""
        pattern = args.get("pattern")
        try:
            found = search.grep(
                self.view,
                pattern,  # type: ignore[arg-type]
                path=_optional_path(args.get("path")),
                glob=args.get("glob"),
                output_mode=args.get("output_mode") or "files_with_matches",
                ignore_case=bool(args.get("-i", False)),
                before=args.get("-B") or 0,
                after=args.get("-A") or 0,
                context=args.get("-C") or 0,
                head_limit=args.get("head_limit"),
                max_chars=self.max_chars,
            )
        except search.SearchError as exc:
            raise ToolError(str(exc)) from None
        block = untrusted_block(
            "grep",
            found.body,
            pattern=str(pattern)[:200],
            mode=found.mode,
            matches=found.matches,
            files=found.files,
        )
        return ToolResult(block + _notes(found.truncated, found.coverage), truncated=bool(found.truncated))

    def glob(self, args: Mapping[str, Any]) -> ToolResult:
        """Repository paths matching a glob (Claude Code's Glob inputs), in an untrusted_glob block."""
        pattern = args.get("pattern")
        try:
            found = search.glob(self.view, pattern, path=_optional_path(args.get("path")))  # type: ignore[arg-type]
        except search.SearchError as exc:
            raise ToolError(str(exc)) from None
        block = untrusted_block("glob", found.body, pattern=str(pattern)[:200], matches=found.matches)
        return ToolResult(block + _notes(found.truncated, found.coverage), truncated=bool(found.truncated))

    def call(self, name: str, args: Mapping[str, Any] | None) -> ToolResult:
        """Run one read-only tool; errors come back as is_error results the model can act on."""
        args = dict(args or {})
        if name not in TOOL_ARGS:
            return ToolResult(f"unknown tool {name!r}", is_error=True)
        unknown = set(args) - TOOL_ARGS[name]
        if unknown:
            return ToolResult(f"{name} got unknown argument(s): {', '.join(sorted(unknown))}", is_error=True)
        try:
            if name in ("grep", "glob"):
                if "pattern" not in args:
                    return ToolResult(f"{name} needs a pattern", is_error=True)
                result: ToolResult = getattr(self, name)(args)
            else:
                result = getattr(self, name)(**args)
        except TypeError as exc:
            return ToolResult(f"bad arguments for {name}: {exc}", is_error=True)
        except ToolError as exc:
            return ToolResult(str(exc), is_error=True)
        return result


def _notes(truncated: str | None, coverage: str | None) -> str:
    """The lines after a grep/glob block: what was cut and how to narrow, then what the search covers."""
    out = ""
    if truncated:
        out += f"\n[truncated: {neutralise(truncated)}]"
    if coverage:
        out += f"\n[coverage: {neutralise(coverage)}]"
    return out


TOOL_ARGS: dict[str, set[str]] = {
    "read_file": {"path", "start_line", "end_line"},
    "grep": {"pattern", "path", "glob", "output_mode", "-i", "-A", "-B", "-C", "head_limit"},
    "glob": {"pattern", "path"},
    "get_diff": {"path"},
    "list_changed_files": set(),
}

READ_ONLY_TOOLS: list[dict[str, Any]] = [
    {
        "name": "read_file",
        "description": "Read any file of the repository at the PR head (changed or not), with line numbers; "
        "optionally a line range. Symlinks are not followed.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Repository-relative path."},
                "start_line": {"type": "integer", "minimum": 1},
                "end_line": {"type": "integer", "minimum": 1},
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    },
    {
        "name": "grep",
        "description": "Search the contents of the repository's files at the PR head with a regular expression "
        "(Python re syntax, matched line by line). Use it to find callers of a function, existing tests of a "
        "symbol, or every use of a name. Covers every text file of the repository; when the repository has no "
        "snapshot it covers only the PR's changed files and the files read so far, and a [coverage: ...] line "
        "says so. Output modes: files_with_matches (default: paths), content (path:LINE:text for matches, "
        "path-LINE-text for context lines, -- between groups), count (path:N). Results are sorted by path and "
        "capped; a [truncated: ...] line says how to narrow.",
        "input_schema": {
            "type": "object",
            "properties": {
                "pattern": {
                    "type": "string",
                    "description": "Regular expression, e.g. 'def parse\\(' or '\\bAuth\\b'.",
                },
                "path": {
                    "type": "string",
                    "description": "File or directory to search (default: the repository root).",
                },
                "glob": {
                    "type": "string",
                    "description": "Filter files: '*.py' (no '/': the file name at any "
                    "depth) or 'tests/**/*.py' (a path relative to `path`).",
                },
                "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"]},
                "-i": {"type": "boolean", "description": "Case-insensitive."},
                "-A": {"type": "integer", "minimum": 0, "description": "Lines after each match (content)."},
                "-B": {"type": "integer", "minimum": 0, "description": "Lines before each match (content)."},
                "-C": {"type": "integer", "minimum": 0, "description": "Lines around each match (content)."},
                "head_limit": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Only the first N lines or entries.",
                },
            },
            "required": ["pattern"],
            "additionalProperties": False,
        },
    },
    {
        "name": "glob",
        "description": "List the repository's file paths at the PR head matching a glob pattern, sorted. The "
        "pattern is relative to `path` (default: the root): '*' and '?' stay within one directory, '**' "
        "spans any number of directories, '{a,b}' gives alternatives. So '*.py' lists the root's Python files "
        "and '**/*.py' those at any depth; 'src/**/test_*.py' the test files under src.",
        "input_schema": {
            "type": "object",
            "properties": {
                "pattern": {
                    "type": "string",
                    "description": "Glob such as '**/*.py' or 'tests/**/test_*.py'.",
                },
                "path": {"type": "string", "description": "Directory the pattern is relative to."},
            },
            "required": ["pattern"],
            "additionalProperties": False,
        },
    },
    {
        "name": "get_diff",
        "description": "The unified diff of one changed file of the PR.",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
            "additionalProperties": False,
        },
    },
    {
        "name": "list_changed_files",
        "description": "List the PR's changed files with status and added/deleted line counts.",
        "input_schema": {"type": "object", "properties": {}, "additionalProperties": False},
    },
]

REPORT_TOOL: dict[str, Any] = {
    "name": "report_findings",
    "description": "Report your findings for the file under review (call once; [] when there is nothing to "
    "report). Lines are on the NEW side of the diff.",
    "input_schema": REPORT_SCHEMA,
}


def tool_definitions() -> list[dict[str, Any]]:
    """Fresh copies of the tool definitions, so callers can add cache_control without side effects."""
    return copy.deepcopy([*READ_ONLY_TOOLS, REPORT_TOOL])
