"""The conversation end to end (issue 25): comments to prfleet through the whole local stack, with the webhook
payloads the fake GitHub sends in GitHub's shapes (pull_request_review_comment, issue_comment,
pull_request_review_thread).

One PR's life: reviewed -> a collaborator replies to a finding and gets one answer in its thread, its cost on the
run and in the ledger -> the same comment delivered again gets no second answer -> a bot, prfleet itself and an
untrusted author get none -> 50 replies between two bots get no answer and no model call -> `/prfleet ignore`
suppresses the finding on the next push, and the review and the check say so. A budget refusal (in its own
sandbox, with a budget too small for the ask agent's model) is answered in one line.
"""

from __future__ import annotations

import argparse
import io
import json
import time

import pytest

from prfleet.pipeline import answering, render
from prfleet.store import answers, feedback, job_runs
from prfleet_local.cli import feedback as feedbackcli
from prfleet_local.cli.errors import CliError
from prfleet_local.cli.target import target_of
from prfleet_local.demo.run import REPO, sandbox
from prfleet_local.model.faults import FaultPlan, FaultRule

pytestmark = pytest.mark.e2e

WRITER = "wendy-writer"


@pytest.fixture(scope="class")
def box(tmp_path_factory):
    with sandbox(tmp_path_factory.mktemp("conversation"), sweep_interval=None, visibility_timeout=2) as b:
        yield b


@pytest.fixture(scope="class")
def flow():
    return {}


def wait_for(predicate, timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def findings_posted(box, number: int) -> list[dict]:
    """prfleet's inline finding comments on the PR (its bot's, with a fingerprint marker)."""
    return [
        c
        for c in box.github.review_comments
        if c["pull_number"] == number and c.get("in_reply_to_id") is None and "prfleet:fp=" in c["body"]
    ]


def replies_to(box, comment_id: int) -> list[dict]:
    """prfleet's replies to one comment (its hidden answer marker)."""
    marker = answers.answer_marker(comment_id)
    return [
        c for c in box.github.review_comments + box.github.issue_comments if marker in (c.get("body") or "")
    ]


def deliver(box, event: str, payload: dict, **kw) -> dict:
    status, reply = box.deliver(event, payload, **kw)
    assert status in (200, 202), (status, reply)
    return reply


def ledger_total(box) -> int:
    items = box.stack.client("dynamodb").scan(TableName=box.stack.table("LedgerTable"))["Items"]
    return sum(int(i["settled"]["N"]) for i in items if i["scope"]["S"] == "daily")


class TestConversation:
    def test_a_reply_to_a_finding_gets_one_answer_in_its_thread_with_its_cost_booked(self, box, flow):
        number = box.open_sample_pr()
        payload = box.github.webhook_payload("opened", number)
        head = payload["pull_request"]["head"]["sha"]
        deliver(box, "pull_request", payload)
        assert box.wait_for_review(number, head_sha=head, timeout=180)
        finding = next(c for c in findings_posted(box, number) if c["path"] == "shop/export.py")
        box.github.add_collaborator(WRITER, "write")
        spent_before = ledger_total(box)

        event = box.github.reply_in_thread(number, finding["id"], WRITER, "Why is this a problem here?")
        reply = deliver(box, "pull_request_review_comment", event)
        assert reply["command"] == "ask"
        assert wait_for(lambda: replies_to(box, event["comment"]["id"]))
        assert box.stack.wait_idle(timeout=120)

        (answer,) = replies_to(box, event["comment"]["id"])
        assert answer["in_reply_to_id"] == finding["id"]  # in the finding's thread
        assert answer["user"]["login"] == "prfleet[bot]"
        assert "shop/export.py" in answer["body"] and "prfleet ask agent" in answer["body"]
        (run,) = [r for r in job_runs.runs_of_head(REPO, number, head) if r["agent"] == "ask"]
        assert run["status"] == "succeeded" and run["cost_micros"] > 0
        booked = sum(int(v) for k, v in run.items() if k.startswith("b_"))
        assert booked == run["cost_micros"]  # every booking of its calls is on its run
        assert ledger_total(box) - spent_before == run["cost_micros"]  # and in the ledger
        flow.update(number=number, head=head, finding=finding, event=event)

    def test_the_same_comment_delivered_again_gets_no_second_answer(self, box, flow):
        event = flow["event"]
        calls = len(box.model.model_log())
        deliver(box, "pull_request_review_comment", event)  # GitHub's redelivery: a new delivery id
        assert box.stack.wait_idle(timeout=120)
        assert len(replies_to(box, event["comment"]["id"])) == 1
        assert len(box.model.model_log()) == calls

    def test_a_bot_prfleet_itself_and_an_untrusted_author_get_no_answer(self, box, flow):
        number, finding = flow["number"], flow["finding"]
        calls, lines = len(box.model.model_log()), len(box.stack.log_lines)
        asked = [
            box.github.reply_in_thread(number, finding["id"], "dependabot[bot]", "@prfleet rebase please"),
            box.github.reply_in_thread(number, finding["id"], "prfleet[bot]", "Why is this a problem?"),
            box.github.reply_in_thread(number, finding["id"], "mallory", "Explain this to me"),
        ]
        replies = [deliver(box, "pull_request_review_comment", e) for e in asked]
        assert [r.get("comment_ignored") for r in replies[:2]] == ["bot", "self"]  # refused by the webhook
        assert replies[2]["accepted"]  # association NONE: the planner checks .prfleet.toml's trusted list
        assert box.stack.wait_idle(timeout=120)
        for e in asked:
            assert replies_to(box, e["comment"]["id"]) == []
        assert len(box.model.model_log()) == calls
        logged = [json.loads(line) for line in box.stack.log_lines[lines:] if line.startswith("{")]
        assert any(
            rec.get("comment_ignored") == "untrusted" and rec.get("author") == "mallory" for rec in logged
        )

    def test_fifty_replies_between_two_bots_get_no_answer_and_no_model_call(self, box, flow):
        number, finding = flow["number"], flow["finding"]
        calls = len(box.model.model_log())
        for i in range(50):
            bot = ("ping-bot[bot]", "pong-bot[bot]")[i % 2]
            event = box.github.reply_in_thread(number, finding["id"], bot, f"@prfleet reply {i}", bot=True)
            assert deliver(box, "pull_request_review_comment", event).get("comment_ignored") == "bot"
        assert box.stack.wait_idle(timeout=120)
        assert len(box.model.model_log()) == calls
        assert not [
            c for c in box.github.review_comments if "prfleet:answer" in c["body"] and "reply 4" in c["body"]
        ]

    def test_prfleet_ignore_suppresses_the_finding_on_the_next_push_and_the_review_says_so(self, box, flow):
        number, finding = flow["number"], flow["finding"]
        event = box.github.reply_in_thread(
            number, finding["id"], WRITER, "/prfleet ignore we sanitise upstream"
        )
        assert deliver(box, "pull_request_review_comment", event)["command"] == "ignore"
        assert wait_for(lambda: replies_to(box, event["comment"]["id"]))
        (noted,) = replies_to(box, event["comment"]["id"])
        (rule,) = feedback.rules(REPO)
        assert noted["body"].startswith("Noted: findings like this are no longer reported")
        assert f"prfleet feedback forget {rule.id}" in noted["body"]
        assert rule.who == WRITER and rule.why == "we sanitise upstream" and rule.path_glob == "shop/*.py"

        # A push that leaves shop/export.py as it is: its finding comes back from the cache, and is suppressed.
        box.repo.commit({"README.md": "# shop\n\nNow with exports.\n"}, "Docs", branch="feature/export")
        head = box.github.update_head(number)
        deliver(box, "pull_request", box.github.webhook_payload("synchronize", number))
        assert box.wait_for_review(number, head_sha=head, timeout=180)
        (check,) = box.github.check_runs_for(head)
        assert "1 suppressed by the team" in check["output"]["summary"]
        reviews = [r for r in box.github.reviews if r["number"] == number and r["commit_id"] == head]
        assert reviews and "1 suppressed by the team" in reviews[-1]["body"]
        assert render.REVIEW_MARKER in reviews[-1]["body"]
        flow["rule"] = rule.id

    def test_resolving_a_finding_thread_without_a_change_is_learned_and_the_cli_lists_and_forgets_it(
        self, box, flow
    ):
        number, first = flow["number"], flow["finding"]
        other = next(c for c in findings_posted(box, number) if c["path"] != first["path"])
        event = box.github.resolve_thread(number, other["id"], WRITER)
        assert deliver(box, "pull_request_review_thread", event)["command"] == "resolve"
        assert wait_for(lambda: replies_to(box, other["id"]))
        assert box.stack.wait_idle(timeout=120)
        rules = {r.id: r for r in feedback.rules(REPO)}
        assert len(rules) == 2 and {r.source for r in rules.values()} == {"ignore", "resolve"}

        target = target_of(box.stack)
        out = io.StringIO()
        feedbackcli.feedback_list(argparse.Namespace(repo=REPO, json=True), out=out, target=target)
        assert {r["id"] for r in json.loads(out.getvalue())} == set(rules)
        out = io.StringIO()
        feedbackcli.feedback_forget(argparse.Namespace(id=flow["rule"]), out=out, target=target)
        assert out.getvalue().startswith(f"forgot {flow['rule']}")
        assert flow["rule"] not in {r.id for r in feedback.rules(REPO)}
        with pytest.raises(CliError, match="no suppression"):
            feedbackcli.feedback_forget(argparse.Namespace(id=flow["rule"]), out=io.StringIO(), target=target)


def refused_answer(tmp_path, question: str, **stack: object) -> tuple[str, int]:
    """The sample PR reviewed on a sandbox built with `stack`, then `question` asked on it by a writer: prfleet's
    one reply (its hidden marker removed) and the model calls made after the review."""
    with sandbox(tmp_path, sweep_interval=None, visibility_timeout=2, **stack) as box:
        number = box.open_sample_pr()
        payload = box.github.webhook_payload("opened", number)
        deliver(box, "pull_request", payload)
        assert box.wait_for_review(number, head_sha=payload["pull_request"]["head"]["sha"], timeout=180)
        calls = len(box.model.requests)
        box.github.add_collaborator(WRITER, "write")
        event = box.github.comment_on_pr(number, WRITER, f"/prfleet ask {question}")
        assert deliver(box, "issue_comment", event)["command"] == "ask"
        assert wait_for(lambda: replies_to(box, event["comment"]["id"]))
        assert box.stack.wait_idle(timeout=120)
        (reply,) = replies_to(box, event["comment"]["id"])
        text = reply["body"].replace(answers.answer_marker(event["comment"]["id"]), "").strip()
        return text, len(box.model.requests) - calls


class TestBudgetRefusal:
    def test_a_question_the_budget_cannot_pay_for_is_answered_in_one_line(self, tmp_path_factory):
        text, _ = refused_answer(
            tmp_path_factory.mktemp("ask-budget"),
            "what does this PR change?",
            parameters={"DailyBudgetUsd": 0.01},
        )
        assert text.startswith("prfleet's budget for today is spent") and "\n" not in text

    def test_a_question_while_the_spend_limit_pauses_the_fleet_is_answered_in_one_line(
        self, tmp_path_factory
    ):
        """The API's spend limit (a 400 with its documented message on every call) opened the circuit while the PR
        was reviewed; a question asked then gets one line saying so, and no model call is made for it."""
        limit = FaultPlan(rules=[FaultRule("spend_limit_workspace", probability=1.0)])
        text, calls = refused_answer(
            tmp_path_factory.mktemp("ask-paused"), "is this safe to merge?", faults=limit
        )
        assert text == answering.PAUSED
        assert calls == 0  # paused: not even one call tried for the question
