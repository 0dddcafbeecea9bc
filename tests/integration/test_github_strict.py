"""GitHub's rules beyond the schemas, on the fake (which must be as strict as GitHub) and in prfleet's client:
refused reviews and check outputs, size and truncation rules, symlinks, conditional requests, rate limits, and
writes that GitHub applied but answered with a 5xx (never duplicated)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from prfleet import github as ghmod
from prfleet.agents.tools import PrTools
from prfleet.github import (
    GitHub,
    GitHubPrSource,
    GitHubRateLimited,
    GitHubUnprocessable,
    GitHubWriteUncertain,
    TokenAuth,
)
from prfleet.pipeline import planner, render
from prfleet_local.github.server import GitHubServer, GitRepo

REPO = "acme/shop"
TOKEN = "ghp_strict"


@pytest.fixture
def gh_env(tmp_path):
    repo = GitRepo(tmp_path / "repo")
    repo.commit(
        {"app.py": "def f():\n    return 1\n", "docs/guide.md": "guide\n", "old_name.py": "A = 1\nB = 2\n"},
        "base",
    )
    repo.branch("feature")
    repo.commit(
        {
            "app.py": "def f():\n    return 2\n",
            "big.txt": "x" * 1_500_000 + "\n",
            "old_name.py": None,
            "new_name.py": "A = 1\nB = 3\n",
            "pkg/a/b/deep.py": "D = 1\n",
        },
        "feature",
        symlinks={"docs/link.md": "guide.md"},
    )
    ghmod.clear_caches()
    server = GitHubServer(repo, REPO, tokens=[TOKEN])
    server.start()
    number = server.open_pr(REPO, "main", "feature", "Feature", "body")
    sleeps: list[float] = []
    gh = GitHub(server.api_url, TokenAuth(TOKEN), sleep=sleeps.append)
    try:
        yield server, repo, gh, number, sleeps
    finally:
        server.stop()
        ghmod.clear_caches()


# --- reviews ---


def test_review_event_pending_is_not_a_value_and_comment_needs_a_body(gh_env):
    server, repo, gh, n, _ = gh_env
    head = repo.sha("feature")
    with pytest.raises(GitHubUnprocessable, match="not one of"):
        gh.create_review(REPO, n, head, "body", [], event="PENDING")
    comment = [{"path": "app.py", "line": 2, "side": "RIGHT", "body": "x"}]
    with pytest.raises(GitHubUnprocessable, match="body is required"):
        gh.create_review(REPO, n, head, "", comment, event="COMMENT")
    with pytest.raises(GitHubUnprocessable, match="not part of the pull request"):
        gh.create_review(REPO, n, repo.sha("main"), "body", [])  # a commit, but not one of the PR's
    with pytest.raises(GitHubUnprocessable, match=r"comments\[\]\.body is required"):
        gh.create_review(REPO, n, head, "body", [{**comment[0], "body": ""}])
    assert server.reviews == []
    gh.create_review(REPO, n, head, "body", comment)
    assert [r["state"] for r in server.reviews] == ["COMMENTED"]


# --- check runs ---


def test_check_run_output_needs_title_and_summary_within_65535(gh_env):
    server, repo, gh, _, _ = gh_env
    run = gh.create_check_run(REPO, "prfleet", repo.sha("feature"), external_id="x")
    with pytest.raises(GitHubUnprocessable, match="title"):
        gh.update_check_run(REPO, run["id"], output={"summary": "s"})
    with pytest.raises(GitHubUnprocessable, match="65535"):
        gh.update_check_run(REPO, run["id"], output={"title": "t", "summary": "s" * 65_536})
    gh.update_check_run(REPO, run["id"], output={"title": "t", "summary": "s" * 65_535})


def test_annotations_within_githubs_sizes_and_reports_truncate_to_them(gh_env):
    server, repo, gh, _, _ = gh_env
    run = gh.create_check_run(REPO, "prfleet", repo.sha("feature"), external_id="a")

    def annotate(**fields) -> None:
        ann = {"path": "app.py", "start_line": 1, "end_line": 1, "annotation_level": "notice", "message": "m"}
        gh.update_check_run(
            REPO, run["id"], output={"title": "t", "summary": "s", "annotations": [{**ann, **fields}]}
        )

    with pytest.raises(GitHubUnprocessable, match="64 KB"):
        annotate(message="é" * 40_000)  # 40,000 characters, 80,000 bytes
    with pytest.raises(GitHubUnprocessable, match="255"):
        annotate(title="t" * 256)
    with pytest.raises(GitHubUnprocessable, match="same line|start_line equals"):
        annotate(end_line=3, start_column=1, end_column=4)
    with pytest.raises(GitHubUnprocessable, match="starting at 1"):
        annotate(start_line=0, end_line=0)
    assert server.check_runs[run["id"]]["output"]["annotations_count"] == 0
    # What prfleet sends for a long multibyte finding fits.
    (ann,) = render.annotations(
        [{"path": "app.py", "line": 1, "severity": "high", "title": "ü" * 300, "body": "é" * 40_000}]
    )
    gh.update_check_run(REPO, run["id"], output={"title": "t", "summary": "s", "annotations": [ann]})
    assert server.check_runs[run["id"]]["output"]["annotations_count"] == 1


def test_check_runs_of_a_ref_list_only_the_latest_of_each_name_unless_all_are_asked_for(gh_env):
    server, repo, gh, _, _ = gh_env
    head = repo.sha("feature")
    first = gh.create_check_run(REPO, "prfleet", head, external_id="one")
    second = gh.create_check_run(REPO, "prfleet", head, external_id="two")
    other = gh.create_check_run(REPO, "lint", head)
    default = gh._json("GET", f"/repos/{REPO}/commits/{head}/check-runs")  # GitHub's default: filter=latest
    assert sorted(r["id"] for r in default["check_runs"]) == [second["id"], other["id"]]
    assert [r["id"] for r in gh.list_check_runs(REPO, head, name="prfleet")] == [second["id"], first["id"]]
    assert len(gh.list_check_runs(REPO, head)) == 3
    with pytest.raises(GitHubUnprocessable, match="filter"):
        gh._json("GET", f"/repos/{REPO}/commits/{head}/check-runs", params={"filter": "newest"})


# --- files, contents, trees ---


def test_contents_over_1mb_has_no_content_and_the_blob_has_it(gh_env):
    server, repo, gh, _, _ = gh_env
    head = repo.sha("feature")
    raw = gh.content(REPO, "big.txt", head)
    assert raw["encoding"] == "none" and raw["content"] == "" and raw["size"] == 1_500_001
    assert gh.file_at(REPO, "big.txt", head) == b"x" * 1_500_000 + b"\n"
    server.blob_max_bytes = 1_000_000  # GitHub: blobs up to 100 MB
    with pytest.raises(ghmod.GitHubError) as too_large:
        gh.content(REPO, "big.txt", head)
    assert too_large.value.status == 403


def test_a_symlink_to_a_file_comes_back_as_that_file_and_is_still_refused(gh_env):
    server, repo, gh, n, _ = gh_env
    head = repo.sha("feature")
    served = gh.content(REPO, "docs/link.md", head)
    assert served["type"] == "file" and served["path"] == "docs/guide.md"  # GitHub follows it
    # Knowing the tree's modes (as the planner stores them) or not, the tools never follow it.
    for symlinks in (None, ["docs/link.md"], []):
        src = GitHubPrSource(gh, REPO, n, head, symlinks=symlinks, files=[])
        result = PrTools(src).call("read_file", {"path": "docs/link.md"})
        assert result.is_error and "symlink" in result.content
        assert "guide" not in result.content


def test_without_a_snapshot_glob_lists_the_head_tree_from_one_request(gh_env):
    server, repo, gh, n, _ = gh_env
    head = repo.sha("feature")
    src = GitHubPrSource(gh, REPO, n, head, symlinks=["docs/link.md"], files=[])
    tools = PrTools(src)
    before = len(server.requests)
    listed = tools.call("glob", {"pattern": "**/*.md"})
    assert listed.content.startswith(
        '<untrusted_glob pattern="**/*.md" matches="2">\ndocs/guide.md\ndocs/link.md\n'
    )
    tree = sorted(repo.git("ls-tree", "-r", "--name-only", head).split())
    assert src.tree_paths() == tree and not src.tree_truncated
    assert f"grep covers the PR's 0 changed files of {len(tree)}: no snapshot" in listed.content
    tools.call("glob", {"pattern": "*.py"})
    trees = [p for m, p in server.requests[before:] if "/git/trees/" in p]
    assert len(trees) == 1  # read once, shared by every later glob and the symlink check


def test_a_truncated_tree_is_walked_per_directory_and_said_so(gh_env):
    server, repo, gh, n, _ = gh_env
    head = repo.sha("feature")
    server.tree_max_entries = 3
    obj = gh.tree_obj(REPO, head)
    assert obj["truncated"] is True and len(obj["tree"]) == 3
    assert obj["sha"] == repo.git("rev-parse", f"{head}^{{tree}}").strip()
    paths = ["app.py", "pkg/a/b/deep.py", "docs/link.md"]
    entries, links, note = planner.tree_info(gh, REPO, head, paths)
    assert entries["pkg/a/b/deep.py"]["size"] == 6 and entries["app.py"]["mode"] == "100644"
    assert links == {"docs/link.md"}
    assert note is not None and "truncated" in note.reason
    server.tree_max_entries = 100_000
    _, _, none = planner.tree_info(gh, REPO, head, paths)
    assert none is None


def test_patches_are_left_out_for_large_diffs_with_the_true_reason(gh_env):
    server, repo, gh, n, _ = gh_env
    files, _ = gh.pr_files(REPO, n, max_files=100)
    by_name = {f["filename"]: f for f in files}
    assert "patch" not in by_name["big.txt"] and by_name["big.txt"]["changes"] == 1
    assert "patch" in by_name["app.py"]
    assert planner.missing_patch_reason(by_name["big.txt"], 1_500_001).startswith("diff too large")
    renamed = by_name["new_name.py"]
    assert renamed["status"] == "renamed" and renamed["previous_filename"] == "old_name.py"
    assert "-B = 2" in renamed["patch"] and "+B = 3" in renamed["patch"]  # against the old name


# --- conditional requests and rate limits ---


def test_conditional_get_answers_304_free_of_the_rate_limit(gh_env):
    server, repo, gh, n, _ = gh_env
    first = gh.pr(REPO, n)
    used = server.rate_limit_used
    again = gh.pr(REPO, n)
    assert again == first and server.not_modified == 1
    assert server.rate_limit_used == used  # a 304 does not count


def test_primary_rate_limit_exhausted_raises_with_the_reset(gh_env):
    server, repo, gh, n, sleeps = gh_env
    server.rate_limit_total = server.rate_limit_used + 1
    gh.pr(REPO, n)
    with pytest.raises(GitHubRateLimited) as limited:
        gh.pr_files(REPO, n, max_files=10)
    assert limited.value.status == 403 and limited.value.retry_after > 3000
    assert sleeps == []


def test_an_injected_primary_limit_answers_with_githubs_headers_and_is_waited_out_within_the_deadline(gh_env):
    server, repo, gh, n, sleeps = gh_env
    server.primary_limit(rf"/pulls/{n}$", times=1, reset_in=30)
    with ghmod.deadline(time.time() + 10):  # 10 s left: too little to wait for the reset
        with pytest.raises(GitHubRateLimited) as limited:
            gh.pr(REPO, n)
    assert limited.value.status == 403 and 29 <= limited.value.retry_after <= 32 and sleeps == []
    assert "API rate limit exceeded" in limited.value.message
    server.primary_limit(rf"/pulls/{n}$", times=1, reset_in=30, status=429)
    with ghmod.deadline(time.time() + 100):
        assert gh.pr(REPO, n)["number"] == n
    assert len(sleeps) == 1 and 29 <= sleeps[0] <= 32  # until x-ratelimit-reset, not a fixed minute
    # Every answer carries the primary limit's headers; a secondary limit leaves x-ratelimit-remaining alone.
    server.rate_limit(rf"/pulls/{n}$", times=1, retry_after=7)
    req = urllib.request.Request(
        f"{server.api_url}/repos/{REPO}/pulls/{n}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=5)  # noqa: S310 - loopback
    headers = refused.value.headers
    assert refused.value.code == 403 and headers["Retry-After"] == "7"
    assert int(headers["X-RateLimit-Remaining"]) > 0 and headers["X-RateLimit-Resource"] == "core"
    with pytest.raises(ValueError, match="403 or 429"):
        server.primary_limit("x", status=500)


def test_secondary_rate_limit_backs_off_exponentially_but_never_past_the_deadline(gh_env):
    server, repo, gh, n, sleeps = gh_env
    server.rate_limit(rf"/pulls/{n}$", times=1, retry_after=None)  # no retry-after: at least a minute
    with ghmod.deadline(time.time() + 50):  # a planner with 50 s left
        with pytest.raises(GitHubRateLimited) as limited:
            gh.pr(REPO, n)
    assert limited.value.retry_after == 60 and sleeps == []
    server.rate_limit(rf"/pulls/{n}$", times=2, retry_after=None)
    with ghmod.deadline(time.time() + 1000):
        assert gh.pr(REPO, n)["number"] == n
    assert sleeps == [60.0, 120.0]  # doubling


# --- non-idempotent writes ---


@pytest.mark.parametrize("status", [502, 0])  # a 5xx, or no answer at all (the connection dropped)
def test_a_review_applied_but_answered_with_an_error_is_not_posted_twice(gh_env, status):
    server, repo, gh, n, _ = gh_env
    head = repo.sha("feature")
    server.fail_after_write(rf"/pulls/{n}/reviews$", status=status)
    marker = render.review_marker(head, "final", 7)
    review = gh.create_review(REPO, n, head, "the review", [], marker=marker)
    assert len(server.reviews) == 1 and review["id"] == server.reviews[0]["id"]
    assert marker in server.reviews[0]["body"]
    posts = [p for m, p in server.requests if m == "POST" and p.endswith("/reviews")]
    assert len(posts) == 1


def test_a_review_that_did_not_arrive_is_sent_again(gh_env):
    server, repo, gh, n, _ = gh_env
    head = repo.sha("feature")
    server.inject(rf"/pulls/{n}/reviews$", 502, method="POST")  # refused before it was applied
    gh.create_review(REPO, n, head, "the review", [], marker=render.review_marker(head, "final", 1))
    assert len(server.reviews) == 1
    assert len([p for m, p in server.requests if m == "POST" and p.endswith("/reviews")]) == 2


def test_an_issue_comment_needs_a_body_when_created_and_when_edited(gh_env):
    server, repo, gh, n, _ = gh_env
    with pytest.raises(GitHubUnprocessable, match="blank"):
        gh.create_issue_comment(REPO, n, "")
    comment = gh.create_issue_comment(REPO, n, "hello")
    with pytest.raises(GitHubUnprocessable, match="blank"):
        gh.update_issue_comment(REPO, comment["id"], "")
    assert [c["body"] for c in server.issue_comments] == ["hello"]


def test_without_a_marker_an_uncertain_write_is_reported_not_repeated(gh_env):
    server, repo, gh, n, _ = gh_env
    server.fail_after_write(rf"/issues/{n}/comments$", status=503)
    with pytest.raises(GitHubWriteUncertain):
        gh.create_issue_comment(REPO, n, "hello")
    assert len(server.issue_comments) == 1


def test_comment_check_run_and_annotations_are_written_once_despite_5xx(gh_env):
    server, repo, gh, n, _ = gh_env
    head = repo.sha("feature")
    server.fail_after_write(rf"/issues/{n}/comments$", status=500)
    gh.upsert_issue_comment(REPO, n, render.SUMMARY_MARKER, "summary")
    assert len(server.issue_comments) == 1

    server.fail_after_write(r"/check-runs$", status=504)
    run = gh.create_check_run(REPO, "prfleet", head, external_id="pr=1;delivery=d1")
    assert len(server.check_runs) == 1 and run["id"] in server.check_runs

    anns = render.annotations(
        [{"path": "app.py", "line": 1, "severity": "low", "title": f"t{i}", "body": "b"} for i in range(120)]
    )
    server.fail_after_write(r"/check-runs/\d+$", times=2, status=502, method="PATCH")
    gh.update_check_run(
        REPO,
        run["id"],
        status="completed",
        conclusion="success",
        output={"title": "done", "summary": "s", "annotations": anns},
    )
    rec = server.check_runs[run["id"]]
    assert rec["output"]["annotations_count"] == 120  # not 170 or 220
    assert rec["annotation_batches"] == [50, 50, 20]


# --- the control endpoint ---


def test_faults_are_switchable_over_http(gh_env):
    server, repo, gh, n, _ = gh_env

    def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(server.api_url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}

    status, _ = call("POST", "/_fake/faults", {"kind": "after_write", "pattern": r"/reviews$", "status": 502})
    assert status == 201
    head = repo.sha("feature")
    gh.create_review(REPO, n, head, "x", [], marker=render.review_marker(head, "final", 2))
    assert len(server.reviews) == 1
    call("POST", "/_fake/faults", {"kind": "secondary", "pattern": rf"/pulls/{n}$", "retry_after": 5})
    call("DELETE", "/_fake/faults")
    assert gh.pr(REPO, n)["number"] == n
    status, counts = call("GET", "/_fake/requests")
    assert status == 200 and counts["total"] == len(server.requests)
    assert counts["by_route"][f"POST /repos/{REPO}/pulls/{n}/reviews"] == 1


def test_a_hostile_archive_fault_is_switchable_over_http_and_an_unknown_kind_is_refused(gh_env):
    server, _repo, _gh, _n, _ = gh_env

    def post(body: dict) -> int:
        req = urllib.request.Request(
            server.api_url + "/_fake/faults", data=json.dumps(body).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post({"kind": "hostile_archive", "archive": "zipslip"}) == 400
    assert server.take_archive_fault() is None
    assert post({"kind": "hostile_archive", "archive": "device", "times": 2}) == 201
    assert [server.take_archive_fault(), server.take_archive_fault()] == [("device", 300 * 1024 * 1024)] * 2
    assert server.take_archive_fault() is None
