"""The fake GitHub's reactions, as GitHub serves them: the `reactions` roll-up on every listed review comment and
issue comment, and the endpoint a user adds one with (201 created, 200 when this user already reacted so, 422 on
a content that is not a reaction, 404 on a comment that does not exist). prfleet reads the roll-ups through its own
client (GitHub.list_review_comments)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from prfleet.github import GitHub, TokenAuth
from prfleet_local.github.server import GitHubServer, GitRepo

REPO = "acme/shop"
TOKEN = "ghp_app"
ROLLUP_KEYS = ["url", "total_count", "+1", "-1", "laugh", "hooray", "confused", "heart", "rocket", "eyes"]


@pytest.fixture
def fake(tmp_path):
    repo = GitRepo(tmp_path / "repo")
    repo.commit({"app.py": "def f():\n    return 1\n"}, "base")
    repo.branch("feature")
    repo.commit({"app.py": "def f():\n    return 2\n\n\ndef g():\n    return 3\n"}, "feature")
    server = GitHubServer(repo, REPO, tokens=[TOKEN])
    server.start()
    number = server.open_pr(REPO, "main", "feature", "Feature", "body")
    gh = GitHub(server.api_url, TokenAuth(TOKEN))
    head = server.prs[number].head_sha
    gh.create_review(
        REPO,
        number,
        head,
        "review body",
        [{"path": "app.py", "line": 2, "side": "RIGHT", "body": "first"}],
        marker="<!-- m -->",
    )
    gh.create_issue_comment(REPO, number, "a PR comment")
    try:
        yield server, gh, number
    finally:
        server.stop()


def react(server, kind: str, comment_id: int, content, token: str) -> tuple[int, dict]:
    body = json.dumps({} if content is None else {"content": content}).encode()
    req = urllib.request.Request(
        f"{server.api_url}/repos/{REPO}/{kind}/comments/{comment_id}/reactions",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_review_comment_lists_its_reactions_roll_up_as_github_shapes_it(fake):
    server, gh, number = fake
    (comment,) = gh.list_review_comments(REPO, number)
    assert list(comment["reactions"]) == ROLLUP_KEYS
    assert (
        comment["reactions"]["url"]
        == f"{server.api_url}/repos/{REPO}/pulls/comments/{comment['id']}/reactions"
    )
    assert comment["reactions"]["total_count"] == 0
    assert comment["original_commit_id"] == server.prs[number].head_sha

    alice, bob = server.user_token("alice"), server.user_token("bob")
    status, reaction = react(server, "pulls", comment["id"], "-1", alice)
    assert status == 201
    assert reaction["content"] == "-1" and reaction["user"]["login"] == "alice"
    assert set(reaction) >= {"id", "node_id", "user", "content", "created_at"}
    # the same user with the same content again: 200 and the same reaction, nothing counted twice
    assert react(server, "pulls", comment["id"], "-1", alice) == (200, reaction)
    assert react(server, "pulls", comment["id"], "+1", alice)[0] == 201  # another content: its own reaction
    assert react(server, "pulls", comment["id"], "-1", bob)[0] == 201
    assert react(server, "pulls", comment["id"], "eyes", bob)[0] == 201

    (comment,) = gh.list_review_comments(REPO, number)
    counts = {k: v for k, v in comment["reactions"].items() if k != "url"}
    assert counts == {
        "total_count": 4,
        "+1": 1,
        "-1": 2,
        "laugh": 0,
        "hooray": 0,
        "confused": 0,
        "heart": 0,
        "rocket": 0,
        "eyes": 1,
    }
    # the roll-up is computed per listing, never stored stale
    assert "reactions" not in server.review_comments[0]


def test_a_reaction_must_be_one_of_githubs_eight_on_a_comment_that_exists(fake):
    server, gh, number = fake
    (comment,) = gh.list_review_comments(REPO, number)
    alice = server.user_token("alice")
    for content in ("thumbsup", "👍", "+2", ""):
        status, body = react(server, "pulls", comment["id"], content, alice)
        assert status == 422, content
        assert body["message"] == "Validation Failed" and body["errors"][0]["field"] == "content"
    assert react(server, "pulls", comment["id"], None, alice)[0] == 422  # content is required
    assert react(server, "pulls", 999_999, "+1", alice)[0] == 404
    assert react(server, "pulls", comment["id"], "+1", "not-a-token")[0] == 401
    (comment,) = gh.list_review_comments(REPO, number)
    assert comment["reactions"]["total_count"] == 0


def test_issue_comments_carry_their_own_roll_up(fake):
    server, gh, number = fake
    (pr_comment,) = gh.list_issue_comments(REPO, number)
    assert list(pr_comment["reactions"]) == ROLLUP_KEYS
    assert react(server, "issues", pr_comment["id"], "heart", server.user_token("carol"))[0] == 201
    (pr_comment,) = gh.list_issue_comments(REPO, number)
    assert pr_comment["reactions"]["heart"] == 1 and pr_comment["reactions"]["total_count"] == 1
    assert pr_comment["reactions"]["url"].endswith(f"/issues/comments/{pr_comment['id']}/reactions")
    (comment,) = gh.list_review_comments(REPO, number)  # a reaction belongs to its own comment only
    assert comment["reactions"]["total_count"] == 0


def test_the_apps_own_credential_reacts_as_the_bot(fake):
    server, gh, number = fake
    (comment,) = gh.list_review_comments(REPO, number)
    status, reaction = react(server, "pulls", comment["id"], "rocket", TOKEN)
    assert status == 201 and reaction["user"] == {**reaction["user"], "login": "prfleet[bot]", "type": "Bot"}
