"""bench/review_time.py's parts that decide what is measured: the generated PRs, the percentile, the variants the
template cannot run yet, the review-first re-order, and `make bench BENCH=...` picking parts."""

from __future__ import annotations

import ast
from types import SimpleNamespace

import pytest

from prfleet_local.bench import __main__ as bench_main
from prfleet_local.bench import review_time
from prfleet_local.model.analysis import review_python


def test_a_generated_pr_is_deterministic_half_modified_and_its_planted_bugs_are_real():
    base, head, bugs = review_time.make_pr(10, seed=3)
    assert review_time.make_pr(10, seed=3) == (base, head, bugs)
    assert review_time.make_pr(10, seed=4)[1] != head  # another run, other content: no result-cache hit
    modules = [p for p in head if not p.endswith("__init__.py")]
    assert len(modules) == 10
    modified = [p for p in modules if p in base]
    assert len(modified) == 5 and all(head[p].startswith(base[p]) and head[p] != base[p] for p in modified)
    assert {kind for _, kind in bugs} == {"mutable_default", "bare_except"} and len(bugs) == 4
    titles = {
        path: {f["title"] for f in review_python(path, ast.parse(head[path]), head[path].splitlines())}
        for path in modules
    }
    for path, kind in bugs:  # a static reviewer finds each planted bug ...
        wanted = "Mutable default" if kind == "mutable_default" else "Bare `except:`"
        assert any(t.startswith(wanted) for t in titles[path]), (path, titles[path])
    clean = [p for p in modules if p not in dict(bugs)]
    assert not any(  # ... and nothing of the kind where none was planted
        t.startswith(("Mutable default", "Bare `except:`")) for p in clean for t in titles[p]
    )


def test_p90_interpolates_between_the_largest_runs():
    assert review_time.p90([100.0]) == 100.0
    assert review_time.p90([10.0, 20.0, 30.0]) == pytest.approx(28.0)
    assert review_time.p90(list(range(1, 11))) == pytest.approx(9.1)


def test_a_variant_whose_parameter_the_template_lacks_is_skipped_without_a_stack():
    variant = review_time.Variant("x", "a parameter no template has", {"NoSuchParameter": "on"})
    out = review_time.run_variant(variant, [3], 1, timeout=1)
    assert out["skipped"] == "template.yaml has no parameter NoSuchParameter yet"


def test_every_variant_names_only_template_parameters_or_says_it_waits_for_one():
    known = review_time.template_parameters()
    for variant in review_time.VARIANTS:
        missing = set(variant.parameters) - known
        assert not missing or missing == {"Verification"}, variant  # VERIFY's parameter, not yet merged here


def test_review_first_sends_the_review_jobs_before_the_others_in_their_order(monkeypatch):
    from prfleet.jobs import sqs

    sent: list[list[str]] = []
    monkeypatch.setattr(
        sqs, "send_file_jobs", lambda jobs, **kw: sent.append([f"{j.path}:{j.agent}" for j in jobs])
    )
    jobs = [SimpleNamespace(path=p, agent=a) for p in ("a", "b") for a in ("review", "tests", "docs")]
    with review_time.review_jobs_first(True):
        sqs.send_file_jobs(jobs)
    sqs.send_file_jobs(jobs)  # restored afterwards
    assert sent == [
        ["a:review", "b:review", "a:tests", "a:docs", "b:tests", "b:docs"],
        ["a:review", "a:tests", "a:docs", "b:review", "b:tests", "b:docs"],
    ]


def test_bench_runs_the_parts_named_and_refuses_an_unknown_one(monkeypatch, capsys):
    monkeypatch.setattr(bench_main, "bench_review_time", lambda: {"stub": True})
    assert bench_main.main(["review_time"]) == 0
    assert '"review_time": {\n    "stub": true' in capsys.readouterr().out
    assert bench_main.main(["nope"]) == 2
    assert "no part 'nope'" in capsys.readouterr().err


def test_the_verify_phase_is_what_the_verify_runs_add_after_the_last_file_job():
    runs = [
        {"agent": "review", "updated_at": 100, "duration_ms": 20_000},
        {"agent": "docs", "updated_at": 104, "duration_ms": 7_000},
        {"agent": "verify", "updated_at": 131, "duration_ms": 26_500, "candidates": 9},
        {"agent": "verify", "updated_at": 140, "duration_ms": 35_000, "candidates": 12},
    ]
    assert review_time._verify_phase(runs) == {
        "verify_candidates": [9, 12],
        "verify_s": [26.5, 35.0],
        "verify_phase_s": 36,
    }
    assert review_time._verify_phase(runs[:2]) == {}  # Verification off: nothing to add


def test_a_run_says_on_which_attempt_its_job_ended():
    assert review_time._attempt({"job": '{"attempt": 2, "path": "a.py"}'}) == 2
    assert review_time._attempt({"job": '{"path": "a.py"}'}) == 0
    assert review_time._attempt({}) == 0
