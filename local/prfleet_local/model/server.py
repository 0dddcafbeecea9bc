"""An offline stand-in for the Anthropic Messages API: deterministic, no network, no key, clearly labelled.

It speaks POST /v1/messages (JSON, no streaming) well enough for the real anthropic SDK and drives the prfleet
tool loop like a real model would: it reads the file under review with read_file (optionally in chunks or
windows; then get_diff, or list_changed_files and the PR's test files), then calls report_findings with
findings from a real static analysis (Python via `ast`; a small generic analysis otherwise), then ends its
turn. Being a static analyser it cannot be talked out of its findings, and it reports the prompt-injection
attempts it sees.

Usage follows the cache_control markers it is sent (prefix hashes with a 5-minute / 1-hour lifetime), and
faults (429, spend-limit 429, 529, 500, slow replies, truncated JSON, max_tokens and other stop reasons,
invalid reports) are injected per request number or with a seeded probability through a FaultPlan, settable at
start, with `set_faults()`, or with POST /_faults.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prfleet_local.model import providers

LABEL = "offline model"
FAULT_KINDS = (
    "429",
    "spend_limit",
    "529",
    "500",
    "slow",
    "truncated",
    "max_tokens",
    "refusal",
    "pause_turn",
    "context_exceeded",
    "stop_reason",
)
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


# ------------------------------------------------------------------------------------------------ fault plan


@dataclass
class FaultRule:
    """One injected fault: on the listed request numbers (1-based, counted from when the plan was set) or with
    the given probability (seeded RNG)."""

    kind: str
    requests: list[int] = field(default_factory=list)
    probability: float = 0.0
    retry_after: float | None = None  # seconds, for 429 / 529
    retry_after_ms: int | None = None
    delay: float = 0.0  # seconds, for "slow"
    stop_reason: str | None = None  # for kind "stop_reason": any value, even an unknown one

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")


@dataclass
class FaultPlan:
    """What the server does wrong, and how it explores: `read_chunks` splits read_file into N ranges and
    `read_windows` reads N windows instead (fixed iteration counts, for the caching benchmark);
    `invalid_reports` makes the first N reports invalid."""

    rules: list[FaultRule] = field(default_factory=list)
    seed: int = 0
    invalid_reports: int = 0
    read_chunks: int = 1
    read_windows: int = 0  # instead of the whole file, read N 30-line windows around what looks suspicious

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultPlan:
        """Build from JSON (POST /_faults, --faults)."""
        return cls(
            rules=[FaultRule(**r) for r in data.get("rules", [])],
            seed=int(data.get("seed", 0)),
            invalid_reports=int(data.get("invalid_reports", 0)),
            read_chunks=max(1, int(data.get("read_chunks", 1))),
            read_windows=max(0, int(data.get("read_windows", 0))),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------- analysis

_SECRET_NAME = re.compile(r"(password|passwd|secret|token|api_?key|private_?key)", re.IGNORECASE)
_SECRET_LINE = re.compile(
    r"""(password|passwd|secret|token|api_?key)["']?\s*[:=]\s*["'][^"'\s]{6,}["']""", re.IGNORECASE
)
_INJECTION = re.compile(
    r"ignore\s+(all\s+|any\s+)?(the\s+|your\s+)?(previous|prior|above|earlier|preceding)\s+instructions"
    r"|disregard\s+(all\s+|the\s+|your\s+)?(previous|prior|above|earlier)"
    r"|report\s+no\s+(findings|issues|problems)"
    r"|(&lt;|<)\s*/?\s*untrusted"
    r"|(&lt;|<)\s*/?\s*system\s*>"
    r"|^\s*#*\s*(system|assistant)\s*(prompt)?\s*:"
    r"|you\s+are\s+now\s+(a|an|the)\b"
    r"|new\s+instructions\s*:",
    re.IGNORECASE,
)
_TODO = re.compile(r"\b(TODO|FIXME|XXX|HACK)\b")
_SHELL_FUNCS = {"run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput"}


def _f(
    path: str, line: int, severity: str, category: str, title: str, body: str, **extra: str
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": path,
        "line": max(1, int(line)),
        "severity": severity,
        "category": category,
        "title": title,
        "body": body,
    }
    out.update(extra)
    return out


def injection_findings(path: str, lines: list[str], description: str) -> list[dict[str, Any]]:
    """Text that tries to instruct an AI reviewer, in the file or the PR description, becomes a finding."""
    out = []
    for n, line in enumerate(lines, 1):
        if _INJECTION.search(line):
            out.append(
                _f(
                    path,
                    n,
                    "high",
                    "prompt-injection",
                    "Prompt-injection attempt in the file",
                    f"Line {n} contains text addressed to an AI reviewer ({LABEL} flagged it; it was "
                    "treated as data, not as an instruction).",
                )
            )
    if any(_INJECTION.search(line) for line in description.splitlines()):
        out.append(
            _f(
                path,
                1,
                "high",
                "prompt-injection",
                "Prompt-injection attempt in the PR description",
                f"The PR title or description contains text addressed to an AI reviewer ({LABEL} treated "
                "it as data, not as an instruction).",
            )
        )
    return out[:10]


def _public_defs(tree: ast.Module) -> Iterable[tuple[ast.AST, str]]:
    for node in tree.body:
        if isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        ) and not node.name.startswith("_"):
            yield node, node.name
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and not sub.name.startswith(
                        "_"
                    ):
                        yield sub, f"{node.name}.{sub.name}"


def review_python(path: str, tree: ast.Module, lines: list[str]) -> list[dict[str, Any]]:
    """Bugs, security and error handling visible in the syntax tree."""
    out: list[dict[str, Any]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler):
            if node.type is None:
                out.append(
                    _f(
                        path,
                        node.lineno,
                        "medium",
                        "error-handling",
                        "Bare `except:`",
                        "A bare except also catches KeyboardInterrupt and SystemExit and hides bugs; catch "
                        "the specific exceptions you expect.",
                        suggestion=lines[node.lineno - 1].replace("except:", "except Exception:"),
                    )
                )
            elif len(node.body) == 1 and isinstance(node.body[0], ast.Pass):
                out.append(
                    _f(
                        path,
                        node.lineno,
                        "medium",
                        "error-handling",
                        "Exception silently swallowed",
                        "The handler does nothing, so failures vanish without a trace; log or re-raise.",
                    )
                )
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for default in [*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]]:
                mutable = isinstance(default, (ast.List, ast.Dict, ast.Set)) or (
                    isinstance(default, ast.Call)
                    and isinstance(default.func, ast.Name)
                    and default.func.id in ("list", "dict", "set")
                )
                if mutable:
                    out.append(
                        _f(
                            path,
                            default.lineno,
                            "medium",
                            "bug",
                            f"Mutable default argument in `{node.name}`",
                            "The default is created once and shared by every call; use None and create it "
                            "inside the function.",
                        )
                    )
            params = {a.arg for a in [*node.args.args, *node.args.kwonlyargs]}
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Assert)
                    and {n.id for n in ast.walk(stmt.test) if isinstance(n, ast.Name)} & params
                ):
                    out.append(
                        _f(
                            path,
                            stmt.lineno,
                            "low",
                            "error-handling",
                            "`assert` used to validate input",
                            "Assertions are removed under `python -O`; raise ValueError/TypeError instead.",
                        )
                    )
        elif isinstance(node, ast.Call):
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if isinstance(func, ast.Name) and name in ("eval", "exec"):
                out.append(
                    _f(
                        path,
                        node.lineno,
                        "high",
                        "security",
                        f"Use of `{name}`",
                        f"`{name}` runs arbitrary code; with any external input this is code injection. "
                        "Use ast.literal_eval or explicit parsing.",
                    )
                )
            if name in _SHELL_FUNCS and any(
                k.arg == "shell" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            ):
                out.append(
                    _f(
                        path,
                        node.lineno,
                        "high",
                        "security",
                        "Subprocess with `shell=True`",
                        "The command goes through the shell, so any interpolated value can inject commands; "
                        "pass an argument list and shell=False.",
                    )
                )
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str) and len(value.value) >= 4:
                for t in targets:
                    tname = (
                        t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else ""
                    )
                    if tname and _SECRET_NAME.search(tname):
                        out.append(
                            _f(
                                path,
                                node.lineno,
                                "high",
                                "security",
                                f"Hard-coded secret in `{tname}`",
                                "A credential in source control leaks to everyone with read access; load it "
                                "from the environment or a secrets manager and rotate this one.",
                            )
                        )
    return out


def tests_python(path: str, tree: ast.Module, test_texts: dict[str, str]) -> list[dict[str, Any]]:
    """Public functions and classes no test file of the PR references, each with a concrete test idea."""
    out = []
    corpus = "\n".join(test_texts.values())
    for node, qual in _public_defs(tree):
        if "." in qual:
            continue
        if re.search(rf"\b{re.escape(qual)}\b", corpus):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = [a.arg for a in node.args.args if a.arg not in ("self", "cls")]
            call = f"{qual}({', '.join(args)})"
            body = (
                f"No test among the PR's files references `{qual}`. Add e.g. `test_{qual}_typical` calling "
                f"`{call}` with representative values and asserting the result, plus "
                f"`test_{qual}_edge_cases` "
                "for empty, None and invalid inputs (expecting the documented exception)."
            )
        else:
            body = (
                f"No test among the PR's files references `{qual}`. Add a test that constructs it and "
                "exercises each public method, including error paths."
            )
        out.append(_f(path, node.lineno, "medium", "tests", f"No test for `{qual}`", body))  # type: ignore[attr-defined]
    return out


def docs_python(path: str, tree: ast.Module) -> list[dict[str, Any]]:
    """Public API without docstrings."""
    out = []
    defs = list(_public_defs(tree))
    if defs and ast.get_docstring(tree) is None:
        out.append(
            _f(
                path,
                1,
                "info",
                "docs",
                "Module has no docstring",
                "Say in one or two sentences what this module is for and why it exists.",
            )
        )
    for node, qual in defs:
        if ast.get_docstring(node) is None:  # type: ignore[arg-type]
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            out.append(
                _f(
                    path,
                    node.lineno,
                    "low",
                    "docs",
                    f"Public {kind} `{qual}` has no docstring",  # type: ignore[attr-defined]
                    f"Document what `{qual}` does, its arguments, return value and the exceptions it raises.",
                )
            )
    return out


def generic_review(path: str, lines: list[str]) -> list[dict[str, Any]]:
    """For non-Python files: leftover TODO/FIXME markers and credential-looking assignments."""
    out = []
    for n, line in enumerate(lines, 1):
        if _SECRET_LINE.search(line):
            out.append(
                _f(
                    path,
                    n,
                    "high",
                    "security",
                    "Hard-coded secret",
                    "A credential in source control leaks to everyone with read access; move it to a secret "
                    "store and rotate it.",
                )
            )
        elif _TODO.search(line):
            out.append(
                _f(
                    path,
                    n,
                    "info",
                    "maintainability",
                    "Unresolved TODO/FIXME",
                    "Track this in an issue or resolve it before merging.",
                )
            )
    return out


def analyse(
    agent: str, path: str, text: str, *, description: str = "", test_texts: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """All findings of one agent on one file (deterministic, sorted by line)."""
    lines = text.splitlines()
    out: list[dict[str, Any]] = []
    if agent == "review":
        out += injection_findings(path, lines, description)
    if path.endswith(".py"):
        try:
            tree = ast.parse(text)
        except SyntaxError as exc:
            if agent == "review":
                out.append(
                    _f(
                        path,
                        exc.lineno or 1,
                        "high",
                        "bug",
                        "File does not parse",
                        f"Python reports a syntax error: {exc.msg}.",
                    )
                )
            tree = None
        if tree is not None:
            if agent == "review":
                out += review_python(path, tree, lines)
            elif agent == "tests":
                out += tests_python(path, tree, test_texts or {})
            elif agent == "docs":
                out += docs_python(path, tree)
    elif agent == "review":
        out += generic_review(path, lines)
    out.sort(key=lambda f: (f["line"], f["title"]))
    return out[:50]


# --------------------------------------------------------------------------------------------- conversation

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


class OfflineModel:
    """The deterministic policy: which tool to call next, and the final report."""

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

    def next_turn(self, conv: Conversation) -> tuple[list[dict[str, Any]], str]:
        """(content blocks, stop_reason) for this request."""
        if conv.path is None:
            return [
                {"type": "text", "text": f"{LABEL}: no file under review found in the first message."}
            ], "end_turn"
        reports = [c for c in conv.calls if c[0] == "report_findings"]
        if reports and not reports[-1][3]:
            n = len(reports[-1][1].get("findings", []))
            return [
                {"type": "text", "text": f"{LABEL}: reported {n} finding(s) for {conv.path}."}
            ], "end_turn"
        done = {(c[0], json.dumps(c[1], sort_keys=True)) for c in conv.calls}
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
        for name, args in wanted:
            if (name, json.dumps(args, sort_keys=True)) not in done:
                return [
                    {"type": "text", "text": f"{LABEL}: calling {name}."},
                    {
                        "type": "tool_use",
                        "id": f"toolu_offline_{len(conv.calls) + 1:03d}",
                        "name": name,
                        "input": args,
                    },
                ], "tool_use"
        # Assemble the file under review from what read_file returned (else the first message's copy).
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
        return [
            {"type": "text", "text": f"{LABEL}: reporting findings."},
            {
                "type": "tool_use",
                "id": f"toolu_offline_{len(conv.calls) + 1:03d}",
                "name": "report_findings",
                "input": {"findings": findings, "summary": summary},
            },
        ], "tool_use"


# ------------------------------------------------------------------------------------------------ the cache


def _estimate(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


class PromptCache:
    """Prefix hashes at cache_control breakpoints (tools -> system -> messages), with their lifetimes."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.entries: dict[str, float] = {}
        self.lock = threading.Lock()

    @staticmethod
    def _flatten(body: dict[str, Any]) -> list[tuple[str, str | None]]:
        """[(canonical block json, ttl or None when the block carries no breakpoint)]"""
        blocks: list[tuple[str, str | None]] = []

        def add(kind: str, block: Any) -> None:
            b = dict(block) if isinstance(block, dict) else {"type": "text", "text": str(block)}
            cc = b.pop("cache_control", None)
            ttl = (cc.get("ttl") or "5m") if isinstance(cc, dict) else None
            blocks.append((json.dumps([kind, b], sort_keys=True, separators=(",", ":")), ttl))

        for tool in body.get("tools") or []:
            add("tool", tool)
        system = body.get("system")
        if isinstance(system, str) and system:
            add("system", system)
        elif isinstance(system, list):
            for b in system:
                add("system", b)
        for msg in body.get("messages") or []:
            content = msg.get("content")
            for b in content if isinstance(content, list) else [content]:
                add(str(msg.get("role")), b)
        return blocks

    def usage(self, body: dict[str, Any]) -> dict[str, Any]:
        blocks = self._flatten(body)
        tokens = [_estimate(b) for b, _ in blocks]
        cum = [0]
        for t in tokens:
            cum.append(cum[-1] + t)
        hashes = []
        h = hashlib.sha256(str(body.get("model")).encode()).hexdigest()
        for b, _ in blocks:
            h = hashlib.sha256((h + b).encode()).hexdigest()
            hashes.append(h)
        bps = [i for i, (_, ttl) in enumerate(blocks) if ttl]
        now = self.clock()
        with self.lock:
            read_upto = 0
            for bp in bps:
                for j in range(bp, max(-1, bp - 20), -1):
                    if self.entries.get(hashes[j], 0) > now:
                        read_upto = max(read_upto, j + 1)
                        break
            writes = {"5m": 0, "1h": 0}
            prev = read_upto
            for bp in bps:
                if bp + 1 > prev:
                    writes[blocks[bp][1] or "5m"] += cum[bp + 1] - cum[prev]
                    prev = bp + 1
                self.entries[hashes[bp]] = now + TTL_SECONDS.get(blocks[bp][1] or "5m", 300.0)
        cached_end = max(read_upto, (bps[-1] + 1) if bps else 0)
        return {
            "input_tokens": cum[-1] - cum[cached_end],
            "cache_read_input_tokens": cum[read_upto],
            "cache_creation_input_tokens": writes["5m"] + writes["1h"],
            "cache_creation": {
                "ephemeral_5m_input_tokens": writes["5m"],
                "ephemeral_1h_input_tokens": writes["1h"],
            },
        }


# ----------------------------------------------------------------------------------------------- the server


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": f"{message} ({LABEL})"}}


class ModelServer:
    """The offline Messages API on 127.0.0.1; start() returns the base URL for ANTHROPIC_BASE_URL."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host, self.port = host, port
        self.requests: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self.cache = PromptCache(clock)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._count = 0
        self.set_faults(faults or FaultPlan())
        self.aws = providers.AwsAccount.from_price_table(
            clock=clock
        )  # Bedrock / Claude Platform on AWS wires

    # -- lifecycle

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self._httpd.server_address[1]}"

    def start(self) -> str:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="offline-model", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_faults(self, plan: FaultPlan) -> None:
        """Replace the fault plan; its request numbers count from now."""
        with self._lock:
            self.plan = plan
            self._rng = random.Random(plan.seed)
            self._base = self._count

    # -- request handling

    def _fault_for(self) -> tuple[int, FaultRule | None]:
        with self._lock:
            self._count += 1
            n = self._count - self._base
            for rule in self.plan.rules:
                if n in rule.requests or (rule.probability and self._rng.random() < rule.probability):
                    return self._count, rule
            return self._count, None

    def handle(self, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes, float]:
        """(status, headers, body, delay before replying) for one POST /v1/messages."""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        number, rule = self._fault_for()
        rid = f"req_offline_{number:06d}"
        out_headers = {"request-id": rid, "content-type": "application/json"}

        def reply(status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> tuple:
            return status, {**out_headers, **(extra or {})}, json.dumps(payload).encode(), delay

        delay = rule.delay if rule and rule.kind == "slow" else 0.0
        if not headers.get("x-api-key") and not headers.get("authorization"):
            return reply(401, _error("authentication_error", "x-api-key header is required"))
        if not headers.get("anthropic-version"):
            return reply(400, _error("invalid_request_error", "anthropic-version header is required"))
        problem = _validate(body)
        if problem:
            return reply(400, _error("invalid_request_error", problem))
        with self._lock:
            self.requests.append(body)
        if rule and rule.kind in ("429", "spend_limit"):
            extra = {}
            if rule.retry_after is not None:
                extra["retry-after"] = str(rule.retry_after)
            if rule.retry_after_ms is not None:
                extra["retry-after-ms"] = str(rule.retry_after_ms)
            msg = (
                "Your organization has reached its monthly spend limit; raise it in the console"
                if rule.kind == "spend_limit"
                else "Number of request tokens has exceeded your rate limit"
            )
            return reply(429, _error("rate_limit_error", msg), extra)
        if rule and rule.kind == "529":
            extra = {"retry-after": str(rule.retry_after)} if rule.retry_after is not None else {}
            return reply(529, _error("overloaded_error", "Overloaded"), extra)
        if rule and rule.kind == "500":
            return reply(500, _error("api_error", "Internal server error"))
        conv = Conversation.parse(body)
        content, stop = OfflineModel(self.plan).next_turn(conv)
        if rule and rule.kind in ("max_tokens", "refusal", "pause_turn", "context_exceeded", "stop_reason"):
            stop = {
                "max_tokens": "max_tokens",
                "refusal": "refusal",
                "pause_turn": "pause_turn",
                "context_exceeded": "model_context_window_exceeded",
            }.get(rule.kind, rule.stop_reason or "")
            content = [{"type": "text", "text": f"{LABEL}: stopped with {stop} (injected)."}]
        output_tokens = _estimate(json.dumps(content))
        if output_tokens > int(body["max_tokens"]) and stop != "max_tokens":
            stop, output_tokens = "max_tokens", int(body["max_tokens"])
            content = [{"type": "text", "text": f"{LABEL}: output cut at max_tokens."}]
        usage = self.cache.usage(body)
        usage["output_tokens"] = output_tokens
        message = {
            "id": f"msg_offline_{number:06d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        with self._lock:
            self.responses.append(message)
        status, hdrs, payload, delay = reply(200, message)
        if rule and rule.kind == "truncated":
            payload = payload[: len(payload) // 2]
        return status, hdrs, payload, delay


def _validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: field required"
    if (
        isinstance(body.get("max_tokens"), bool)
        or not isinstance(body.get("max_tokens"), int)
        or body["max_tokens"] < 1
    ):
        return "max_tokens: must be a positive integer"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    if messages[0].get("role") != "user":
        return "messages: the first message must use the user role"
    if body.get("stream"):
        return f"stream: streaming is not supported by the {LABEL}"
    count = json.dumps(body).count('"cache_control"')
    if count > 4:
        return f"A maximum of 4 blocks with cache_control may be provided. Found {count}."
    return None


class _Handler(BaseHTTPRequestHandler):
    owner: ModelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        return

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = self.path.split("?", 1)[0]
        if path == "/_faults":
            try:
                self.owner.set_faults(FaultPlan.from_dict(json.loads(raw or b"{}")))
            except (ValueError, TypeError) as exc:
                self._send(
                    400,
                    {"content-type": "application/json"},
                    json.dumps(_error("invalid_request_error", str(exc))).encode(),
                )
                return
            self._send(
                200, {"content-type": "application/json"}, json.dumps(self.owner.plan.to_dict()).encode()
            )
            return
        routed = providers.dispatch(  # an AWS provider's wire in front of handle() (providers.py)
            self.owner, self.owner.aws, method="POST", path=self.path, headers=headers, raw=raw
        )
        if routed is not None:
            status, out, payload, delay = routed
            if delay:
                self.owner._stopping.wait(delay)
            self._send(status, out, payload)
            return
        if path != "/v1/messages":
            self._send(
                404,
                {"content-type": "application/json"},
                json.dumps(_error("not_found_error", f"no route {path}")).encode(),
            )
            return
        status, out, payload, delay = self.owner.handle(headers, raw)
        if delay:
            self.owner._stopping.wait(delay)
        self._send(status, out, payload)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/_faults":
            self._send(
                200, {"content-type": "application/json"}, json.dumps(self.owner.plan.to_dict()).encode()
            )
        else:
            self._send(
                200, {"content-type": "application/json"}, json.dumps({"ok": True, "label": LABEL}).encode()
            )


def main(argv: list[str] | None = None) -> int:
    """Run the offline model server standalone: python -m prfleet_local.model.server --port P."""
    parser = argparse.ArgumentParser(description=f"prfleet {LABEL} server (Anthropic Messages API stand-in)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--faults", help="FaultPlan as JSON", default=None)
    args = parser.parse_args(argv)
    plan = FaultPlan.from_dict(json.loads(args.faults)) if args.faults else None
    server = ModelServer(args.host, args.port, faults=plan)
    print(
        f"{LABEL} listening on {server.start()}  (export ANTHROPIC_BASE_URL=... ANTHROPIC_API_KEY=offline)",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
