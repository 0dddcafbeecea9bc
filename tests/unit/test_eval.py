"""`prfleet eval`'s matching, scoring and corpus checks: what an operator relies on when comparing figures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from prfleet_local.cli import main
from prfleet_local.eval.corpus import CorpusError, Golden, load_corpus
from prfleet_local.eval.matching import match
from prfleet_local.eval.scoring import case_result, score


def f(path: str, line: int, **extra: object) -> dict:
    return {"path": path, "line": line, **extra}


G = Golden("a.py", 10, 12)


@pytest.mark.parametrize(
    ("line", "tp"),
    [(5, 1), (4, 0), (10, 1), (12, 1), (17, 1), (18, 0)],
)
def test_a_finding_within_5_lines_of_the_golden_range_matches_and_6_away_does_not(line, tp):
    assert match([G], [f("a.py", line)]).true_positives == tp


def test_another_file_never_matches_and_a_finding_range_counts_from_its_nearest_end():
    assert match([G], [f("b.py", 10)]).true_positives == 0
    assert match([G], [f("./a.py", 11)]).true_positives == 1
    assert match([G], [f("a.py", 1, end_line=4)]).true_positives == 0  # 6 lines before 10
    assert match([G], [f("a.py", 1, end_line=5)]).true_positives == 1


def test_each_golden_matches_once_and_each_finding_counts_once():
    two_findings = match([G], [f("a.py", 10), f("a.py", 11)])
    assert two_findings.pairs == [(0, 0)]  # the duplicate is a false positive
    two_golden = match([G, Golden("a.py", 14, 14)], [f("a.py", 12)])
    assert two_golden.true_positives == 1


def test_the_assignment_is_maximal_and_deterministic():
    # golden 0 prefers the nearest finding (index 0), but golden 1 can only use that one: both are found.
    golden = [Golden("a.py", 10, 10), Golden("a.py", 20, 20)]
    findings = [f("a.py", 15), f("a.py", 11)]
    assert match(golden, findings).pairs == [(0, 1), (1, 0)]
    assert match(golden, findings).pairs == match(golden, findings).pairs
    # ties in distance go to the earlier finding in report order
    assert match([Golden("a.py", 10, 10)], [f("a.py", 12), f("a.py", 8)]).pairs == [(0, 0)]


def test_precision_recall_f1_and_dollars_per_true_positive():
    golden = [Golden("a.py", 10, 10), Golden("b.py", 3, 3)]
    exact = score(golden, [f("a.py", 10), f("b.py", 3)], cost_micros=400_000)
    assert (exact.precision, exact.recall, exact.f1, exact.usd_per_true_positive) == (1.0, 1.0, 1.0, 0.2)
    extra = score(golden, [f("a.py", 10), f("b.py", 3), f("a.py", 90)])
    assert extra.precision == pytest.approx(2 / 3) and extra.recall == 1.0
    assert extra.f1 == pytest.approx(2 * 2 / (3 + 2))
    none = score(golden, [])
    assert (none.precision, none.recall, none.f1, none.usd_per_true_positive) == (None, 0.0, 0.0, None)


def test_per_agent_scores_each_agents_findings_alone_and_charges_its_runs():
    golden = [Golden("a.py", 10, 10)]
    findings = [f("a.py", 10, agent="review", model="m1"), f("a.py", 10, agent="docs", model="m2")]
    runs = [
        {"agent": "review", "model": "m1", "cost_micros": 3},
        {"agent": "docs", "model": "m2", "cost_micros": 1},
        {"agent": "tests", "model": "m2", "cost_micros": 1},
    ]
    res = case_result("c", golden, findings, runs, 2.5)
    assert res.total.true_positives == 1 and res.total.findings == 2 and res.total.cost_micros == 5
    assert res.by_agent["review"].recall == 1.0 and res.by_agent["docs"].recall == 1.0
    assert res.by_agent["tests"].findings == 0 and res.by_agent["tests"].cost_micros == 1
    assert res.by_model["m2"].cost_micros == 2
    assert res.total.to_json()["time_to_review_s"] == 2.5


# ------------------------------------------------------------------------------------------------ corpus


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    case = root / "one"
    repo = case / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "a.py").write_text("x = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    git(repo, "tag", "base")
    (repo / "a.py").write_text("x = 2\n")
    git(repo, "commit", "-qam", "head")
    git(repo, "bundle", "create", str(case / "repo.bundle"), "base", "main")
    write(case, {"repo": "repo", "base": "base", "head": "main", "golden": [f("a.py", 1)]})
    return root


def write(case: Path, data: object) -> None:
    case.mkdir(parents=True, exist_ok=True)
    (case / "case.json").write_text(json.dumps(data) if not isinstance(data, str) else data)


def test_a_good_corpus_loads_from_a_repository_or_a_bundle(corpus: Path):
    write(corpus / "two", {"repo": "../one/repo.bundle", "base": "base", "head": "main", "golden": []})
    with pytest.raises(CorpusError, match="outside the case directory"):
        load_corpus(corpus)
    (corpus / "two" / "repo.bundle").write_bytes((corpus / "one" / "repo.bundle").read_bytes())
    write(corpus / "two", {"repo": "repo.bundle", "base": "base", "head": "main", "golden": []})
    cases = load_corpus(corpus)
    assert [c.name for c in cases] == ["one", "two"]
    assert cases[1].is_bundle and (cases[1].checkout() / "HEAD").exists()
    assert cases[0].golden == [Golden("a.py", 1, 1)]
    for c in cases:
        c.cleanup()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "case bad: no case.json"),
        ("{not json", "case bad: case.json is not valid JSON"),
        ({"repo": "../one/repo", "base": "base", "head": "main", "golden": []}, "outside the case directory"),
        ({"repo": "nowhere", "base": "base", "head": "main", "golden": []}, "does not exist"),
        ({"base": "base", "head": "main", "golden": []}, "needs 'repo'"),
        ({"repo": "repo", "base": "base", "head": "main"}, "needs 'golden'"),
        (
            {"repo": "repo", "base": "base", "head": "nosuchref", "golden": []},
            "head 'nosuchref': no such commit",
        ),
        (
            {"repo": "repo", "base": "base", "head": "main", "golden": [{"severity": "high"}]},
            "golden[0] has neither a path nor a comment",
        ),
        (
            {"repo": "repo", "base": "base", "head": "main", "golden": [{"line": 3, "comment": "an issue"}]},
            "golden[0]: a line needs a path",
        ),
        (
            {
                "repo": "repo",
                "base": "base",
                "head": "main",
                "golden": [{"path": "a.py", "line": 5, "end_line": 2}],
            },
            "golden[0]: end_line must be an integer >= line",
        ),
    ],
)
def test_bad_corpus_input_is_one_line_naming_the_case(corpus: Path, capsys, data, message):
    bad = corpus / "bad"
    bad.mkdir()
    if data is not None:
        if isinstance(data, dict) and data.get("repo") == "repo":
            subprocess.run(
                ["git", "clone", "-q", str(corpus / "one" / "repo"), str(bad / "repo")], check=True
            )
        write(bad, data)
    assert main(["eval", str(corpus)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("prfleet eval: case bad: "), err
    assert message in err


def test_a_golden_issue_without_a_path_loads_with_its_comment_for_the_judge(corpus: Path):
    data = json.loads((corpus / "one" / "case.json").read_text())
    data["golden"].append({"comment": "  salt=None is rejected again  ", "severity": "high"})
    write(corpus / "one", data)
    (case,) = load_corpus(corpus)
    assert case.golden[1] == Golden(None, None, None, "high", "salt=None is rejected again")
    assert case.golden[1].judged and not case.golden[0].judged


def test_command_line_mistakes_are_one_line(tmp_path: Path, capsys):
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--agents", "review,nosuch"]) == 2
    assert "unknown agent nosuch" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2
    assert "no cases" in capsys.readouterr().err
