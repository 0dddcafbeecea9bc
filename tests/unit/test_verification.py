"""The verification pass's pure parts (issue 24 item 2): the verdicts as the verify run reports them (bad ones
refused with reasons the model can act on), what they do to a head's candidates (keep, drop, merge), and the
posting decision (kept only, unverified, held), plus the verify job's identity and the check run's details."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from prfleet.agents.verdicts import (
    InvalidVerdicts,
    StoredVerdict,
    Verdict,
    by_fingerprint,
    judge,
    parse_verdicts,
)
from prfleet.config.repo_config import RepoConfigError, learns, parse_repo_config, requires_verification
from prfleet.cost import pricing
from prfleet.jobs import parse_message
from prfleet.pipeline import render, verification, verify_text
from prfleet.pipeline.verify_run import not_needed, team_rejections
from prfleet.repository.untrusted import path_problem
from prfleet.store.heads import HeadRecord
from prfleet.store.posting import wanted_claim

IDS = ["c1", "c2", "c3"]


def finding(fp: str, **kw):
    base = {
        "path": "shop/export.py",
        "line": 8,
        "severity": "high",
        "category": "security",
        "title": f"Finding {fp}",
        "body": "Why it matters.",
        "agent": "review",
        "relation": "changed",
        "fingerprint": fp,
    }
    return {**base, **kw}


# ---------------------------------------------------------------------------------------------------- verdicts


def test_a_complete_report_is_parsed_with_merges_severity_and_confidence():
    verdicts, summary = parse_verdicts(
        {
            "verdicts": [
                {
                    "id": "c1",
                    "decision": "keep",
                    "reason": "eval on input",
                    "severity": "critical",
                    "confidence": 0.9,
                    "merges": ["c3"],
                },
                {"id": "c2", "decision": "drop", "reason": "  the name is   not there "},
            ],
            "summary": "two checked",
        },
        IDS,
    )
    assert verdicts == [
        Verdict("c1", "keep", "eval on input", "critical", 0.9, ("c3",)),
        Verdict("c2", "drop", "the name is not there"),
    ]
    assert summary == "two checked"


@pytest.mark.parametrize(
    "item, problem",
    [
        ({"id": "c9", "decision": "keep", "reason": "x"}, "'c9' is not a candidate id"),
        ({"id": "c1", "decision": "keep"}, "has no reason"),
        ({"id": "c1", "decision": "keep", "reason": "   "}, "has no reason"),
        ({"id": "c1", "decision": "maybe", "reason": "x"}, "must be keep or drop"),
        ({"id": "c1", "decision": "keep", "reason": "x", "severity": "urgent"}, "severity 'urgent'"),
        ({"id": "c1", "decision": "keep", "reason": "x", "confidence": 1.5}, "confidence must be a number"),
        ({"id": "c1", "decision": "keep", "reason": "x", "confidence": True}, "confidence must be a number"),
        ({"id": "c1", "decision": "keep", "reason": "x", "why": "y"}, "unknown field(s): why"),
        ({"id": "c1", "decision": "keep", "reason": "x" * 301}, "the limit is 300"),
    ],
)
def test_a_bad_verdict_is_refused_with_a_reason_the_model_can_act_on(item, problem):
    others = [
        {"id": "c2", "decision": "drop", "reason": "r"},
        {"id": "c3", "decision": "drop", "reason": "r"},
    ]
    with pytest.raises(InvalidVerdicts) as exc:
        parse_verdicts({"verdicts": [item, *others]}, IDS)
    assert any(problem in e for e in exc.value.errors), exc.value.errors


@pytest.mark.parametrize(
    "verdicts, problem",
    [
        ([{"id": "c1", "decision": "keep", "reason": "r", "merges": ["c7"]}], "merges 'c7', which is not"),
        ([{"id": "c1", "decision": "keep", "reason": "r", "merges": ["c1"]}], "c1 merges itself"),
        (
            [{"id": "c1", "decision": "drop", "reason": "r", "merges": ["c2"]}],
            "only a kept candidate absorbs",
        ),
        (
            [
                {"id": "c1", "decision": "keep", "reason": "r", "merges": ["c2"]},
                {"id": "c3", "decision": "keep", "reason": "r", "merges": ["c2"]},
            ],
            "c2 is merged into both c1 and c3",
        ),
        (
            [
                {"id": "c1", "decision": "keep", "reason": "r", "merges": ["c2"]},
                {"id": "c2", "decision": "drop", "reason": "duplicate"},
            ],
            "also has a verdict of its own",
        ),
        (
            [
                {"id": "c1", "decision": "keep", "reason": "r"},
                {"id": "c1", "decision": "drop", "reason": "r"},
            ],
            "c1 already has a verdict",
        ),
    ],
)
def test_merges_that_cannot_stand_are_refused(verdicts, problem):
    rest = [{"id": c, "decision": "drop", "reason": "r"} for c in IDS if c not in {v["id"] for v in verdicts}]
    rest = [r for r in rest if not any(r["id"] in v.get("merges", []) for v in verdicts)]
    with pytest.raises(InvalidVerdicts) as exc:
        parse_verdicts({"verdicts": verdicts + rest}, IDS)
    assert any(problem in e for e in exc.value.errors), exc.value.errors


def test_every_candidate_needs_a_verdict_first_and_the_corrective_report_may_leave_some_out():
    partial = {"verdicts": [{"id": "c1", "decision": "keep", "reason": "r"}]}
    with pytest.raises(InvalidVerdicts, match="no verdict for c2, c3"):
        parse_verdicts(partial, IDS)
    verdicts, _ = parse_verdicts(partial, IDS, require_all=False)
    assert [v.id for v in verdicts] == ["c1"]
    for bad in (None, [], {"verdicts": "all good"}, {"verdicts": [], "extra": 1}):
        with pytest.raises(InvalidVerdicts):
            parse_verdicts(bad, IDS)


def test_verdicts_apply_by_fingerprint_keep_drop_and_merge_across_agents():
    found = [
        finding("aa", severity="medium"),
        finding("bb", agent="tests", category="tests"),
        finding("cc", agent="docs"),
        finding("dd"),
    ]
    stored = by_fingerprint(
        [
            Verdict("c1", "keep", "real", "high", 0.75, ("c3",)),
            Verdict("c2", "drop", "an existing test covers it"),
        ],
        {"c1": "aa", "c2": "bb", "c3": "cc", "c4": "dd"},
    )
    judged = judge(found, stored)
    (kept,) = judged.kept
    assert kept["fingerprint"] == "aa" and kept["severity"] == "high" and kept["confidence"] == 0.75
    assert (
        kept["verified"] is True
        and kept["found_by"] == ["review", "docs"]
        and kept["verify_reason"] == "real"
    )
    assert [(f["fingerprint"], why) for f, why in judged.dropped] == [("bb", "an existing test covers it")]
    assert [(f["fingerprint"], into) for f, into in judged.merged] == [("cc", "aa")]
    assert [f["fingerprint"] for f in judged.unjudged] == ["dd"]  # no verdict: posted, labelled unverified
    # stored as the run keeps them, and read back the same (the cache and the run record carry this form)
    assert [StoredVerdict.from_dict(json.loads(json.dumps(v.to_dict()))) for v in stored] == stored


# ---------------------------------------------------------------------------------------------------- posting


def run(status: str, verdicts=None, error: str = ""):
    return {
        "status": status,
        "error": error,
        "verdicts": None if verdicts is None else json.dumps([v.to_dict() for v in verdicts]),
    }


def test_the_posting_decision_kept_only_unverified_or_held():
    found = [finding("aa"), finding("bb")]
    keep_a = [StoredVerdict("aa", "keep", "real"), StoredVerdict("bb", "drop", "not on that line")]

    verified = verification.decide(found, [run("succeeded", keep_a)], enabled=True, require=True)
    assert verified.state == "verified" and [f["fingerprint"] for f in verified.posted] == ["aa"]
    assert verified.counts == "2 candidate(s): 1 kept, 1 dropped, 0 merged"
    cached = verification.decide(found, [run("cached", keep_a)], enabled=True, require=False)
    assert [f["fingerprint"] for f in cached.posted] == ["aa"]

    for status, error, why in [
        ("deferred", "budget daily reached: needs $0.51", "verification deferred (budget daily reached"),
        ("failed", "the model refused (cyber)", "verification failed (the model refused (cyber))"),
        ("partial", "iteration cap reached", "the verifier gave no verdicts (iteration cap reached)"),
        ("succeeded", "", "verification succeeded"),  # succeeded without stored verdicts: nothing to apply
    ]:
        unverified = verification.decide(found, [run(status, error=error)], enabled=True, require=False)
        assert unverified.state == "unverified" and why in unverified.reason, unverified.reason
        assert [f["verified"] for f in unverified.posted] == [False, False]  # every candidate, labelled
        held = verification.decide(found, [run(status, error=error)], enabled=True, require=True)
        assert held.state == "held" and held.posted == [] and why in held.reason

    no_run = verification.decide(found, [], enabled=True, require=False)
    assert no_run.state == "unverified" and no_run.reason == "the verify job has no run"
    # Verification off, or nothing to verify: posted exactly as found, no label
    for off in (
        verification.decide(found, [], enabled=False, require=True),
        verification.decide([], [run("failed")], enabled=True, require=True),
    ):
        assert (
            off.state == "off"
            and off.posted == [dict(f) for f in off.posted]
            and "verified" not in str(off.posted)
        )


def test_candidates_are_ranked_deduplicated_and_leave_out_what_the_pr_already_shows():
    found = [
        finding("aa", severity="low"),
        finding("BB", severity="critical"),
        finding("bb", severity="critical", agent="tests"),
        finding("cc", severity="medium"),
    ]
    assert [f["fingerprint"] for f in verification.candidates(found, {"cc"})] == ["BB", "aa"]
    key = verification.cache_key
    assert key(found, "m", "v1") == key(list(reversed(found)), "m", "v1")  # the candidates, not their order
    assert (
        len({key(found, "m", "v1"), key(found, "m2", "v1"), key(found, "m", "v2"), key(found[:2], "m", "v1")})
        == 4
    )
    # a new rejection shown to the verifier may change a verdict: another key; their order does not matter
    a, b = {"title": "A", "down": 2}, {"title": "B", "down": 1}
    assert key(found, "m", "v1", [a]) != key(found, "m", "v1")
    assert key(found, "m", "v1", [a, b]) == key(found, "m", "v1", [b, a]) != key(found, "m", "v1", [a])


def test_a_repository_that_turned_learning_off_shows_the_verifier_no_rejections():
    """`[conversation] learn = false`: no suppressions, and no rejections given to the verify run (no read)."""
    off = "[conversation]\nlearn = false\n"
    assert not learns(off) and learns(None) and learns("[conversation]\ntrusted = []\n")
    assert learns("this is not toml [")  # a broken file counts as absent (the planner reports it)
    assert team_rejections("acme/shop", off) == []


# ---------------------------------------------------------------------------------------------------- the job


def record(**kw) -> HeadRecord:
    return HeadRecord(repo="acme/shop", number=7, head_sha="a" * 40, planned=2, installation_id=5, **kw)


def test_the_verify_job_is_one_per_head_and_claim_and_never_a_file():
    rec = record()
    partial, final = (verification.verify_job(rec, c, "d-1") for c in ("partial", "final"))
    assert partial.job_id != final.job_id  # the partial and the final posting each have their own run
    assert verification.verify_job(rec, "final", "another delivery").job_id == final.job_id  # stable
    assert path_problem(final.path) is not None  # no repository file can have its path
    assert parse_message(final.to_message()) == final  # a valid JobsQueue message, as any file job
    assert verification.is_verify_job(final) and verification.claim_of(final) == "final"
    with pytest.raises(ValueError):
        verification.verify_job(rec, "both", "d")


def test_a_posting_split_over_parts_has_one_stable_job_per_part_and_its_path_says_which():
    rec = record(verify_parts={"final": 3})
    jobs = verification.verify_jobs(rec, "final", "d-1")
    assert [j.path for j in jobs] == ["/verify/final/1of3", "/verify/final/2of3", "/verify/final/3of3"]
    assert len({j.job_id for j in jobs}) == 3
    assert [verification.part_of(j) for j in jobs] == [("final", 0, 3), ("final", 1, 3), ("final", 2, 3)]
    assert [parse_message(j.to_message()) for j in jobs] == jobs  # valid JobsQueue messages
    assert all(path_problem(j.path) is not None for j in jobs)
    assert [j.path for j in verification.verify_jobs(record(), "final", "d")] == ["/verify/final"]  # one part
    assert (
        verification.part_key("final", 1, 3) == "final/2of3"
        and verification.part_key("final", 0, 1) == "final"
    )
    for bad in (
        "/verify/final/0of3",
        "/verify/final/4of3",
        "/verify/final/x",
        "/verify/final/2of",
        "/verify/x/1of2",
    ):
        job = replace(jobs[0], path=bad)
        with pytest.raises(ValueError):
            verification.part_of(job)
    with pytest.raises(ValueError):
        verification.verify_job(rec, "final", "d", 3, 3)


def test_the_parts_keep_a_files_candidates_together_balanced_and_in_rank_order():
    on_files = [[finding(f"{i:02x}", path=f"f{i % 8}") for i in range(n)] for n in (0, 1, 10, 11, 30, 31)]
    assert [verification.parts_for(found, 10) for found in on_files] == [1, 1, 1, 2, 3, 4]
    one_file = [finding(f"{i:02x}") for i in range(25)]
    assert verification.parts_for(one_file, 10) == 1  # never a part with nothing in it
    found = [finding(f"{i:02x}", path=p) for i, p in enumerate("aabacddaeeeefa")]
    assert verification.parts_for(found, 1) == 6  # as many parts as files, at most
    # as many as the PR's budget holds calls of at once
    assert verification.parts_for(found, 1, at_once=3) == 3
    assert verification.parts_for(found, 1, at_once=0) == 1  # one, whose call the ledger then refuses or not

    parts = verification.split(found, 3)
    assert sorted(f["fingerprint"] for p in parts for f in p) == sorted(
        f["fingerprint"] for f in found
    )  # all once
    for p in parts:
        assert [found.index(f) for f in p] == sorted(found.index(f) for f in p)  # rank order kept
    paths = [{f["path"] for f in p} for p in parts]
    assert all(not (a & b) for i, a in enumerate(paths) for b in paths[i + 1 :])  # a file in one part only
    assert sorted(len(p) for p in parts) == [4, 5, 5]  # a (5), e (4), d (2), b, c, f: as even as files allow
    assert verification.split(found, 3) == parts  # every part's job computes the same split
    assert verification.split(found, 1) == [found]


def test_the_parts_at_once_are_the_verify_calls_the_prs_budget_holds_reserved_together():
    worst = pricing.worst_case_micros(
        "claude-sonnet-5-5", verification.VERIFY_INPUT_TOKENS, 32_000, inference_geo="us"
    )
    assert verification.calls_at_once(3 * worst, "claude-sonnet-5-5", 32_000) == 3
    assert verification.calls_at_once(3 * worst - 1, "claude-sonnet-5-5", 32_000) == 2
    assert verification.calls_at_once(-5, "claude-sonnet-5-5", 32_000) == 0  # the PR already over its limit
    assert verification.calls_at_once(10**9, "claude-unknown-9", 32_000) is None  # no price: no cap


def test_verdicts_of_every_part_are_applied_and_a_part_without_them_posts_its_candidates_unverified():
    found = [finding("aa"), finding("bb"), finding("cc")]
    part_one = run("succeeded", [StoredVerdict("aa", "keep", "real"), StoredVerdict("bb", "drop", "no")])
    part_two = run("succeeded", [StoredVerdict("cc", "keep", "real")])
    both = verification.decide(found, [part_one, part_two], enabled=True, require=False)
    assert both.state == "verified" and [f["fingerprint"] for f in both.posted] == ["aa", "cc"]
    assert both.reason == ""
    failed = run("failed", error="the model refused (cyber)")
    one = verification.decide(found, [part_one, failed], enabled=True, require=False)
    assert one.state == "verified" and [(f["fingerprint"], f.get("verified")) for f in one.posted] == [
        ("aa", True),
        ("cc", False),  # the failed part's candidate, posted labelled
    ]
    assert one.reason == "1 of 2 verify runs: verification failed (the model refused (cyber))"
    none = verification.decide(found, [failed, None], enabled=True, require=False)
    assert none.state == "unverified" and none.reason.startswith("verification failed")
    # a part skipped (nothing in it, or its posting already made) leaves nothing unverified
    skipped = run("skipped", error="no candidate findings to verify")
    assert not verification.lacks_verdicts(skipped) and verification.lacks_verdicts(failed)
    assert verification.lacks_verdicts(None)
    both_and_skipped = verification.decide(found, [part_one, part_two, skipped], enabled=True, require=True)
    assert both_and_skipped.state == "verified" and both_and_skipped.reason == ""


def test_the_claim_the_fan_in_verifies_and_when_the_verify_job_is_not_needed():
    done = {"x", "y"}
    assert wanted_claim(record(done_ids=done)) == "final"
    assert wanted_claim(record(done_ids={"x"}, deferred_ids={"y"})) == "partial"
    assert wanted_claim(record(done_ids={"x"}, deferred_ids={"y"}, posted="partial")) is None
    assert wanted_claim(record(done_ids={"x"})) is None  # not complete
    assert wanted_claim(record(done_ids=done, posted="final")) is None
    job = verification.verify_job(record(), "partial", "d")
    assert not_needed(job, None).status == "skipped"
    assert "already made" in not_needed(job, record(done_ids={"x"}, posted="partial")).reason
    later = record(done_ids=done, verify_sent={"partial", "final"})
    assert "final posting is verified instead" in not_needed(job, later).reason
    assert not_needed(job, record(done_ids={"x"}, deferred_ids={"y"})) is None


# ---------------------------------------------------------------------------------------------------- the text


def test_unverified_findings_say_so_and_merged_ones_name_every_agent():
    plain, unverified = finding("aa"), finding("bb", verified=False)
    merged = finding("cc", found_by=["review", "tests"], verified=True)
    plan = render.build_review(
        [plain, unverified, merged],
        {"shop/export.py": "@@ -0,0 +1,9 @@\n" + "".join(f"+l{i}\n" for i in range(1, 10))},
        verification=verification.Verification("unverified", 3, reason="verification failed (boom)"),
    )
    bodies = {c["body"].rsplit("prfleet:fp=", 1)[1][:2]: c["body"] for c in plan.comments}
    assert "**unverified**" in bodies["bb"] and "**unverified**" not in bodies["aa"]
    assert "_found by review, tests_" in bodies["cc"]
    assert (
        "**Unverified**: 3 candidate finding(s) posted without verification, because verification failed"
        in (plan.body)
    )


def test_the_check_details_list_dropped_and_merged_findings_within_githubs_limit():
    found = [finding(f"{i:02x}", title=f"Finding {i} " + "é" * 50) for i in range(400)]
    stored = [StoredVerdict("00", "keep", "real", merges=("01",))]
    stored += [StoredVerdict(f"{i:02x}", "drop", "not there " + "ü" * 100) for i in range(2, 400)]
    checked = verification.decide(found, [run("succeeded", stored)], enabled=True, require=False)
    text = verify_text.verification_details(checked)
    assert len(text.encode("utf-8")) <= verify_text.MAX_CHECK_TEXT
    assert "### Dropped by the verifier (398)" in text and "### Merged into another finding (1)" in text
    shown = text.count("\n- ")
    assert f"_{399 - shown} more dropped or merged finding(s) did not fit" in text
    assert "same problem as `shop/export.py:8`" in text
    small = verify_text.verification_details(checked, limit=2000)
    assert len(small.encode("utf-8")) <= 2000
    assert (
        verify_text.verification_details(verification.decide(found[:1], [], enabled=False, require=False))
        == ""
    )


def test_a_held_posting_says_why_and_what_brings_it_back():
    waiting = verify_text.held_note(4, "verification deferred (budget daily reached)", comes_back=True)
    assert (
        "4 candidate finding(s)" in waiting and "require_verification" in waiting and "comes back" in waiting
    )
    failed = verify_text.held_note(4, "verification failed (x)", comes_back=False)
    assert "/prfleet review" in failed


def test_require_verification_is_a_repository_flag_off_by_default():
    assert parse_repo_config("require_verification = true\n").require_verification is True
    assert requires_verification("require_verification = true\n") is True
    assert requires_verification(None) is False and requires_verification('fail_on = "high"\n') is False
    assert requires_verification("require_verification = [") is False  # a broken file counts as absent
    with pytest.raises(RepoConfigError, match="require_verification must be true or false"):
        parse_repo_config('require_verification = "yes"\n')


def test_a_part_that_gave_no_verdicts_is_named_in_the_review_line():
    found = [finding("aa"), finding("bb")]
    kept = run("succeeded", [StoredVerdict("aa", "keep", "real")])
    checked = verification.decide(found, [kept, run("failed", error="refused")], enabled=True, require=False)
    line = verify_text.review_line(checked)
    assert (
        "1 candidate(s) the verifier did not reach (1 of 2 verify runs: verification failed (refused))"
        in line
    )
