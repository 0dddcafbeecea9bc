"""Reading what the team thinks of the findings (pipeline.reactions) against the fake GitHub and the moto server:
one listing of the PR's review comments, prfleet's own findings picked from it, the latest 👍 / 👎 counts recorded
per finding and only the change published (FindingsUpvoted / FindingsDownvoted as EMF, per agent, model and
category); a stale read publishes nothing; the quiet reads the sweeper makes; recent_rejections for the
verification pass. Tables from test_budget_billing's env."""

from __future__ import annotations

import pytest

from prfleet import github as ghmod
from prfleet.github import GitHub, TokenAuth
from prfleet.jobs import FileJob, PrJob
from prfleet.observability.metrics import make_metrics
from prfleet.pipeline import reactions, render
from prfleet.store import job_runs, posting
from prfleet.store import reactions as store
from prfleet_local.github.server import GitHubServer, GitRepo
from prfleet_local.stack.alarms import emf_to_datapoints
from tests.integration.test_budget_billing import endpoint, env  # noqa: F401 - fixtures
from tests.integration.test_github_reactions import react

REPO = "acme/shop"
TOKEN = "ghp_app"
MODEL = "claude-sonnet-5-5"


def _finding(line: int, title: str, category: str, agent: str = "review", severity: str = "high") -> dict:
    return {
        "path": "app.py",
        "line": line,
        "severity": severity,
        "category": category,
        "title": title,
        "body": f"{title}: details.",
        "agent": agent,
    }


@pytest.fixture
def pr(tmp_path, env):  # noqa: F811 - the fixture imported above
    """A PR on the fake GitHub with prfleet's review posted as the fan-in posts it: two inline findings (render's
    comment bodies), their fingerprints recorded, and the runs that reported them (with their model)."""
    repo = GitRepo(tmp_path / "repo")
    repo.commit({"app.py": "a = 1\n"}, "base")
    repo.branch("feature")
    repo.commit({"app.py": "a = 1\nb = eval(x)\nc = open(p)\nd = 4\n"}, "feature")
    ghmod.clear_caches()
    server = GitHubServer(repo, REPO, tokens=[TOKEN])
    server.start()
    number = server.open_pr(REPO, "main", "feature", "Feature", "body")
    head = server.prs[number].head_sha
    gh = GitHub(server.api_url, TokenAuth(TOKEN))
    patch = server.files_of(server.prs[number])[0]["patch"]
    plan = render.build_review(
        [_finding(2, "eval of input", "security"), _finding(3, "file never closed", "resource-leak")],
        {"app.py": patch},
        head_sha=head,
        repo=REPO,
    )
    assert len(plan.comments) == 2
    gh.create_review(REPO, number, head, plan.body, plan.comments, marker=render.REVIEW_MARKER)
    posting.record_fingerprints(REPO, number, plan.fingerprints)
    job = FileJob(REPO, number, head, server.prs[number].base_sha, "app.py", "b" * 40, "review", 1, "d1")
    job_runs.start_run(job, "run-1", MODEL)
    make_metrics().clear_metrics()
    try:
        yield server, gh, number
    finally:
        server.stop()
        ghmod.clear_caches()


def feedback(capsys) -> list[tuple[str, dict[str, str], float]]:
    """The feedback datapoints printed since the last call (the fleet copies are flushed first, as a handler
    does), sorted by metric, dimensions and value."""
    metrics = make_metrics()
    if metrics.metric_set:
        metrics.flush_metrics()
    points = emf_to_datapoints(capsys.readouterr().out.splitlines())
    rows = sorted(
        (p.name, sorted(p.dimensions.items()), p.value)
        for p in points
        if p.name in ("FindingsUpvoted", "FindingsDownvoted")
    )
    return [(name, dict(dims), value) for name, dims, value in rows]


def comment_ids(server, number: int) -> list[int]:
    return [c["id"] for c in server.review_comments if c["pull_number"] == number]


def test_each_finding_records_the_latest_counts_and_only_the_change_is_published(pr, capsys):
    server, gh, number = pr
    eval_comment, leak_comment = comment_ids(server, number)
    fleet = {"service": "prfleet"}
    detail = {"service": "prfleet", "agent": "review", "model": MODEL, "category": "security"}

    # nothing reacted yet: both findings recorded (posted, 0 / 0), nothing published
    first = reactions.read_reactions(gh, REPO, number, now=1000)
    assert (first.comments, first.findings, first.changed, first.upvoted, first.downvoted) == (2, 2, 2, 0, 0)
    assert feedback(capsys) == []

    for user in ("ann", "bob", "cy"):
        assert react(server, "pulls", eval_comment, "-1", server.user_token(user))[0] == 201
    assert react(server, "pulls", eval_comment, "+1", server.user_token("dee"))[0] == 201
    assert react(server, "pulls", eval_comment, "eyes", server.user_token("eve"))[0] == 201  # not a verdict
    second = reactions.read_reactions(gh, REPO, number, now=2000)
    assert (second.changed, second.upvoted, second.downvoted) == (1, 1, 3)
    assert feedback(capsys) == [
        ("FindingsDownvoted", detail, 3.0),
        ("FindingsDownvoted", fleet, 3.0),
        ("FindingsUpvoted", detail, 1.0),
        ("FindingsUpvoted", fleet, 1.0),
    ]
    posted = posting.recorded_fingerprints(REPO, number)
    items = store.stored(reactions.own_findings(gh.list_review_comments(REPO, number), posted, REPO, number))
    (item,) = [i for i in items.values() if i["comment_id"] == eval_comment]
    assert (item["up"], item["down"], item["model"], item["category"], item["agent"]) == (
        1,
        3,
        MODEL,
        "security",
        "review",
    )
    assert item["title"] == "eval of input" and item["path"] == "app.py" and item["line"] == 2

    # read again with nothing new: no write, nothing published (idempotent)
    third = reactions.read_reactions(gh, REPO, number, now=3000)
    assert third.changed == 0 and feedback(capsys) == []

    # one more 👍 on the other finding: only that change, with its own category
    assert react(server, "pulls", leak_comment, "+1", server.user_token("ann"))[0] == 201
    fourth = reactions.read_reactions(gh, REPO, number, now=4000)
    assert (fourth.changed, fourth.upvoted, fourth.downvoted) == (1, 1, 0)
    leak = {**detail, "category": "resource-leak"}
    assert feedback(capsys) == [("FindingsUpvoted", leak, 1.0), ("FindingsUpvoted", fleet, 1.0)]

    # a read that started before the last one stored (the sweeper and the planner at once): refused, not published
    assert react(server, "pulls", leak_comment, "-1", server.user_token("bob"))[0] == 201
    stale = reactions.read_reactions(gh, REPO, number, now=3500)
    assert stale.changed == 0 and feedback(capsys) == []
    assert reactions.read_reactions(gh, REPO, number, now=5000).downvoted == 1
    assert feedback(capsys) == [("FindingsDownvoted", leak, 1.0), ("FindingsDownvoted", fleet, 1.0)]


def test_only_prfleets_own_findings_count(pr, capsys):
    """A person quoting a finding (its marker included), a reply in the thread, and a marker prfleet never recorded
    for this PR are not prfleet's findings: their reactions are not read."""
    server, gh, number = pr
    (eval_comment, _leak) = comment_ids(server, number)
    fp = next(iter(posting.recorded_fingerprints(REPO, number)))
    original = next(c for c in server.review_comments if c["id"] == eval_comment)
    with server.lock:
        server.review_comments.append(
            {**original, "id": server.next_id(), "user": {"login": "mallory", "type": "User"}}
        )
        server.review_comments.append({**original, "id": server.next_id(), "in_reply_to_id": eval_comment})
        server.review_comments.append(
            {**original, "id": server.next_id(), "body": original["body"].replace(fp, "f" * 32)}
        )
    for cid in comment_ids(server, number)[2:]:
        assert react(server, "pulls", cid, "-1", server.user_token("ann"))[0] == 201
    summary = reactions.read_reactions(gh, REPO, number, now=1000)
    assert (summary.comments, summary.findings, summary.downvoted) == (5, 2, 0)
    assert feedback(capsys) == []


def test_no_request_before_prfleet_posted_a_finding(env, tmp_path):  # noqa: F811
    class NoGitHub:
        def list_review_comments(self, *_a, **_k):
            raise AssertionError("listed the comments of a PR prfleet never commented on")

    assert reactions.read_reactions(NoGitHub(), REPO, 99, now=1000) == reactions.ReadSummary()


def test_a_finding_on_another_file_takes_its_agents_model_or_unknown():
    runs = [
        {"path": "a.py", "agent": "review", "model": "m-big"},
        {"path": "b.py", "agent": "review", "model": "m-big"},
        {"path": "a.py", "agent": "tests", "model": "m-small"},
        {"path": "c.py", "agent": "docs", "model": "m-small"},
        {"path": "d.py", "agent": "docs", "model": "m-other"},
    ]
    assert reactions.model_for(runs, "a.py", "tests") == "m-small"
    assert reactions.model_for(runs, "caller.py", "review") == "m-big"  # every review run used one model
    assert reactions.model_for(runs, "caller.py", "docs") == "unknown"  # two models: which one is not known
    assert reactions.model_for([], "a.py", "review") == "unknown"


def test_rejections_are_the_repositorys_turned_down_findings_newest_first(env):  # noqa: F811
    day = 86400

    def finding(
        n: int, fp: str, up: int, down: int, posted: float, repo: str = REPO
    ) -> store.FindingReactions:
        return store.FindingReactions(
            repo,
            n,
            fp,
            n * 100,
            "review",
            "style",
            "low",
            f"title {fp}",
            f"{fp}.py",
            1,
            "h" * 40,
            posted,
            up,
            down,
        )

    now = 50 * day
    rows = [
        finding(1, "a", 0, 2, now - 3 * day),  # rejected
        finding(1, "b", 3, 1, now - 2 * day),  # more 👍 than 👎: accepted
        finding(2, "c", 0, 1, now - 1 * day),  # rejected, newer
        finding(2, "d", 1, 1, now - 1 * day),  # a tie: not turned down
        finding(3, "e", 0, 1, now - 40 * day),  # rejected, but older than the 30 days looked at
        finding(4, "f", 0, 5, now, repo="acme/shop-api"),  # another repository (its name extends ours)
    ]
    for f in rows:
        assert store.record(f, model=MODEL, read_at=now) == (0, 0)
    got = store.recent_rejections(REPO, 10, now=now)
    assert [(r.title, r.path, r.down, r.number) for r in got] == [
        ("title c", "c.py", 1, 2),
        ("title a", "a.py", 2, 1),
    ]
    assert [r.title for r in store.recent_rejections(REPO, 1, now=now)] == ["title c"]
    assert store.recent_rejections(REPO, 0, now=now) == []
    assert [r.title for r in store.recent_rejections("acme/shop-api", 5, now=now)] == ["title f"]


class Reader:
    """A GitHub stand-in for the sweeper's reads: which PRs it was asked to list."""

    def __init__(self) -> None:
        self.listed: list[int] = []

    def list_review_comments(self, repo: str, number: int) -> list:
        self.listed.append(number)
        return []


def test_the_sweeper_reads_a_quiet_pr_after_1_3_and_7_days_and_a_new_head_starts_over(env):  # noqa: F811
    gh = Reader()
    posting.record_fingerprints(
        REPO, 5, {"a" * 32}
    )  # prfleet posted on PR 5: its reactions are worth a listing
    job = PrJob(REPO, 5, "h1", "b1", 1, "d1", "opened")
    t0 = 1_000_000.0
    reactions.after_new_head(gh, job, now=t0)
    assert gh.listed == [5]  # read at the head

    def sweep(at: float) -> int:
        return reactions.sweep_quiet(lambda _installation: gh, now=at)

    assert sweep(t0 + 86400 - 1) == 0  # not quiet for a day yet
    assert sweep(t0 + 86400) == 1 and gh.listed == [5, 5]
    assert sweep(t0 + 86400 + 60) == 0  # taken once
    # a new head a day and a half in: its own schedule replaces the old one (whose next read was day 3)
    t1 = t0 + 1.5 * 86400
    reactions.after_new_head(gh, PrJob(REPO, 5, "h2", "b1", 1, "d2", "synchronize"), now=t1)
    assert gh.listed == [5, 5, 5]
    assert sweep(t1 + 86400) == 1
    assert sweep(t0 + 3 * 86400) == 0  # the old schedule's day 3: gone
    assert sweep(t1 + 3 * 86400) == 1
    assert sweep(t1 + 7 * 86400) == 1
    assert sweep(t1 + 30 * 86400) == 0  # three rounds, then nothing
    assert gh.listed == [5, 5, 5, 5, 5, 5]  # at each head, then 1, 3 and 7 days after the last one


def test_the_planner_never_fails_on_reactions(env, caplog):  # noqa: F811
    class Broken:
        def list_review_comments(self, *_a, **_k):
            raise ghmod.GitHubError(502, "bad gateway")

    posting.record_fingerprints(REPO, 6, {"a" * 32})
    assert reactions.after_new_head(Broken(), PrJob(REPO, 6, "h", "b", 1, "d", "opened"), now=1000) is None
    assert any(getattr(r, "event", None) == "error" and r.error_type == "GitHubError" for r in caplog.records)
    # the quiet read was scheduled before the failed read: the sweeper reads it later
    assert [e.number for e in store.due_quiet(1000 + 86400)] == [6]
