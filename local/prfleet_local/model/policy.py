"""The offline model's policy: what it understands of a request and what it does next, deterministically.

It reads the conversation (the agent, the file under review, the tool calls so far), asks for the tools a current
model would (several at once when they are independent), then reports the findings of a real static analysis
(analysis.py) and ends its turn. The server (server.py) wraps a turn in thinking, usage and faults.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from prfleet_local.model import tokens
from prfleet_local.model.analysis import analyse
from prfleet_local.model.faults import FaultPlan
from prfleet_local.model.wire import LABEL

_OPEN_RE = r"<untrusted_{kind}((?:\s+\w+=\"[^\"]*\")*)>\n?(.*?)\n?</untrusted_{kind}>"
_ATTR_RE = re.compile(r'(\w+)="([^"]*)"')
_LINE_RE = re.compile(r"^\s*(\d+)\| ?(.*)$")


def _unescape(s: str) -> str:
    return (
        s.replace("&quot;", '"')
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
    )


def _blocks(kind: str, text: str) -> list[tuple[dict[str, str], str]]:
    out = []
    for m in re.finditer(_OPEN_RE.format(kind=kind), text, re.DOTALL):
        attrs = {k: _unescape(v) for k, v in _ATTR_RE.findall(m.group(1))}
        body = re.sub(r"&lt;(\s*/?\s*untrusted)", r"<\1", m.group(2), flags=re.IGNORECASE)
        out.append((attrs, body))
    return out


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            _text_of(b.get("text", b.get("content", ""))) for b in content if isinstance(b, dict)
        )
    return ""


@dataclass
class Conversation:
    """What the offline model understands of a request: agent, file under review, and the tool history."""

    agent: str
    path: str | None
    total_lines: int
    description: str
    first_file_lines: dict[int, str]
    calls: list[tuple[str, dict[str, Any], str, bool]]  # (tool, input, result text, is_error)
    last_user_text: str
    last_role: str

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Conversation:
        system = _text_of(body.get("system", ""))
        m = re.search(r"You are the (\w+) agent", system)
        agent = m.group(1) if m else "review"
        messages = body.get("messages") or []
        first = _text_of(messages[0].get("content")) if messages else ""
        files = _blocks("file", first)
        path = files[0][0].get("path") if files else None
        total = int(files[0][0].get("total", "0") or 0) if files else 0
        first_lines = _numbered(files[0][1]) if files else {}
        desc = "\n".join(b for _, b in _blocks("pr_description", first))
        uses: dict[str, tuple[str, dict[str, Any]]] = {}
        calls = []
        for msg in messages:
            content = msg.get("content")
            if not isinstance(content, list):
                continue
            for block in content:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_use":
                    uses[block.get("id", "")] = (block.get("name", ""), block.get("input") or {})
                elif block.get("type") == "tool_result":
                    name, args = uses.get(block.get("tool_use_id", ""), ("?", {}))
                    calls.append(
                        (name, args, _text_of(block.get("content", "")), bool(block.get("is_error")))
                    )
        last = messages[-1] if messages else {}
        return cls(
            agent,
            path,
            total,
            desc,
            first_lines,
            calls,
            _text_of(last.get("content")),
            str(last.get("role", "user")),
        )


def _numbered(body: str) -> dict[int, str]:
    out = {}
    for line in body.split("\n"):
        m = _LINE_RE.match(line)
        if m:
            out[int(m.group(1))] = m.group(2)
    return out


_TEST_PATH = re.compile(r"(^|/)(tests?/|test_[^/]*$|[^/]*_test\.py$)")


@dataclass
class Turn:
    """What the model does this turn, before thinking is added: visible blocks, stop reason, and the kind of
    thinking that precedes them (plan, tool, report, end) with how much code it weighs."""

    content: list[dict[str, Any]]
    stop: str
    kind: str
    work_tokens: int = 0


class OfflineModel:
    """The deterministic policy: which tools to call next (several at once when they are independent), and the
    final report."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan

    def _chunks(self, total: int) -> list[tuple[int, int] | None]:
        n = self.plan.read_chunks
        if n <= 1 or total <= 1:
            return [None]
        size = math.ceil(total / n)
        return [(s, min(s + size - 1, total)) for s in range(1, total + 1, size)]

    def _windows(self, conv: Conversation) -> list[tuple[int, int] | None]:
        """30-line windows centred on the first findings in the copy of the file the first message carried."""
        text = "\n".join(
            conv.first_file_lines.get(i, "") for i in range(1, max(conv.first_file_lines, default=0) + 1)
        )
        hot = sorted({f["line"] for f in analyse(conv.agent, conv.path or "", text)})
        total = max(conv.total_lines, 1)
        while len(hot) < self.plan.read_windows:
            hot.append(1 + (len(hot) * total) // self.plan.read_windows)
        out: list[tuple[int, int] | None] = []
        for line in hot[: self.plan.read_windows]:
            start = max(1, min(line - 15, total - 29))
            out.append((start, min(total, start + 29)))
        return out

    def _tool_use(self, conv: Conversation, name: str, args: dict[str, Any], k: int) -> dict[str, Any]:
        return {
            "type": "tool_use",
            "id": f"toolu_offline_{len(conv.calls) + k:03d}",
            "name": name,
            "input": args,
        }

    def next_turn(self, conv: Conversation) -> Turn:
        if conv.path is None:
            return Turn(
                [{"type": "text", "text": f"{LABEL}: no file under review in the first message."}],
                "end_turn",
                "end",
            )
        reports = [c for c in conv.calls if c[0] == "report_findings"]
        if reports and not reports[-1][3]:
            n = len(reports[-1][1].get("findings", []))
            return Turn(
                [{"type": "text", "text": f"{LABEL}: reported {n} finding(s) for {conv.path}."}],
                "end_turn",
                "end",
            )
        done = {(c[0], json.dumps(c[1], sort_keys=True)) for c in conv.calls}
        sequential = self.plan.read_chunks > 1 or bool(self.plan.read_windows) or not self.plan.parallel_tools
        wanted: list[tuple[str, dict[str, Any]]] = []
        ranges = self._windows(conv) if self.plan.read_windows else self._chunks(conv.total_lines)
        for chunk in ranges:
            args: dict[str, Any] = {"path": conv.path}
            if chunk:
                args.update(start_line=chunk[0], end_line=chunk[1])
            wanted.append(("read_file", args))
        if conv.agent == "review" and self.plan.read_chunks <= 1 and not self.plan.read_windows:
            wanted.append(("get_diff", {"path": conv.path}))
        test_texts: dict[str, str] = {}
        if conv.agent == "tests":
            wanted.append(("list_changed_files", {}))
            listing = next((c[2] for c in conv.calls if c[0] == "list_changed_files"), None)
            if listing is not None:
                for _, body in _blocks("file_list", listing):
                    for row in body.splitlines():
                        p = row.split("\t")[3] if row.count("\t") >= 3 else ""
                        if p and p != conv.path and _TEST_PATH.search(p) and len(wanted) < 12:
                            wanted.append(("read_file", {"path": p}))
        pending = [(n, a) for n, a in wanted if (n, json.dumps(a, sort_keys=True)) not in done]
        if pending:
            batch = pending[:1] if sequential else pending
            uses = [self._tool_use(conv, n, a, k + 1) for k, (n, a) in enumerate(batch)]
            return Turn(uses, "tool_use", "plan" if not conv.calls else "tool")
        lines: dict[int, str] = dict(conv.first_file_lines)
        for name, _args, result, is_error in conv.calls:
            if name != "read_file" or is_error:
                continue
            for attrs, body in _blocks("file", result):
                if attrs.get("path") == conv.path:
                    lines.update(_numbered(body))
                else:
                    test_texts[attrs.get("path", "")] = "\n".join(_numbered(body).values())
        text = "\n".join(lines.get(i, "") for i in range(1, max(lines, default=0) + 1))
        findings = analyse(conv.agent, conv.path, text, description=conv.description, test_texts=test_texts)
        if len(reports) < self.plan.invalid_reports:
            findings = [dict(f, line=0, severity="urgent") for f in findings] or [
                {
                    "path": conv.path,
                    "line": 0,
                    "severity": "urgent",
                    "category": "Bug",
                    "title": "",
                    "body": "",
                }
            ]
        summary = f"{LABEL}: {len(findings)} finding(s) from static analysis of {conv.path}."
        use = self._tool_use(conv, "report_findings", {"findings": findings, "summary": summary}, 1)
        return Turn([use], "tool_use", "report", work_tokens=tokens.count(text))
