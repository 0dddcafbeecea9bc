"""The offline model's request log: per answered request, what the model asked for and the facts from tool results
its report relied on. It is how a test proves the model learned about the repository only through the tool calls it
made: every fact names the tool_use whose result showed it, and that result is kept as the request carried it."""

from __future__ import annotations

import threading
from typing import Any

from prfleet_local.model.policy import Conversation, Turn


class ModelLog:
    """Entries in the order the requests were answered (thread-safe: the server answers on several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    def record(self, request_id: str, conv: Conversation, turn: Turn) -> None:
        """One entry: `request_id`, `agent`, `path` (the file under review), `asked` (each tool_use: id, name,
        input), `tool_results` (the tool_use ids whose results the request carried, with the tool's name),
        `facts` (each fact a report relied on: kind, path, line, the tool and the `tool_use_id` whose result
        showed it), `evidence` (the raw text of each result a fact cites), `findings` (path, line, title) and, for the verify
        run, `verdicts` (id, decision, reason; each has a fact naming the tool result that decided it)."""
        uses = [b for b in turn.content if b["type"] == "tool_use"]
        reported = next((b["input"] for b in uses if b["name"] == "report_findings"), None)
        judged = next((b["input"] for b in uses if b["name"] == "report_verdicts"), None)
        cited = {f.tool_use_id for f in turn.facts}
        entry = {
            "request_id": request_id,
            "agent": conv.agent,
            "path": conv.path,
            "asked": [
                {"id": b["id"], "name": b["name"], "input": b["input"]}
                for b in uses
                if b["name"] not in ("report_findings", "report_verdicts")
            ],
            "tool_results": [{"tool_use_id": c.id, "tool": c.tool} for c in conv.calls],
            "facts": [f.as_log() for f in turn.facts],
            "evidence": {c.id: c.result for c in conv.calls if c.id in cited},
            "findings": [
                {"path": f.get("path"), "line": f.get("line"), "title": f.get("title")}
                for f in (reported or {}).get("findings", [])
            ],
            "verdicts": [
                {"id": v.get("id"), "decision": v.get("decision"), "reason": v.get("reason")}
                for v in (judged or {}).get("verdicts", [])
            ],
        }
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[dict[str, Any]]:
        """A copy of every entry so far."""
        with self._lock:
            return [dict(e) for e in self._entries]
