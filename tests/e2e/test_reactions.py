"""What the team thinks of the findings, end to end (issue 25 item 4): people react to prfleet's inline comments on
the fake GitHub (through its reactions endpoint, with their own tokens, as GitHub's UI does), prfleet reads the
roll-ups at the PR's next push (the planner) and when it has gone quiet (the sweeper), `prfleet quality report`
counts them, and NoiseAlarm, the template's own definition evaluated over the EMF the handlers printed, pages the
alert topic once more than 30 % of at least 20 reactions are 👎, and not at 19.

Real HTTP deliveries to the webhook, moto in its own process, the pollers, the offline model (its findings measure
the pipeline, not Claude). The tests run in order and share one PR.
"""

from __future__ import annotations

import argparse
import io
import json

import pytest

from prfleet.pipeline import reactions
from prfleet.store import job_runs
from prfleet_local.cli.quality import run_report
from prfleet_local.cli.target import target_of
from prfleet_local.demo.run import REPO, sandbox
from prfleet_local.model.results import text_of
from tests.e2e.test_alarms import evaluate, notices
from tests.integration.test_github_reactions import react
from tests.review_helpers import review_opened

pytestmark = pytest.mark.e2e

BRANCH = "feature/export"  # the sample PR's branch


@pytest.fixture(scope="class")
def box(tmp_path_factory):
    with sandbox(
        tmp_path_factory.mktemp("reactions"), sweep_interval=None, alarm_interval=None, visibility_timeout=6
    ) as b:
        yield b


@pytest.fixture(scope="class")
def pr():
    """What earlier steps hand to later ones (the tests of the class run in file order)."""
    return {}


def report(box, days: int = 1) -> dict:
    out = io.StringIO()
    args = argparse.Namespace(days=days, json=True)
    assert run_report(args, out=out, target=target_of(box.stack)) == 0
    return json.loads(out.getvalue())


def push(box, number: int, n: int) -> str:
    """A new commit on the PR's branch, delivered as GitHub's `synchronize`; its review done."""
    box.repo.commit({f"notes/push-{n}.txt": f"push {n}\n"}, f"Push {n}", branch=BRANCH)
    box.github.update_head(number)
    payload = box.github.webhook_payload("synchronize", number)
    assert box.deliver("pull_request", payload)[0] == 202
    head = payload["pull_request"]["head"]["sha"]
    assert box.wait_for_review(number, head_sha=head, timeout=300)
    return head


def findings_of(box, number: int) -> list:
    """prfleet's inline findings on the PR as the fake GitHub holds them (review comments by the App)."""
    return [
        f
        for f in (
            reactions.parse_comment(c, REPO, number)
            for c in box.github.review_comments
            if c["pull_number"] == number
        )
        if f is not None
    ]


@pytest.mark.usefixtures("box")
class TestWhatTheTeamThinks:
    def test_a_thumbs_down_is_counted_in_the_quality_report_after_the_next_push(self, box, pr):
        number = box.open_sample_pr()
        head, runs = review_opened(box, REPO, number, delivery="reactions-opened")
        found = findings_of(box, number)
        assert len(found) >= 3, "the sample PR's review has inline findings to react to"
        target = found[0]
        status, reaction = react(box.github, "pulls", target.comment_id, "-1", box.github.user_token("alice"))
        assert status == 201 and reaction["user"]["login"] == "alice"
        # nothing read yet: the first head had no finding of prfleet's to read reactions from
        assert report(box)["total"]["down"] == 0

        push(box, number, 1)
        s = report(box)
        assert s["total"]["posted"] == len(found) and s["total"]["reacted"] == 1
        assert (s["total"]["up"], s["total"]["down"], s["total"]["acceptance"]) == (0, 1, 0.0)
        model = next(r["model"] for r in runs if r["path"] == target.path and r["agent"] == target.agent)
        (row,) = [r for r in s["by_agent_model_category"] if r["down"]]
        assert (row["agent"], row["model"], row["category"]) == (target.agent, model, target.category)
        assert row["acceptance"] == 0.0
        pr.update(number=number, found=found, users=1)

    def test_noise_alarm_pages_at_20_reactions_over_30_percent_and_not_at_19(self, box, pr):
        number, found = pr["number"], pr["found"]
        inbox = box.stack.subscribe_alerts()

        def vote(content: str, count: int) -> None:
            for _ in range(count):
                pr["users"] += 1
                comment = found[pr["users"] % len(found)]
                user = box.github.user_token(f"dev{pr['users']}")
                assert react(box.github, "pulls", comment.comment_id, content, user)[0] == 201

        vote("-1", 6)  # 7 👎 with alice's
        vote("+1", 12)  # 19 reactions: 36.8 % 👎, but under 20
        push(box, number, 2)
        assert report(box)["total"]["reacted"] >= 1 and report(box)["total"]["down"] == 7
        assert evaluate(box)["NoiseAlarm"] == "OK"
        assert notices(inbox).get("NoiseAlarm") in (None, "OK")

        vote("+1", 1)  # 20 reactions, 7 👎: 35 %
        push(box, number, 3)
        assert (report(box)["total"]["up"], report(box)["total"]["down"]) == (13, 7)
        assert evaluate(box)["NoiseAlarm"] == "ALARM"
        assert notices(inbox)["NoiseAlarm"] == "ALARM"
        body = next(
            m.body
            for m in inbox.received
            if m.alarm and m.alarm.endswith("-NoiseAlarm") and m.state == "ALARM"
        )
        assert body["NewStateValue"] == "ALARM" and "docs/runbook.md#noisealarm" in body["AlarmDescription"]
        assert [m["Id"] for m in body["Trigger"]["Metrics"]] == ["upvoted", "downvoted", "reacted", "noise"]

    def test_the_sweeper_reads_a_pr_that_went_quiet_for_a_day(self, box, pr, clock_offset):
        number, found = pr["number"], pr["found"]
        before = report(box)["total"]
        assert react(box.github, "pulls", found[-1].comment_id, "-1", box.github.user_token("late"))[0] == 201
        box.stack.sweep()  # the PR is not quiet yet: nothing is read
        assert report(box)["total"] == before
        clock_offset(86400 + 120)  # a day after the PR's last push
        assert box.stack.sweep()["reactions"] == 1
        after = report(box, days=2)["total"]
        assert after["down"] == before["down"] + 1 and after["posted"] == before["posted"]
        assert box.stack.sweep()["reactions"] == 0  # read once; the next read is two days later
        runs = job_runs.runs_of_head(REPO, number, box.github.prs[number].head_sha)
        assert runs  # the PR's latest head is reviewed and its runs kept


def test_the_verify_pass_is_shown_the_teams_rejections_and_drops_their_like(tmp_path):
    """Issue 25: a repository's recent rejections go to the verification pass as examples. A 👎 on a finding of PR 1
    is read at its next push; PR 2, opened later with the same change, has the same finding among its candidates.
    Its verify run is shown the rejection (an untrusted block of its first message), the offline verifier drops
    the candidate saying why, and PR 2 does not get that comment."""
    with sandbox(tmp_path, sweep_interval=None, alarm_interval=None, visibility_timeout=6) as box:
        number = box.open_sample_pr()
        review_opened(box, REPO, number, delivery="rejections-opened")
        target = findings_of(box, number)[0]
        assert react(box.github, "pulls", target.comment_id, "-1", box.github.user_token("alice"))[0] == 201
        push(box, number, 1)  # the 👎 is read here

        box.repo.commit(
            {"notes/again.txt": "again\n"}, "The same change again", branch="feature/export-again"
        )
        second = box.github.open_pr(REPO, "main", "feature/export-again", "Export, again")
        payload = box.github.webhook_payload("opened", second)
        assert box.deliver("pull_request", payload, delivery="rejections-second")[0] == 202
        head = payload["pull_request"]["head"]["sha"]
        assert box.wait_for_review(second, head_sha=head, timeout=300)

        shown = [
            text_of(body["messages"][0]["content"])
            for body in box.model.requests
            if "untrusted_team_rejections" in text_of(body["messages"][0]["content"])
        ]
        # each turn of PR 2's verify run repeats its first message; no other run is shown the rejections
        assert shown and all(t.startswith(f"Pull request {REPO}#{second} ") for t in shown), shown
        assert f"{target.path}: {target.title} (👍 0, 👎 1)" in shown[0]
        (check,) = box.github.check_runs_for(head)
        details = check["output"].get("text") or ""
        assert f"the team turned down a finding like it lately: {target.title} (👎 1)" in details, details
        posted = findings_of(box, second)
        assert posted, "PR 2's other findings are posted"
        assert all((f.path, f.title) != (target.path, target.title) for f in posted)
