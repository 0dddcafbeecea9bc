"""The review page of the local GitHub, opened in headless Chromium after the whole local stack reviewed the sample
PR: what is on the screen is what prfleet posted, each inline comment sits under the diff line GitHub anchors it
to, and the cost of each run adds up to what the runs recorded.

Chromium must be installed (`make test` and `.ci/run` install it with apt-get where they can); CI sets
PRFLEET_REQUIRE_BROWSER=1 so that a missing browser fails there instead of skipping.
Set PRFLEET_SCREENSHOT=docs/review-page.png to refresh the README's screenshot from this run.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from prfleet_local.demo.run import pr_runs, sandbox
from tests.e2e import chromium

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser():
    binary = chromium.find()
    if binary is None:
        if os.environ.get("PRFLEET_REQUIRE_BROWSER"):
            pytest.fail("no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH: `make test` installs it where it can (apt-get install chromium)")
    b = chromium.Browser(binary)
    yield b
    b.close()


def test_the_review_page_shows_the_check_summary_review_inline_comments_and_costs(tmp_path, browser):
    with sandbox(tmp_path, sweep_interval=None) as box:
        number = box.open_sample_pr()
        payload = box.github.webhook_payload("opened", number)
        head = payload["pull_request"]["head"]["sha"]
        assert box.deliver("pull_request", payload)[0] == 202
        assert box.wait_for_review(number, head_sha=head, timeout=180)
        url = box.review_page(number)

        with urllib.request.urlopen(url) as reply:  # noqa: S310 - loopback
            assert reply.headers["Content-Type"].startswith("text/html")
            assert (
                "script-src" not in reply.headers["Content-Security-Policy"]
            )  # default-src 'none': no script
        browser.open(url)
        text = browser.evaluate("document.body.innerText")
        pr = box.github.prs[number]
        assert browser.evaluate("document.title").startswith(pr.title)

        # the check run: its conclusion, title and every annotation
        (check,) = box.github.check_runs_for(head)
        assert check["conclusion"] in text and check["output"]["title"] in text
        shown = browser.evaluate("document.querySelectorAll('table.annotations tr').length - 1")
        assert shown == len(check["output"]["annotations"]) > 0

        # the summary comment and the review body as GitHub renders them: Markdown tables, hidden HTML comments
        (summary,) = [c for c in box.github.issue_comments if c["issue_number"] == number]
        assert "prfleet:summary" in summary["body"] and "prfleet:summary" not in text
        rows = browser.evaluate(
            "[...document.querySelectorAll('.summary table.md tr')].map(r => r.cells[0].innerText)"
        )
        assert {"review", "tests", "docs"} <= set(rows)
        (review,) = [r for r in box.github.reviews if r["commit_id"] == head]
        assert (
            f"prfleet review of {head[:12]}" in text and f"prfleet review of `{head[:12]}`" in review["body"]
        )

        # the low and info findings: one collapsed section of the review body, never inline comments
        folded = browser.evaluate(
            "[...document.querySelectorAll('details > summary')].map(s => s.innerText)"
            ".filter(t => t.endsWith('low and info findings'))"
        )
        assert len(folded) == 1 and f"<details><summary>{folded[0]}</summary>" in review["body"]

        # every inline comment, visible, directly under the row whose head-side line number is its line, with
        # the finding's title on the screen
        runs = pr_runs(box, number, head)
        titles: dict[tuple[str, int], list[str]] = {}
        for r in runs:
            for f in json.loads(r.get("findings") or "[]"):
                titles.setdefault((f["path"], int(f["line"])), []).append(f["title"].replace("`", ""))
        comments = [c for c in box.github.review_comments if c["commit_id"] == head]
        assert comments
        placed = browser.evaluate(
            """[...document.querySelectorAll('.comment')].map(el => {
                 let row = el.closest('tr').previousElementSibling;
                 while (row && row.querySelector('.comment')) row = row.previousElementSibling;  // same line
                 return {path: el.dataset.path, line: +el.dataset.line, visible: el.offsetHeight > 0,
                         text: el.innerText, rowHead: row && +row.cells[1].innerText,
                         rowFile: el.closest('.file').id};
               })"""
        )
        assert len(placed) == len(comments)
        for c in comments:
            hits = [p for p in placed if p["path"] == c["path"] and p["line"] == c["line"]]
            assert len(hits) == sum(1 for o in comments if (o["path"], o["line"]) == (c["path"], c["line"]))
            for hit in hits:
                assert (
                    hit["visible"] and hit["rowHead"] == c["line"] and hit["rowFile"] == f"file-{c['path']}"
                )
                assert any(t in hit["text"] for t in titles[(c["path"], c["line"])]), hit["text"]
                assert "<!--" not in hit["text"] and "**" not in hit["text"]

        # the cost of each run, and the total the runs add up to
        total = sum(int(r.get("cost_micros") or 0) for r in runs)
        assert browser.evaluate("document.querySelectorAll('table.costs tr').length") == len(runs) + 2
        assert f"total ({len(runs)} runs)\t${total / 1e6:.6f}" in text

        png = browser.screenshot()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
        (tmp_path / "review-page.png").write_bytes(png)
        target = os.environ.get("PRFLEET_SCREENSHOT")
        if target:
            Path(target).write_bytes(png)
        (tmp_path / "page.json").write_text(json.dumps(placed))
