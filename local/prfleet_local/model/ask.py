"""The offline model as the ask agent (issue 25): it answers a question about a finding from what its tool calls
showed, deterministically. It reads the finding's lines (read_file around the line the finding block names), then
calls `answer` quoting the line it read and the finding's title; a question on the PR's conversation (no finding)
gets the PR's changed files (list_changed_files). It learns about the repository only through those calls.
"""

from __future__ import annotations

import re
from typing import Any

from prfleet_local.model.learned import Call
from prfleet_local.model.results import blocks, numbered
from prfleet_local.model.wire import LABEL

_TITLE = re.compile(r"^\*\*(?P<title>.+?)\*\*\s*$", re.MULTILINE)
_STRING = re.compile(r"(['\"])(?:\\.|(?!\1).)*\1")  # a quoted literal: masked, a line may hold a secret
CONTEXT = 3  # lines read on each side of the finding's line


def _tool_use(calls: list[Call], name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_offline_{len(calls) + 1:03d}", "name": name, "input": args}


def next_turn(first_text: str, calls: list[Call]) -> tuple[list[dict[str, Any]], str, str]:
    """(content, stop_reason, thinking kind) of the ask agent's next turn."""
    if any(c.tool == "answer" for c in calls):
        return [{"type": "text", "text": f"{LABEL}: answered."}], "end_turn", "end"
    found = blocks("finding", first_text)
    question = "\n".join(b for _, b in blocks("question", first_text)).strip()
    if found:
        attrs, body = found[0]
        path, line = attrs.get("path", ""), int(attrs.get("line") or 0)
        want = {"path": path, "start_line": max(1, line - CONTEXT), "end_line": line + CONTEXT}
        read = next((c for c in calls if c.tool == "read_file" and c.args == want), None)
        if read is None:
            return [_tool_use(calls, "read_file", want)], "tool_use", "plan"
        return (
            [_tool_use(calls, "answer", {"answer": _about_finding(path, line, body, read, question)})],
            ("tool_use"),
            "report",
        )
    listing = next((c for c in calls if c.tool == "list_changed_files"), None)
    if listing is None:
        return [_tool_use(calls, "list_changed_files", {})], "tool_use", "plan"
    paths = [
        row.split("\t")[3]
        for _, b in blocks("file_list", listing.result)
        for row in b.splitlines()
        if row.count("\t") >= 3
    ]
    text = (
        f"{LABEL}: this pull request changes {len(paths)} file(s): "
        + ", ".join(f"`{p}`" for p in paths[:10])
        + ". Reply in a finding's thread to ask about one of them."
    )
    return [_tool_use(calls, "answer", {"answer": text})], "tool_use", "report"


def _about_finding(path: str, line: int, finding: str, read: Call, question: str) -> str:
    """The answer: the finding's title and the line as read (or why it could not be read)."""
    title_m = _TITLE.search(finding)
    title = title_m["title"] if title_m else "this finding"
    if read.is_error:
        return f"{LABEL}: I could not read `{path}` at the PR head ({read.result.strip()[:200]}), so I cannot check it."
    lines = {}
    for _, body in blocks("file", read.result):
        lines.update(numbered(body))
    code = _STRING.sub(lambda m: m.group(1) + "…" + m.group(1), lines.get(line, "").strip())
    asked = " ".join(question.split())[:120]
    return (
        f"{LABEL}: about **{title}**: line {line} of `{path}` reads `{code}`; that is the code the finding is "
        f"about, so it still applies at this head. (You asked: \u201c{asked}\u201d.)"
    )
