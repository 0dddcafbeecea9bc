"""Comments to prfleet at the webhook (issue 25): which are accepted as a slim CommentJob and which are refused,
each with its reason (pure, no AWS). Payloads: the octokit issue_comment fixture, and review-comment / thread
events in GitHub's documented shape (https://docs.github.com/en/webhooks/webhook-events-and-payloads)."""

from __future__ import annotations

import copy

import pytest

from prfleet.jobs import AskJob, BadMessage, CommentJob, parse_message, requeue_body
from prfleet.pipeline import webhook
from tests.conftest import load_payload

REPO = {"full_name": "acme/shop", "name": "shop", "owner": {"login": "acme"}}


def issue_comment(
    body: str, *, login="wendy", kind="User", association="COLLABORATOR", state="open", action="created"
):
    payload = load_payload("issue_comment.created.payload.json")
    payload["action"] = action
    payload["issue"]["pull_request"] = {"url": "https://api.github.com/repos/acme/shop/pulls/1"}
    payload["issue"]["state"] = state
    payload["comment"].update(body=body, author_association=association)
    payload["comment"]["user"].update(login=login, type=kind)
    return payload


def review_comment(
    body: str,
    *,
    login="wendy",
    kind="User",
    association="MEMBER",
    reply_to=900,
    state="open",
    action="created",
):
    comment = {
        "id": 901,
        "body": body,
        "path": "shop/export.py",
        "line": 12,
        "user": {"login": login, "type": kind},
        "author_association": association,
    }
    if reply_to is not None:
        comment["in_reply_to_id"] = reply_to
    return {
        "action": action,
        "comment": comment,
        "pull_request": {"number": 7, "state": state},
        "repository": REPO,
        "installation": {"id": 3},
        "sender": comment["user"],
    }


def thread(
    *, first_login="prfleet[bot]", sender="wendy", sender_type="User", action="resolved", state="open"
):
    return {
        "action": action,
        "thread": {
            "node_id": "PRRT_1",
            "comments": [{"id": 900, "user": {"login": first_login, "type": "Bot"}, "body": "x"}],
        },
        "pull_request": {"number": 7, "state": state},
        "repository": REPO,
        "installation": {"id": 3},
        "sender": {"login": sender, "type": sender_type},
    }


def decide(event: str, payload: dict) -> webhook.Reply:
    return webhook.decide(event, "d-1", copy.deepcopy(payload), app_slug="prfleet")


# -- accepted ---------------------------------------------------------------------------------------------------


def test_a_reply_in_a_thread_is_a_question_carried_without_its_text():
    reply = decide("pull_request_review_comment", review_comment("Why is this wrong? <secret words>"))
    assert reply.status == 202
    job = reply.job
    assert isinstance(job, CommentJob)
    assert (job.repo, job.number, job.comment_id, job.command, job.on) == (
        "acme/shop",
        7,
        901,
        "ask",
        "review",
    )
    assert (job.author, job.association, job.installation_id) == ("wendy", "MEMBER", 3)
    assert "secret words" not in job.to_message()  # the text is read back from GitHub, never queued
    assert parse_message(job.to_message()) == job


def test_prfleet_ignore_in_a_thread_is_an_ignore():
    reply = decide("pull_request_review_comment", review_comment("/prfleet ignore we validate upstream"))
    assert reply.status == 202 and reply.job.command == "ignore"


@pytest.mark.parametrize(
    "body", ["/prfleet ask what does this do?", "hey @prfleet, is this safe?", "@PRFLEET why"]
)
def test_ask_command_or_a_mention_on_the_conversation_is_a_question(body):
    reply = decide("issue_comment", issue_comment(body))
    assert reply.status == 202 and reply.job.command == "ask" and reply.job.on == "issue"


def test_a_new_line_comment_mentioning_the_app_is_a_question():
    reply = decide("pull_request_review_comment", review_comment("@prfleet is this right?", reply_to=None))
    assert reply.status == 202 and reply.job.command == "ask"


def test_a_resolved_prfleet_thread_is_learned_for_its_resolver():
    reply = decide("pull_request_review_thread", thread())
    assert reply.status == 202
    assert (reply.job.command, reply.job.comment_id, reply.job.author) == ("resolve", 900, "wendy")


def test_an_untrusted_association_is_left_to_the_planner_which_reads_the_trusted_list():
    reply = decide("pull_request_review_comment", review_comment("why?", association="NONE"))
    assert reply.status == 202 and reply.job.association == "NONE"


# -- refused, each with its reason ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "payload", "reason"),
    [
        ("pull_request_review_comment", review_comment("why?", login="dependabot[bot]", kind="Bot"), "bot"),
        ("pull_request_review_comment", review_comment("why?", login="helper", kind="Bot"), "bot"),
        ("pull_request_review_comment", review_comment("why?", login="ci[bot]"), "bot"),
        ("pull_request_review_comment", review_comment("why?", login="prfleet[bot]", kind="Bot"), "self"),
        ("issue_comment", issue_comment("@prfleet hi", login="prfleet[bot]", kind="Bot"), "self"),
        ("pull_request_review_comment", review_comment("why?", state="closed"), "closed"),
        ("issue_comment", issue_comment("/prfleet ask x", state="closed"), "closed"),
        ("pull_request_review_comment", review_comment("@prfleet why?", action="edited"), "edited"),
        ("issue_comment", issue_comment("@prfleet why?", action="deleted"), "deleted"),
        ("issue_comment", issue_comment("/prfleet ignore noise"), "not_a_reply"),
        ("pull_request_review_thread", thread(sender="renovate[bot]", sender_type="Bot"), "bot"),
        ("pull_request_review_thread", thread(state="closed"), "closed"),
    ],
)
def test_refusals_name_their_reason(event, payload, reason):
    reply = decide(event, payload)
    assert reply.status == 200 and reply.job is None
    assert reply.body["comment_ignored"] == reason and reply.body["reason"]


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("issue_comment", issue_comment("LGTM, thanks")),
        ("issue_comment", issue_comment("mail me at ops@prfleet.example")),
        ("issue_comment", issue_comment("cc @prfleet-team")),
        ("pull_request_review_comment", review_comment("nit: rename", reply_to=None)),
        ("pull_request_review_comment", review_comment("typo fixed", action="edited")),
        ("pull_request_review_thread", thread(first_login="octocat")),
        ("pull_request_review_thread", thread(action="unresolved")),
    ],
)
def test_comments_not_addressed_to_prfleet_are_ignored_without_counting(event, payload):
    reply = decide(event, payload)
    assert reply.status == 200 and reply.job is None
    assert "comment_ignored" not in reply.body


def test_another_apps_slug_is_its_own():
    payload = review_comment("why?", login="prfleet-staging[bot]", kind="Bot")
    reply = webhook.decide("pull_request_review_comment", "d", payload, app_slug="prfleet-staging")
    assert reply.body["comment_ignored"] == "self"


def test_fifty_bot_replies_enqueue_nothing():
    sent = []
    for i in range(50):
        login = ("ping[bot]", "pong[bot]")[i % 2]
        reply = decide(
            "pull_request_review_comment", review_comment(f"@prfleet {i}", login=login, kind="Bot")
        )
        if reply.job:
            sent.append(reply.job)
    assert sent == []


# -- the messages ------------------------------------------------------------------------------------------------


def test_an_ask_job_is_one_run_per_comment_whatever_the_head():
    a = AskJob("acme/shop", 7, "a" * 40, "b" * 40, 901, "review", 900, "shop/x.py", "wendy", 3, "d")
    b = AskJob("acme/shop", 7, "c" * 40, "b" * 40, 901, "review", 900, "shop/x.py", "wendy", 3, "d2")
    assert a.job_id == b.job_id and a.agent == "ask"
    assert parse_message(a.to_message()) == a
    again = parse_message(requeue_body(a.to_message(), 1234))
    assert again.attempt == 1 and again.spent_micros == 1234


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [("comment_id", 0, "comment_id"), ("command", "delete", "command"), ("on", "commit", "on")],
)
def test_a_comment_job_out_of_its_bounds_is_refused(field, value, why):
    job = CommentJob("acme/shop", 7, 901, "ask", "review", "wendy", "MEMBER", 3, "d")
    body = job.to_message().replace(
        f'"{field}":{repr(getattr(job, field)).replace(chr(39), chr(34))}',
        f'"{field}":{repr(value).replace(chr(39), chr(34))}',
    )
    with pytest.raises(BadMessage, match=why):
        parse_message(body)
