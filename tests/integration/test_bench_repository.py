"""The issue-23 bench (prfleet_local.bench.repository) at a tiny scale: it runs, its figures mean what
docs/performance.md says they mean, and its grep finds what git grep finds on the same tree. No timing asserted."""

from __future__ import annotations

import pytest

from prfleet_local.bench import repository as bench


def test_request_counts_through_the_planner_and_jobs_with_and_without_a_snapshot(monkeypatch):
    monkeypatch.setattr(bench, "COLD_SAMPLE", 10)  # cold arms run every third job and scale to all 30
    row = bench.bench_requests((10,))["files_10"]
    warm, cold = row["snapshot_warm"], row["snapshot_cold"]
    assert warm["jobs"] == cold["jobs"] == 30  # ten Python files x review, tests, docs
    assert (warm["jobs_run"], cold["jobs_run"], row["no_snapshot_cold"]["jobs_run"]) == (30, 10, 10)
    for arm in (warm, cold):
        # the planner downloads the head once: one API request (the 302) and one codeload download, and stores
        # the archive and its manifest after looking for the manifest
        assert arm["planner_downloads"] == 1
        assert arm["planner_s3"] == {"ListObjectsV2": 1, "PutObject": 2}
        # issue 23's target, amortised over the head (13 of the requests are the planner's and fan-in's)
        assert arm["meets_target"] and arm["github_per_head"] <= arm["jobs"]
    # a cold container reads the manifest and the archive once per job; a warm one once per head
    assert cold["jobs_s3"] == {"GetObject": 2 * cold["jobs"]}
    assert warm["jobs_s3"] == {"GetObject": 2}
    # a second planning of the head downloads nothing
    assert row["replan"]["github"] == row["replan"]["downloads"] == 0
    # without a snapshot the same tool calls read through GitHub: more requests, no S3
    for mode in ("warm", "cold"):
        before = row[f"no_snapshot_{mode}"]
        assert before["planner_downloads"] == 0 and before["jobs_s3"] == {}
        assert before["github_per_job"] > row[f"snapshot_{mode}"]["github_per_job"]
        assert row[f"ratio_{mode}"] < 1


def test_tree_bench_unpacks_and_greps_what_git_grep_finds(tmp_path):
    made = bench.make_tree(tmp_path / "a", 120)
    again = bench.make_tree(tmp_path / "b", 120)
    assert made == again and made["files"] == 120  # deterministic for the seed
    assert sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.py")) == sorted(
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.py")
    )

    row = bench.bench_tree((300,), repeat=1)["files_300"]
    assert row["files"] == 300 and row["archive_bytes"] > 0
    assert row["unpack"]["safe_extract_s"] > 0 and row["unpack"]["tar_xzf_s"] > 0
    grep = row["grep"]
    assert {name for name, *_ in bench.PATTERNS} <= set(grep)
    for name, *_ in bench.PATTERNS:
        figures = grep[name]
        assert figures["stopped"] is None
        assert figures["matches"] > 0, f"{name}: the generated tree should contain {figures['pattern']}"
        assert figures["matches"] == figures["git_grep_matches"], name
        assert figures["peak_mib"] > 0


@pytest.mark.parametrize("mode", ["files_with_matches", "count", "content"])
def test_git_counts_are_in_grep_units(mode):
    output = {
        "files_with_matches": "a.py\nb.py\n",
        "count": "a.py:3\nb.py:1\n",
        "content": "a.py:1:x\na.py:4:y\n",
    }
    assert bench._git_count(mode, output[mode]) == {"files_with_matches": 2, "count": 4, "content": 2}[mode]
