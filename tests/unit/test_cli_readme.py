"""Every command the README and the deploy guide show is one the `prfleet` command accepts, and every `make`
target they name exists: the front door must not print a command that fails as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from prfleet_local.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "deploy.md", ROOT / "docs" / "prfleet-toml.md"]


def commands(path: Path) -> list[str]:
    """`prfleet ...` lines of the shell blocks, continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", path.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            m = re.match(r"^(?:[A-Z_]+=\S+\s+)*(?:\.venv/bin/)?prfleet (.+)$", line)
            if m:
                out.append(m.group(1).split(" > ")[0].split(" | ")[0])
    return out


CASES = [(p.name, c) for p in DOCS for c in commands(p)]


def test_the_docs_show_commands():
    assert len(CASES) >= 10


@pytest.mark.parametrize(("doc", "command"), CASES, ids=[f"{d}: {c[:50]}" for d, c in CASES])
def test_each_documented_command_parses(doc, command):
    text = command.replace('"$(out WebhookUrl)"', "https://x.execute-api.us-east-1.amazonaws.com/webhook")
    text = (
        re.sub(r"<[^>]+>", "placeholder", text)
        .replace('"$STACK"', "prfleet")
        .replace('"$REGION"', "us-east-1")
    )
    args = build_parser().parse_args(shlex.split(text))  # SystemExit (one-line error) if not
    assert callable(args.func)


def test_each_make_target_named_exists():
    targets = set(re.findall(r"^([a-z][\w.-]*):", (ROOT / "Makefile").read_text(), re.M))
    named = {t for p in DOCS for t in re.findall(r"`make ([a-z][\w.-]*)", p.read_text())}
    assert named and named <= targets, named - targets
