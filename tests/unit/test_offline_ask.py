"""The offline model as the ask agent: it learns the finding's line only through its read_file call, answers
with it (string literals masked: a line may hold a secret), and answers a PR-level question from the PR's files."""

from __future__ import annotations

from prfleet.agents.tools import number_lines
from prfleet.repository.untrusted import untrusted_block
from prfleet_local.model import ask
from prfleet_local.model.learned import Call

FIRST = "\n\n".join(
    [
        untrusted_block("finding", "**Hard-coded secret**\n\nDetails.", path="shop/x.py", line=2),
        untrusted_block("question", "Why?", author="wendy"),
    ]
)


def test_it_reads_the_findings_lines_before_it_answers():
    content, stop, _ = ask.next_turn(FIRST, [])
    assert stop == "tool_use"
    (use,) = content
    assert use["name"] == "read_file" and use["input"] == {
        "path": "shop/x.py",
        "start_line": 1,
        "end_line": 5,
    }
    result = untrusted_block("file", number_lines('import os\nTOKEN = "sk_live_123"\n'), path="shop/x.py")
    content, stop, _ = ask.next_turn(FIRST, [Call("read_file", use["input"], result, False, "t1")])
    (answer,) = content
    assert answer["name"] == "answer" and stop == "tool_use"
    text = answer["input"]["answer"]
    assert "Hard-coded secret" in text and 'TOKEN = "…"' in text and "sk_live_123" not in text


def test_a_question_on_the_conversation_is_answered_from_the_changed_files():
    first = untrusted_block("question", "what changed?", author="wendy")
    content, _, _ = ask.next_turn(first, [])
    assert content[0]["name"] == "list_changed_files"
    listing = untrusted_block("file_list", "modified\t+3\t-1\tshop/x.py")
    content, _, _ = ask.next_turn(first, [Call("list_changed_files", {}, listing, False, "t1")])
    assert "`shop/x.py`" in content[0]["input"]["answer"]
