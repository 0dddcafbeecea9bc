"""The offline model's review policy: findings from a real static analysis (Python via `ast`, a small generic
analysis otherwise), deterministic. Being a static analyser it cannot be talked out of its findings, and it
reports the prompt-injection attempts it sees."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from typing import Any

from prfleet_local.model.wire import LABEL

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
    """One finding as report_findings takes it (`extra`: suggestion, relation)."""
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
                relation="affected",  # the PR's own text, not a line of the file
            )
        )
    return out[:10]


def touches(node: ast.AST, added: set[int] | None) -> bool:
    """Whether the PR's added lines fall in a definition (its decorators to its last line); every definition when
    the diff is unknown (`added` None)."""
    if added is None:
        return True
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])  # type: ignore[attr-defined]
    end = getattr(node, "end_lineno", None) or start
    return any(start <= n <= end for n in added)


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


def _is_def(node: ast.AST) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))


def reached_from(tree: ast.Module, roots: set[str]) -> set[str]:
    """The module's top-level functions and classes that `roots` use, directly or through one another.

    A test that calls `urlparse` runs the helpers `urlparse` calls in the same file (and the methods of a tested
    class run what they call): those helpers are exercised by that test even when no test names them, as a
    reviewer who reads the file sees. Only names used inside a definition count; a use from another module is
    beyond what one file shows."""
    defs = {n.name: n for n in tree.body if _is_def(n)}
    uses = {
        name: {x.id for x in ast.walk(node) if isinstance(x, ast.Name) and x.id in defs} - {name}
        for name, node in defs.items()
    }
    seen = {r for r in roots if r in defs}
    todo = list(seen)
    while todo:
        for used in uses[todo.pop()] - seen:
            seen.add(used)
            todo.append(used)
    return seen


def tests_python(
    path: str,
    tree: ast.Module,
    test_texts: dict[str, str],
    *,
    searched: bool = False,
    added: set[int] | None = None,
) -> list[dict[str, Any]]:
    """Public functions and classes the PR adds or changes (touches) that no test the model saw references, each
    with a concrete test idea; a name the PR does not touch is not the change's concern.

    `test_texts` holds what it saw of the tests (the PR's test files it read, and the lines grep found in the
    repository's tests when `searched`): a symbol an existing test uses is not reported as untested, nor one
    that a tested function or class of the same file calls (reached_from)."""
    out = []
    corpus = "\n".join(test_texts.values())
    where = (
        "No test in the repository (grep of its test files)" if searched else "No test among the PR's files"
    )
    named = {n.name for n in tree.body if _is_def(n) and re.search(rf"\b{re.escape(n.name)}\b", corpus)}
    exercised = reached_from(tree, named)
    for node, qual in _public_defs(tree):
        if "." in qual or qual in exercised or not touches(node, added):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = [a.arg for a in node.args.args if a.arg not in ("self", "cls")]
            call = f"{qual}({', '.join(args)})"
            body = (
                f"{where} references `{qual}`, nor anything in this file that calls it. Add e.g. `test_{qual}_typical` calling "
                f"`{call}` with representative values and asserting the result, plus "
                f"`test_{qual}_edge_cases` "
                "for empty, None and invalid inputs (expecting the documented exception)."
            )
        else:
            body = (
                f"{where} references `{qual}`, nor anything in this file that uses it. Add a test that constructs it and "
                "exercises each public method, including error paths."
            )
        out.append(_f(path, node.lineno, "medium", "tests", f"No test for `{qual}`", body))  # type: ignore[attr-defined]
    return out


def docs_python(path: str, tree: ast.Module, added: set[int] | None = None) -> list[dict[str, Any]]:
    """Public API the PR adds or changes (touches) without docstrings; the module's own docstring only for a
    module the PR adds (every line added)."""
    out = []
    defs = [(node, qual) for node, qual in _public_defs(tree) if touches(node, added)]
    last = max((getattr(n, "end_lineno", 0) or 0 for n in tree.body), default=0)
    new_module = added is None or all(n in added for n in range(1, last + 1))
    if defs and new_module and ast.get_docstring(tree) is None:
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
    agent: str,
    path: str,
    text: str,
    *,
    description: str = "",
    test_texts: dict[str, str] | None = None,
    complete: bool = True,
    searched: bool = False,
    added: set[int] | None = None,
) -> list[dict[str, Any]]:
    """All findings of one agent on one file (deterministic, sorted by line), each with its relation to the PR.

    `complete` says the model has seen every line 1..total: a file read only in part (in chunks or windows)
    never gets a whole-file conclusion such as "does not parse" (the gaps are what would not parse). `added`:
    the lines the PR adds (None: unknown, the whole file is the change); docs and tests report only the names
    it touches."""
    lines = text.splitlines()
    out: list[dict[str, Any]] = []
    if agent == "review":
        out += injection_findings(path, lines, description)
    if path.endswith(".py"):
        try:
            tree = ast.parse(text)
        except SyntaxError as exc:
            if agent == "review" and complete:
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
                out += tests_python(path, tree, test_texts or {}, searched=searched, added=added)
            elif agent == "docs":
                out += docs_python(path, tree, added)
    elif agent == "review":
        out += generic_review(path, lines)
    for f in out:
        f.setdefault("relation", relation(agent, f["line"], added))
    out.sort(key=lambda f: (f["line"], f["title"]))
    return out[:50]


def relation(agent: str, line: int, added: set[int] | None) -> str:
    """What the model says a finding of the file is: changed on an added line; elsewhere, a docs or tests
    finding is about a name the change touches (affected), a review finding an old problem (preexisting)."""
    if added is None or line in added:
        return "changed"
    return "affected" if agent in ("docs", "tests") else "preexisting"
