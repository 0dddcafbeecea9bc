"""The review page's pure parts: diff line numbers as GitHub counts them, comments anchored where GitHub shows
them, and review text that can never become markup."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from prfleet.pipeline import render
from prfleet_local.github.page import diff_rows, markdown_html, render_diff
from prfleet_local.github.server import GitHubServer, GitRepo

PATCH = "@@ -3,4 +3,5 @@ def f():\n a = 1\n-b = 2\n+b = 3\n+c = 4\n d = 5\n\\ No newline at end of file"


def test_diff_rows_number_both_sides_like_github():
    rows = [(k, o, n) for k, o, n, _ in diff_rows(PATCH)]
    assert rows == [
        ("hunk", None, None),
        ("ctx", 3, 3),
        ("del", 4, None),
        ("add", None, 4),
        ("add", None, 5),
        ("ctx", 5, 6),
        ("note", None, None),
    ]


def test_comments_sit_under_their_line_on_their_side():
    files = [{"filename": "a.py", "status": "modified", "patch": PATCH}]
    right = {"path": "a.py", "line": 5, "side": "RIGHT", "body": "RIGHT-5"}
    left = {"path": "a.py", "line": 4, "side": "LEFT", "body": "LEFT-4"}
    html = render_diff(files, [right, left])
    assert html.index("b = 2") < html.index("LEFT-4") < html.index("+b = 3")
    assert html.index("+c = 4") < html.index("RIGHT-5") < html.index(" d = 5")


def test_review_text_is_escaped_and_only_the_markdown_prfleet_writes_is_rendered():
    body = (
        "<!-- prfleet:fp=abc -->**high** · `x<y`\n\n<script>alert(1)</script>\n"
        '<img src=x onerror="alert(2)">\n<details><summary>more</summary>\n\n- [a](javascript:alert(3))\n</details>'
    )
    out = markdown_html(body)
    assert "<script" not in out and "<img" not in out and 'onerror="' not in out
    assert "&lt;script&gt;" in out and "prfleet:fp" not in out
    assert "<strong>high</strong>" in out and "<code>x&lt;y</code>" in out
    assert "<details><summary>more</summary>" in out and "</details>" in out
    assert "href" not in out  # links stay text: no javascript: URL can be clicked


def test_a_finding_outside_the_diff_links_to_its_line_and_only_http_links_are_clickable():
    url = "https://github.com/acme/shop/blob/" + "c" * 40 + "/src/my_caller_mod.py#L42"
    out = markdown_html(
        f"### Outside the diff\n\n- 🟠 **high** [`src/my_caller_mod.py:42`]({url}) — **Caller breaks**\n"
        '- [x](https://e.com/a"onmouseover="alert(1)) [y](data:text/html,hi)\n'
        "Repository instructions applied: `REVIEW.md`."
    )
    assert f'<a href="{url}"><code>src/my_caller_mod.py:42</code></a>' in out  # underscores left alone
    assert 'onmouseover="' not in out and "data:text" in out and out.count("<a href") == 1
    assert "<p>Repository instructions applied: <code>REVIEW.md</code>.</p>" in out


def test_the_local_github_serves_the_line_a_finding_outside_the_diff_links_to(tmp_path):
    repo = GitRepo(tmp_path / "repo")
    sha = repo.commit({"src/use it.py": "import app\napp.pay(1) <b>\n"}, "base")
    with GitHubServer(repo, "acme/shop", tokens=["t"]) as srv:
        link = render.line_link(render.web_url(srv.api_url), "acme/shop", sha, "src/use it.py", 2)
        with urllib.request.urlopen(link) as reply:  # noqa: S310 - loopback
            page = reply.read().decode()
            assert reply.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert "<tr id='L2'><td class='n'>2</td><td class='c'>app.pay(1) &lt;b&gt;</td></tr>" in page
        for missing in (f"/acme/shop/blob/{sha}/nope.py", "/acme/shop/blob/" + "0" * 40 + "/src/use%20it.py"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(srv.api_url + missing)  # noqa: S310 - loopback
            assert info.value.code == 404
