"""The noise budget end to end (issue 24): the stack's MaxInlineComments parameter, set through the template like
any other, caps the inline comments of the demo's review; the best ranked findings are the inline ones, every other
finding is in the review body (low and info in one collapsed section), and the check run says how many went where.

Real HTTP to the webhook, moto, the fake GitHub and the offline model (its findings measure the pipeline, not
Claude)."""

from __future__ import annotations

import json

import pytest

from prfleet.pipeline import noise, render
from prfleet_local.demo.run import REPO, sandbox
from tests.review_helpers import posted_fingerprints, review_opened

pytestmark = pytest.mark.e2e

CAP = 2  # far under the demo's on-diff findings (eight critical..medium ones)


def test_the_review_keeps_to_max_inline_comments_and_puts_the_rest_in_its_body(tmp_path):
    with sandbox(
        tmp_path, parameters={"MaxInlineComments": CAP}, sweep_interval=None, visibility_timeout=6
    ) as box:
        number = box.open_sample_pr()
        head, runs = review_opened(box, REPO, number, delivery="noise-budget")
        (review,) = [r for r in box.github.reviews if r["commit_id"] == head]
        files = {f["filename"]: f.get("patch") for f in box.github.files_of(box.github.prs[number])}

    lines = {path: render.diff_line_map(patch) for path, patch in files.items()}
    # pre-existing findings are held back before placement (report_preexisting is off), counted apart
    found = [f for r in runs for f in json.loads(r["findings"])]
    findings = [f for f in found if f.get("relation") != "preexisting"]
    assert len(findings) < len(found), "the sample PR has a pre-existing finding the review holds back"

    def fp(f):
        return render.fingerprint_of(f, lines.get(f["path"], {}).get(int(f["line"]), ""))

    by_fp = {fp(f): f for f in findings}
    inline_fps = posted_fingerprints(review["comments"])
    candidates = sorted(
        (
            f
            for f in findings
            if int(f["line"]) in lines.get(f["path"], {}) and f["severity"] not in noise.FOLDED_SEVERITIES
        ),
        key=noise.rank_key,
    )
    assert len(candidates) > CAP, "the sample PR has more findings on its diff than the cap"
    # the cap holds, and the inline comments are the best ranked findings on the diff
    assert len(review["comments"]) == CAP
    assert inline_fps == {fp(f) for f in candidates[:CAP]}
    assert all(by_fp[x]["severity"] not in noise.FOLDED_SEVERITIES for x in inline_fps)
    # nothing lost: every finding is inline or in the body, the low and info ones in one collapsed section
    body_fps = posted_fingerprints([review["body"]])
    assert inline_fps | body_fps == set(by_fp) and not inline_fps & body_fps
    low = [f for f in by_fp.values() if f["severity"] in noise.FOLDED_SEVERITIES]
    assert low, "the demo's docs agent reports low findings"
    assert f"<details><summary>{len(low)} low and info findings</summary>" in review["body"]
    assert f"At most {CAP} inline comment(s) per review" in review["body"]
    (check,) = box.github.check_runs_for(head)
    in_body = len(by_fp) - CAP - len(low)
    assert (
        f"Review: {CAP} inline comment(s), {in_body} finding(s) in the review body, "
        f"{len(low)} low and info finding(s) folded." in check["output"]["summary"]
    )
