"""Calls a PR breaks: which top-level functions the diff changes the signature of, and whether a call found
elsewhere in the repository still fits the new signature. Everything is decided with `ast` and
`inspect.Signature.bind` (Python's own argument binding), never guessed: a call the model cannot parse, or whose
arguments it cannot count (`*args`, `**kwargs`), or that it cannot tie to the changed module through the caller's
imports, is not reported.
"""

from __future__ import annotations

import ast
import inspect
import posixpath
import re
from dataclasses import dataclass

_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")
_DEF = re.compile(r"^(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(")
_MAX_DEF_LINES = 40
_DEFAULT = object()  # what a parameter with a default has as default; its value never matters for binding


@dataclass(frozen=True)
class SignatureChange:
    """A top-level function whose parameters the PR changed: its name, both signatures, and the new def's line."""

    name: str
    old: inspect.Signature
    new: inspect.Signature
    line: int

    def shown(self) -> str:
        """The new signature as Python writes it, defaults shown as `=...`."""
        return f"{self.name}{self.new}".replace(f"={_DEFAULT!r}", "=...")


def signature_of(args: ast.arguments) -> inspect.Signature:
    """The binding rules of a def's parameter list (names, kinds, which have defaults)."""
    p = inspect.Parameter
    out = []
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    for i, a in enumerate(positional):
        kind = p.POSITIONAL_ONLY if i < len(args.posonlyargs) else p.POSITIONAL_OR_KEYWORD
        out.append(p(a.arg, kind, default=_DEFAULT if i >= first_default else p.empty))
    if args.vararg:
        out.append(p(args.vararg.arg, p.VAR_POSITIONAL))
    for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        out.append(p(a.arg, p.KEYWORD_ONLY, default=p.empty if d is None else _DEFAULT))
    if args.kwarg:
        out.append(p(args.kwarg.arg, p.VAR_KEYWORD))
    return inspect.Signature(out)


def _sides(diff: str) -> tuple[list[tuple[int, str, bool]], list[tuple[int, str, bool]]]:
    """The old and new side of every hunk as (line number, text, changed on this side)."""
    old: list[tuple[int, str, bool]] = []
    new: list[tuple[int, str, bool]] = []
    o = n = 0
    in_hunk = False
    for row in diff.splitlines():
        m = _HUNK.match(row)
        if m:
            o, n, in_hunk = int(m.group(1)), int(m.group(2)), True
            old.append((0, "", False))  # a gap between hunks: no def spans it
            new.append((0, "", False))
            continue
        if not in_hunk or row.startswith("\\"):
            continue
        tag, text = row[:1], row[1:]
        if tag in (" ", ""):
            old.append((o, text, False))
            new.append((n, text, False))
            o, n = o + 1, n + 1
        elif tag == "-":
            old.append((o, text, True))
            o += 1
        elif tag == "+":
            new.append((n, text, True))
            n += 1
    return old, new


def added_lines(diff: str) -> set[int] | None:
    """The new-side lines the diff adds, or None when the text has no hunk at all (the diff was left out, as too
    large, or the file is new, binary or unchanged): then the model cannot tell the change apart and takes the
    whole file as changed."""
    if not any(_HUNK.match(row) for row in diff.splitlines()):
        return None
    _old, new = _sides(diff)
    return {number for number, _text, changed in new if changed and number}


def _defs(side: list[tuple[int, str, bool]]) -> dict[str, tuple[ast.arguments, int, bool]]:
    """Top-level defs whose whole header is on this side: name -> (parameters, line, any header line changed)."""
    out: dict[str, tuple[ast.arguments, int, bool]] = {}
    for i, (number, text, _changed) in enumerate(side):
        m = _DEF.match(text)
        if not m or not number:
            continue
        header: list[str] = []
        changed = False
        for num, row, ch in side[i : i + _MAX_DEF_LINES]:
            if not num:
                break
            header.append(row)
            changed = changed or ch
            node = _parse_def("\n".join(header))
            if node is not None:
                out.setdefault(m.group(1), (node.args, number, changed))
                break
    return out


def _parse_def(header: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    for text in (header + "\n    pass", header):
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        node = tree.body[0] if tree.body else None
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return node
    return None


def signature_changes(diff: str) -> list[SignatureChange]:
    """Top-level functions present on both sides of the diff whose parameters differ in a way a call can see
    (names, kinds, defaults; an annotation alone changes nothing for a caller)."""
    old_side, new_side = _sides(diff)
    old, new = _defs(old_side), _defs(new_side)
    out = []
    for name in sorted(set(old) & set(new)):
        (o_args, _, o_changed), (n_args, line, n_changed) = old[name], new[name]
        before, after = signature_of(o_args), signature_of(n_args)
        if (o_changed or n_changed) and str(before) != str(after):
            out.append(SignatureChange(name, before, after, line))
    return out


def module_of(path: str) -> str:
    """The dotted module a repository path defines (`shop/pricing.py` -> `shop.pricing`)."""
    stem = path[:-3] if path.endswith(".py") else path
    if stem.endswith("/__init__"):
        stem = stem[: -len("/__init__")]
    return stem.replace("/", ".")


def _same_module(imported: str, target: str) -> bool:
    """`imported` names `target`, allowing a source root above the package (`src/shop/x.py` is `shop.x`)."""
    return imported == target or target.endswith("." + imported)


def _absolute(node: ast.ImportFrom, caller: str) -> str:
    if not node.level:
        return node.module or ""
    parts = posixpath.dirname(caller).split("/") if posixpath.dirname(caller) else []
    base = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
    return ".".join([*base, *([node.module] if node.module else [])])


def bindings(tree: ast.Module, caller: str, target_module: str, name: str) -> tuple[set[str], set[str]]:
    """How the caller's imports reach `target_module.name`: (names called bare, dotted prefixes called with
    `.name`). Empty when the caller does not import that module: its call is then to another function."""
    bare: set[str] = set()
    dotted: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(node, caller)
            for alias in node.names:
                if _same_module(source, target_module) and alias.name == name:
                    bare.add(alias.asname or name)
                elif _same_module(f"{source}.{alias.name}", target_module):
                    dotted.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _same_module(alias.name, target_module):
                    dotted.add(alias.asname or alias.name)
    return bare, dotted


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def calls_at(tree: ast.Module, line: int, name: str, bare: set[str], dotted: set[str]) -> list[ast.Call]:
    """The calls of the changed function that start on `line`, as the caller's imports name it."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or node.lineno != line:
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in bare:
            out.append(node)
        elif isinstance(func, ast.Attribute) and func.attr == name and _dotted(func.value) in dotted:
            out.append(node)
    return out


def misfit(call: ast.Call, change: SignatureChange) -> str | None:
    """Why `call` fits the old signature but not the new one (Python's own TypeError text), else None."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return None  # *args / **kwargs: how many arguments arrive is not knowable from the source
    args = [object()] * len(call.args)
    kwargs = {k.arg: object() for k in call.keywords if k.arg}
    try:
        change.old.bind(*args, **kwargs)
    except TypeError:
        return None  # it did not fit before either: not something this PR caused
    try:
        change.new.bind(*args, **kwargs)
    except TypeError as exc:
        return str(exc)
    return None
