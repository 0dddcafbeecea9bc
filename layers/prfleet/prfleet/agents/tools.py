"""Read-only tools the agents use to look at a PR at its head SHA, plus the report_findings output tool.

Every path the model sends is untrusted: it is confined to the repository (no "..", no absolute paths, no
backslashes or NUL, no symlinks), and every result is size-capped and wrapped in an untrusted block whose
closing-tag lookalikes are neutralised, so file contents can never pose as instructions.
"""

from __future__ import annotations

import copy
import fnmatch
import html
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from prfleet.agents.findings import REPORT_SCHEMA
from prfleet.github.files import SYMLINK_MODE, ChangedFile
from prfleet.repository.snapshot import Snapshot

DEFAULT_MAX_CHARS = 20_000
MAX_SEARCH_HITS = 200


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


_TAG_RE = re.compile(r"<(\s*/?\s*untrusted)", re.IGNORECASE)


def neutralise(text: str) -> str:
    """Defuse anything in untrusted text that looks like one of our block tags (opening or closing)."""
    return _TAG_RE.sub(r"&lt;\1", text)


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def untrusted_block(kind: str, text: str, **attrs: object) -> str:
    """Wrap untrusted text in <untrusted_KIND attr="...">...</untrusted_KIND>, lookalike tags defused."""
    rendered = "".join(f' {k}="{_attr(str(v))}"' for k, v in attrs.items() if v is not None)
    return f"<untrusted_{kind}{rendered}>\n{neutralise(text)}\n</untrusted_{kind}>"


def confine_path(path: object) -> str:
    """Normalise a model-supplied path or raise PathError: relative, inside the repo, no tricks."""
    if not isinstance(path, str) or not path.strip():
        raise PathError("path must be a non-empty string")
    if "\x00" in path or "\\" in path:
        raise PathError("path must not contain NUL or backslashes")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path) or path.startswith("~"):
        raise PathError("path must be relative to the repository root")
    parts = path.split("/")
    if ".." in parts:
        raise PathError("path must not contain '..'")
    norm = posixpath.normpath(path)
    if norm in (".", "") or norm.startswith("../"):
        raise PathError("path must name a file inside the repository")
    if norm.startswith(".git/") or norm == ".git":
        raise PathError("the .git directory is not part of the PR")
    return norm


def _cap(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def number_lines(text: str, start: int = 1) -> str:
    """Prefix each line with its 1-based number, so the model can cite lines on the new side of the diff."""
    lines = text.splitlines()
    width = len(str(start + len(lines)))
    return "\n".join(f"{n:>{width}}| {line}" for n, line in enumerate(lines, start))


class PrTools:
    """The tool implementations bound to one PR; `call` dispatches a tool_use block and never raises."""

    def __init__(
        self, source: PrSource, *, max_chars: int = DEFAULT_MAX_CHARS, snapshot: Snapshot | None = None
    ) -> None:
        self.source = source
        self.max_chars = max_chars
        self.snapshot = (
            snapshot  # the head unpacked in this container, or None (issue 23: the tools' RepoView)
        )
        self._changed: list[ChangedFile] | None = None

    def changed(self) -> list[ChangedFile]:
        if self._changed is None:
            self._changed = list(self.source.changed_files())
        return self._changed

    def _mode(self, path: str) -> str | None:
        """Git file mode if anyone knows it: the changed-file entry, else the source's mode()/file_mode()."""
        for f in self.changed():
            if f.path == path and getattr(f, "mode", None):
                return f.mode
        for attr in ("mode", "file_mode"):
            fn = getattr(self.source, attr, None)
            if callable(fn):
                return fn(path)
        return None

    def _readable(self, path: object) -> tuple[str, str]:
        norm = confine_path(path)
        if self._mode(norm) == SYMLINK_MODE:
            raise PathError(f"{norm} is a symlink; symlinks are not followed")
        text = self.source.read_file(norm)
        if text is None:
            raise ToolError(f"{norm} does not exist at the PR head")
        return norm, text

    def read_file(self, path: str, start_line: int | None = None, end_line: int | None = None) -> ToolResult:
        """The file at the head SHA with line numbers, optionally only lines start_line..end_line."""
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
        if self._mode(norm) == SYMLINK_MODE:
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

    def search(self, query: str, path_glob: str | None = None) -> ToolResult:
        """Case-insensitive substring search over the PR's changed files (head versions); path:line: text."""
        if not isinstance(query, str) or not query.strip():
            raise ToolError("query must be a non-empty string")
        if path_glob is not None and not isinstance(path_glob, str):
            raise ToolError("path_glob must be a string")
        needle = query.lower()
        hits: list[str] = []
        more = False
        for f in self.changed():
            if f.status == "removed" or self._mode(f.path) == SYMLINK_MODE:
                continue
            if path_glob and not fnmatch.fnmatchcase(f.path, path_glob):
                continue
            text = self.source.read_file(f.path)
            if text is None:
                continue
            for n, line in enumerate(text.splitlines(), 1):
                if needle in line.lower():
                    if len(hits) >= MAX_SEARCH_HITS:
                        more = True
                        break
                    hits.append(f"{f.path}:{n}: {line.strip()[:300]}")
        text, cut = _cap("\n".join(hits) if hits else "(no matches)", self.max_chars)
        cut = cut or more
        note = f"\n[truncated: more than {len(hits)} matches; narrow the query or path_glob]" if cut else ""
        return ToolResult(
            untrusted_block("search", text, query=query[:200], matches=len(hits)) + note, truncated=cut
        )

    def call(self, name: str, args: Mapping[str, Any] | None) -> ToolResult:
        """Run one read-only tool; errors come back as is_error results the model can act on."""
        args = dict(args or {})
        allowed = {
            "read_file": {"path", "start_line", "end_line"},
            "get_diff": {"path"},
            "list_changed_files": set(),
            "search": {"query", "path_glob"},
        }
        if name not in allowed:
            return ToolResult(f"unknown tool {name!r}", is_error=True)
        unknown = set(args) - allowed[name]
        if unknown:
            return ToolResult(f"{name} got unknown argument(s): {', '.join(sorted(unknown))}", is_error=True)
        try:
            result: ToolResult = getattr(self, name)(**args)
        except TypeError as exc:
            return ToolResult(f"bad arguments for {name}: {exc}", is_error=True)
        except ToolError as exc:
            return ToolResult(str(exc), is_error=True)
        return result


READ_ONLY_TOOLS: list[dict[str, Any]] = [
    {
        "name": "read_file",
        "description": "Read a repository file at the PR head, with line numbers; optionally a line range.",
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
    {
        "name": "search",
        "description": "Case-insensitive search in the PR's changed files; returns path:line: text.",
        "input_schema": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "path_glob": {"type": "string", "description": "Optional glob such as 'tests/*.py'."},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
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
