"""The code's shape, measured: module, function and class sizes, import cycles, imports inside functions, and
imports against the layer's direction of dependencies (docs/architecture.md). Signs, not the goal: the goal is that
the next engineer finds their room at the first guess.

    python -m prfleet_local.bench.shape [ROOT]     # a report; exit 1 when a limit is passed
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

MAX_MODULE_LINES = 600  # the layer's modules
MAX_FUNCTION_LINES = 80  # the layer's functions
MAX_CLASS_LINES = 400  # the layer's and local/'s classes

# The layer's concerns, highest first: a module may import its own package and any package below its own.
# pipeline -> agents / store -> repository -> cost / github -> jobs -> config -> observability
LAYERS: dict[str, int] = {
    "pipeline": 7,
    "agents": 6,
    "store": 6,
    "repository": 5,  # the repository the agents look at (issue 23): above github, never on cost
    "cost": 4,
    "github": 4,
    "jobs": 3,
    "config": 2,
    "observability": 1,
}
# Imports the levels would allow but the concerns forbid: the repository snapshot knows nothing of money.
FORBIDDEN: frozenset[tuple[str, str]] = frozenset({("repository", "cost")})


@dataclass
class Shape:
    long_modules: list[tuple[str, int]] = field(default_factory=list)
    long_functions: list[tuple[str, int]] = field(default_factory=list)
    long_classes: list[tuple[str, int]] = field(default_factory=list)
    inner_imports: list[str] = field(default_factory=list)
    local_lazy_imports: list[str] = field(
        default_factory=list
    )  # informational: local/'s CLI loads per command
    against_direction: list[str] = field(default_factory=list)
    cycles: list[list[str]] = field(default_factory=list)
    modules: int = 0
    lines: int = 0

    def problems(self) -> list[str]:
        out = [f"module over {MAX_MODULE_LINES} lines: {m} ({n})" for m, n in self.long_modules]
        out += [f"function over {MAX_FUNCTION_LINES} lines: {f} ({n})" for f, n in self.long_functions]
        out += [f"class over {MAX_CLASS_LINES} lines: {c} ({n})" for c, n in self.long_classes]
        out += [f"prfleet import inside a function: {i}" for i in self.inner_imports]
        out += [f"import against the layering: {i}" for i in self.against_direction]
        out += ["import cycle: " + " -> ".join(c) for c in self.cycles]
        return out


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(
    tree: ast.Module, name: str, is_package: bool, known: set[str]
) -> list[tuple[str, ast.AST, bool]]:
    """(imported module, node, at module level) for every import; `from a import b` names a.b when b is a module
    of the tree, and a itself when a name of a is imported."""
    out: list[tuple[str, ast.AST, bool]] = []
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                pkg = name.split(".") if is_package else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                mod = ".".join([*pkg, mod] if mod else pkg)
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
            names = [mod] if len(subs) < len(node.names) else []
            out += [(m, node, id(node) in top) for m in names + subs]
    return out


def _in_type_checking(tree: ast.Module) -> set[int]:
    ids: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids |= {id(n) for n in ast.walk(node)}
    return ids


def measure(root: Path = ROOT) -> Shape:
    """The shape of the layer (layers/prfleet/prfleet) and of local/prfleet_local under `root`."""
    roots = ((root / "layers" / "prfleet", "prfleet"), (root / "local", "prfleet_local"))
    shape = Shape()
    graph: dict[str, set[str]] = {}
    trees: dict[str, tuple[Path, ast.Module, bool]] = {}
    for base, package in roots:
        for path in sorted((base / package).rglob("*.py")):
            name = module_name(path, base)
            trees[name] = (path, ast.parse(path.read_text()), path.name == "__init__.py")
    for name, (path, tree, is_package) in trees.items():
        in_layer = name == "prfleet" or name.startswith("prfleet.")
        lines = len(path.read_text().splitlines())
        shape.modules += 1
        shape.lines += lines
        if in_layer and lines > MAX_MODULE_LINES:
            shape.long_modules.append((name, lines))
        for node in ast.walk(tree):
            size = (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "lineno") else 0
            if (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and in_layer
                and size > MAX_FUNCTION_LINES
            ):
                shape.long_functions.append((f"{name}.{node.name}", size))
            if isinstance(node, ast.ClassDef) and size > MAX_CLASS_LINES:
                shape.long_classes.append((f"{name}.{node.name}", size))
        typing_only = _in_type_checking(tree)
        edges = graph.setdefault(name, set())
        for target, node, top in _imports(tree, name, is_package, set(trees)):
            if target not in trees or target == name:
                continue
            if not top and target.split(".")[0] == name.split(".")[0]:
                where = shape.inner_imports if in_layer else shape.local_lazy_imports
                where.append(f"{name}:{node.lineno} imports {target}")
            if id(node) not in typing_only:
                edges.add(target)
            if in_layer and target.startswith("prfleet."):
                here, there = _concern(name), _concern(target)
                if (
                    here
                    and there
                    and here != there
                    and (LAYERS[there] >= LAYERS[here] or (here, there) in FORBIDDEN)
                ):
                    shape.against_direction.append(f"{name} ({here}) imports {target} ({there})")
    # A package's __init__ that imports its submodules is not a cycle with them.
    shape.cycles = _cycles(
        {
            m: {t for t in ts if not m or not t.startswith(m + ".") or not trees[m][2]}
            for m, ts in graph.items()
        }
    )
    return shape


def _concern(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as one cycle's members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    shape = measure(Path(args[0]) if args else ROOT)
    print(f"{shape.modules} modules, {shape.lines} lines (layer and local/)")
    print(
        f"local/ imports inside functions: {len(shape.local_lazy_imports)} (the CLI loads a command's modules when run)"
    )
    problems = shape.problems()
    for p in problems:
        print(p)
    print("shape: ok" if not problems else f"shape: {len(problems)} over the limits")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
