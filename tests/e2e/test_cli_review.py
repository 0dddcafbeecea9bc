"""`prfleet review PATH` on a repository made here: a feature branch with a seeded bug, reviewed by the whole local
stack (offline model) against its merge base with main, the bug reported at its line, every run's cost printed,
and the user's repository left exactly as it was."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BASE = '''"""Inventory."""


def count(items: list[str]) -> int:
    """How many items."""
    return len(items)
'''
FEATURE = '''"""Inventory."""

import subprocess


def count(items: list[str]) -> int:
    """How many items."""
    return len(items)


def archive(name: str) -> None:
    """Archive the inventory file."""
    subprocess.run(f"tar czf {name}.tgz inventory/", shell=True, check=True)
'''
BUG_LINE = (
    FEATURE.splitlines().index('    subprocess.run(f"tar czf {name}.tgz inventory/", shell=True, check=True)')
    + 1
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def user_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "inventory"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "me@example.com")
    git(repo, "config", "user.name", "Me")
    (repo / "inventory.py").write_text(BASE)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "Inventory")
    git(repo, "checkout", "-qb", "feature/archive")
    (repo / "inventory.py").write_text(FEATURE)
    git(repo, "commit", "-qam", "Archive the inventory")
    git(repo, "checkout", "-q", "main")
    (repo / "NOTES.txt").write_text("main moved on after the branch\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "Notes")
    git(repo, "checkout", "-q", "feature/archive")
    return repo


def _snapshot(repo: Path) -> tuple[str, str, str]:
    return git(repo, "for-each-ref"), git(repo, "status", "--porcelain"), git(repo, "rev-parse", "HEAD")


def _review(repo: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "PRFLEET_"))}
    env["ANTHROPIC_API_KEY"] = "sk-ant-must-not-be-used"  # an exported key never turns this into paid calls
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "prfleet_local.cli",
            "review",
            str(repo),
            "--workdir",
            str(tmp_path / "w"),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_review_of_a_branch_finds_the_seeded_bug_at_its_line_and_prints_every_cost(user_repo, tmp_path):
    before = _snapshot(user_repo)
    proc = _review(user_repo, tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "HEAD against its merge base with main" in out
    assert "the offline model" in out and "no cost" in out
    assert re.search(rf"inventory\.py:{BUG_LINE}\s+(critical|high)\s+.*shell", out), out
    assert "NOTES.txt" not in out  # only the branch's own change: main's later commit is not in the diff
    costs = [float(m) for m in re.findall(r"\] \w+\s+\$(\d+\.\d{6})", out)]
    assert costs and len(costs) == int(re.search(r"over (\d+) runs", out).group(1))
    total = float(re.search(r"Total cost: \$(\d+\.\d{6})", out).group(1))
    assert total == pytest.approx(sum(costs), abs=1e-6) and total > 0
    assert re.search(r"review page: http://127\.0\.0\.1:\d+/prfleet/pulls/1", out)
    assert _snapshot(user_repo) == before  # the user's repository is untouched


def test_an_explicit_base_and_head_review_exactly_that_range(user_repo, tmp_path):
    proc = _review(user_repo, tmp_path, "--base", "main", "--head", "main")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "nothing to review" in proc.stderr
    proc = _review(user_repo, tmp_path, "--base", "main~1", "--head", "main")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "main~1..main" in proc.stdout and "NOTES.txt" in proc.stdout and "inventory.py" not in proc.stdout


def test_a_repository_fail_on_from_its_base_branch_fails_the_check(user_repo, tmp_path):
    git(user_repo, "checkout", "-q", "main")
    (user_repo / ".prfleet.toml").write_text('fail_on = "high"\n')
    git(user_repo, "add", "-A")
    git(user_repo, "commit", "-qm", "Gate merges on high findings")
    git(user_repo, "checkout", "-q", "feature/archive")
    proc = _review(user_repo, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(rf"inventory\.py:{BUG_LINE}\s+(critical|high)", proc.stdout)
    assert "Check run 'prfleet': completed / failure" in proc.stdout


def test_review_json_is_one_object_on_stdout_with_every_finding_its_relation_agent_and_verified(
    user_repo, tmp_path
):
    proc = _review(user_repo, tmp_path, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)  # nothing but the object on stdout: the progress went to stderr
    assert "waiting for the review" in proc.stderr
    assert out["range"] == "HEAD against its merge base with main" and len(out["head"]) == 40
    bug = [f for f in out["findings"] if f["path"] == "inventory.py" and f["line"] == BUG_LINE]
    assert bug and bug[0]["severity"] in ("critical", "high") and bug[0]["agent"] == "review"
    for f in out["findings"]:
        assert {"path", "line", "severity", "category", "title", "relation", "agent", "model"} <= set(f)
        assert f["relation"] in ("changed", "affected", "preexisting")
    # the verify pass (issue 24) checked what the review posts: those findings are verified, the pre-existing
    # ones it never sees (held back before verification) are not
    assert bug[0]["verified"] is True
    assert all(f["verified"] is (f["relation"] != "preexisting") for f in out["findings"])
    assert out["cost_usd"] > 0
    assert out["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in out["runs"]), abs=1e-6)
    assert out["time_to_review_s"] > 0 and out["reviewed"] is True
    assert {r["agent"] for r in out["runs"]} == {"review", "tests", "docs", "verify"}  # its cost counts too


def test_review_json_mistakes_are_one_line_on_stderr(user_repo, tmp_path):
    proc = _review(user_repo, tmp_path, "--json", "--stay")
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert "--json" in proc.stderr
    proc = _review(user_repo, tmp_path, "--json", "--head", "no-such-branch")
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
