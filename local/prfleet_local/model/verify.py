"""The offline verifier: how the offline model answers prfleet's verify run (agents/verify.py), deterministically.

It decides ONLY from tool results it asks for, never from the candidates' own code excerpts (which it reads as
claims): for each candidate it reads the file around the candidate's line (read_file with start_line/end_line),
greps the repository for the name of a "No test for `X`" candidate, and greps the candidate's file for the
definition of a "... `X` has no docstring" candidate. Then, in the candidates' order (the most important first):

- drop a candidate whose file or line is not there (read_file refused it, or the line is past the end), or whose
  names (the `backticked` words of its title, the last dotted part) are not on that line as read;
- drop a "No test for `X`" when grep finds X in a test file of the repository (TEST_PATH, not the file itself);
- drop a docstring candidate when grep finds no definition of X on its line;
- merge a kept candidate into an earlier kept one with the same path, line and category, or the same path and
  normalised title (the earlier one absorbs it: `merges`);
- drop a candidate of the same category and title shape (its `backticked` names aside) as a finding the team
  turned down lately (the first message's team_rejections block, issue 25): that is read from the prompt, as a
  real model reads it, not from the repository;
- keep the rest with their severity (confidence OFFLINE_CONFIDENCE: the offline model does not estimate one).

Every verdict is a Fact naming the tool_use whose result decided it (model_log.py keeps the result), so a test
can prove the verifier learned the repository only through its tool calls. In scripted mode (FaultPlan.scripted)
an item with "agent": "verify" and the candidate's path and line (optionally its title) scripts that candidate's
verdict: "decision" (keep / drop, default drop), "reason", "severity", "confidence", and "merge_into" (the line of
a kept candidate of the same path that absorbs it); unscripted candidates are judged as above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from prfleet_local.model import results, tokens
from prfleet_local.model.faults import FaultPlan
from prfleet_local.model.learned import TEST_PATH, Call, Fact
from prfleet_local.model.policy import Conversation, Turn
from prfleet_local.model.results import blocks, text_of
from prfleet_local.model.wire import LABEL

AGENT = "verify"  # the agent prfleet's verify prompt names ("You are the verify agent")
RADIUS = 3  # lines read each side of a candidate's line
OFFLINE_CONFIDENCE = 0.8
_NAMES = re.compile(r"`([^`\s]+)`")
_NO_TEST = re.compile(r"^No test for `([^`]+)`")
_NO_DOC = re.compile(r"`([^`]+)` has no docstring")


@dataclass(frozen=True)
class Candidate:
    """One candidate as the first message lists it (its attributes; the title is the block's first line)."""

    id: str
    path: str
    line: int
    category: str
    severity: str
    title: str

    @property
    def names(self) -> list[str]:
        """The names its title is about (`backticked`, the last dotted part)."""
        return [n.rsplit(".", 1)[-1] for n in _NAMES.findall(self.title)]

    def read_args(self) -> dict[str, Any]:
        return {"path": self.path, "start_line": max(1, self.line - RADIUS), "end_line": self.line + RADIUS}

    def greps(self) -> list[dict[str, Any]]:
        """The greps this candidate needs: tests mentioning an untested name, or the definition of an
        undocumented one in its own file."""
        untested, undocumented = _NO_TEST.search(self.title), _NO_DOC.search(self.title)
        if untested:
            name = untested.group(1).rsplit(".", 1)[-1]
            return [{"pattern": rf"\b{re.escape(name)}\b", "output_mode": "files_with_matches"}]
        if undocumented:
            name = undocumented.group(1).rsplit(".", 1)[-1]
            pattern = rf"^\s*(async\s+def|def|class)\s+{re.escape(name)}\b"
            return [{"pattern": pattern, "path": self.path, "output_mode": "content"}]
        return []


def candidates(body: dict[str, Any]) -> list[Candidate]:
    """The candidates of the verify run's first user message, in order."""
    messages = body.get("messages") or []
    first = text_of(messages[0].get("content")) if messages else ""
    out = []
    for attrs, text in blocks("candidate", first):
        title = text.split("\n", 1)[0].removeprefix("Title: ").strip()
        out.append(
            Candidate(
                attrs.get("id", ""),
                attrs.get("path", ""),
                int(attrs.get("line", "0") or 0),
                attrs.get("category", ""),
                attrs.get("severity", ""),
                title,
            )
        )
    return out


_REJECTED = re.compile(r"^- \[([^/\]]*)/([^\]]*)\] (.*?): (.*) \(👍 \d+, 👎 (\d+)\)$")


def rejections(body: dict[str, Any]) -> dict[tuple[str, str], tuple[str, int]]:
    """The team's recent rejections in the first message, by (category, title shape): (title, 👎 count)."""
    messages = body.get("messages") or []
    first = text_of(messages[0].get("content")) if messages else ""
    out: dict[tuple[str, str], tuple[str, int]] = {}
    for _, text in blocks("team_rejections", first):
        for line in text.splitlines():
            m = _REJECTED.match(line.strip())
            if m:
                out.setdefault((m.group(2), _shape(m.group(4))), (m.group(4), int(m.group(5))))
    return out


def _shape(title: str) -> str:
    """A title with its `backticked` names masked: 'No test for `a`' and 'No test for `b`' are one kind."""
    return _norm(_NAMES.sub("`…`", title))


def _call(conv: Conversation, tool: str, args: dict[str, Any]) -> Call | None:
    return next((c for c in conv.calls if c.tool == tool and c.args == args), None)


def _judge(c: Candidate, conv: Conversation) -> tuple[str, str, Fact | None]:
    """(decision, reason, the fact behind it) for one candidate, from the tool results alone."""
    read = _call(conv, "read_file", c.read_args())
    if read is None:
        return "keep", "not read (kept as reported)", None

    def fact(call: Call, detail: str) -> Fact:
        return Fact("verdict", c.path, c.line, call.tool, call.id, f"{c.id}: {detail}")

    if read.is_error:
        reason = f"read_file refused {c.path}:{c.line}: {read.result.strip()[:160]}"
        return "drop", reason, fact(read, reason)
    seen = next((r for r in results.file_reads(read.result) if r.path == c.path), None)
    text = seen.lines.get(c.line) if seen else None
    if text is None:
        reason = f"line {c.line} is not in {c.path} as read"
        return "drop", reason, fact(read, reason)
    missing = [n for n in c.names if not re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text)]
    if c.names and len(missing) == len(c.names):
        reason = f"`{missing[0]}` is not on {c.path}:{c.line} (it reads `{text.strip()[:80]}`)"
        return "drop", reason, fact(read, reason)
    for args in c.greps():
        grep = _call(conv, "grep", args)
        found = results.grep(grep.result) if grep is not None and not grep.is_error else None
        if grep is None or found is None:
            continue
        if args.get("output_mode") == "files_with_matches":
            tests = [p for p in found.paths if TEST_PATH.search(p) and p != c.path]
            if tests:
                reason = f"`{c.names[0]}` is exercised by {', '.join(tests[:3])} (grep)"
                return "drop", reason, fact(grep, reason)
        elif not any(g.match and g.path == c.path and g.line == c.line for g in found.lines):
            reason = f"no definition of `{c.names[0]}` at {c.path}:{c.line} (grep)"
            return "drop", reason, fact(grep, reason)
    reason = f"confirmed at {c.path}:{c.line}: `{text.strip()[:80]}`"
    return "keep", reason, fact(read, reason)


def _scripted(plan: FaultPlan, c: Candidate) -> dict[str, Any] | None:
    """The scripted verdict of a candidate (FaultPlan.scripted items with agent "verify"), if any."""
    for item in plan.scripted or []:
        if item.get("agent") != "verify" or item.get("path") != c.path or int(item["line"]) != c.line:
            continue
        if "title" in item and item["title"] != c.title:
            continue
        return item
    return None


def _norm(title: str) -> str:
    return " ".join(title.lower().split())


def verdicts(
    plan: FaultPlan,
    cands: list[Candidate],
    conv: Conversation,
    rejected: dict[tuple[str, str], tuple[str, int]] | None = None,
) -> tuple[list[dict[str, Any]], list[Fact]]:
    """The report_verdicts items for `cands` (`rejected`: the team's rejections, `rejections`), and the facts
    behind them."""
    out: dict[str, dict[str, Any]] = {}
    facts: list[Fact] = []
    keepers: dict[tuple[str, ...], str] = {}
    by_line: dict[tuple[str, int], str] = {}
    for c in cands:
        script = _scripted(plan, c)
        if script is not None:
            into = script.get("merge_into")
            if into is not None and (c.path, int(into)) in by_line:
                out[by_line[(c.path, int(into))]]["merges"].append(c.id)
                continue
            item = {"id": c.id, "decision": str(script.get("decision", "drop")), "merges": []}
            item["reason"] = str(script.get("reason", f"{LABEL}: scripted verdict"))
            item.update({k: script[k] for k in ("severity", "confidence") if k in script})
            out[c.id] = item
            if item["decision"] == "keep":
                by_line.setdefault((c.path, c.line), c.id)
            continue
        turned_down = (rejected or {}).get((c.category, _shape(c.title)))
        if turned_down is not None:
            title, down = turned_down
            reason = f"the team turned down a finding like it lately: {title} (👎 {down})"
            out[c.id] = {"id": c.id, "decision": "drop", "reason": reason, "merges": []}
            continue
        decision, reason, fact = _judge(c, conv)
        if fact is not None:
            facts.append(fact)
        if decision == "keep":
            same = keepers.get(("at", c.path, str(c.line), c.category)) or keepers.get(
                ("title", c.path, _norm(c.title))
            )
            if same is not None:
                out[same]["merges"].append(c.id)
                continue
            keepers.setdefault(("at", c.path, str(c.line), c.category), c.id)
            keepers.setdefault(("title", c.path, _norm(c.title)), c.id)
            by_line.setdefault((c.path, c.line), c.id)
            out[c.id] = {
                "id": c.id,
                "decision": "keep",
                "reason": reason,
                "confidence": OFFLINE_CONFIDENCE,
                "merges": [],
            }
        else:
            out[c.id] = {"id": c.id, "decision": "drop", "reason": reason, "merges": []}
    items = []
    for item in out.values():
        if not item["merges"]:
            item = {k: v for k, v in item.items() if k != "merges"}
        items.append(item)
    return items, facts


def next_turn(plan: FaultPlan, conv: Conversation, body: dict[str, Any]) -> Turn:
    """The verifier's turn: the reads and greps it still needs (all at once: they are independent), then
    report_verdicts, then the end of its turn."""
    reports = conv.of("report_verdicts")
    if reports and not reports[-1].is_error:
        n = len(reports[-1].args.get("verdicts", []))
        return Turn([{"type": "text", "text": f"{LABEL}: {n} verdict(s) reported."}], "end_turn", "end")
    cands = candidates(body)
    wanted: list[tuple[str, dict[str, Any]]] = []
    for c in cands:
        for name, args in [("read_file", c.read_args()), *(("grep", g) for g in c.greps())]:
            if (name, args) not in wanted and _call(conv, name, args) is None and name in conv.tools:
                wanted.append((name, args))
    if wanted:
        uses = [
            {"type": "tool_use", "id": f"toolu_offline_{len(conv.calls) + k:03d}", "name": n, "input": a}
            for k, (n, a) in enumerate(wanted, 1)
        ]
        return Turn(uses, "tool_use", "plan" if not conv.calls else "tool")
    items, facts = verdicts(plan, cands, conv, rejections(body))
    summary = f"{LABEL}: {len(items)} verdict(s) from reads and greps of the repository."
    use = {
        "type": "tool_use",
        "id": f"toolu_offline_{len(conv.calls) + 1:03d}",
        "name": "report_verdicts",
        "input": {"verdicts": items, "summary": summary},
    }
    work = sum(tokens.count(c.result) for c in conv.calls)
    return Turn([use], "tool_use", "report", work_tokens=work, facts=facts)
