"""The offline model's policy: what it understands of a request and what it does next, deterministically.

It reads the conversation (the agent, the file under review, the tools offered, the tool calls so far), asks for
the tools a current model would (several at once when they are independent), then reports the findings of a real
static analysis (analysis.py) and ends its turn. It learns about the repository only through the tool calls it
makes (learned.py): it follows a read_file that was cut until it has every line; the review agent greps for the
callers of a function whose signature the diff changes, reads their files and reports the calls that no longer
fit; the tests agent greps the repository's tests before it calls a symbol untested. The server (server.py) wraps
a turn in thinking, usage and faults, and logs what the model asked for and the facts it relied on.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from prfleet_local.model import ask, learned, tokens
from prfleet_local.model.analysis import analyse
from prfleet_local.model.callers import SignatureChange, added_lines, signature_changes
from prfleet_local.model.faults import FaultPlan
from prfleet_local.model.learned import Call, Fact, FileText
from prfleet_local.model.results import blocks, numbered, text_of
from prfleet_local.model.wire import LABEL

# read_file calls that follow a cut read of one file (a 20,000-character page each). A model pages through a long
# source file, not through a 3 MB data file: each page is a turn that resends the history, so 40 pages would run
# into the agent's 30 iterations and its run-token cap. Past this the file stays read in part, and nothing that
# needs the whole file (a parse) is reported.
MAX_CONTINUATIONS = 6
_REJECTED_PATH = "is not a file under review"


@dataclass
class Conversation:
    """What the offline model understands of a request: agent, file under review, the tools it may call, and the
    tool history."""

    agent: str
    path: str | None
    total_lines: int
    description: str
    first_file_lines: dict[int, str]
    calls: list[Call]
    last_user_text: str
    last_role: str
    tools: frozenset[str] = frozenset()
    diffs: list[str] = field(default_factory=list)
    first_text: str = ""  # the first user message's text (the ask agent reads its finding and question there)

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Conversation:
        system = text_of(body.get("system", ""))
        m = re.search(r"You are the (\w+) agent", system)
        agent = m.group(1) if m else "review"
        messages = body.get("messages") or []
        first = text_of(messages[0].get("content")) if messages else ""
        files = blocks("file", first)
        path = files[0][0].get("path") if files else None
        total = int(files[0][0].get("total", "0") or 0) if files else 0
        first_lines = numbered(files[0][1]) if files else {}
        desc = "\n".join(b for _, b in blocks("pr_description", first))
        diffs = [b for a, b in blocks("diff", first) if a.get("path") == path]
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
                    use_id = block.get("tool_use_id", "")
                    name, args = uses.get(use_id, ("?", {}))
                    result = text_of(block.get("content", ""))
                    calls.append(Call(name, args, result, bool(block.get("is_error")), use_id))
        last = messages[-1] if messages else {}
        offered = frozenset(
            str(t.get("name")) for t in body.get("tools") or [] if isinstance(t, dict) and t.get("name")
        )
        return cls(
            agent,
            path,
            total,
            desc,
            first_lines,
            calls,
            text_of(last.get("content")),
            str(last.get("role", "user")),
            offered,
            diffs,
            first,
        )

    def of(self, tool: str) -> list[Call]:
        """The calls of one tool, in order."""
        return [c for c in self.calls if c.tool == tool]

    def reviewed(self) -> FileText:
        """The file under review as far as the model has seen it (first message and its reads)."""
        first = FileText(dict(self.first_file_lines), self.total_lines)
        return learned.file_text(self.calls, self.path or "", first)

    def diff_texts(self) -> list[str]:
        """The diffs of the file under review the model has seen: the first message's and get_diff results."""
        texts = list(self.diffs)
        for call in self.of("get_diff"):
            if not call.is_error:
                texts += [b for a, b in blocks("diff", call.result) if a.get("path") == self.path]
        return texts

    def added(self) -> set[int] | None:
        """The lines of the file under review that the PR adds, as its diffs show them; None when no diff shows a
        hunk (left out as too large, or none given): the whole file is then taken as the change."""
        found = [lines for text in self.diff_texts() if (lines := added_lines(text)) is not None]
        return set().union(*found) if found else None

    def signature_changes(self) -> list[SignatureChange]:
        """Signatures the PR changes, from the diff in the first message and from get_diff results."""
        seen: dict[str, SignatureChange] = {}
        for text in self.diff_texts():
            for change in signature_changes(text):
                seen.setdefault(change.name, change)
        return list(seen.values())


@dataclass
class Turn:
    """What the model does this turn, before thinking is added: visible blocks, stop reason, the kind of
    thinking that precedes them (plan, tool, report, end) with how much code it weighs, and the facts from tool
    results its report relies on (for the server's log)."""

    content: list[dict[str, Any]]
    stop: str
    kind: str
    work_tokens: int = 0
    facts: list[Fact] = field(default_factory=list)


def _key(name: str, args: dict[str, Any]) -> tuple[str, str]:
    return name, json.dumps(args, sort_keys=True)


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

    @staticmethod
    def _read_whole(calls: list[Call], path: str, first: FileText | None = None) -> list[tuple[str, dict]]:
        """read_file of `path`, then a read from where each cut result asks to go on (the tool's own note), so
        the model ends up with every line before it trusts a parse of the file."""
        seen = learned.file_text(calls, path, first)
        wanted: list[tuple[str, dict[str, Any]]] = []
        for start in seen.continue_at[:MAX_CONTINUATIONS]:
            if start not in seen.lines:
                wanted.append(("read_file", {"path": path, "start_line": start}))
        return wanted

    def _wanted(self, conv: Conversation) -> list[tuple[str, dict[str, Any]]]:
        """Every tool call the model wants given what it has seen so far, in the order it would make them."""
        path = conv.path or ""
        wanted: list[tuple[str, dict[str, Any]]] = []
        ranges = self._windows(conv) if self.plan.read_windows else self._chunks(conv.total_lines)
        for chunk in ranges:
            args: dict[str, Any] = {"path": path}
            if chunk:
                args.update(start_line=chunk[0], end_line=chunk[1])
            wanted.append(("read_file", args))
        wanted += self._read_whole(conv.calls, path)
        grep = "grep" in conv.tools
        if conv.agent == "review":
            if self.plan.read_chunks <= 1 and not self.plan.read_windows:
                wanted.append(("get_diff", {"path": path}))
            if grep:
                changes = conv.signature_changes()
                wanted += [("grep", learned.caller_grep(c.name)) for c in changes]
                for caller in learned.caller_paths(conv.calls, changes, path):
                    wanted.append(("read_file", {"path": caller}))
                    wanted += self._read_whole(conv.calls, caller)
        if conv.agent == "tests":
            wanted.append(("list_changed_files", {}))
            listing = next((c.result for c in conv.calls if c.tool == "list_changed_files"), None)
            if listing is not None:
                for _, body in blocks("file_list", listing):
                    for row in body.splitlines():
                        p = row.split("\t")[3] if row.count("\t") >= 3 else ""
                        if p and p != path and learned.TEST_PATH.search(p) and len(wanted) < 12:
                            wanted.append(("read_file", {"path": p}))
            seen = conv.reviewed()
            symbols = learned.public_symbols(seen.text()) if grep and seen.complete else []
            if symbols:
                greps = learned.test_greps(symbols)
                wanted += [("grep", g) for g in greps]
                texts, _ = learned.test_mentions(conv.calls, path, symbols)
                for symbol in learned.unresolved_after_cut(conv.calls, symbols, texts):
                    wanted.append(("grep", learned.symbol_grep(symbol)))
        return wanted

    def next_turn(self, conv: Conversation) -> Turn:
        if conv.agent == "ask":  # issue 25: a question, not a file under review (model/ask.py)
            content, stop, kind = ask.next_turn(conv.first_text, conv.calls)
            return Turn(content, stop, kind)
        if conv.path is None:
            return Turn(
                [{"type": "text", "text": f"{LABEL}: no file under review in the first message."}],
                "end_turn",
                "end",
            )
        reports = conv.of("report_findings")
        if reports and not reports[-1].is_error:
            n = len(reports[-1].args.get("findings", []))
            return Turn(
                [{"type": "text", "text": f"{LABEL}: reported {n} finding(s) for {conv.path}."}],
                "end_turn",
                "end",
            )
        done = {_key(c.tool, c.args) for c in conv.calls}
        sequential = self.plan.read_chunks > 1 or bool(self.plan.read_windows) or not self.plan.parallel_tools
        pending: list[tuple[str, dict[str, Any]]] = []
        for name, args in self._wanted(conv):
            if _key(name, args) not in done and (name, args) not in pending:
                pending.append((name, args))
        if pending:
            batch = pending[:1] if sequential else pending
            uses = [self._tool_use(conv, n, a, k + 1) for k, (n, a) in enumerate(batch)]
            return Turn(uses, "tool_use", "plan" if not conv.calls else "tool")
        return self._report(conv, reports)

    def _report(self, conv: Conversation, reports: list[Call]) -> Turn:
        """report_findings: the static analysis of the file as seen, plus what the repository tools showed."""
        path = conv.path or ""
        seen = conv.reviewed()
        text = seen.text()
        searched = "grep" in conv.tools
        symbols = learned.public_symbols(text) if seen.complete else []
        test_texts, facts = learned.test_mentions(conv.calls, path, symbols)
        findings = analyse(
            conv.agent,
            path,
            text,
            description=conv.description,
            test_texts=test_texts,
            complete=seen.complete,
            searched=searched,
            added=conv.added(),
        )
        if conv.agent == "tests":  # the facts that kept a symbol from being called untested
            reported = {f["title"] for f in findings}
            tested = [s for s in symbols if f"No test for `{s}`" not in reported]
            facts = [f for f in facts if any(re.search(rf"\b{re.escape(s)}\b", f.detail) for s in tested)]
        else:
            facts = []
        if conv.agent == "review" and searched:
            broken, broken_facts = learned.broken_calls(conv.calls, conv.signature_changes(), path)
            findings += broken
            facts += broken_facts
        if any(r.is_error and _REJECTED_PATH in r.result for r in reports):
            # The loop accepts findings only in the file under review: keep those rather than lose the report.
            findings = [f for f in findings if f["path"] == path]
            facts = [f for f in facts if f.kind != "broken_call"]
        if self.plan.scripted is not None:  # scripted-reply mode (FaultPlan.scripted): exactly the script
            findings, facts = scripted_findings(self.plan.scripted, conv.agent, path), []
        if len(reports) < self.plan.invalid_reports:
            findings = [dict(f, line=0, severity="urgent") for f in findings] or [
                {
                    "path": path,
                    "line": 0,
                    "severity": "urgent",
                    "category": "Bug",
                    "title": "",
                    "body": "",
                }
            ]
        summary = f"{LABEL}: {len(findings)} finding(s) from static analysis of {path}."
        use = self._tool_use(conv, "report_findings", {"findings": findings, "summary": summary}, 1)
        return Turn([use], "tool_use", "report", work_tokens=tokens.count(text), facts=facts)


SCRIPTED_FIELDS = ("path", "line", "severity", "category", "title", "body", "suggestion", "relation")


def scripted_findings(script: list[dict[str, Any]], agent: str, path: str) -> list[dict[str, Any]]:
    """The scripted findings of one job (its agent, default "review", and its file), as report_findings items;
    the fields the report does not take (agent, end_line, comment) are left out."""
    out = []
    for item in script:
        if str(item.get("agent", "review")) != agent or item.get("path") != path:
            continue
        finding = {
            "severity": "medium",
            "category": "bug",
            "title": f"Scripted finding at line {item['line']}",
            "body": "Reported by the offline model's scripted-reply mode.",
        }
        finding.update({k: item[k] for k in SCRIPTED_FIELDS if k in item})
        finding["line"] = int(finding["line"])
        out.append(finding)
    return out
