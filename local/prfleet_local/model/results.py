"""What the offline model reads in a tool result: the untrusted blocks prfleet's tools return, parsed in the exact
formats of the shared contract (docs/architecture.md, agents/tools.py), so the model knows a repository only through
the tool calls it made.

- read_file: `<untrusted_file path=".." lines="a-b" total="T">` with `  N| text` lines, then
  `[truncated: ...; ask for start_line=N]` when the tool cut it;
- grep content: `<untrusted_grep pattern=".." mode="content" ...>` with ripgrep-style lines, `path:LINE:text` for a
  match, `path-LINE-text` for a context line, `--` between groups; files_with_matches: one path a line; count:
  `path:N`; "(no matches)" when none;
- glob: `<untrusted_glob pattern=".." matches="N">` one path a line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_OPEN_RE = r"<untrusted_{kind}((?:\s+[\w-]+=\"[^\"]*\")*)>\n?(.*?)\n?</untrusted_{kind}>"
_ATTR_RE = re.compile(r'([\w-]+)="([^"]*)"')
_LINE_RE = re.compile(r"^\s*(\d+)\| ?(.*)$")
# The first `:N:` or `-N-` in a row ends its path (ripgrep's separators: ':' for a match, '-' for context), so a
# line of code holding `:3:` or `-3-` after the path is not mistaken for the separator.
_SEP_RE = re.compile(r"(?P<sep>[:-])(?P<line>\d+)(?P=sep)")
_COUNT_RE = re.compile(r"^(?P<path>[^\n]+):(?P<count>\d+)$")
_NEXT_START = re.compile(r"\[truncated:[^\]]*start_line=(\d+)")
NO_MATCHES = "(no matches)"


def unescape(s: str) -> str:
    """An attribute value as the tools wrote it (html.escape with quote=True)."""
    return (
        s.replace("&quot;", '"')
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
    )


def blocks(kind: str, text: str) -> list[tuple[dict[str, str], str]]:
    """Every `<untrusted_KIND ...>` block of `text` as (attributes, body); defused tag lookalikes restored."""
    out = []
    for m in re.finditer(_OPEN_RE.format(kind=kind), text, re.DOTALL):
        attrs = {k: unescape(v) for k, v in _ATTR_RE.findall(m.group(1))}
        body = re.sub(r"&lt;(\s*/?\s*untrusted)", r"<\1", m.group(2), flags=re.IGNORECASE)
        out.append((attrs, body))
    return out


def text_of(content: Any) -> str:
    """The text of a message's or tool_result's content (a string or a list of blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(text_of(b.get("text", b.get("content", ""))) for b in content if isinstance(b, dict))
    return ""


def numbered(body: str) -> dict[int, str]:
    """The `  N| text` lines of a file block, by line number."""
    out = {}
    for line in body.split("\n"):
        m = _LINE_RE.match(line)
        if m:
            out[int(m.group(1))] = m.group(2)
    return out


@dataclass(frozen=True)
class FileRead:
    """One read_file result: the lines it showed, the file's total, and where to continue when it was cut."""

    path: str
    lines: dict[int, str]
    total: int
    next_start: int | None


def file_reads(result: str) -> list[FileRead]:
    """The file blocks of a read_file result (one, normally)."""
    out = []
    nxt = _NEXT_START.search(result.rsplit("</untrusted_file>", 1)[-1])
    for attrs, body in blocks("file", result):
        total = int(attrs.get("total", "0") or 0)
        out.append(FileRead(attrs.get("path", ""), numbered(body), total, int(nxt.group(1)) if nxt else None))
    return out


@dataclass(frozen=True)
class GrepLine:
    """One line of a grep content result: a match (`path:N:text`) or a context line (`path-N-text`)."""

    path: str
    line: int
    text: str
    match: bool


@dataclass(frozen=True)
class Grep:
    """A parsed grep result: its mode, the lines (content), paths (files_with_matches), counts, and whether the
    tool cut it short."""

    mode: str
    lines: list[GrepLine]
    paths: list[str]
    counts: dict[str, int]
    truncated: bool


def grep(result: str) -> Grep | None:
    """The grep block of a tool result, or None when there is none (an error, or another tool's result)."""
    found = blocks("grep", result)
    if not found:
        return None
    attrs, body = found[0]
    mode = attrs.get("mode", "files_with_matches")
    after = result.rsplit("</untrusted_grep>", 1)[-1]
    lines: list[GrepLine] = []
    paths: list[str] = []
    counts: dict[str, int] = {}
    rows = [] if body.strip() == NO_MATCHES else body.split("\n")
    for row in rows:
        if not row or row == "--":
            continue
        if mode == "content":
            m = _SEP_RE.search(row, 1)
            if m:
                lines.append(GrepLine(row[: m.start()], int(m["line"]), row[m.end() :], m["sep"] == ":"))
        elif mode == "count":
            m = _COUNT_RE.match(row)
            if m:
                counts[m["path"]] = int(m["count"])
        else:
            paths.append(row)
    return Grep(mode, lines, paths, counts, "[truncated:" in after)


def glob(result: str) -> list[str] | None:
    """The paths of a glob result, or None when the result holds no glob block."""
    found = blocks("glob", result)
    if not found:
        return None
    body = found[0][1]
    return [] if body.strip() == NO_MATCHES else [p for p in body.split("\n") if p]
