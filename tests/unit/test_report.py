"""Pure review planning: diff lines, inline vs folded, GitHub's limits, fingerprints, check conclusions."""

from __future__ import annotations

import difflib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prfleet.agents.findings import Finding
from prfleet.pipeline import noise, render
from tests import review_helpers

PATCH = "\n".join(
    [
        "@@ -1,4 +1,5 @@",
        " import os",
        "-import sys",
        "+import sys, json",
        "+import re",
        " ",
        " def main():",
        "@@ -20,3 +21,4 @@ def main():",
        "     x = 1",
        "     y = 2",
        "+    z = eval(s)",
        "     return x",
        "\\ No newline at end of file",
    ]
)


def finding(path="app.py", line=3, severity="medium", title="Issue", agent="review", fp=None, body="details"):
    d = {
        "path": path,
        "line": line,
        "severity": severity,
        "category": "bug",
        "title": title,
        "body": body,
        "suggestion": None,
        "agent": agent,
    }
    if fp is not None:
        d["fingerprint"] = fp
    return d


def test_diff_lines_are_added_and_context_lines_of_the_new_side():
    lines = render.diff_line_map(PATCH)
    assert set(lines) == {1, 2, 3, 4, 5, 21, 22, 23, 24}
    assert lines[2] == "import sys, json" and lines[3] == "import re" and lines[23] == "    z = eval(s)"
    assert 6 not in lines and 20 not in lines and 25 not in lines
    assert review_helpers.diff_lines(None) == set() and review_helpers.diff_lines("") == set()


def test_diff_lines_tolerates_file_headers_and_short_hunk_headers():
    patch = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n"
    assert render.diff_line_map(patch) == {1: "new"}
    deleted_file = "@@ -1,2 +0,0 @@\n-a\n-b"
    assert review_helpers.diff_lines(deleted_file) == set()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", "d", "", "x = 1"]), max_size=30),
    st.lists(st.sampled_from(["a", "b", "c", "e", "", "y = 2"]), max_size=30),
    st.integers(min_value=0, max_value=3),
)
def test_diff_lines_match_the_new_file(old, new, context):
    patch = "\n".join(difflib.unified_diff(old, new, lineterm="", n=context))
    lines = render.diff_line_map(patch)
    for number, text in lines.items():
        assert new[number - 1] == text  # every reported line is that line of the new file
    sm = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, _i1, _i2, j1, j2 in sm.get_opcodes():
        if tag in ("replace", "insert"):
            assert set(range(j1 + 1, j2 + 1)) <= set(lines)  # every added line can carry a comment


def test_inline_only_on_diff_lines_the_rest_folded_into_the_body():
    findings = [
        finding(line=3, severity="high", title="On added line", fp="a1"),
        finding(line=10, severity="critical", title="Outside the diff", fp="b2"),
        finding(path="other.py", line=1, title="File not in the diff", fp="c3"),
    ]
    plan = render.build_review(
        findings, {"app.py": PATCH}, {"review": {"findings": 3, "cost_micros": 12_345}}, already_posted=set()
    )
    assert plan.comments == [{"path": "app.py", "line": 3, "side": "RIGHT", "body": plan.comments[0]["body"]}]
    assert plan.comments[0]["body"].endswith("<!-- prfleet:fp=a1 -->")
    assert "On added line" in plan.comments[0]["body"]
    assert [f["title"] for f in plan.folded] == [
        "Outside the diff",
        "File not in the diff",
    ]  # most severe first
    assert (
        "Outside the diff" in plan.body and "`app.py:10`" in plan.body and "line not in the diff" in plan.body
    )
    assert "<!-- prfleet:fp=b2 -->" in plan.body and "<!-- prfleet:fp=c3 -->" in plan.body
    assert plan.fingerprints == {"a1", "b2", "c3"}
    assert review_helpers.posted_fingerprints([*plan.comments, plan.body]) == {"a1", "b2", "c3"}


def test_suggestion_rendered_as_github_suggestion_block():
    f = finding(line=23, fp="5e1")
    f["suggestion"] = "    z = ast.literal_eval(s)"
    plan = render.build_review([f], {"app.py": PATCH}, None, already_posted=set())
    assert "```suggestion\n    z = ast.literal_eval(s)\n```" in plan.comments[0]["body"]


def test_inline_comments_capped_most_severe_kept_inline():
    sev = ["low", "critical", "info", "high", "medium"]
    findings = [
        finding(line=ln, severity=s, title=f"t{ln}", fp=f"f{ln}")
        for ln, s in zip([1, 2, 3, 4, 5], sev, strict=True)
    ]
    plan = render.build_review(findings, {"app.py": PATCH}, None, already_posted=set(), max_comments=2)
    assert [c["line"] for c in plan.comments] == [2, 4]  # critical, high
    assert len(plan.folded) == 3 and "over 2 inline comments" in plan.body
    assert render.MAX_COMMENTS == 50


def test_body_and_comment_sizes_respect_the_limit():
    big = "word " * 2000  # 10,000 characters each
    findings = [finding(line=100 + i, title=f"t{i}", fp=f"{i:04x}", body=big) for i in range(40)]
    findings.append(finding(line=3, fp="ffff", body="y" * 100_000))
    plan = render.build_review(
        findings, {"app.py": PATCH}, {"review": {}}, already_posted=set(), max_body=30_000
    )
    assert len(plan.body) <= 30_000
    assert all(len(c["body"]) <= 30_000 for c in plan.comments)
    assert plan.comments[0]["body"].endswith("<!-- prfleet:fp=ffff -->")  # marker survives truncation
    assert plan.omitted and "did not fit" in plan.body
    assert len(plan.folded) + len(plan.omitted) == 40
    assert all(f"<!-- prfleet:fp={f['fingerprint']} -->" not in plan.body for f in plan.omitted)
    default = render.build_review(findings, {"app.py": PATCH}, None, already_posted=set())
    assert len(default.body) <= render.MAX_BODY == 65_536


def test_duplicates_across_heads_and_within_a_batch_are_skipped():
    findings = [finding(line=3, fp="a1"), finding(line=4, fp="A1"), finding(line=5, fp="b2")]
    plan = render.build_review(findings, {"app.py": PATCH}, None, already_posted={"b2"})
    assert [c["line"] for c in plan.comments] == [3]
    assert len(plan.skipped_duplicates) == 2
    assert "2 already posted" in plan.body


def test_finding_objects_fingerprint_by_code_line_so_a_moved_line_is_not_reposted():
    f_head1 = Finding("app.py", 23, "high", "security", "eval on input", "Do not eval.", agent="review")
    head1 = render.build_review([f_head1], {"app.py": PATCH}, None, already_posted=set())
    posted = review_helpers.posted_fingerprints(head1.comments)
    assert posted == {f_head1.fingerprint("    z = eval(s)")}

    # Next head: two lines inserted above, the same code now sits on line 25.
    patch2 = (
        "@@ -20,3 +21,6 @@\n     x = 1\n+    a = 0\n+    b = 0\n     y = 2\n+    z = eval(s)\n     return x"
    )
    f_head2 = Finding("app.py", 25, "high", "security", "eval on input", "Do not eval.", agent="review")
    head2 = render.build_review([f_head2], {"app.py": patch2}, None, already_posted=posted)
    assert head2.comments == [] and head2.folded == [] and head2.skipped_duplicates == [f_head2]
    assert head2.empty


def test_inline_false_folds_everything_for_the_422_fallback():
    plan = render.build_review(
        [finding(line=3, fp="a1")], {"app.py": PATCH}, None, already_posted=set(), inline=False
    )
    assert plan.comments == [] and len(plan.folded) == 1 and "<!-- prfleet:fp=a1 -->" in plan.body


def test_summary_table_per_agent_with_cost_and_counts():
    rows = {
        "review": {"findings": 2, "cost_micros": 1_234_500, "succeeded": 3, "cached": 1, "deferred": 2},
        "docs": {"findings": 0, "cost_micros": 500, "succeeded": 1, "skipped": 4, "superseded": 1},
    }
    plan = render.build_review(
        [],
        {},
        rows,
        already_posted=set(),
        skipped_files=[{"path": "big.bin", "reason": "binary"}],
        head_sha="abcdef1234567890",
    )
    assert plan.summary.startswith(render.SUMMARY_MARKER)
    table = render.summary_table(rows)
    assert "| docs | 1 | 0 | $0.0005 | 0 | 0 | 4 | 1 | 0 |" in table
    assert "| review | 3 | 2 | $1.2345 | 1 | 2 | 0 | 0 | 0 |" in table
    assert "| **total** | 4 | 2 | $1.2350 | 1 | 2 | 4 | 1 | 0 |" in table
    assert table in plan.summary and table in plan.body
    assert "`big.bin`: binary" in plan.summary and "abcdef123456" in plan.summary


def test_check_conclusion_failure_only_for_errors_neutral_when_deferred():
    ok = render.check_conclusion({"review": {"succeeded": 3, "findings": 2}, "docs": {"succeeded": 1}})
    assert ok[0] == "success" and ok[1] == "2 finding(s)"
    clean = render.check_conclusion({"succeeded": 1})
    assert clean[0] == "success" and clean[1] == "No findings"
    critical = render.check_conclusion({"review": {"succeeded": 1, "findings": 9}})
    assert critical[0] == "success"  # findings never fail the check
    deferred = render.check_conclusion({"review": {"succeeded": 1, "deferred": 2}})
    assert deferred[0] == "neutral" and "budget" in deferred[1] and "after the budget resets" in deferred[2]
    limit = render.check_conclusion(
        {"review": {"deferred": 2}},
        deferred_reasons=["spend limit: You have reached your specified workspace API usage limits", ""],
    )
    assert limit[0] == "neutral" and "spend limit" in limit[1] and "budget" not in limit[1]
    assert "workspace API usage limits" in limit[2] and "probe" in limit[2]
    failed = render.check_conclusion({"review": {"succeeded": 1, "deferred": 2, "failed": 1}})
    assert failed[0] == "failure" and "1 review job(s) failed" == failed[1]
    assert render.check_conclusion({})[0] == "success"


def test_annotations_levels_and_batches_of_50():
    anns = render.annotations(
        [
            finding(line=0, severity="info", title="zero line"),
            finding(line=7, severity="critical", title="boom"),
            finding(line=9, severity="medium"),
        ]
    )
    assert [a["annotation_level"] for a in anns] == ["failure", "warning", "notice"]
    assert anns[0] == {
        "path": "app.py",
        "start_line": 7,
        "end_line": 7,
        "annotation_level": "failure",
        "message": "details",
        "title": "[critical] boom",
    }
    assert anns[2]["start_line"] == 1  # GitHub needs a line >= 1
    many = render.annotations([finding(line=i) for i in range(1, 121)])
    assert [len(b) for b in review_helpers.batches(many)] == [50, 50, 20]
    assert len(render.annotations([finding(title="t" * 400)])[0]["title"]) <= 255


def test_over_limit_note_listed_first_stays_visible_among_hundreds_of_skips():
    skips = [
        {"path": "(2800 more files)", "reason": "not listed: over the limit of 250 files per pull request"}
    ]
    skips += [{"path": f"gen/b{i}.min.js", "reason": "ignored by pattern"} for i in range(249)]
    plan = render.build_review([], {}, {}, skipped_files=skips)
    assert "250 file(s) not reviewed" in plan.body
    assert "(2800 more files)" in plan.body and "over the limit of 250" in plan.body
    assert "… and 200 more" in plan.body
    assert "(2800 more files)" in plan.summary


def test_fan_in_counts_only_counted_runs_and_never_turns_an_owed_run_into_a_failure():
    from prfleet.pipeline import fanin
    from prfleet.store import heads

    record = heads.HeadRecord(
        "acme/shop", 7, "h" * 40, planned=4, done_ids={"a", "b", "c"}, deferred_ids={"d"}
    )
    runs = [
        {"sk": "RUN#h#a", "agent": "review", "status": "succeeded", "cost_micros": 120, "findings": "[{}]"},
        {"sk": "RUN#h#b", "agent": "review", "status": "cached", "cost_micros": 0},
        {"sk": "RUN#h#c", "agent": "tests", "status": "superseded"},
        {"sk": "RUN#h#d", "agent": "tests", "status": "running"},  # a deferred job re-queued, running again
        {"sk": "RUN#h#x", "agent": "docs", "status": "failed"},  # not counted by this head record
    ]
    counted = [r for r in runs if fanin._counted(r, record)]
    counts = fanin._counts(counted, record)
    assert set(counts) == {"review", "tests"}
    assert counts["review"]["succeeded"] == 1 and counts["review"]["cached"] == 1
    assert counts["review"]["cost_micros"] == 120 and counts["review"]["findings"] == 1
    assert counts["tests"]["superseded"] == 1 and counts["tests"]["deferred"] == 1
    assert all(row["failed"] == 0 for row in counts.values())
    assert render.check_conclusion(counts)[0] == "neutral"  # owed work is deferral, never failure


def test_findings_outside_the_diff_get_their_heading_and_a_link_to_the_line_at_the_head():
    head = "c0ffee" + "0" * 34
    findings = [
        finding(line=3, fp="a1", title="On the diff"),
        finding(path="src/callers/use it.py", line=42, severity="high", fp="b2", title="Caller now breaks"),
        finding(line=10, fp="c3", title="Unchanged line of a changed file"),
    ]
    plan = render.build_review(
        findings, {"app.py": PATCH}, None, head_sha=head, repo="acme/shop", max_comments=0
    )
    assert plan.comments == []
    assert [f["title"] for f in plan.outside] == ["Caller now breaks", "Unchanged line of a changed file"]
    assert (
        len(plan.folded) == 3
    )  # the one on the diff (over the inline cap) and the two outside, all in the body
    placed_inline = plan.body.index("### Findings not placed inline")
    outside = plan.body.index("### Outside the diff")
    assert placed_inline < plan.body.index("On the diff") < outside < plan.body.index("Caller now breaks")
    link = f"https://github.com/acme/shop/blob/{head}/src/callers/use%20it.py#L42"
    assert f"[`src/callers/use it.py:42`]({link})" in plan.body
    assert f"(https://github.com/acme/shop/blob/{head}/app.py#L10)" in plan.body
    assert (
        f"[`app.py:3`](https://github.com/acme/shop/blob/{head}/app.py#L3)" in plan.body
    )  # over the cap: linked
    assert "3 new finding(s): 0 inline, 3 below (2 outside the diff)." in plan.body
    assert plan.fingerprints == {"a1", "b2", "c3"}  # nothing dropped


def test_outside_the_diff_stays_there_when_inline_comments_are_refused():
    plan = render.build_review(
        [finding(line=3, fp="a1"), finding(path="lib.py", line=2, fp="b2")],
        {"app.py": PATCH},
        None,
        inline=False,
        head_sha="f" * 40,
        repo="acme/shop",
    )
    assert [f["path"] for f in plan.outside] == ["lib.py"]
    assert "inline comments were refused" in plan.body and "file not changed by this PR" in plan.body


def test_outside_the_diff_findings_over_the_body_limit_are_counted_not_dropped_silently():
    big = "word " * 2000
    findings = [finding(path=f"lib/m{i}.py", line=1, fp=f"{i:04x}", body=big) for i in range(10)]
    plan = render.build_review(
        findings, {"app.py": PATCH}, None, max_body=30_000, head_sha="a" * 40, repo="o/r"
    )
    assert plan.omitted and len(plan.outside) + len(plan.omitted) == 10
    assert f"_{len(plan.omitted)} more finding(s) did not fit" in plan.body


def test_the_review_and_the_summary_list_the_repository_instructions_that_applied():
    sources = ["REVIEW.md", ".prfleet.toml [[instructions]] #2", "REVIEW.md"]
    plan = render.build_review([], {"app.py": PATCH}, None, instructions=sources)
    line = "Repository instructions applied: `REVIEW.md`, `.prfleet.toml [[instructions]] #2`."
    assert line in plan.body and line in plan.summary
    assert "Repository instructions" not in render.build_review([], {"app.py": PATCH}, None).body


def test_the_check_summary_counts_the_findings_outside_the_diff():
    counts = {"review": {"findings": 3, "succeeded": 1}}
    _, _, text = render.check_conclusion(counts, outside_diff=2)
    assert "2 finding(s) outside the diff, listed in the review body with links." in text
    assert "outside the diff" not in render.check_conclusion(counts)[2]


def test_a_review_without_a_snapshot_says_so_and_why_in_one_line_of_body_summary_and_check():
    from prfleet.pipeline import fanin

    too_large = "the repository is over MaxRepoBytes (1,048,576 bytes; no snapshot)"
    refused = "the archive was refused: path traversal in 'o-r-abc1234/../escape.txt'"
    runs = [
        {"agent": "review", "snapshot_reason": too_large},
        {"agent": "tests", "snapshot_reason": too_large},  # the same reason from every job: said once
        {"agent": "docs", "status": "cached"},  # a cached result ran no tools: no reason
        {"agent": "review", "snapshot_reason": refused},
    ]
    reasons = fanin.snapshot_reasons(runs)
    assert reasons == [too_large, refused]
    line = (
        f"Reviewed without a snapshot of the repository: {too_large}; {refused}; "
        "grep covered only the changed files and the files read."
    )
    plan = render.build_review([], {"app.py": PATCH}, None, no_snapshot=reasons)
    assert plan.body.count(line) == 1 and plan.summary.count(line) == 1
    counts = {"review": {"succeeded": 2}}
    conclusion, _title, text = render.check_conclusion(counts, no_snapshot=reasons)
    assert conclusion == "success" and line in text  # a fallback is told, it does not fail the check
    failed = render.check_conclusion({"review": {"failed": 1}}, no_snapshot=reasons)
    assert failed[0] == "failure" and line in failed[2]


def test_a_review_with_its_snapshot_says_nothing_about_one():
    from prfleet.pipeline import fanin

    assert fanin.snapshot_reasons([{"agent": "review", "status": "succeeded"}]) == []
    plan = render.build_review([], {"app.py": PATCH}, None, no_snapshot=[])
    assert "snapshot" not in plan.body and "snapshot" not in plan.summary
    assert "snapshot" not in render.check_conclusion({"review": {"succeeded": 1}}, no_snapshot=[""])[2]


def test_web_addresses_of_github_and_github_enterprise():
    assert render.web_url("https://api.github.com") == "https://github.com"
    assert render.web_url("https://ghe.example.com/api/v3/") == "https://ghe.example.com"


# --- the noise budget (issue 24): MaxInlineComments, ranking, low and info folded, nothing lost ---

HEAD = "d" * 40
DIFF_LINES = [1, 2, 3, 4, 5, 21, 22, 23, 24]  # PATCH's new-side lines


def _fps_in(plan) -> set[str]:
    return review_helpers.posted_fingerprints([*plan.comments, plan.body])


def test_at_most_max_inline_comments_by_default_ten_the_rest_ranked_in_the_body_with_links():
    findings = [
        finding(path=f"m{i}.py", line=1, severity=["critical", "high", "medium"][i % 3], fp=f"{i:04x}")
        for i in range(15)
    ]
    patches = {f"m{i}.py": "@@ -0,0 +1 @@\n+x = 1" for i in range(15)}
    plan = render.build_review(findings, patches, None, head_sha=HEAD, repo="acme/shop")
    assert noise.DEFAULT_INLINE_COMMENTS == 10 and len(plan.comments) == 10
    # the five criticals and five highs are inline; the five mediums are in the body, each linked to its line
    inline = {c["path"] for c in plan.comments}
    assert inline == {f"m{i}.py" for i in range(15) if i % 3 != 2}
    assert [f["severity"] for f in plan.folded] == ["medium"] * 5
    for i in range(2, 15, 3):
        assert f"[`m{i}.py:1`](https://github.com/acme/shop/blob/{HEAD}/m{i}.py#L1)" in plan.body
    assert "15 new finding(s): 10 inline, 5 below." in plan.body
    assert "At most 10 inline comment(s) per review" in plan.body
    assert plan.placement == {"inline": 10, "body": 5, "collapsed": 0, "omitted": 0}
    assert _fps_in(plan) == {f"{i:04x}" for i in range(15)}


def test_inline_slots_go_by_severity_then_confidence_then_relation_then_path_line_agent():
    def f(line, severity="high", **extra):
        agent = extra.pop("agent", "review")
        d = finding(line=line, severity=severity, agent=agent, fp=f"{line:02x}{len(agent):02x}")
        d.update(extra)
        return d

    ranked = [
        f(5, "critical"),  # severity first, whatever its confidence
        f(4, confidence=0.9),  # then the verifier's confidence, higher first
        f(3, confidence=0.6, relation="preexisting"),
        f(2, confidence=0.6, relation="changed"),
        f(22, relation="affected"),  # a finding without a confidence after those with one
        f(21),  # a missing relation counts as "changed"
        f(23, relation="changed", agent="docs"),
        f(23, relation="changed", agent="review"),  # stable: path, line, then agent
        f(24, "medium", confidence=1.0),
    ]
    expected = [0, 1, 3, 2, 5, 6, 7, 4, 8]  # indexes of `ranked` in rank order
    shuffled = list(reversed(ranked))
    assert sorted(shuffled, key=noise.rank_key) == [ranked[i] for i in expected]
    plan = render.build_review(shuffled, {"app.py": PATCH}, None, max_comments=4)
    assert [c["body"].rsplit("fp=", 1)[1] for c in plan.comments] == [
        f"{render.fingerprint_of(ranked[i])} -->" for i in expected[:4]
    ]
    assert plan.folded == [ranked[i] for i in expected[4:]]  # the body keeps the same order
    # a confidence that is not a number in 0..1 is clamped or ignored, never an error
    assert noise.rank_key({"severity": "high", "confidence": 7})[1:3] == (0, -1.0)
    assert noise.rank_key({"severity": "high", "confidence": "sure"})[1:3] == (1, 0.0)


def test_low_and_info_are_never_inline_they_fold_into_one_collapsed_section():
    findings = [
        finding(line=3, severity="low", title="Low on the diff", fp="01"),
        finding(line=23, severity="info", title="Info on the diff", fp="02"),
        finding(path="lib.py", line=7, severity="low", title="Low elsewhere", fp="03"),
        finding(line=2, severity="medium", title="Medium", fp="04"),
    ]
    plan = render.build_review(findings, {"app.py": PATCH}, None, head_sha=HEAD, repo="acme/shop")
    assert [c["line"] for c in plan.comments] == [2]  # room for ten: still only the medium one
    assert [f["title"] for f in plan.collapsed] == ["Low on the diff", "Low elsewhere", "Info on the diff"]
    body = plan.body
    assert body.count("<details>") == 1 and body.count("</details>") == 1
    start = body.index("<details><summary>3 low and info findings</summary>\n\n")
    section = body[start : body.index("</details>")]
    assert all(t in section for t in ("Low on the diff", "Info on the diff", "Low elsewhere"))
    assert f"[`lib.py:7`](https://github.com/acme/shop/blob/{HEAD}/lib.py#L7)" in section
    assert "4 new finding(s): 1 inline, 0 below, 3 low and info folded." in body
    assert plan.outside == []  # the "Outside the diff" heading is for the findings above low
    assert plan.placement == {"inline": 1, "body": 0, "collapsed": 3, "omitted": 0}
    assert _fps_in(plan) == {"01", "02", "03", "04"}


def test_max_comments_zero_puts_everything_in_the_body_and_a_wrong_cap_is_refused():
    plan = render.build_review([finding(line=3, fp="a1")], {"app.py": PATCH}, None, max_comments=0)
    assert plan.comments == [] and "over 0 inline comments" in plan.body and _fps_in(plan) == {"a1"}
    for bad in (-1, 51, 2.5, True):
        with pytest.raises(ValueError, match="max_comments must be an integer from 0 to 50"):
            render.build_review([], {"app.py": PATCH}, None, max_comments=bad)


_severities = st.sampled_from(list(noise.SEVERITY_ORDER))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["app.py", "lib.py"]),
            st.sampled_from([*DIFF_LINES, 10, 40]),
            _severities,
            st.one_of(st.none(), st.floats(min_value=0, max_value=1)),
            st.sampled_from([None, "changed", "affected", "preexisting"]),
        ),
        max_size=40,
    ),
    st.integers(min_value=0, max_value=render.MAX_COMMENTS),
    st.booleans(),
)
def test_nothing_lost_every_finding_is_inline_in_the_body_or_counted(items, cap, small_body):
    findings = []
    for i, (path, line, severity, confidence, relation) in enumerate(items):
        f = finding(path=path, line=line, severity=severity, fp=f"{i:04x}", body="word " * 300)
        if confidence is not None:
            f["confidence"] = confidence
        if relation is not None:
            f["relation"] = relation
        findings.append(f)
    max_body = 8_000 if small_body else render.MAX_BODY
    plan = render.build_review(
        findings, {"app.py": PATCH}, None, max_comments=cap, max_body=max_body, head_sha=HEAD, repo="o/r"
    )
    assert len(plan.body) <= max_body and len(plan.comments) <= cap
    inline_fps = review_helpers.posted_fingerprints(plan.comments)
    assert {f["fingerprint"] for f in findings if f["severity"] in ("low", "info")}.isdisjoint(inline_fps)
    omitted = {f["fingerprint"] for f in plan.omitted}
    assert _fps_in(plan) | omitted == {f["fingerprint"] for f in findings}  # nothing dropped
    assert not (_fps_in(plan) & omitted)
    counts = plan.placement
    assert counts["inline"] + counts["body"] + counts["collapsed"] + counts["omitted"] == len(findings)
    if omitted:
        assert f"_{len(omitted)} more finding(s) did not fit" in plan.body
    # no finding in the body outranks one inline (among those that could go inline)
    on_diff = [
        f
        for f in plan.folded
        if f["path"] == "app.py" and f["line"] in DIFF_LINES and f["severity"] not in ("low", "info")
    ]
    if on_diff and plan.comments:
        worst_inline = max((f for f in findings if f["fingerprint"] in inline_fps), key=noise.rank_key)
        assert all(noise.rank_key(worst_inline) <= noise.rank_key(f) for f in on_diff)
    assert plan.body.count("<details>") == plan.body.count("</details>") <= 1


def test_the_body_limit_keeps_the_collapsed_section_closed_and_counts_what_did_not_fit():
    big = "word " * 600
    findings = [finding(line=100 + i, severity="low", fp=f"{i:04x}", body=big) for i in range(60)]
    findings.append(finding(line=3, severity="high", fp="ffff"))
    plan = render.build_review(findings, {"app.py": PATCH}, None, max_body=20_000)
    assert len(plan.body) <= 20_000 and plan.body.rstrip().endswith(render.REVIEW_MARKER)
    shown = len(plan.collapsed)
    assert 0 < shown < 60 and shown + len(plan.omitted) == 60
    assert f"<details><summary>{shown} low and info findings</summary>" in plan.body
    assert plan.body.index("</details>") < plan.body.index(
        f"_{len(plan.omitted)} more finding(s) did not fit"
    )
    _, _, text = render.check_conclusion(
        {"review": {"findings": 61, "succeeded": 1}}, placement=plan.placement
    )
    assert (
        f"Review: 1 inline comment(s), 0 finding(s) in the review body, {shown} low and info finding(s) folded, "
        f"{len(plan.omitted)} did not fit GitHub's 65536-character body limit (counted, not posted)." in text
    )


def test_the_check_summary_counts_inline_body_and_folded():
    counts = {"review": {"findings": 6, "succeeded": 1}}
    text = render.check_conclusion(counts, placement={"inline": 2, "body": 3, "collapsed": 1, "omitted": 0})[
        2
    ]
    assert text.endswith(
        "Review: 2 inline comment(s), 3 finding(s) in the review body, 1 low and info finding(s) folded."
    )
    assert "Review:" not in render.check_conclusion(counts)[2]
