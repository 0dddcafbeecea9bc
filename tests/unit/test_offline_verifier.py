"""The offline verifier (local/prfleet_local/model/verify.py) answers prfleet's verify run from the tool results it
asks for: the verify run's real first message (agents.verify) and prfleet's real tools (agents.tools.PrTools over
an in-memory repository) answer its calls turn by turn, and every verdict is tied to the tool result behind it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prfleet.agents.specs import system_prompt
from prfleet.agents.tools import PrTools
from prfleet.agents.verdicts import parse_verdicts
from prfleet.agents.verify import build_verify_content, numbered_candidates
from prfleet.github.files import ChangedFile
from prfleet_local.model import verify
from prfleet_local.model.faults import FaultPlan
from prfleet_local.model.model_log import ModelLog
from prfleet_local.model.policy import Conversation

EXPORT = """\"\"\"Order export.\"\"\"

import json


def helper(x):
    return x

TOKEN = "whk_live_0000"


def export_orders(orders):
    rows = [json.dumps(o) for o in orders]
    return helper(rows)
"""
TESTS = """from shop.export import export_orders


def test_export_orders():
    assert export_orders([]) == []
"""
FILES = {"shop/export.py": EXPORT, "tests/test_export.py": TESTS}
LINE = {text.strip(): n for n, text in enumerate(EXPORT.splitlines(), 1) if text.strip()}
TOOLS = ["read_file", "grep", "glob", "get_diff", "list_changed_files", "report_verdicts"]


class Source:
    title, body = "Export orders", "Adds the export."

    def read_file(self, path: str) -> str | None:
        return FILES.get(path)

    def file_diff(self, path: str) -> str:
        return "@@ -0,0 +1,14 @@\n" + "".join(f"+{x}\n" for x in EXPORT.splitlines())

    def changed_files(self) -> list[ChangedFile]:
        return [ChangedFile("shop/export.py", "added", "s", 14, 0, "")]


def cand(line: int, title: str, category: str = "bug", agent: str = "review") -> dict[str, Any]:
    return {
        "path": "shop/export.py",
        "line": line,
        "severity": "medium",
        "category": category,
        "title": title,
        "body": "b",
        "agent": agent,
        "relation": "changed",
        "fingerprint": f"{line:02d}{title[:6]}",
    }


CANDIDATES = [
    cand(LINE['TOKEN = "whk_live_0000"'], "Hard-coded secret in `TOKEN`", "security"),  # c1 keep
    cand(
        LINE['TOKEN = "whk_live_0000"'], "Secret `TOKEN` in source", "security", "docs"
    ),  # c2 merged into c1
    cand(LINE["rows = [json.dumps(o) for o in orders]"], "Use of `eval`"),  # c3 drop: not on that line
    cand(
        LINE["def export_orders(orders):"], "No test for `export_orders`", "tests", "tests"
    ),  # c4 drop: tested
    cand(
        LINE["def export_orders(orders):"], "Public function `export_orders` has no docstring", "docs", "docs"
    ),
    cand(LINE["return helper(rows)"], "Public function `helper` has no docstring", "docs", "docs"),  # c6 drop
    cand(99, "Off the end"),  # c7 drop: past the end
]


def converse(
    plan: FaultPlan, found: list[dict[str, Any]], root: Path, rejections: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]], ModelLog]:
    """Drive the verifier to its report: each tool call answered by prfleet's own tools, over the repository
    unpacked in `root` as an agent's snapshot is."""
    for path, text in FILES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    tools = PrTools(Source(), snapshot=SimpleNamespace(root=root, reason=None))
    job = SimpleNamespace(repo="acme/shop", number=7, head_sha="a" * 40)
    messages = [
        {
            "role": "user",
            "content": build_verify_content(
                job, Source(), numbered_candidates(found), tools.view, rejections or []
            ),
        }
    ]
    log = ModelLog()
    for n in range(6):
        body = {
            "system": system_prompt("verify"),
            "tools": [{"name": t} for t in TOOLS],
            "messages": messages,
        }
        conv = Conversation.parse(body)
        turn = verify.next_turn(plan, conv, body)
        log.record(f"req_{n}", conv, turn)
        uses = [b for b in turn.content if b["type"] == "tool_use"]
        if uses and uses[0]["name"] == "report_verdicts":
            return uses[0]["input"], messages, log
        messages.append({"role": "assistant", "content": uses})
        answers = [tools.call(u["name"], u["input"]) for u in uses]
        messages.append(
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": u["id"],
                        "content": a.content,
                        "is_error": a.is_error,
                    }
                    for u, a in zip(uses, answers, strict=True)
                ],
            }
        )
    raise AssertionError("the verifier never reported")


def test_the_offline_verifier_decides_from_its_own_reads_and_greps(tmp_path):
    report, messages, log = converse(FaultPlan(), CANDIDATES, tmp_path)
    verdicts, _ = parse_verdicts(report, [f"c{i}" for i in range(1, 8)])  # prfleet's own check accepts it
    got = {v.id: (v.decision, v.reason, v.merges) for v in verdicts}
    assert got["c1"][0] == "keep" and got["c1"][2] == ("c2",) and "c2" not in got  # same path, line, category
    assert got["c3"][0] == "drop" and "`eval` is not on shop/export.py" in got["c3"][1]
    assert got["c4"][0] == "drop" and "exercised by tests/test_export.py" in got["c4"][1]
    assert got["c5"][0] == "keep"  # defined on its line (grep), no docstring there
    assert got["c6"][0] == "drop" and "no definition of `helper`" in got["c6"][1]
    assert got["c7"][0] == "drop" and "past the end" in got["c7"][1]
    # what it asked for: a read around every candidate's line, a grep per untested or undocumented name
    asked = [b for m in messages if m["role"] == "assistant" for b in m["content"]]
    assert {(b["name"], b["input"].get("start_line")) for b in asked if b["name"] == "read_file"} == {
        ("read_file", max(1, c["line"] - verify.RADIUS)) for c in CANDIDATES
    }
    assert sum(b["name"] == "grep" for b in asked) == 3
    # the request log ties every verdict to the result of a tool call the verifier itself made
    (entry,) = [e for e in log.entries() if e["verdicts"]]
    ids = {b["id"] for b in asked}
    judged = {v.id for v in verdicts} | {
        m for v in verdicts for m in v.merges
    }  # a merge is decided on a read too
    assert {f["detail"].split(":", 1)[0] for f in entry["facts"]} == judged == {f"c{i}" for i in range(1, 8)}
    assert all(f["tool_use_id"] in ids and entry["evidence"][f["tool_use_id"]] for f in entry["facts"])


def test_the_teams_rejections_in_the_first_message_drop_a_candidate_of_their_kind(tmp_path):
    """Issue 25: the verify run is shown the team's recent rejections; the offline verifier drops a candidate of the
    same category and title shape (its names aside) and says why; other kinds are judged as before."""
    rejected = [
        {
            "title": "Public function `load` has no docstring",
            "category": "docs",
            "agent": "docs",
            "path": "shop/io.py",
            "up": 1,
            "down": 3,
        },
        {
            "title": "Hard-coded secret in `KEY`",
            "category": "bug",
            "agent": "review",
            "path": "x.py",
            "up": 0,
            "down": 2,
        },  # same shape as c1, another category: not its kind
    ]
    report, messages, _ = converse(FaultPlan(), CANDIDATES, tmp_path, rejected)
    first = messages[0]["content"][0]["text"]
    assert (
        "<untrusted_team_rejections" in first
        and "shop/io.py: Public function `load` has no docstring" in first
    )
    got = {v["id"]: v for v in report["verdicts"]}
    why = "the team turned down a finding like it lately: Public function `load` has no docstring (👎 3)"
    assert (got["c5"]["decision"], got["c5"]["reason"]) == ("drop", why)  # kept without the rejection
    assert (got["c6"]["decision"], got["c6"]["reason"]) == ("drop", why)  # the same kind
    assert got["c1"]["decision"] == "keep"  # security, not bug: another kind
    assert got["c4"]["decision"] == "drop" and "exercised by tests/test_export.py" in got["c4"]["reason"]


def test_scripted_mode_scripts_a_candidates_verdict_and_merge(tmp_path):
    line = LINE['TOKEN = "whk_live_0000"']
    plan = FaultPlan(
        scripted=[
            {
                "agent": "verify",
                "path": "shop/export.py",
                "line": line,
                "title": "Hard-coded secret in `TOKEN`",
                "decision": "keep",
                "reason": "scripted keep",
                "severity": "critical",
                "confidence": 0.99,
            },
            {
                "agent": "verify",
                "path": "shop/export.py",
                "line": line,
                "title": "Secret `TOKEN` in source",
                "merge_into": line,
            },
            {
                "agent": "verify",
                "path": "shop/export.py",
                "line": LINE["def export_orders(orders):"],
                "reason": "scripted drop",
            },
        ]
    )
    report, _, _ = converse(plan, CANDIDATES[:2] + CANDIDATES[4:5], tmp_path)
    assert report["verdicts"] == [
        {
            "id": "c1",
            "decision": "keep",
            "reason": "scripted keep",
            "severity": "critical",
            "confidence": 0.99,
            "merges": ["c2"],
        },
        {"id": "c3", "decision": "drop", "reason": "scripted drop"},
    ]
