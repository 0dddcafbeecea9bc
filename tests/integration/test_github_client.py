"""The GitHub client against the git-backed fake GitHub: real git history, real diffs, recorded posts."""

from __future__ import annotations

import base64
import time

import pytest

from prfleet.github import (
    GitHub,
    GitHubError,
    GitHubPrSource,
    GitHubRateLimited,
    GitHubUnprocessable,
    TokenAuth,
)
from prfleet.pipeline import render
from prfleet_local.github.server import GitHubServer, GitRepo
from tests import review_helpers

REPO = "acme/shop"
TOKEN = "ghp_test_token"
APP_V1 = "".join(f"def f{i}():\n    return {i}\n" for i in range(1, 21))  # 40 lines


@pytest.fixture
def scenario(tmp_path):
    """main: app.py, README.md, old.txt; feature edits, adds, deletes, renames, binary, symlinks."""
    repo = GitRepo(tmp_path / "repo")
    repo.commit(
        {
            "app.py": APP_V1,
            "README.md": "# shop\n",
            "old.txt": "a\nb\nc\nd\ne\nf\n",
            "docs/guide.md": "guide\n",
        },
        "base",
    )
    repo.branch("feature")
    lines = APP_V1.splitlines()
    lines[1] = "    return 'changed'"  # line 2
    lines.append("def g():\n    return None")  # lines 41-42
    repo.commit(
        {
            "app.py": "\n".join(lines) + "\n",
            "new.py": "print('hi')\n",
            "README.md": None,
            "old.txt": None,
            "renamed.txt": "a\nb\nc\nd\ne\nf\n",
            "logo.png": bytes(range(256)) * 4,
        },
        "feature work",
        symlinks={"link_in": "docs/guide.md", "link_out": "../../etc/passwd"},
    )
    server = GitHubServer(repo, REPO, tokens=[TOKEN])
    server.start()
    number = server.open_pr(REPO, "main", "feature", "Feature", "Adds g()")
    sleeps: list[float] = []
    gh = GitHub(server.api_url, TokenAuth(TOKEN), sleep=sleeps.append)
    try:
        yield server, repo, gh, number, sleeps
    finally:
        server.stop()


def test_pr_and_files_match_git(scenario):
    server, repo, gh, n, _ = scenario
    pr = gh.pr(REPO, n)
    assert pr["head"]["sha"] == repo.sha("feature") and pr["base"]["sha"] == repo.sha("main")
    files, more = gh.pr_files(REPO, n, max_files=100)
    assert more == 0
    by_name = {f["filename"]: f for f in files}
    assert by_name["app.py"]["status"] == "modified"
    assert by_name["new.py"]["status"] == "added"
    assert by_name["README.md"]["status"] == "removed"
    assert (
        by_name["renamed.txt"]["status"] == "renamed"
        and by_name["renamed.txt"]["previous_filename"] == "old.txt"
    )
    assert "patch" not in by_name["logo.png"]  # binary: no patch, like GitHub
    assert by_name["app.py"]["sha"] == repo.git("rev-parse", "feature:app.py").strip()
    assert by_name["app.py"]["additions"] == 3 and by_name["app.py"]["deletions"] == 1
    assert review_helpers.diff_lines(by_name["app.py"]["patch"]) >= {2, 41, 42}
    assert 20 not in review_helpers.diff_lines(by_name["app.py"]["patch"])  # far from any hunk


def test_three_thousand_files_paginated_and_capped(tmp_path):
    repo = GitRepo(tmp_path / "big")
    repo.commit({"README.md": "x\n"}, "base")
    start = time.monotonic()
    repo.import_commit(
        {f"pkg/m{i:04d}.py": f"X = {i}\n" for i in range(3050)},
        "3050 files",
        branch="huge",
        parent=repo.sha("main"),
    )
    with GitHubServer(repo, REPO, tokens=[TOKEN]) as server:
        n = server.open_pr(REPO, "main", "huge", "Huge", "")
        gh = GitHub(server.api_url, TokenAuth(TOKEN))

        files, more = gh.pr_files(REPO, n, max_files=250)
        assert len(files) == 250 and more == 3050 - 250
        assert [f["filename"] for f in files[:2]] == ["pkg/m0000.py", "pkg/m0001.py"]
        file_pages = [p for m, p in server.requests if p.endswith(f"/pulls/{n}/files")]
        assert len(file_pages) == 3  # 100 + 100 + 50: stops paginating once the cap is reached

        server.requests.clear()
        files, more = gh.pr_files(REPO, n, max_files=10_000)
        assert len(files) == 3000  # GitHub lists at most 3000 files
        assert len({f["filename"] for f in files}) == 3000
        assert more == 50  # the PR changes 3050: the rest is reported, not silently dropped
        assert len([p for m, p in server.requests if p.endswith("/files")]) == 30
    assert time.monotonic() - start < 10


def test_file_at_ref_and_large_file_via_blob(scenario):
    server, repo, gh, n, _ = scenario
    base, head = repo.sha("main"), repo.sha("feature")
    assert gh.file_at(REPO, "README.md", base) == b"# shop\n"
    assert gh.file_at(REPO, "README.md", head) is None  # deleted on the head
    assert gh.file_at(REPO, "logo.png", head) == bytes(range(256)) * 4
    assert gh.file_at(REPO, "docs", head) is None  # a directory is not a file
    server.contents_max_bytes = 100  # GitHub: above 1 MB the contents API sends no content
    server.requests.clear()
    assert gh.file_at(REPO, "logo.png", head) == bytes(range(256)) * 4
    assert any("/git/blobs/" in p for _, p in server.requests)


def test_review_line_outside_diff_is_unprocessable_and_report_plan_is_accepted(scenario):
    server, repo, gh, n, _ = scenario
    head = repo.sha("feature")
    with pytest.raises(GitHubUnprocessable) as err:
        gh.create_review(
            REPO, n, head, "body", [{"path": "app.py", "line": 20, "side": "RIGHT", "body": "x"}]
        )
    assert err.value.status == 422
    assert "must be part of the diff" in str(err.value)
    assert server.reviews == []

    files, _ = gh.pr_files(REPO, n, max_files=100)
    patches = {f["filename"]: f.get("patch") for f in files}
    findings = [
        {
            "path": "app.py",
            "line": 2,
            "severity": "high",
            "category": "bug",
            "title": "Changed",
            "body": "b",
            "agent": "review",
            "fingerprint": "aa11",
        },
        {
            "path": "app.py",
            "line": 42,
            "severity": "medium",  # low and info are never inline (the noise budget): this one must be
            "category": "style",
            "title": "None",
            "body": "b",
            "agent": "review",
            "fingerprint": "bb22",
        },
        {
            "path": "app.py",
            "line": 20,
            "severity": "medium",
            "category": "bug",
            "title": "Far",
            "body": "b",
            "agent": "review",
            "fingerprint": "cc33",
        },
    ]
    plan = render.build_review(findings, patches, {"review": {"findings": 3}}, already_posted=set())
    assert [(c["path"], c["line"]) for c in plan.comments] == [("app.py", 2), ("app.py", 42)]
    gh.create_review(
        REPO, n, head, plan.body, plan.comments
    )  # GitHub's own check agrees with our diff parsing
    assert len(server.reviews) == 1 and server.reviews[0]["state"] == "COMMENTED"
    posted = list(gh.paginate(f"/repos/{REPO}/pulls/{n}/comments")) + gh.list_reviews(REPO, n)
    assert review_helpers.posted_fingerprints(posted) == {"aa11", "bb22", "cc33"}


def test_errors_are_clear(scenario):
    server, repo, gh, n, _ = scenario
    bad = GitHub(server.api_url, TokenAuth("wrong"))
    with pytest.raises(GitHubError) as e401:
        bad.pr(REPO, n)
    assert e401.value.status == 401 and "credentials" in e401.value.message
    assert e401.value.request_id  # GitHub's x-github-request-id is surfaced for support

    server.inject(r"/check-runs$", 403, method="POST")
    with pytest.raises(GitHubError) as e403:
        gh.create_check_run(REPO, "prfleet", repo.sha("feature"))
    assert e403.value.status == 403 and "checks: write" in e403.value.message

    with pytest.raises(GitHubError) as e404:
        gh.pr(REPO, 999)
    assert e404.value.status == 404 and "not installed" in e404.value.message
    with pytest.raises(GitHubError) as other_repo:
        gh.pr("acme/other", n)
    assert other_repo.value.status == 404


def test_secondary_rate_limit_honours_retry_after(scenario):
    server, repo, gh, n, sleeps = scenario
    server.rate_limit(rf"/pulls/{n}$", times=2, retry_after=7)
    assert gh.pr(REPO, n)["number"] == n
    assert sleeps == [7.0, 7.0]

    sleeps.clear()
    server.inject(
        rf"/pulls/{n}$",
        403,
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()) + 30)},
        message="API rate limit exceeded",
    )
    assert gh.pr(REPO, n)["number"] == n
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 31

    sleeps.clear()
    server.rate_limit(rf"/pulls/{n}$", times=1, retry_after=3600)  # longer than we may wait inside a Lambda
    with pytest.raises(GitHubRateLimited) as limited:
        gh.pr(REPO, n)
    assert limited.value.retry_after == 3600 and sleeps == []


def test_upsert_issue_comment_edits_in_place(scenario):
    server, repo, gh, n, _ = scenario
    gh.create_issue_comment(REPO, n, "a human comment")
    first = gh.upsert_issue_comment(REPO, n, render.SUMMARY_MARKER, "summary v1")
    second = gh.upsert_issue_comment(REPO, n, render.SUMMARY_MARKER, "summary v2")
    assert first["id"] == second["id"]
    bodies = [c["body"] for c in server.issue_comments]
    assert bodies == ["a human comment", f"{render.SUMMARY_MARKER}\nsummary v2"]
    assert server.issue_comments[1]["edits"] == 1


def test_check_run_lifecycle_with_annotations_in_batches_of_50(scenario):
    server, repo, gh, n, _ = scenario
    head = repo.sha("feature")
    run = gh.create_check_run(REPO, "prfleet", head, status="queued", external_id="delivery-1")
    gh.update_check_run(REPO, run["id"], status="in_progress", output={"title": "t", "summary": "s"})
    anns = render.annotations(
        [
            {"path": "app.py", "line": i, "severity": "medium", "title": f"t{i}", "body": "b"}
            for i in range(1, 121)
        ]
    )
    gh.update_check_run(
        REPO,
        run["id"],
        status="completed",
        conclusion="neutral",
        output={"title": "done", "summary": "s", "annotations": anns},
    )
    rec = server.check_runs[run["id"]]
    assert rec["annotation_batches"] == [50, 50, 20]
    assert len(rec["output"]["annotations"]) == 120
    assert [a["start_line"] for a in rec["output"]["annotations"]] == list(range(1, 121))
    assert [s for s, _ in rec["history"]] == ["queued", "in_progress", "completed"]
    assert rec["conclusion"] == "neutral"
    assert [r["id"] for r in gh.list_check_runs(REPO, head)] == [run["id"]]


def test_collaborator_permission(scenario):
    server, repo, gh, n, _ = scenario
    server.add_collaborator("alice", "maintain")
    server.add_collaborator("bob", "read")
    assert gh.collaborator_permission(REPO, "alice") == "write"
    assert gh.collaborator_permission(REPO, "bob") == "read"
    assert gh.collaborator_permission(REPO, "mallory") == "none"


def test_pr_source_reads_head_and_never_follows_a_symlink(scenario):
    server, repo, gh, n, _ = scenario
    src = GitHubPrSource(gh, REPO, n, repo.sha("feature"))
    assert src.title == "Feature" and src.body == "Adds g()"
    paths = {f.path: f for f in src.changed_files()}
    assert paths["app.py"].blob_sha == repo.git("rev-parse", "feature:app.py").strip()
    assert src.file_diff("app.py").startswith("@@")
    assert src.file_diff("logo.png") == ""
    assert "return 'changed'" in (src.read_file("app.py") or "")
    assert src.read_file("README.md") is None
    # Symlinks are known from the tree's mode, never followed (in the repository or out of it).
    assert src.read_file("link_in") == "(symlink: not followed)"
    assert src.mode("link_in") == "120000"
    out = src.read_file("link_out") or ""
    assert "not followed" in out and "root:" not in out
    before = len(server.requests)
    src.read_file("app.py")
    src.changed_files()
    assert len(server.requests) == before  # memoised


def test_tree_and_blob(scenario):
    server, repo, gh, n, _ = scenario
    tree = {e["path"]: e for e in gh.tree(REPO, repo.sha("feature"))}
    assert tree["link_in"]["mode"] == "120000"
    assert tree["app.py"]["type"] == "blob" and tree["app.py"]["size"] > 0
    assert gh.blob(REPO, tree["new.py"]["sha"]) == b"print('hi')\n"
    assert base64.b64decode(base64.b64encode(b"x")) == b"x"
