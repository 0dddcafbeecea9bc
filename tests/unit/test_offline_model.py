"""The offline model uses the repository tools as a real model would: conversations built by hand, with tool
results in the shared contract's exact formats (docs/architecture.md; prfleet.agents.tools' untrusted blocks), and
the policy's next turn checked. It learns about the repository only from those results."""

from __future__ import annotations

import ast
import difflib
import json
import pathlib
from typing import Any

import prfleet_local.model as model_pkg
from prfleet.agents.tools import number_lines, untrusted_block
from prfleet_local.model import results
from prfleet_local.model.callers import misfit, signature_changes
from prfleet_local.model.faults import FaultPlan
from prfleet_local.model.policy import Conversation, OfflineModel
from prfleet_local.model.server import ModelServer

TOOLS = ["read_file", "grep", "glob", "get_diff", "list_changed_files", "report_findings"]
OLD_TOOLS = ["read_file", "get_diff", "list_changed_files", "search", "report_findings"]

BASE_PRICING = '''"""Prices and shipping."""


def apply_discount(total: float, percent: float) -> float:
    """Total after a percentage discount."""
    return round(total * (100 - percent) / 100, 2)


def shipping_cost(weight_kg: float) -> float:
    """A flat fee plus a charge per kilogram."""
    return round(4.5 + 1.2 * weight_kg, 2)
'''
HEAD_PRICING = BASE_PRICING.replace(
    "def shipping_cost(weight_kg: float) -> float:",
    "def shipping_cost(weight_kg: float, country: str) -> float:",
).replace("4.5 + 1.2", "(4.5 if country == 'NL' else 9.0) + 1.2")
CHECKOUT = '''"""Checkout."""

from shop.pricing import apply_discount, shipping_cost


def checkout_total(goods: float, weight_kg: float) -> float:
    """Discounted goods plus shipping."""
    return apply_discount(goods, 5) + shipping_cost(weight_kg)


def export_total(goods: float, weight_kg: float) -> float:
    """Already passes the country."""
    return goods + shipping_cost(weight_kg, country="DE")
'''
OTHER = '''"""A module with its own shipping_cost: not the changed function."""


def shipping_cost(weight_kg):
    return 1.0


def local_total(w):
    return shipping_cost(w)
'''
BROKEN_LINE = (
    CHECKOUT.splitlines().index("    return apply_discount(goods, 5) + shipping_cost(weight_kg)") + 1
)
FITTING_LINE = CHECKOUT.splitlines().index('    return goods + shipping_cost(weight_kg, country="DE")') + 1
OTHER_LINE = OTHER.splitlines().index("    return shipping_cost(w)") + 1


def diff_of(old: str, new: str) -> str:
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=3)
    return "\n".join(x for x in lines if not x.startswith(("---", "+++")))


def first_message(path: str, text: str, diff: str) -> dict[str, Any]:
    """The first user turn as prfleet.agents.request builds it (diff and file in untrusted blocks)."""
    n = len(text.splitlines())
    body = "\n\n".join(
        [
            f"Review the file `{path}` of pull request o/r#1 (head abc) as the agent.",
            untrusted_block("diff", diff, path=path),
            untrusted_block("file", number_lines(text), path=path, sha="s", lines=f"1-{n}", total=n),
        ]
    )
    pr = untrusted_block("pr_description", "Title: Shipping by country", repo="o/r", number=1)
    return {"role": "user", "content": [{"type": "text", "text": pr}, {"type": "text", "text": body}]}


class Chat:
    """A conversation built turn by turn: the policy answers, the test supplies the tool results."""

    def __init__(self, agent: str, path: str, text: str, diff: str, tools: list[str] = TOOLS) -> None:
        self.agent, self.tools = agent, tools
        self.messages: list[dict[str, Any]] = [first_message(path, text, diff)]

    def body(self) -> dict[str, Any]:
        return {
            "system": f"You are the {self.agent} agent, one of the prfleet agents.",
            "tools": [{"name": t, "input_schema": {"type": "object"}} for t in self.tools],
            "messages": self.messages,
        }

    def turn(self, plan: FaultPlan | None = None):
        return OfflineModel(plan or FaultPlan()).next_turn(Conversation.parse(self.body()))

    def asked(self, plan: FaultPlan | None = None) -> list[tuple[str, dict[str, Any]]]:
        turn = self.turn(plan)
        return [(b["name"], b["input"]) for b in turn.content if b["type"] == "tool_use"]

    def answer(self, *pairs: tuple[str, dict[str, Any], str], error: bool = False) -> None:
        """The assistant asked for these tools; their results come back in the next user turn."""
        n = len(self.messages)
        uses = [
            {"type": "tool_use", "id": f"toolu_{n}_{k}", "name": name, "input": args}
            for k, (name, args, _) in enumerate(pairs)
        ]
        self.messages.append({"role": "assistant", "content": uses})
        self.messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": u["id"], "content": text, "is_error": error}
                    for u, (_, _, text) in zip(uses, pairs, strict=True)
                ],
            }
        )

    def report(self, plan: FaultPlan | None = None) -> tuple[list[dict[str, Any]], Any]:
        turn = self.turn(plan)
        (use,) = [b for b in turn.content if b["type"] == "tool_use"]
        assert use["name"] == "report_findings", use
        return use["input"]["findings"], turn


def read_result(
    path: str, text: str, start: int = 1, end: int | None = None, *, cut_at: int | None = None
) -> str:
    """read_file's result as prfleet.agents.tools.PrTools.read_file writes it (a cut read asks to go on)."""
    lines = text.splitlines()
    end = min(end or len(lines), len(lines))
    shown_end = min(end, cut_at) if cut_at else end
    shown = "\n".join(f"{n:>4}| {lines[n - 1]}" for n in range(start, shown_end + 1))
    block = untrusted_block("file", shown, path=path, lines=f"{start}-{shown_end}", total=len(lines))
    if shown_end < end:
        block += f"\n[truncated: showing lines {start}-{shown_end} of {len(lines)}; ask for start_line={shown_end + 1}]"
    return block


def grep_content(pattern: str, rows: list[str], files: int) -> str:
    """grep's content result in the contract's exact format."""
    matches = sum(1 for r in rows if r != "--" and results._SEP_RE.search(r, 1)["sep"] == ":")
    body = "\n".join(rows) if rows else "(no matches)"
    return untrusted_block("grep", body, pattern=pattern, mode="content", matches=matches, files=files)


def row(path: str, text: str, line: int, sep: str = ":") -> str:
    return f"{path}{sep}{line}{sep}{text.splitlines()[line - 1]}"


# ----------------------------------------------------------------------------------------- parsing the formats


def test_grep_content_rows_are_split_at_the_first_separator_even_when_the_code_holds_one():
    text = "\n".join(
        [
            "a/b-c.py:12:    x = f(1)",
            "a/b-c.py-13-    y = {'k:3:': 1}",
            "--",
            "tests/t.py:3:d = {1: 2}  # -4- here",
        ]
    )
    parsed = results.grep(untrusted_block("grep", text, pattern="f", mode="content", matches=2, files=2))
    assert [(h.path, h.line, h.match) for h in parsed.lines] == [
        ("a/b-c.py", 12, True),
        ("a/b-c.py", 13, False),
        ("tests/t.py", 3, True),
    ]
    assert parsed.lines[1].text == "    y = {'k:3:': 1}" and not parsed.truncated
    cut = untrusted_block("grep", "a.py:1:x", pattern="x", mode="content") + "\n[truncated: 200 of 900 lines]"
    assert results.grep(cut).truncated


def test_a_signature_change_is_read_from_the_diff_with_python_binding_rules():
    (change,) = signature_changes(diff_of(BASE_PRICING, HEAD_PRICING))
    assert change.name == "shipping_cost"
    assert change.shown() == "shipping_cost(weight_kg, country)"
    assert HEAD_PRICING.splitlines()[change.line - 1].startswith("def shipping_cost(")
    # an annotation alone, or a body change, is no signature change
    annotated = BASE_PRICING.replace("weight_kg: float) -> float", "weight_kg: int) -> float")
    assert signature_changes(diff_of(BASE_PRICING, annotated)) == []
    assert signature_changes(diff_of(BASE_PRICING, BASE_PRICING.replace("4.5", "5.5"))) == []


def test_each_way_a_call_stops_fitting_is_told_by_pythons_own_binding():
    base = "def f(a, b=1, *, mode=None):\n    pass\n"
    cases = {
        "def f(a, b=1, *, mode=None, strict):\n    pass\n": ("f(1)", "missing a required argument: 'strict'"),
        "def f(a, b=1):\n    pass\n": ("f(1, mode='x')", "got an unexpected keyword argument 'mode'"),
        "def f(a, *, b=1, mode=None):\n    pass\n": ("f(1, 2)", "too many positional arguments"),
    }
    for head, (call, reason) in cases.items():
        (change,) = signature_changes(diff_of(base, head))
        node = ast.parse(call).body[0].value
        assert misfit(node, change) == reason, head
        # a call that fits both, one that did not fit before either, and one whose arguments cannot be counted
        assert (
            misfit(
                ast.parse("f(1, 2, mode=3, strict=4)" if "strict" in head else "f(a=1)").body[0].value, change
            )
            is None
        )
        assert misfit(ast.parse("f()").body[0].value, change) is None
        assert misfit(ast.parse("f(*args)").body[0].value, change) is None


# --------------------------------------------------------------------------------- the review agent's callers


def test_the_review_agent_greps_for_callers_reads_them_and_reports_the_broken_call_at_the_caller():
    path = "shop/pricing.py"
    diff = diff_of(BASE_PRICING, HEAD_PRICING)
    chat = Chat("review", path, HEAD_PRICING, diff)
    grep_args = {"pattern": r"\bshipping_cost\(", "glob": "*.py", "output_mode": "content"}
    assert chat.asked() == [("read_file", {"path": path}), ("get_diff", {"path": path}), ("grep", grep_args)]
    grep = grep_content(
        grep_args["pattern"],
        [
            row("shop/checkout.py", CHECKOUT, BROKEN_LINE),
            "--",
            row("shop/checkout.py", CHECKOUT, FITTING_LINE),
            row("shop/other.py", OTHER, OTHER_LINE),
            row(
                path,
                HEAD_PRICING,
                HEAD_PRICING.splitlines().index("def shipping_cost(weight_kg: float, country: str) -> float:")
                + 1,
            ),
        ],
        files=3,
    )
    chat.answer(
        ("read_file", {"path": path}, read_result(path, HEAD_PRICING)),
        ("get_diff", {"path": path}, untrusted_block("diff", diff, path=path)),
        ("grep", grep_args, grep),
    )
    # the callers' files, all at once (independent reads), never the file under review again
    assert chat.asked() == [
        ("read_file", {"path": "shop/checkout.py"}),
        ("read_file", {"path": "shop/other.py"}),
    ]
    chat.answer(
        ("read_file", {"path": "shop/checkout.py"}, read_result("shop/checkout.py", CHECKOUT)),
        ("read_file", {"path": "shop/other.py"}, read_result("shop/other.py", OTHER)),
    )
    findings, turn = chat.report()
    broken = [f for f in findings if f["path"] != path]
    # only the call that fitted the old signature and misses `country`; not the one passing it, not another
    # module's own shipping_cost
    assert [(f["path"], f["line"], f["category"], f["severity"]) for f in broken] == [
        ("shop/checkout.py", BROKEN_LINE, "bug", "high")
    ]
    assert "missing a required argument: 'country'" in broken[0]["body"]
    assert "shipping_cost(weight_kg)" in broken[0]["body"]
    grep_id = chat.messages[1]["content"][2]["id"]
    read_id = chat.messages[3]["content"][0]["id"]
    assert {(f.tool, f.tool_use_id, f.path, f.line) for f in turn.facts} == {
        ("grep", grep_id, "shop/checkout.py", BROKEN_LINE),
        ("read_file", read_id, "shop/checkout.py", BROKEN_LINE),
    }


def test_a_call_is_judged_only_on_the_whole_caller_file_never_on_part_of_it():
    path = "shop/pricing.py"
    diff = diff_of(BASE_PRICING, HEAD_PRICING)
    chat = Chat("review", path, HEAD_PRICING, diff)
    grep_args = {"pattern": r"\bshipping_cost\(", "glob": "*.py", "output_mode": "content"}
    chat.answer(
        ("read_file", {"path": path}, read_result(path, HEAD_PRICING)),
        ("get_diff", {"path": path}, untrusted_block("diff", diff, path=path)),
        (
            "grep",
            grep_args,
            grep_content(grep_args["pattern"], [row("shop/checkout.py", CHECKOUT, BROKEN_LINE)], 1),
        ),
    )
    chat.answer(
        ("read_file", {"path": "shop/checkout.py"}, read_result("shop/checkout.py", CHECKOUT, cut_at=4))
    )
    # the read was cut: it goes on where the tool says, rather than judge the call on a part of the file
    assert chat.asked() == [("read_file", {"path": "shop/checkout.py", "start_line": 5})]
    chat.answer(
        (
            "read_file",
            {"path": "shop/checkout.py", "start_line": 5},
            read_result("shop/checkout.py", CHECKOUT, 5),
        )
    )
    findings, _ = chat.report()
    assert ("shop/checkout.py", BROKEN_LINE) in {(f["path"], f["line"]) for f in findings}


def test_a_failed_caller_read_or_a_kwargs_call_is_not_reported():
    path = "shop/pricing.py"
    diff = diff_of(BASE_PRICING, HEAD_PRICING)
    caller = CHECKOUT.replace("shipping_cost(weight_kg)", "shipping_cost(**{'weight_kg': weight_kg})")
    chat = Chat("review", path, HEAD_PRICING, diff)
    grep_args = {"pattern": r"\bshipping_cost\(", "glob": "*.py", "output_mode": "content"}
    rows = [row("shop/checkout.py", caller, BROKEN_LINE), row("shop/gone.py", "x = shipping_cost(1)", 1)]
    chat.answer(
        ("read_file", {"path": path}, read_result(path, HEAD_PRICING)),
        ("get_diff", {"path": path}, untrusted_block("diff", diff, path=path)),
        ("grep", grep_args, grep_content(grep_args["pattern"], rows, 2)),
    )
    chat.answer(("read_file", {"path": "shop/checkout.py"}, read_result("shop/checkout.py", caller)))
    chat.answer(
        ("read_file", {"path": "shop/gone.py"}, "shop/gone.py does not exist at the PR head"), error=True
    )
    findings, turn = chat.report()
    assert [f for f in findings if f["path"] != path] == [] and turn.facts == []


def test_without_grep_offered_the_model_calls_only_the_tools_it_was_given():
    path = "shop/pricing.py"
    chat = Chat("review", path, HEAD_PRICING, diff_of(BASE_PRICING, HEAD_PRICING), tools=OLD_TOOLS)
    assert [n for n, _ in chat.asked()] == ["read_file", "get_diff"]


def test_a_report_refused_for_a_path_outside_the_file_keeps_the_files_own_findings():
    path = "shop/pricing.py"
    diff = diff_of(BASE_PRICING, HEAD_PRICING)
    text = HEAD_PRICING + "\n\ndef f():\n    try:\n        pass\n    except:\n        pass\n"
    chat = Chat("review", path, text, diff)
    grep_args = {"pattern": r"\bshipping_cost\(", "glob": "*.py", "output_mode": "content"}
    chat.answer(
        ("read_file", {"path": path}, read_result(path, text)),
        ("get_diff", {"path": path}, untrusted_block("diff", diff, path=path)),
        (
            "grep",
            grep_args,
            grep_content(grep_args["pattern"], [row("shop/checkout.py", CHECKOUT, BROKEN_LINE)], 1),
        ),
    )
    chat.answer(("read_file", {"path": "shop/checkout.py"}, read_result("shop/checkout.py", CHECKOUT)))
    findings, _ = chat.report()
    assert {f["path"] for f in findings} == {path, "shop/checkout.py"}
    chat.answer(
        (
            "report_findings",
            {"findings": findings, "summary": "s"},
            "findings[0].path 'shop/checkout.py' is not a file under review (allowed: shop/pricing.py)",
        ),
        error=True,
    )
    again, turn = chat.report()
    assert again == [f for f in findings if f["path"] == path] and turn.facts == []


# ------------------------------------------------------------------------------------- the tests agent's search


LIB = '''"""Helpers."""


def covered(x):
    return x


def lonely(a, b):
    return a + b


class Thing:
    pass
'''


def test_the_tests_agent_greps_the_repository_tests_and_reports_only_what_no_test_mentions():
    chat = Chat("tests", "lib.py", LIB, diff_of("", LIB))
    asked = chat.asked()
    pattern = r"\b(?:covered|lonely|Thing)\b"
    greps = [
        {"pattern": pattern, "glob": "**/test_*.py", "output_mode": "content"},
        {"pattern": pattern, "path": "tests", "output_mode": "content"},
    ]
    assert asked == [
        ("read_file", {"path": "lib.py"}),
        ("list_changed_files", {}),
        *[("grep", g) for g in greps],
    ]
    test_file = "from lib import covered, Thing\n\n\ndef test_covered():\n    assert covered(1) == 1\n"
    rows = [row("tests/unit/test_lib.py", test_file, 1), row("tests/unit/test_lib.py", test_file, 5)]
    chat.answer(
        ("read_file", {"path": "lib.py"}, read_result("lib.py", LIB)),
        ("list_changed_files", {}, untrusted_block("file_list", "modified\t+3\t-0\tlib.py", count=1)),
        ("grep", greps[0], grep_content(pattern, rows, 1)),
        ("grep", greps[1], grep_content(pattern, rows, 1)),
    )
    findings, turn = chat.report()
    assert [f["title"] for f in findings] == ["No test for `lonely`"]
    assert "No test in the repository" in findings[0]["body"]
    assert {(f.path, f.line, f.tool) for f in turn.facts} == {
        ("tests/unit/test_lib.py", 1, "grep"),
        ("tests/unit/test_lib.py", 5, "grep"),
    }


def test_a_cut_test_grep_is_followed_by_a_grep_per_symbol_still_unseen():
    chat = Chat("tests", "lib.py", LIB, diff_of("", LIB))
    pattern = r"\b(?:covered|lonely|Thing)\b"
    greps = [
        {"pattern": pattern, "glob": "**/test_*.py", "output_mode": "content"},
        {"pattern": pattern, "path": "tests", "output_mode": "content"},
    ]
    cut = (
        grep_content(pattern, ["tests/test_a.py:1:covered(1)"], 1) + "\n[truncated: 1 of 400 matching lines]"
    )
    chat.answer(
        ("read_file", {"path": "lib.py"}, read_result("lib.py", LIB)),
        ("list_changed_files", {}, untrusted_block("file_list", "modified\t+3\t-0\tlib.py", count=1)),
        ("grep", greps[0], cut),
        ("grep", greps[1], cut),
    )
    narrow = [
        {"pattern": r"\blonely\b", "glob": "**/test_*.py", "output_mode": "files_with_matches"},
        {"pattern": r"\bThing\b", "glob": "**/test_*.py", "output_mode": "files_with_matches"},
    ]
    assert chat.asked() == [("grep", g) for g in narrow]
    chat.answer(
        (
            "grep",
            narrow[0],
            untrusted_block(
                "grep", "(no matches)", pattern=narrow[0]["pattern"], mode="files_with_matches", matches=0
            ),
        ),
        (
            "grep",
            narrow[1],
            untrusted_block(
                "grep",
                "tests/test_thing.py",
                pattern=narrow[1]["pattern"],
                mode="files_with_matches",
                matches=1,
            ),
        ),
    )
    findings, _ = chat.report()
    assert [f["title"] for f in findings] == ["No test for `lonely`"]


URLS = '''"""URL parsing (the shape of httpx's _urlparse: one tested entry point, helpers it calls)."""


def urlparse(url):
    return Parsed(_split(url))


def _split(url):
    return [normalize_path(part) for part in url.split("/")]


def normalize_path(path):
    return path.strip(".")


class Parsed:
    def __init__(self, parts):
        self.parts = [quote(p) for p in parts]


def quote(text):
    return text.replace(" ", "%20")


def unused_helper(text):
    return text
'''


def test_helpers_a_tested_function_of_the_same_file_calls_are_not_reported_untested():
    # httpx (docs/quality.md): tests/models/test_whatwg.py calls `urlparse`, which runs `normalize_path`,
    # `quote` and builds `ParseResult`; none of them is named by a test, all of them are exercised.
    chat = Chat("tests", "urls.py", URLS, diff_of("", URLS))
    pattern = r"\b(?:urlparse|normalize_path|Parsed|quote|unused_helper)\b"
    greps = [
        {"pattern": pattern, "glob": "**/test_*.py", "output_mode": "content"},
        {"pattern": pattern, "path": "tests", "output_mode": "content"},
    ]
    assert chat.asked()[-2:] == [("grep", g) for g in greps]
    test_file = "from urls import urlparse\n\n\ndef test_parse():\n    assert urlparse('a b/./c').parts\n"
    rows = [row("tests/test_urls.py", test_file, 1), row("tests/test_urls.py", test_file, 5)]
    chat.answer(
        ("read_file", {"path": "urls.py"}, read_result("urls.py", URLS)),
        ("list_changed_files", {}, untrusted_block("file_list", "modified\t+3\t-0\turls.py", count=1)),
        ("grep", greps[0], grep_content(pattern, rows, 1)),
        ("grep", greps[1], grep_content(pattern, rows, 1)),
    )
    findings, _ = chat.report()
    assert [f["title"] for f in findings] == ["No test for `unused_helper`"]
    assert "nor anything in this file that calls it" in findings[0]["body"]


# ------------------------------------------------------------------------------------------ partial reads


BIG = "\n".join(
    ["def f(x):", "    return (", *[f"        {i} +" for i in range(60)], "        0", "    )", ""]
)


def test_a_cut_read_is_followed_until_every_line_is_seen():
    first = {"role": "user", "content": [{"type": "text", "text": "x"}]}
    chat = Chat("review", "big.py", BIG, "")
    n = len(BIG.splitlines())
    # the first message carried only a part of the file (over the agent's size cap)
    chat.messages[0] = first_message("big.py", "\n".join(BIG.splitlines()[:20]), "")
    chat.messages[0]["content"][1]["text"] = chat.messages[0]["content"][1]["text"].replace(
        'total="20"', f'total="{n}"'
    )
    assert first
    chat.answer(
        ("read_file", {"path": "big.py"}, read_result("big.py", BIG, cut_at=30)),
        ("get_diff", {"path": "big.py"}, untrusted_block("diff", "", path="big.py")),
    )
    assert chat.asked() == [("read_file", {"path": "big.py", "start_line": 31})]
    chat.answer(("read_file", {"path": "big.py", "start_line": 31}, read_result("big.py", BIG, 31)))
    findings, _ = chat.report()
    assert findings == []  # a valid file, read whole in two pages: nothing to report, no syntax error


def test_a_file_read_only_in_part_is_never_said_not_to_parse():
    plan = FaultPlan(read_windows=1)
    chat = Chat("review", "big.py", BIG, "", tools=OLD_TOOLS)
    (ask,) = chat.asked(plan)
    assert ask[0] == "read_file" and ask[1]["end_line"] - ask[1]["start_line"] == 29
    start, end = ask[1]["start_line"], ask[1]["end_line"]
    # the first message held only the window's lines too (a copy cut to a few lines)
    chat.messages[0] = first_message("big.py", "\n".join(BIG.splitlines()[:3]), "")
    chat.messages[0]["content"][1]["text"] = chat.messages[0]["content"][1]["text"].replace(
        'total="3"', f'total="{len(BIG.splitlines())}"'
    )
    chat.answer(("read_file", ask[1], read_result("big.py", BIG, start, end)))
    findings, _ = chat.report(plan)
    assert not any("parse" in f["title"] for f in findings), findings


def test_a_whole_file_that_does_not_parse_is_still_reported():
    broken = "def f(:\n    return 1\n"
    chat = Chat("review", "bad.py", broken, "", tools=OLD_TOOLS)
    chat.answer(
        ("read_file", {"path": "bad.py"}, read_result("bad.py", broken)),
        ("get_diff", {"path": "bad.py"}, untrusted_block("diff", "", path="bad.py")),
    )
    findings, _ = chat.report()
    assert [f["title"] for f in findings] == ["File does not parse"]


# ------------------------------------------------------------------------------------------ the server's log


def test_the_server_log_ties_every_fact_to_a_tool_result_the_model_asked_for():
    """Over the Messages API itself: the server answers each turn, the test plays the tools."""
    path = "shop/pricing.py"
    diff = diff_of(BASE_PRICING, HEAD_PRICING)
    files = {path: HEAD_PRICING, "shop/checkout.py": CHECKOUT}
    server = ModelServer()
    chat = Chat("review", path, HEAD_PRICING, diff)
    headers = {"x-api-key": "offline", "anthropic-version": "2023-06-01"}
    for _ in range(6):
        body = {**chat.body(), "model": "claude-sonnet-5-5", "max_tokens": 4000}
        reply = server.handle(headers, json.dumps(body).encode())
        assert reply.status == 200, reply.body
        message = json.loads(reply.body)
        uses = [b for b in message["content"] if b["type"] == "tool_use"]
        if not uses or uses[0]["name"] == "report_findings":
            break
        out = []
        for u in uses:
            name, args = u["name"], u["input"]
            if name == "read_file":
                out.append(read_result(args["path"], files[args["path"]]))
            elif name == "get_diff":
                out.append(untrusted_block("diff", diff, path=path))
            else:
                out.append(grep_content(args["pattern"], [row("shop/checkout.py", CHECKOUT, BROKEN_LINE)], 1))
        chat.messages.append({"role": "assistant", "content": message["content"]})
        chat.messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": u["id"], "content": t}
                    for u, t in zip(uses, out, strict=True)
                ],
            }
        )
    log = server.model_log()
    report = log[-1]
    assert ("shop/checkout.py", BROKEN_LINE) in {(f["path"], f["line"]) for f in report["findings"]}
    asked = {a["id"]: a for entry in log[:-1] for a in entry["asked"]}
    assert report["facts"]
    for fact in report["facts"]:
        assert fact["tool_use_id"] in asked  # the model asked for it in an earlier turn
        assert asked[fact["tool_use_id"]]["name"] == fact["tool"]
        evidence = report["evidence"][fact["tool_use_id"]]  # and its result came back in this request
        if fact["tool"] == "grep":
            assert f"{fact['path']}:{fact['line']}:" in evidence
        else:
            assert f'path="{fact["path"]}"' in evidence


# ----------------------------------------------------------------------------------- plans and determinism


def test_one_tool_a_turn_when_the_plan_says_so_and_the_same_conversation_gets_the_same_turn():
    path = "shop/pricing.py"
    chat = Chat("review", path, HEAD_PRICING, diff_of(BASE_PRICING, HEAD_PRICING))
    plan = FaultPlan(parallel_tools=False)
    assert chat.asked(plan) == [("read_file", {"path": path})]
    chat.answer(("read_file", {"path": path}, read_result(path, HEAD_PRICING)))
    assert chat.asked(plan) == [("get_diff", {"path": path})]
    chat.answer(("get_diff", {"path": path}, untrusted_block("diff", "", path=path)))
    grep_args = {"pattern": r"\bshipping_cost\(", "glob": "*.py", "output_mode": "content"}
    assert chat.asked(plan) == [("grep", grep_args)]
    assert chat.turn(plan).content == chat.turn(plan).content


def test_the_model_has_no_way_to_the_repository_but_its_tool_calls():
    """The modules that decide what the model knows open no file, run no process and read no environment: the
    conversation is their only input."""
    root = pathlib.Path(model_pkg.__file__).parent
    for name in ("policy.py", "learned.py", "callers.py", "results.py", "analysis.py"):
        tree = ast.parse((root / name).read_text())
        imported = {
            a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        } | {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"os", "pathlib", "subprocess", "shutil", "glob", "io", "urllib", "socket"}, (
            name
        )
        calls = {
            n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        assert not calls & {"open", "exec", "eval", "__import__"}, name
