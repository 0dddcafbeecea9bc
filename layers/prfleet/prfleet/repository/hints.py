"""Where to look, given up front: the files that import the module under review and the test files that mention
it or its changed symbols, so an agent spends its first turns reading them rather than finding them.

Cheap by design: one pass over the view's searchable code files (a substring check before any parsing), bounded in
bytes and time, at most 10 importers and 10 test files. Over the fallback view (no snapshot) nothing is read for
hints (each file would cost a GitHub request, the tree one more): only the PR's own test files named after the
module are listed, and the block says the rest was not computed.
"""

from __future__ import annotations

import ast
import posixpath
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prfleet.repository.view import MAX_READ_BYTES, RepoView

MAX_IMPORTERS = 10
MAX_TESTS = 10
MAX_SYMBOLS = 20
MAX_SCAN_BYTES = 128 * 1024 * 1024
MAX_SECONDS = 5.0

_PY = (".py", ".pyi")
_JS = (".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx", ".mts", ".cts")
_TEST = re.compile(
    r"(^|/)(tests?|__tests__|spec|specs)/|(^|/)test_[^/]*$|_test\.[^/]+$|\.(test|spec)\.[^/]+$|(^|/)conftest\.py$"
)
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")
_PY_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w. \t,]+)", re.M)
_PY_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]+)", re.M)
_JS_IMPORT = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*|\brequire\s*\(\s*)['"](\.{1,2}/[^'"\n]*)['"]""")
_DEF = re.compile(
    r"^[ \t]*(?:export[ \t]+)?(?:default[ \t]+)?(?:async[ \t]+)?(?:def|class|function\*?|func|fn)[ \t]+"
    r"([A-Za-z_$][\w$]*)"
    r"|^[ \t]*(?:export[ \t]+)?(?:const|let|var)[ \t]+([A-Za-z_$][\w$]*)[ \t]*=[ \t]*(?:async[ \t]*)?"
    r"(?:\(|function\b|[A-Za-z_$][\w$]*[ \t]*=>)",
    re.M,
)


def is_test_path(path: str) -> bool:
    """Whether a path looks like a test file (tests/ or test/ directories, test_*.py, *_test.*, *.test.*)."""
    return _TEST.search(path) is not None


def added_lines(diff: str) -> set[int]:
    """The new-side line numbers the unified diff adds."""
    out: set[int] = set()
    line = 0
    for row in (diff or "").split("\n"):
        m = _HUNK.match(row)
        if m:
            line = int(m.group(1))
        elif line and row.startswith("+"):
            out.add(line)
            line += 1
        elif line and row.startswith(" "):
            line += 1
    return out


def changed_symbols(path: str, text: str, added: set[int]) -> list[str]:
    """Functions and classes whose definitions overlap the added lines (Python through ast, else a regex for
    def/class/function), innermost last, without dunders."""
    if not added:
        return []
    spans: list[tuple[str, int, int]] = []
    tree = None
    if path.endswith(_PY):
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            tree = None
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                spans.append((node.name, start, node.end_lineno or node.lineno))
    else:
        starts = [(m.group(1) or m.group(2), text.count("\n", 0, m.start()) + 1) for m in _DEF.finditer(text)]
        total = text.count("\n") + 1
        for i, (name, start) in enumerate(starts):
            end = starts[i + 1][1] - 1 if i + 1 < len(starts) else total
            spans.append((name, start, end))
    names: list[str] = []
    for name, start, end in spans:
        if name.startswith("__") and name.endswith("__"):
            continue
        if name not in names and any(start <= n <= end for n in added):
            names.append(name)
    return names[:MAX_SYMBOLS]


# ----------------------------------------------------------------------------------------------- imports


def _py_module(path: str) -> list[str]:
    parts = path.rsplit(".", 1)[0].split("/")
    return parts[:-1] if parts[-1] == "__init__" else parts


def _py_imports(importer: str, text: str) -> set[str]:
    """Every dotted module the file may import (a `from a import b` yields a and a.b), relative ones resolved
    against the importer's package."""
    out: set[str] = set()
    for m in _PY_IMPORT.finditer(text):
        for item in m.group(1).split(","):
            name = item.split(" as ")[0].strip()
            if name:
                out.add(name)
    package = importer.rsplit(".", 1)[0].split("/")[:-1]
    for m in _PY_FROM.finditer(text):
        dots, base, names = m.group(1), m.group(2), m.group(3).strip("()")
        if dots:
            up = len(dots) - 1
            if up > len(package):
                continue
            root = package[: len(package) - up]
            base = ".".join([*root, *([base] if base else [])])
        if not base:
            continue
        out.add(base)
        for item in names.replace("\n", " ").split(","):
            name = item.split(" as ")[0].strip()
            if name and name != "*" and name.isidentifier():
                out.add(f"{base}.{name}")
    return out


def _py_matches(target: list[str], imported: set[str], relative_ok: bool = True) -> bool:
    full = ".".join(target)
    for mod in imported:
        if mod == full:
            return True
        if "." in mod and full.endswith("." + mod):
            return True  # imported from a source root below the repository's (src/, lib/, ...)
        if "." not in mod and len(target) == 2 and target[0] in ("src", "lib") and target[1] == mod:
            return True
    return False


def _js_stem(path: str) -> str:
    for ext in _JS:
        if path.endswith(ext):
            return path[: -len(ext)]
    return path


def _js_matches(target: str, importer: str, text: str) -> bool:
    stem = _js_stem(target)
    index_dir = posixpath.dirname(target) if posixpath.basename(stem) == "index" else None
    here = posixpath.dirname(importer)
    for m in _JS_IMPORT.finditer(text):
        resolved = posixpath.normpath(posixpath.join(here, m.group(1)))
        if resolved in (target, stem) or _js_stem(resolved) == stem or (index_dir and resolved == index_dir):
            return True
    return False


# ----------------------------------------------------------------------------------------------- the scan


@dataclass
class Hints:
    """What where_to_look found, and `render` for the first message."""

    path: str
    module: str
    symbols: list[str]
    importers: list[str] = field(default_factory=list)
    tests: list[tuple[str, bool, list[str]]] = field(
        default_factory=list
    )  # path, imports it, names mentioned
    more_importers: int = 0
    more_tests: int = 0
    note: str | None = None

    def render(self) -> str:
        """The text of the where-to-look block (the caller wraps it in an untrusted block)."""
        rows = [f"Files that import {self.path} ({len(self.importers) + self.more_importers} found):"]
        rows += [f"- {p}" for p in self.importers] or ["- (none found)"]
        if self.more_importers:
            rows.append(f"- ... and {self.more_importers} more (grep for them)")
        named = ", ".join([self.module, *self.symbols])
        rows.append(
            f"Test files that import it or mention {named} ({len(self.tests) + self.more_tests} found):"
        )
        for p, imports, names in self.tests:
            why = ["imports it"] if imports else []
            if names:
                why.append("mentions " + ", ".join(names))
            rows.append(f"- {p}" + (f" ({'; '.join(why)})" if why else " (named after the module)"))
        if not self.tests:
            rows.append("- (none found)")
        if self.more_tests:
            rows.append(f"- ... and {self.more_tests} more (grep for them)")
        if self.symbols:
            rows.append(
                "Changed symbols (definitions overlapping the added lines): " + ", ".join(self.symbols)
            )
        if self.note:
            rows.append(f"Note: {self.note}")
        return "\n".join(rows)


def _module_name(path: str) -> str:
    if path.endswith(_PY):
        parts = _py_module(path)
        return parts[-1] if parts else path
    stem = posixpath.basename(_js_stem(path))
    return posixpath.basename(posixpath.dirname(path)) if stem == "index" else stem.split(".")[0]


def _words(names: Iterable[str]) -> re.Pattern[str] | None:
    names = [n for n in names if n]
    if not names:
        return None
    return re.compile(r"(?<![\w$])(" + "|".join(re.escape(n) for n in names) + r")(?![\w$])")


def where_to_look(
    view: RepoView, path: str, text: str, diff: str, *, clock: Callable[[], float] = time.monotonic
) -> Hints:
    """Importers of `path` and the test files that mention its module or changed symbols, from one bounded pass
    over the view's searchable files (nothing read over a fallback view)."""
    module = _module_name(path)
    symbols = changed_symbols(path, text, added_lines(diff))
    hints = Hints(path=path, module=module, symbols=symbols)
    is_py, is_js = path.endswith(_PY), path.endswith(_JS)
    target = _py_module(path)
    mention = _words([module, *symbols])
    read_bytes = getattr(view, "read_bytes", None)
    if not callable(read_bytes):  # the fallback: every file would cost a request, the tree one more
        by_name = [
            f.path
            for f in getattr(view, "changed", list)()
            if f.path != path and is_test_path(f.path) and module in posixpath.basename(f.path)
        ]
        hints.tests = [(p, False, []) for p in by_name[:MAX_TESTS]]
        hints.more_tests = max(0, len(by_name) - MAX_TESTS)
        why = getattr(view, "reason", None) or "no snapshot of the repository"
        hints.note = (
            f"importers and tests were not computed ({why}): only the PR's changed test files named after the "
            "module are listed; use grep and glob to find the rest"
        )
        return hints
    importers: list[str] = []
    tests: list[tuple[int, str, bool, list[str]]] = []
    scanned, started, stopped = 0, clock(), False
    for p in view.searchable():
        if p == path:
            continue
        test = is_test_path(p)
        code = p.endswith(_PY) if is_py else p.endswith(_JS) if is_js else False
        if not (test or code):
            continue
        if scanned > MAX_SCAN_BYTES or clock() - started > MAX_SECONDS:
            stopped = True
            break
        data = read_bytes(p, MAX_READ_BYTES)
        if not data or b"\x00" in data[:8192]:
            continue
        scanned += len(data)
        body = data.decode("utf-8", "replace")
        imports = False
        if code and module in body:  # every way to import it names its module (or its package's last part)
            imports = _py_matches(target, _py_imports(p, body)) if is_py else _js_matches(path, p, body)
        if test:
            names = sorted({m.group(1) for m in mention.finditer(body)}) if mention else []
            if imports or [n for n in names if n != module] or (names and module in p):
                score = (2 if imports else 0) + len([n for n in names if n != module])
                tests.append((score, p, imports, names))
            elif module in posixpath.basename(p):
                tests.append((0, p, False, []))
        elif imports:
            importers.append(p)
    hints.importers = importers[:MAX_IMPORTERS]
    hints.more_importers = max(0, len(importers) - MAX_IMPORTERS)
    tests.sort(key=lambda t: (-t[0], t[1]))
    hints.tests = [(p, imp, names) for _s, p, imp, names in tests[:MAX_TESTS]]
    hints.more_tests = max(0, len(tests) - MAX_TESTS)
    if stopped:
        hints.note = "the scan stopped at its time or size budget; grep for more"
    return hints
