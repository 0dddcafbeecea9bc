"""What the offline model has learned about the repository, from the conversation alone: the file under review
(the first message and its read_file results), the signatures the diff changes, the callers grep found and the
caller files it read, and where the repository's tests mention a symbol.

Every fact that leads to a finding, or keeps one from being reported, is returned with the id of the tool call
whose result showed it, so the server's request log proves the model learned it through a tool call (the model
never opens the repository: it has no path to it, only the conversation).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from prfleet_local.model import callers, results
from prfleet_local.model.callers import SignatureChange

TEST_PATH = re.compile(r"(^|/)(tests?/|test_[^/]*$|[^/]*_test\.py$)")
TESTS_DIR = "tests"
TEST_GLOB = "**/test_*.py"
MAX_CALLER_FILES = 8


class Call(NamedTuple):
    """One tool call of the conversation with its result (the tool_result's text)."""

    tool: str
    args: dict[str, Any]
    result: str
    is_error: bool
    id: str


@dataclass
class FileText:
    """A file as far as the model has seen it: its lines by number, its total, where a cut read asks to go on."""

    lines: dict[int, str] = field(default_factory=dict)
    total: int = 0
    continue_at: list[int] = field(default_factory=list)
    read_ids: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every line 1..total seen: only then may the model trust a parse of the whole file."""
        return self.total > 0 and all(n in self.lines for n in range(1, self.total + 1))

    def text(self) -> str:
        """The lines seen, in order, with a blank for each line not seen."""
        return "\n".join(self.lines.get(n, "") for n in range(1, max(self.lines, default=0) + 1))


def file_text(calls: list[Call], path: str, first: FileText | None = None) -> FileText:
    """`path` merged from the first message's copy and every successful read_file of it."""
    out = FileText(dict(first.lines), first.total) if first else FileText()
    for call in calls:
        if call.tool != "read_file" or call.is_error:
            continue
        for read in results.file_reads(call.result):
            if read.path != path:
                continue
            out.lines.update(read.lines)
            out.total = max(out.total, read.total)
            out.read_ids.append(call.id)
            if read.next_start is not None:
                out.continue_at.append(read.next_start)
    return out


def public_symbols(text: str) -> list[str]:
    """Top-level public functions and classes of a Python file (none when it does not parse)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    return [
        n.name
        for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not n.name.startswith("_")
    ]


def symbols_pattern(symbols: list[str]) -> str:
    """One regular expression for every symbol as a whole word."""
    return r"\b(?:" + "|".join(re.escape(s) for s in symbols) + r")\b"


def caller_grep(name: str) -> dict[str, Any]:
    """The grep a reviewer runs for the callers of `name`: its calls in every Python file, with the lines."""
    return {"pattern": rf"\b{re.escape(name)}\(", "glob": "*.py", "output_mode": "content"}


def test_greps(symbols: list[str]) -> list[dict[str, Any]]:
    """The greps for where the repository's tests mention `symbols`: test files anywhere, and the tests/ dir."""
    pattern = symbols_pattern(symbols)
    return [
        {"pattern": pattern, "glob": TEST_GLOB, "output_mode": "content"},
        {"pattern": pattern, "path": TESTS_DIR, "output_mode": "content"},
    ]


def _grep_results(calls: list[Call], args: dict[str, Any]) -> list[tuple[Call, results.Grep]]:
    out = []
    for call in calls:
        if call.tool == "grep" and call.args == args and not call.is_error:
            parsed = results.grep(call.result)
            if parsed is not None:
                out.append((call, parsed))
    return out


def caller_paths(calls: list[Call], changes: list[SignatureChange], reviewed: str) -> list[str]:
    """Python files outside the file under review where grep found a call of a changed function, in the order
    grep listed them (bounded)."""
    out: list[str] = []
    for change in changes:
        for _call, grep in _grep_results(calls, caller_grep(change.name)):
            for hit in grep.lines:
                if hit.match and hit.path != reviewed and hit.path.endswith(".py") and hit.path not in out:
                    out.append(hit.path)
    return out[:MAX_CALLER_FILES]


@dataclass(frozen=True)
class Fact:
    """Something the model relies on, and the tool call whose result showed it."""

    kind: str  # "broken_call" | "tested"
    path: str
    line: int
    tool: str
    tool_use_id: str
    detail: str

    def as_log(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "line": self.line,
            "tool": self.tool,
            "tool_use_id": self.tool_use_id,
            "detail": self.detail,
        }


def broken_calls(
    calls: list[Call], changes: list[SignatureChange], reviewed: str
) -> tuple[list[dict[str, Any]], list[Fact]]:
    """Findings at each caller grep found whose call no longer fits the new signature, decided on the caller's
    file as read through read_file (whole, parsed, its imports tying the call to the changed module)."""
    findings: list[dict[str, Any]] = []
    facts: list[Fact] = []
    module = callers.module_of(reviewed)
    seen: set[tuple[str, int]] = set()
    for change in changes:
        for grep_call, grep in _grep_results(calls, caller_grep(change.name)):
            for hit in grep.lines:
                key = (hit.path, hit.line)
                if not hit.match or hit.path == reviewed or not hit.path.endswith(".py") or key in seen:
                    continue
                seen.add(key)
                caller = file_text(calls, hit.path)
                if not caller.complete:
                    continue  # never judged on part of a file
                try:
                    tree = ast.parse(caller.text())
                except SyntaxError:
                    continue
                bare, dotted = callers.bindings(tree, hit.path, module, change.name)
                for node in callers.calls_at(tree, hit.line, change.name, bare, dotted):
                    reason = callers.misfit(node, change)
                    if reason is None:
                        continue
                    call_src = ast.get_source_segment(caller.text(), node) or f"{change.name}(...)"
                    findings.append(_broken_finding(hit.path, hit.line, change, reviewed, call_src, reason))
                    facts.append(
                        Fact("broken_call", hit.path, hit.line, "grep", grep_call.id, call_src[:200])
                    )
                    facts += [
                        Fact("broken_call", hit.path, hit.line, "read_file", rid, "the caller's file")
                        for rid in caller.read_ids
                    ]
                    break
    return findings, facts


def _broken_finding(
    path: str, line: int, change: SignatureChange, reviewed: str, call_src: str, reason: str
) -> dict[str, Any]:
    one_line = " ".join(call_src.split())
    if len(one_line) > 160:
        one_line = one_line[:157] + "..."
    return {
        "path": path,
        "line": line,
        "severity": "high",
        "category": "bug",
        "title": f"Call to `{change.name}` no longer fits its new signature",
        "body": (
            f"This PR changes `{change.name}` in `{reviewed}` to `{change.shown()}`, but `{path}` (not part "
            f"of the PR) still calls it as `{one_line}`: {reason}. The call raises TypeError when it runs; "
            "update the caller in this PR."
        ),
        "relation": "affected",  # outside the diff, caused by the change
    }


def _in_tests(path: str) -> bool:
    return bool(TEST_PATH.search(path)) or path.startswith(TESTS_DIR + "/")


def test_mentions(calls: list[Call], reviewed: str, symbols: list[str]) -> tuple[dict[str, str], list[Fact]]:
    """What the repository's tests say, as far as the model read or grepped them: test path -> text, and a fact
    for each grep line that mentions one of the file's symbols."""
    texts: dict[str, list[str]] = {}
    facts: list[Fact] = []
    word = re.compile(symbols_pattern(symbols)) if symbols else None
    for call in calls:
        if call.is_error:
            continue
        if call.tool == "read_file":
            for read in results.file_reads(call.result):
                if read.path != reviewed and _in_tests(read.path):
                    texts.setdefault(read.path, []).extend(read.lines.values())
        elif call.tool == "grep":
            grep = results.grep(call.result)
            if grep is None:
                continue
            for hit in grep.lines:
                if hit.path == reviewed or not _in_tests(hit.path):
                    continue
                texts.setdefault(hit.path, []).append(hit.text)
                if word and hit.match and word.search(hit.text):
                    facts.append(Fact("tested", hit.path, hit.line, "grep", call.id, hit.text.strip()[:200]))
            for path in grep.paths:
                if path != reviewed and _in_tests(path) and call.args.get("pattern"):
                    texts.setdefault(path, []).append(_symbol_of(call.args["pattern"]))
                    facts.append(Fact("tested", path, 0, "grep", call.id, call.args["pattern"]))
    return {p: "\n".join(t) for p, t in texts.items()}, facts


def symbol_grep(symbol: str) -> dict[str, Any]:
    """A narrower grep for one symbol in the test files, when the combined one was cut short."""
    return {"pattern": rf"\b{re.escape(symbol)}\b", "glob": TEST_GLOB, "output_mode": "files_with_matches"}


def _symbol_of(pattern: str) -> str:
    """The symbol a symbol_grep pattern looks for (what a files_with_matches hit proves a test mentions)."""
    return re.sub(r"\\b", "", pattern).replace("\\", "")


def unresolved_after_cut(calls: list[Call], symbols: list[str], texts: dict[str, str]) -> list[str]:
    """Symbols no test text mentions yet while a test grep was cut short: each needs a grep of its own."""
    cut = any(g.truncated for args in test_greps(symbols) for _c, g in _grep_results(calls, args))
    if not cut:
        return []
    corpus = "\n".join(texts.values())
    return [s for s in symbols if not re.search(rf"\b{re.escape(s)}\b", corpus)]
