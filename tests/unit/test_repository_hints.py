"""Where to look: the importers of the file under review and the tests that exercise it, found from the snapshot
(Python imports absolute, from- and relative; JS/TS imports and require), bounded, and honest over the fallback."""

from __future__ import annotations

from pathlib import Path

from prfleet.github.files import ChangedFile
from prfleet.repository.hints import added_lines, changed_symbols, is_test_path, where_to_look
from prfleet.repository.view import DirectoryView, FallbackView


def _view(root: Path, files: dict[str, str]) -> DirectoryView:
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(body)
    return DirectoryView(root)


AUTH = """class Auth:
    def flow(self, request):
        return request


class BasicAuth(Auth):
    def __init__(self, user, password, realm):
        self.user = user


def build_auth(value):
    return value
"""
AUTH_DIFF = "@@ -6,3 +6,3 @@ class BasicAuth(Auth):\n class BasicAuth(Auth):\n-    def __init__(self, user, password):\n+    def __init__(self, user, password, realm):\n         self.user = user\n"


def test_python_importers_and_tests_of_a_module(tmp_path: Path) -> None:
    view = _view(
        tmp_path,
        {
            "src/httpx/_auth.py": AUTH,
            "src/httpx/__init__.py": "from ._auth import Auth, BasicAuth\n",
            "src/httpx/_client.py": "from ._auth import Auth\n",
            "src/httpx/_models.py": "from . import _auth\n",
            "src/httpx/_unrelated.py": "import os  # _auth mentioned in a comment only\n",
            "src/other/_auth_user.py": "from ..httpx._auth import build_auth\n",
            "tools/script.py": "import httpx._auth as a\n",
            "tests/test_auth.py": "import httpx\n\ndef test_basic():\n    httpx.BasicAuth('u', 'p', 'r')\n",
            "tests/test_client.py": "from httpx._auth import Auth\n",
            "tests/test_models.py": "def test_nothing():\n    pass\n",
            "docs/auth.md": "BasicAuth\n",
        },
    )
    hints = where_to_look(view, "src/httpx/_auth.py", AUTH, AUTH_DIFF)
    assert hints.symbols == ["BasicAuth"]  # __init__ changed: its class, not the dunder
    assert hints.importers == [
        "src/httpx/__init__.py",
        "src/httpx/_client.py",
        "src/httpx/_models.py",
        "src/other/_auth_user.py",
        "tools/script.py",
    ]  # not _unrelated.py, which only names it in a comment
    assert [(p, imp) for p, imp, _ in hints.tests] == [
        ("tests/test_client.py", True),
        ("tests/test_auth.py", False),
    ]
    assert hints.tests[1][2] == ["BasicAuth"]
    text = hints.render()
    assert "- tests/test_auth.py (mentions BasicAuth)" in text
    assert "Files that import src/httpx/_auth.py (5 found):" in text


def test_relative_imports_resolve_against_the_importers_package(tmp_path: Path) -> None:
    view = _view(
        tmp_path,
        {
            "pkg/mod.py": "def f():\n    pass\n",
            "pkg/sub/__init__.py": "from .mod import f\n",  # pkg.sub.mod, not pkg.mod
            "pkg/sub/deep.py": "from ..mod import f\n",
            "pkg/sub/up.py": "from .. import mod\n",
        },
    )
    assert where_to_look(view, "pkg/mod.py", "", "").importers == ["pkg/sub/deep.py", "pkg/sub/up.py"]


def test_js_importers_and_spec_files(tmp_path: Path) -> None:
    cart = "export function total(items) {\n  return items.length;\n}\n\nexport const vat = (x) => x * 1.2;\n"
    view = _view(
        tmp_path,
        {
            "web/cart.ts": cart,
            "web/page.tsx": "import { total } from './cart';\n",
            "web/legacy.js": "const cart = require('../web/cart.js');\n",
            "web/lazy/loader.ts": "const m = await import('../cart');\n",
            "web/other.ts": "import { cart } from 'cart';\n",  # a package, not the file
            "web/__tests__/cart.test.ts": "import { vat } from '../cart';\ntest('vat', () => vat(1));\n",
            "web/index.spec.ts": "total([])\n",
        },
    )
    diff = "@@ -5,1 +5,1 @@\n-export const vat = (x) => x * 1.1;\n+export const vat = (x) => x * 1.2;\n"
    hints = where_to_look(view, "web/cart.ts", cart, diff)
    assert hints.symbols == ["vat"]
    assert hints.importers == ["web/lazy/loader.ts", "web/legacy.js", "web/page.tsx"]
    assert [p for p, _, _ in hints.tests] == ["web/__tests__/cart.test.ts"]


def test_hints_are_bounded(tmp_path: Path) -> None:
    files = {"lib/core.py": "def run():\n    pass\n"}
    files.update({f"lib/use{i:02}.py": "from lib import core\n" for i in range(15)})
    files.update({f"tests/test_{i:02}.py": "from lib.core import run\n" for i in range(12)})
    hints = where_to_look(_view(tmp_path, files), "lib/core.py", files["lib/core.py"], "")
    assert len(hints.importers) == 10 and hints.more_importers == 5
    assert len(hints.tests) == 10 and hints.more_tests == 2
    assert "... and 5 more (grep for them)" in hints.render()


def test_over_the_fallback_nothing_is_read_and_the_block_says_so() -> None:
    class Source:
        def __init__(self) -> None:
            self.reads: list[str] = []

        def read_file(self, path: str) -> str | None:
            self.reads.append(path)
            return ""

        def changed_files(self) -> list[ChangedFile]:
            return [ChangedFile(p, "modified", "s") for p in ("shop/inventory.py", "tests/test_inventory.py")]

        def tree_paths(self) -> list[str]:
            raise AssertionError("the tree is a request: hints must not read it")

    source = Source()
    view = FallbackView(source, source.tree_paths, reason="the repository is over MaxRepoBytes")
    hints = where_to_look(view, "shop/inventory.py", "def f():\n    pass\n", "")
    assert source.reads == []
    assert [p for p, _, _ in hints.tests] == ["tests/test_inventory.py"]
    assert hints.note == (
        "importers and tests were not computed (the repository is over MaxRepoBytes): only the PR's changed test "
        "files named after the module are listed; use grep and glob to find the rest"
    )


def test_changed_symbols_and_added_lines() -> None:
    assert added_lines("@@ -1,2 +1,3 @@\n a\n+b\n c\n+d\n") == {2, 4}
    text = "@decorate\ndef f():\n    pass\n\nclass C:\n    def m(self):\n        return 1\n"
    assert changed_symbols("a.py", text, {1}) == ["f"]  # a decorator line is part of the definition
    assert changed_symbols("a.py", text, {7}) == ["C", "m"]
    assert changed_symbols("a.py", "def broken(:\n  x\ndef g():\n  y\n", {4}) == [
        "g"
    ]  # regex when unparsable
    assert changed_symbols("main.go", "func Run() {\n}\n", {2}) == ["Run"]
    assert changed_symbols("a.py", text, set()) == []


def test_test_paths() -> None:
    for p in (
        "tests/x.py",
        "a/test/b.py",
        "test_x.py",
        "pkg/x_test.go",
        "web/a.spec.ts",
        "web/__tests__/a.js",
    ):
        assert is_test_path(p), p
    for p in ("src/testing.py", "contest.py", "latest/x.py"):
        assert not is_test_path(p), p
