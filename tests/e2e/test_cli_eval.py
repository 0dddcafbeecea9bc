"""`prfleet eval` end to end: the scoring proved on cases whose findings are known in advance (an offline model
in its scripted-reply mode, reached through --model-url), and the shipped corpus giving a table and valid --json.
The offline figures measure the pipeline, not Claude."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prfleet_local.model.faults import FaultPlan
from prfleet_local.model.server import ModelServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "eval" / "corpus"


def prfleet(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "PRFLEET_", "AGENTS"))}
    return subprocess.run(
        [sys.executable, "-m", "prfleet_local.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)


def make_case(root: Path, name: str, golden: list[dict], *, bundle: bool) -> None:
    """A case whose PR rewrites all 40 lines of NAME.py (so every scripted line is on a changed line)."""
    case = root / name
    repo = case / ("src" if bundle else "repo")
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "eval@example.com")
    git(repo, "config", "user.name", "eval")
    (repo / f"{name}.py").write_text("".join(f"A{i} = {i}\n" for i in range(1, 41)))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    git(repo, "tag", "base")
    (repo / f"{name}.py").write_text("".join(f"A{i} = {i} + 1\n" for i in range(1, 41)))
    git(repo, "commit", "-qam", "head")
    git(repo, "tag", "head")
    where = "repo"
    if bundle:
        git(repo, "bundle", "create", str(case / "repo.bundle"), "base", "head")
        where = "repo.bundle"
    data = {"repo": where, "base": "base", "head": "head", "golden": golden}
    (case / "case.json").write_text(json.dumps(data))


def finding(path: str, line: int) -> dict:
    return {
        "path": path,
        "line": line,
        "severity": "high",
        "category": "bug",
        "title": f"Scripted finding at {path}:{line}",
        "body": "Reported by the offline model's scripted-reply mode.",
    }


def test_scripted_golden_findings_score_1_and_one_wrong_finding_lowers_precision_to_one_half(tmp_path: Path):
    corpus = tmp_path / "corpus"
    exact = [
        {"path": "exact.py", "line": 5, "end_line": 6, "severity": "high", "comment": "first"},
        {"path": "exact.py", "line": 30, "severity": "medium", "comment": "second"},
    ]
    make_case(corpus, "exact", exact, bundle=True)
    make_case(corpus, "extra", [{"path": "extra.py", "line": 10, "comment": "the one issue"}], bundle=False)
    # The model reports exactly the golden issues, plus, in case extra, one wrong finding 10 lines away.
    script = [
        finding("exact.py", 5),
        finding("exact.py", 30),
        finding("extra.py", 10),
        finding("extra.py", 20),
    ]
    server = ModelServer(faults=FaultPlan(scripted=script))
    url = server.start()
    try:
        proc = prfleet("eval", str(corpus), "--model-url", url, "--agents", "review", "--json")
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    cases = {c["case"]: c for c in out["cases"]}
    assert (cases["exact"]["golden"], cases["exact"]["findings"], cases["exact"]["true_positives"]) == (
        2,
        2,
        2,
    )
    assert (cases["exact"]["precision"], cases["exact"]["recall"], cases["exact"]["f1"]) == (1.0, 1.0, 1.0)
    # one wrong finding beside the one right one: precision 1/2, recall still 1, F1 2*1/(2+1)
    assert (cases["extra"]["findings"], cases["extra"]["true_positives"]) == (2, 1)
    assert (cases["extra"]["precision"], cases["extra"]["recall"]) == (0.5, 1.0)
    assert cases["extra"]["f1"] == round(2 / 3, 4)
    assert (out["total"]["true_positives"], out["total"]["findings"], out["total"]["precision"]) == (
        3,
        4,
        0.75,
    )
    # --agents review: no other file agent ran; the head's verify pass weighed the review's findings (its cost)
    assert set(out["per_agent"]) == {"review", "verify"}
    assert out["total"]["cost_usd"] > 0 and out["total"]["usd_per_true_positive"] > 0
    assert all(c["time_to_review_s"] > 0 for c in out["cases"])
    found = [g for c in out["cases"] for g in c["golden_issues"]]
    assert all(g["found"] for g in found) and len(found) == 3


def test_the_shipped_corpus_prints_a_table_and_valid_json():
    table = prfleet("eval", str(SHIPPED))
    assert table.returncode == 0, table.stdout + table.stderr
    lines = table.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["golden", "found", "tp"])
    names = sorted(p.name for p in SHIPPED.iterdir() if (p / "case.json").is_file())
    rows = [line.split()[0] for line in lines[header + 1 : header + 2 + len(names)]]
    assert rows == [*names, "total"]
    assert "measure the pipeline, not Claude" in table.stdout
    assert "per agent" in table.stdout and "per model" in table.stdout

    proc = prfleet("eval", str(SHIPPED), "--json", "--agents", "review")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)  # stdout is the one object; the progress went to stderr
    assert "waiting for the review" in proc.stderr
    assert [c["case"] for c in out["cases"]] == names and all(c["reviewed"] for c in out["cases"])
    keys = {"golden", "findings", "true_positives", "precision", "recall", "f1", "cost_usd"}
    assert keys | {"usd_per_true_positive", "time_to_review_s"} <= set(out["total"])
    assert out["total"]["golden"] == sum(
        len(json.loads((SHIPPED / n / "case.json").read_text())["golden"]) for n in names
    )
    assert set(out["per_agent"]) == {"review"} and out["per_model"]
    assert out["note"].endswith("not Claude")
