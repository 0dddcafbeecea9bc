"""`prfleet eval` end to end: the scoring proved on cases whose findings are known in advance (an offline model
in its scripted-reply mode, reached through --model-url), the LLM judge on a golden issue without a path (the
offline judge behind the same server), the Martian golden_comments format with its pull request fetched from a
fake GitHub, and the shipped corpus giving a table and valid --json. The offline figures measure the pipeline, not
Claude; the offline judge's measure the plumbing, not a judge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prfleet.agents.specs import system_prompt
from prfleet_local.github.server import GitHubServer, GitRepo
from prfleet_local.model.faults import FaultPlan
from prfleet_local.model.server import ModelServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "eval" / "corpus"


def prfleet(
    *args: str, timeout: float = 400, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = ("ANTHROPIC_", "PRFLEET_", "AGENTS", "GITHUB_TOKEN")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(clean)}, **(env or {})}
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


def system_text(request: dict) -> str:
    """A Messages request's system prompt as text (a string, or text blocks when it carries cache_control)."""
    system = request.get("system") or ""
    return system if isinstance(system, str) else "".join(b.get("text", "") for b in system)


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
    # Efforts other than the template's defaults (review high, verify medium): the breakdown must show these.
    efforts = ("--param", "ReviewEffort=low", "--param", "VerifyEffort=high")
    try:
        proc = prfleet("eval", str(corpus), "--model-url", url, "--agents", "review", *efforts, "--json")
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

    # Per agent, model and effort: the efforts the stack sent (read back from its settings), also what the model
    # server received; the verify run under agent verify with VerifyEffort.
    assert out["parameters"] == {"ReviewEffort": "low", "VerifyEffort": "high"}
    rows = {(r["agent"], r["model"], r["effort"]): r for r in out["per_agent_model_effort"]}
    assert set(rows) == {("review", "claude-sonnet-5-5", "low"), ("verify", "claude-sonnet-5-5", "high")}
    review = rows[("review", "claude-sonnet-5-5", "low")]
    assert (review["findings"], review["true_positives"], review["precision"]) == (4, 3, 0.75)
    assert rows[("verify", "claude-sonnet-5-5", "high")]["cost_usd"] > 0
    assert [len(c["per_agent_model_effort"]) for c in out["cases"]] == [2, 2]
    sent = {
        agent: {
            json.dumps(r.get("output_config"))
            for r in server.requests
            if system_text(r) == system_prompt(agent)
        }
        for agent in ("review", "verify")
    }
    assert sent == {"review": {json.dumps({"effort": "low"})}, "verify": {json.dumps({"effort": "high"})}}


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
    assert "per agent, model and effort" in table.stdout
    # the template's defaults, no --param: review at high, the cheaper agents at low
    assert any(line.split()[:3] == ["review", "claude-sonnet-5-5", "high"] for line in lines)
    assert any(line.split()[:3] == ["docs", "claude-haiku-5-5", "low"] for line in lines)

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


# ------------------------------------------------------------------------------------------------ the judge

CACHE_ISSUE = (
    "The hash-based cache key is randomised per process, so worker processes never share cache entries"
)


def test_the_judge_matches_a_golden_issue_without_a_path_to_exactly_one_finding(tmp_path: Path):
    corpus = tmp_path / "corpus"
    make_case(corpus, "judged", [{"comment": CACHE_ISSUE, "severity": "medium"}], bundle=False)
    # Two findings: one says what the golden issue says (in other order and words), one is about something else.
    right = {
        **finding("judged.py", 5),
        "title": "Cache key randomised per process",
        "body": "hash() is randomised per process: worker processes never share cache entries.",
    }
    script = [right, finding("judged.py", 20)]
    server = ModelServer(faults=FaultPlan(scripted=script))
    url = server.start()

    def judge_requests() -> list[dict]:
        return [
            r for r in server.requests if str(r.get("system", "")).startswith("You are prfleet's eval judge")
        ]

    try:
        proc = prfleet("eval", str(corpus), "--model-url", url, "--agents", "review", "--json")
        judged_once = judge_requests()
        unjudged = prfleet(
            "eval", str(corpus), "--model-url", url, "--agents", "review", "--no-judge", "--json"
        )
        assert judge_requests() == judged_once  # --no-judge: no call at all
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    (case,) = out["cases"]
    assert (case["golden"], case["findings"], case["true_positives"]) == (1, 2, 1)
    assert (case["precision"], case["recall"]) == (0.5, 1.0)
    (issue,) = case["golden_issues"]
    assert issue["matched_by"] == "judge" and issue["found"] and issue["finding"]["line"] == 5
    assert issue["judge"]["named"] == ["F1"] and issue["judge"]["error"] is None
    # one judge call, on the run's own endpoint, billed apart from the review
    assert len(judged_once) == 1 and judged_once[0]["model"] == "claude-haiku-5-5"
    assert (case["judge_calls"], case["judge_errors"], case["judge_unjudged"]) == (1, 0, 0)
    assert case["judge_cost_usd"] > 0 and out["judge"]["cost_usd"] == case["judge_cost_usd"]
    assert out["total"]["judge_calls"] == 1 and out["judge"]["model"] == "claude-haiku-5-5"
    assert out["total"]["cost_usd"] == case["cost_usd"]  # the reviews' cost alone

    # Without a judge the same finding is not credited: the issue is reported unjudged and counted as missed.
    assert unjudged.returncode == 0, unjudged.stdout + unjudged.stderr
    assert "--no-judge is set" in unjudged.stderr
    (case,) = json.loads(unjudged.stdout)["cases"]
    assert (case["true_positives"], case["recall"], case["judge_calls"], case["judge_unjudged"]) == (
        0,
        0.0,
        0,
        1,
    )
    assert case["golden_issues"][0]["judge"] is None


# ------------------------------------------------------------------------------------------------ Martian format

TOKEN = "ghp_eval_fake_token_0123456789abcdef"


def martian_github(tmp_path: Path) -> GitHubServer:
    """The fake GitHub serving acme/widgets with PR 1, which changes widgets/cache.py."""
    repo = GitRepo(tmp_path / "served")
    repo.commit({"widgets/cache.py": "".join(f"A{i} = {i}\n" for i in range(1, 31))}, "base")
    repo.commit(
        {"widgets/cache.py": "".join(f"A{i} = hash({i})\n" for i in range(1, 31))}, "cache keys", branch="pr"
    )
    server = GitHubServer(repo, full_name="acme/widgets", tokens=[TOKEN])
    server.start()
    server.open_pr("acme/widgets", "main", "pr", "Cache widgets by key")
    return server


def martian_dir(root: Path) -> Path:
    """A golden_comments folder shaped exactly as the Martian benchmark's (written for this test)."""
    data = [
        {
            "pr_title": "Cache widgets by key",
            "url": "https://github.com/acme/widgets/pull/1",
            "comments": [
                {"comment": CACHE_ISSUE, "severity": "Medium"},
                {"comment": "Widgets evicted under memory pressure are never rebuilt.", "severity": "High"},
            ],
        }
    ]
    (root / "golden_comments").mkdir(parents=True)
    (root / "golden_comments" / "widgets.json").write_text(json.dumps(data, indent=2))
    return root


def test_the_martian_format_fetched_from_github_prints_the_judge_apart_and_json_has_its_fields(
    tmp_path: Path,
):
    github = martian_github(tmp_path)
    root = martian_dir(tmp_path / "bench")
    script = [
        {
            **finding("widgets/cache.py", 5),
            "title": "Cache key randomised per process",
            "body": "hash() is randomised per process: worker processes never share cache entries.",
        },
        finding("widgets/cache.py", 20),
    ]
    model = ModelServer(faults=FaultPlan(scripted=script))
    model_url = model.start()
    env = {"GITHUB_TOKEN": TOKEN}
    try:
        table = prfleet("eval", str(root), "--github-url", github.api_url, "--agents", "review", env=env)
        as_json = prfleet(
            "eval",
            str(root),
            "--github-url",
            github.api_url,
            "--model-url",
            model_url,
            "--agents",
            "review",
            "--json",
            env=env,
        )
    finally:
        model.stop()
        github.stop()
    assert table.returncode == 0, table.stdout + table.stderr
    lines = table.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("judge: claude-haiku-5-5"))
    assert "billed apart, not in cost $ above" in lines[at]
    assert "offline judge" in lines[at + 1] and "not a judge" in lines[at + 1]
    assert lines[at + 2].split() == ["judged", "calls", "errors", "unjudged", "judge", "$"]
    row = lines[at + 3].split()
    assert row[0] == "widgets#1" and row[1] == "2" and row[3] == "0"
    assert (
        f"fetching https://github.com/acme/widgets/pull/1 (Cache widgets by key) from {github.api_url}"
        in (table.stdout)
    )
    assert TOKEN not in table.stdout + table.stderr + as_json.stdout + as_json.stderr

    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    out = json.loads(as_json.stdout)
    (case,) = out["cases"]
    assert case["case"] == "widgets#1" and case["url"] == "https://github.com/acme/widgets/pull/1"
    assert (case["golden"], case["findings"], case["true_positives"]) == (2, 2, 1)
    assert (case["precision"], case["recall"]) == (0.5, 0.5)
    assert [g["found"] for g in case["golden_issues"]] == [True, False]
    assert all(g["matched_by"] == "judge" and g["path"] is None for g in case["golden_issues"])
    keys = {"judge_calls", "judge_errors", "judge_unjudged", "judge_cost_usd"}
    assert keys <= set(case) and keys <= set(out["total"])
    assert case["judge_calls"] == 2 and case["judge_cost_usd"] > 0
    assert {"model", "calls", "errors", "unjudged", "cost_usd", "note"} <= set(out["judge"])
    assert {m for m, _ in github.requests} == {"GET"}  # the benchmark's PR was only read


def test_martian_command_line_mistakes_are_one_line_on_stderr(tmp_path: Path):
    root = martian_dir(tmp_path / "bench")
    missing = prfleet("eval", str(root), timeout=60)
    assert missing.returncode == 2 and missing.stdout == ""
    assert len(missing.stderr.strip().splitlines()) == 1
    assert "GITHUB_TOKEN" in missing.stderr and "https://api.github.com" in missing.stderr
    bad = prfleet("eval", str(tmp_path / "nowhere"), timeout=60, env={"GITHUB_TOKEN": TOKEN})
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "not a directory" in bad.stderr and "Traceback" not in bad.stderr
