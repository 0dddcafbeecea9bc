"""A sample repository with a realistic pull request: a small shop package where the PR adds an export feature.

The head commit seeds real bugs (a mutable default argument, `shell=True` with interpolated input, a bare
`except`, a hard-coded token) next to ordinary code, so the demo shows the agents finding them at file and line.
It also adds a required parameter to `shop.pricing.shipping_cost`, which `shop/checkout.py` (a file the PR does not
touch) still calls the old way: the review finds that caller outside the diff. `shop/cart.py`'s `Cart` and
`shop/pricing.py`'s `apply_discount` are exercised by test files the PR does not touch (no "no test" finding for
them), while the new `bulk_price` is tested nowhere (still reported). `shop/pricing.py` also has an old
`parse_percent` the PR does not touch, with a bare `except`, no docstring and no test: a review of the change says
nothing about its docs or tests, and holds its bare `except` back as pre-existing (posted only when the repository's
.prfleet.toml sets `report_preexisting = true`).
"""

from __future__ import annotations

BASE_FILES: dict[str, str] = {
    "README.md": "# shop\n\nA tiny shop library used by the prfleet demo.\n",
    ".prfleet.toml": '# prfleet settings, read from the base branch\nignore = ["docs/generated/*"]\n\n[limits]\nmax_iterations = 12\n',
    "shop/__init__.py": '"""A tiny shop."""\n\n__version__ = "1.0.0"\n',
    "shop/cart.py": '''"""Shopping cart."""

from __future__ import annotations


class Cart:
    """Items a customer is about to buy."""

    def __init__(self) -> None:
        self.items: list[tuple[str, int, float]] = []

    def add(self, sku: str, quantity: int, price: float) -> None:
        """Add `quantity` units of `sku` at `price` each."""
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        self.items.append((sku, quantity, price))

    def total(self) -> float:
        """Sum of all lines."""
        return sum(q * p for _sku, q, p in self.items)
''',
    "shop/pricing.py": '''"""Prices, discounts and shipping."""

from __future__ import annotations


def apply_discount(total: float, percent: float) -> float:
    """Total after a percentage discount."""
    if not 0 <= percent <= 100:
        raise ValueError("percent must be between 0 and 100")
    return round(total * (100 - percent) / 100, 2)


def parse_percent(text):
    try:
        return float(text.rstrip("%"))
    except:
        return 0.0


def shipping_cost(weight_kg: float) -> float:
    """A flat fee plus a charge per kilogram."""
    return round(4.5 + 1.2 * weight_kg, 2)
''',
    "shop/checkout.py": '''"""Checkout: what the customer pays."""

from __future__ import annotations

from shop.cart import Cart
from shop.pricing import apply_discount, shipping_cost


def checkout_total(cart: Cart, weight_kg: float, percent: float = 0.0) -> float:
    """Discounted goods plus shipping."""
    goods = apply_discount(cart.total(), percent)
    return round(goods + shipping_cost(weight_kg), 2)
''',
    "tests/test_pricing.py": """from shop.pricing import apply_discount


def test_apply_discount():
    assert apply_discount(200.0, 10) == 180.0
""",
    "tests/test_cart.py": """from shop.cart import Cart


def test_total():
    cart = Cart()
    cart.add("apple", 2, 0.5)
    assert cart.total() == 1.0
""",
}

ADD_MANY = """
    def add_many(self, skus, seen=[]):
        for sku in skus:
            if sku not in seen:
                seen.append(sku)
                self.add(sku, 1, 0.0)
        return seen
"""
BULK_PRICE = """

def bulk_price(unit: float, quantity: int) -> float:
    if quantity >= 100:
        return apply_discount(unit * quantity, 10)
    return unit * quantity
"""

SHIPPING_BASE = """def shipping_cost(weight_kg: float) -> float:
    \"\"\"A flat fee plus a charge per kilogram.\"\"\"
    return round(4.5 + 1.2 * weight_kg, 2)
"""
SHIPPING_HEAD = """SHIPPING_FEES = {"NL": 4.5, "BE": 6.0, "DE": 7.5}


def shipping_cost(weight_kg: float, country: str) -> float:
    \"\"\"The destination country's flat fee plus a charge per kilogram.\"\"\"
    return round(SHIPPING_FEES.get(country, 12.0) + 1.2 * weight_kg, 2)
"""

HEAD_CHANGES: dict[str, str | None] = {
    "shop/cart.py": BASE_FILES["shop/cart.py"].replace(
        "        self.items.append((sku, quantity, price))\n",
        "        self.items.append((sku, quantity, price))\n" + ADD_MANY,
    ),
    "shop/export.py": '''"""Export orders for the warehouse."""

from __future__ import annotations

import json
import subprocess

WAREHOUSE_TOKEN = "whk_live_4f9a8c7e2b1d"


def export_orders(orders: list[dict], filename: str) -> str:
    with open(filename, "w") as fh:
        json.dump(orders, fh)
    subprocess.run(f"gzip -f {filename}", shell=True, check=True)
    return filename + ".gz"


def upload(path: str) -> bool:
    try:
        subprocess.run(["curl", "-T", path, "-H", f"Authorization: {WAREHOUSE_TOKEN}", "https://warehouse.invalid/"])
        return True
    except:
        return False
''',
    "shop/pricing.py": BASE_FILES["shop/pricing.py"].replace(SHIPPING_BASE, SHIPPING_HEAD) + BULK_PRICE,
    "docs/generated/api.md": "# API (generated)\n",
    "assets/logo.png": None,  # replaced by binary bytes in `head_files()`
}

PR_TITLE = "Add order export and bulk pricing"
PR_BODY = (
    "Adds `shop.export` to hand orders to the warehouse, `Cart.add_many`, bulk pricing, and shipping fees per "
    "destination country."
)

# Where the seeded bugs are: (path, the code on the buggy line, what it is). Lines are found, never hard-coded.
SEEDED_BUGS = [
    ("shop/cart.py", "def add_many(self, skus, seen=[]):", "mutable default argument"),
    ("shop/export.py", 'subprocess.run(f"gzip -f {filename}", shell=True, check=True)', "shell=True"),
    ("shop/export.py", "except:", "bare except"),
    ("shop/export.py", 'WAREHOUSE_TOKEN = "whk_live_4f9a8c7e2b1d"', "hard-coded secret"),
]


# Calls the PR breaks in files it does not touch: (path, the calling line, what changed). The review of the changed
# file reports them at the caller's line, outside the diff.
BROKEN_CALLERS = [
    (
        "shop/checkout.py",
        "return round(goods + shipping_cost(weight_kg), 2)",
        "shipping_cost gained `country`",
    ),
]
# The tests agent's "No test for `X`" on the sample PR: absent for what unchanged test files exercise, present for
# what nothing tests. (path under review, symbol)
TESTED_ELSEWHERE = [("shop/cart.py", "Cart"), ("shop/pricing.py", "apply_discount")]
UNTESTED = [("shop/pricing.py", "shipping_cost"), ("shop/pricing.py", "bulk_price")]
# Old problems in a changed file, on lines the PR does not touch: (path, the code, what it is). Found, stored with
# relation "preexisting", and not posted unless the repository asks for pre-existing findings.
PREEXISTING = [("shop/pricing.py", "except:", "bare except in untouched code")]
# Public names of a changed file the PR does not touch: no docs or tests finding concerns them. (path, symbol)
UNTOUCHED = [("shop/pricing.py", "parse_percent")]


def bug_line(path: str, code: str) -> int:
    """1-based line of `code` in the head version of `path` (changed by the PR or not)."""
    text = HEAD_CHANGES[path] if path in HEAD_CHANGES else BASE_FILES[path]
    assert isinstance(text, str)
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() == code:
            return number
    raise LookupError(f"{code!r} not in {path}")


def head_files() -> dict[str, str | bytes | None]:
    files: dict[str, str | bytes | None] = dict(HEAD_CHANGES)
    files["assets/logo.png"] = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    return files
