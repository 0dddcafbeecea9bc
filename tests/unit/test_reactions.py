"""What the team thinks of the findings, the pure parts: the roll-up GitHub lists on each comment, which comments
are prfleet's findings (round trip with the renderer), the change a new read publishes, the feedback metrics'
dimensions, and NoiseAlarm as the template defines it, evaluated the way CloudWatch does."""

from __future__ import annotations

from typing import Any

import pytest

from prfleet.observability import metrics as obs
from prfleet.pipeline import reactions, render
from prfleet_local.stack.alarms import (
    AlarmDefinitionError,
    AlarmEvaluator,
    AlarmState,
    Datapoint,
    emf_to_datapoints,
)
from tests.unit.test_alarms import template_alarms

T0 = 1_700_000_040.0
REPO = "acme/shop"
PATCH = "@@ -1,1 +1,4 @@\n a = 1\n+b = eval(x)\n+c = open(p)\n+d = 4"


def github_rollup(**counts: int) -> dict[str, Any]:
    """A `reactions` roll-up as GitHub lists it on a review comment."""
    keys = ("+1", "-1", "laugh", "hooray", "confused", "heart", "rocket", "eyes")
    out: dict[str, Any] = {"url": "https://api.github.com/repos/acme/shop/pulls/comments/1/reactions"}
    out["total_count"] = sum(counts.values())
    out.update({k: counts.get(k.replace("+1", "up").replace("-1", "down"), 0) for k in keys})
    return out


def test_the_roll_up_gives_thumbs_up_and_down_and_nothing_else():
    assert reactions.rollup_counts({"reactions": github_rollup(up=2, down=5, eyes=3, heart=1)}) == (2, 5)
    assert reactions.rollup_counts({"reactions": github_rollup()}) == (0, 0)
    assert reactions.rollup_counts({}) == (0, 0)  # a comment listed without its roll-up
    assert reactions.rollup_counts({"reactions": None}) == (0, 0)
    # nonsense is never a count: strings, booleans, negatives
    assert reactions.rollup_counts({"reactions": {"+1": "3", "-1": True}}) == (0, 0)
    assert reactions.rollup_counts({"reactions": {"+1": -2, "-1": 1}}) == (0, 1)


def posted_comments(findings: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], set[str]]:
    """The inline comments the renderer makes of `findings`, as GitHub lists them (by the App, with roll-ups)."""
    plan = render.build_review(findings, {"app.py": PATCH}, head_sha="h" * 40, repo=REPO)
    listed = []
    for i, c in enumerate(plan.comments):
        listed.append(
            {
                **c,
                "id": 100 + i,
                "user": {"login": "prfleet[bot]", "type": "Bot"},
                "created_at": "2026-05-04T10:00:00Z",
                "original_commit_id": "h" * 40,
                "commit_id": "n" * 40,
                "reactions": github_rollup(down=i + 1),
            }
        )
    return listed, set(plan.fingerprints)


def finding(line: int, title: str, category: str = "security", agent: str = "review") -> dict[str, Any]:
    return {"path": "app.py", "line": line, "severity": "high", "category": category, "title": title,
            "body": "Why it matters.\n\nMore.", "agent": agent, "suggestion": "b = int(x)"}  # fmt: skip


def test_a_comment_the_renderer_wrote_parses_back_into_its_finding():
    listed, fps = posted_comments(
        [finding(2, "eval of input"), finding(3, "file never closed", "resource-leak", "tests")]
    )
    found = reactions.own_findings(listed, fps, REPO, 7)
    assert [(f.agent, f.category, f.severity, f.title, f.path, f.line, f.down) for f in found] == [
        ("review", "security", "high", "eval of input", "app.py", 2, 1),
        ("tests", "resource-leak", "high", "file never closed", "app.py", 3, 2),
    ]
    assert {f.fingerprint for f in found} == fps
    first = found[0]
    assert (first.repo, first.number, first.comment_id) == (REPO, 7, 100)
    assert first.head_sha == "h" * 40  # the commit it was posted on, not the one GitHub moved it to
    assert first.posted_at == 1777888800.0


def test_only_top_level_comments_by_the_app_with_a_recorded_marker_are_findings():
    listed, fps = posted_comments([finding(2, "eval of input")])
    original = listed[0]
    person = {**original, "id": 201, "user": {"login": "mallory", "type": "User"}}  # quotes the marker
    reply = {**original, "id": 202, "in_reply_to_id": 100}
    other_bot = {**original, "id": 203, "user": {"login": "dependabot", "type": "User"}}
    plain = {**original, "id": 204, "body": "A comment of the App without a finding."}
    assert [
        f.comment_id
        for f in reactions.own_findings([person, reply, other_bot, plain, original], fps, REPO, 7)
    ] == [100]
    assert reactions.own_findings(listed, set(), REPO, 7) == []  # nothing recorded as posted on this PR
    assert (
        reactions.own_findings([original, {**original, "id": 300}], fps, REPO, 7)[0].comment_id == 100
    )  # once


def test_a_new_read_publishes_only_what_changed_signed():
    assert reactions.changes((0, 0), (0, 0)) == []
    assert reactions.changes((1, 3), (1, 3)) == []
    assert reactions.changes((0, 0), (2, 1)) == [("FindingsUpvoted", 2), ("FindingsDownvoted", 1)]
    assert reactions.changes((2, 1), (2, 3)) == [("FindingsDownvoted", 2)]
    assert reactions.changes((2, 3), (2, 2)) == [("FindingsDownvoted", -1)]  # a 👎 taken back


def test_feedback_dimensions_are_bounded_strings():
    assert obs.feedback_dimensions("review", "claude-sonnet-5-5", "security") == {
        "agent": "review",
        "model": "claude-sonnet-5-5",
        "category": "security",
    }
    # the model's free-text category: kept when common, "other" otherwise (each value set is a billed metric)
    assert obs.feedback_category("Error-Handling ") == "error-handling"
    assert obs.feedback_category("naming-of-loop-variables") == "other"
    assert obs.feedback_dimensions("", None, None) == {
        "agent": "unknown",
        "model": "unknown",
        "category": "other",
    }
    assert len(obs.feedback_dimensions("a" * 500, "m", "bug")["agent"]) == 100


def test_publish_feedback_prints_the_detail_now_and_leaves_the_fleet_copy_to_the_handler(capsys):
    m = obs.make_metrics()
    m.clear_metrics()
    obs.publish_feedback(m, "FindingsDownvoted", 2, agent="review", model="m1", category="naming")
    obs.publish_feedback(m, "FindingsUpvoted", 0, agent="review", model="m1", category="bug")  # nothing
    detail = emf_to_datapoints(capsys.readouterr().out.splitlines())
    assert [(d.name, dict(d.dimensions), d.value, d.unit) for d in detail] == [
        (
            "FindingsDownvoted",
            {"service": "prfleet", "agent": "review", "model": "m1", "category": "other"},
            2.0,
            "Count",
        )
    ]
    m.flush_metrics()
    fleet = emf_to_datapoints(capsys.readouterr().out.splitlines())
    assert [(d.name, dict(d.dimensions), d.value) for d in fleet] == [
        ("FindingsDownvoted", {"service": "prfleet"}, 2.0)
    ]
    with pytest.raises(ValueError, match="not a feedback metric"):
        obs.publish_feedback(m, "RunsFailed", 1, agent="a", model="m", category="c")


# ------------------------------------------------------------------------------------------------- NoiseAlarm


def votes(up: int, down: int, at: float = T0, dims: dict[str, str] | None = None) -> list[Datapoint]:
    """The fleet copies the reads published: one datapoint per finding's change (here, one per reaction)."""
    dims = dims or {"service": "prfleet"}
    points = [Datapoint("prfleet", "FindingsUpvoted", dims, at + i % 50, 1.0, "Count") for i in range(up)]
    points += [
        Datapoint("prfleet", "FindingsDownvoted", dims, at + i % 50, 1.0, "Count") for i in range(down)
    ]
    return points


def noise(points: list[Datapoint], now: float = T0 + 120) -> AlarmState:
    ev = AlarmEvaluator({"NoiseAlarm": template_alarms()["NoiseAlarm"]})
    return ev.evaluate(points, now)["NoiseAlarm"]


@pytest.mark.parametrize(
    ("up", "down", "state"),
    [
        (13, 7, AlarmState.ALARM),  # 35 % of 20 reactions
        (14, 6, AlarmState.OK),  # exactly 30 %: "more than 30 %" does not page
        (12, 7, AlarmState.OK),  # 36.8 %, but 19 reactions: under the 20-reaction guard
        (0, 19, AlarmState.OK),  # every one a 👎, still 19
        (69, 31, AlarmState.ALARM),  # 31 % of 100
        (70, 30, AlarmState.OK),
        (0, 0, AlarmState.OK),  # a quiet day (no datapoint at all) pages nobody
    ],
)
def test_noise_alarm_pages_above_30_percent_with_at_least_20_reactions(up, down, state):
    assert noise(votes(up, down)) == state


def test_noise_alarm_counts_the_last_24_hours_and_reactions_taken_back():
    # yesterday's 👎 are out of the window a day later (a sliding window, evaluated every minute)
    assert noise(votes(10, 10)) == AlarmState.ALARM
    assert noise(votes(10, 10), now=T0 + 86400 + 120) == AlarmState.OK
    # a 👎 taken back is published as -1: 13 👍 and 8 - 1 👎 are 20 reactions with 35 %
    back = [Datapoint("prfleet", "FindingsDownvoted", {"service": "prfleet"}, T0 + 30, -1.0, "Count")]
    assert noise(votes(13, 8) + back) == AlarmState.ALARM
    assert noise(votes(13, 7) + back) == AlarmState.OK  # 6 of 19


def test_noise_alarm_reads_the_fleet_copies_only():
    detail = {"service": "prfleet", "agent": "review", "model": "m", "category": "bug"}
    assert noise(votes(0, 40, dims=detail)) == AlarmState.OK


def test_noise_alarm_notifies_the_alert_topic_and_links_its_runbook():
    props = template_alarms()["NoiseAlarm"]
    assert props["AlarmActions"] == props["OKActions"] == ["AlertTopic"]  # !Ref AlertTopic, both ways
    assert "docs/runbook.md#noisealarm" in props["AlarmDescription"]


@pytest.mark.parametrize(
    ("period", "evaluations", "allowed"),
    [
        (86400, 1, True),  # NoiseAlarm's day
        (86400, 7, True),  # seven days: the most CloudWatch evaluates
        (86400, 8, False),
        (300, 288, True),  # under an hour: at most one day in all
        (300, 289, False),
        (90, 1, False),  # neither 10, 20, 30 nor a multiple of 60
        (30, 1, True),
    ],
)
def test_the_local_evaluator_refuses_what_put_metric_alarm_refuses(period, evaluations, allowed):
    """The evaluator is at least as strict as CloudWatch about an alarm's period and evaluation range, so a template
    alarm it evaluates is one CloudWatch accepts."""
    props = {**template_alarms()["StuckRunsAlarm"], "Period": period, "EvaluationPeriods": evaluations}
    props["DatapointsToAlarm"] = 1
    if allowed:
        AlarmEvaluator({"A": props})
    else:
        with pytest.raises(AlarmDefinitionError, match="Period"):
            AlarmEvaluator({"A": props})
