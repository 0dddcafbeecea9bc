"""Webhook intake: signatures, routing of events and actions, dedupe and enqueue order (pure, no AWS)."""

from __future__ import annotations

import base64
import json

import pytest

from prfleet.jobs import PrJob, parse_message
from prfleet.pipeline import render, webhook
from tests.conftest import load_payload

SECRET = b"test-secret"


def test_github_documented_signature_vector():
    # https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries#testing-the-webhook-payload-validation
    secret = b"It's a Secret to Everybody"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert webhook.signature_for(secret, b"Hello, World!") == expected
    assert webhook.verify_signature(secret, b"Hello, World!", expected)


def test_wrong_secret_tampered_body_and_missing_header_are_refused():
    body = b'{"zen": "hi"}'
    good = webhook.signature_for(SECRET, body)
    assert webhook.verify_signature(SECRET, body, good)
    assert not webhook.verify_signature(b"other-secret", body, good)
    assert not webhook.verify_signature(SECRET, body + b" ", good)
    assert not webhook.verify_signature(SECRET, body, None)
    assert not webhook.verify_signature(SECRET, body, "sha1=" + good[7:])
    assert not webhook.verify_signature(b"", body, good)


def _event(payload, name, *, secret=SECRET, delivery="d-1", b64=False, sign=True, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {"X-GitHub-Event": name, "X-GitHub-Delivery": delivery, "Content-Type": "application/json"}
    if sign:
        headers["X-Hub-Signature-256"] = webhook.signature_for(secret, body)
    return {
        "headers": headers,
        "body": base64.b64encode(body).decode() if b64 else body.decode("utf-8", "replace"),
        "isBase64Encoded": b64,
    }


class Recorder:
    def __init__(self, seen=()):
        self.seen = set(seen)
        self.sent: list[PrJob] = []
        self.forgotten: list[str] = []

    def first_seen(self, delivery):
        if delivery in self.seen:
            return False
        self.seen.add(delivery)
        return True

    def enqueue(self, job):
        self.sent.append(job)

    def forget(self, delivery):
        self.forgotten.append(delivery)
        self.seen.discard(delivery)


def _handle(event, rec=None):
    rec = rec or Recorder()
    return webhook.handle(
        event, secret=SECRET, first_seen=rec.first_seen, enqueue=rec.enqueue, forget=rec.forget
    ), rec


def test_opened_pr_enqueues_one_slim_job():
    payload = load_payload("pull_request.opened.payload.json")
    reply, rec = _handle(_event(payload, "pull_request", delivery="abc"))
    assert reply.status == 202
    (job,) = rec.sent
    pr = payload["pull_request"]
    assert job == PrJob(
        repo=payload["repository"]["full_name"],
        number=pr["number"],
        head_sha=pr["head"]["sha"],
        base_sha=pr["base"]["sha"],
        installation_id=payload["installation"]["id"],
        delivery_id="abc",
        action="opened",
    )
    message = job.to_message()
    assert parse_message(message) == job
    assert len(message) < 400 and "body" not in json.loads(message)  # slim: never the raw payload


def test_base64_body_is_verified_on_the_decoded_bytes():
    payload = load_payload("pull_request.synchronize.payload.json")
    reply, rec = _handle(_event(payload, "pull_request", b64=True))
    assert reply.status == 202 and len(rec.sent) == 1


@pytest.mark.parametrize(
    ("fixture", "event", "status"),
    [
        ("ping.payload.json", "ping", 200),
        ("ping.with-app_id.payload.json", "ping", 200),
        ("pull_request.opened.payload.json", "pull_request", 202),
        ("pull_request.opened.with-null-body.json", "pull_request", 202),
        ("pull_request.reopened.payload.json", "pull_request", 202),
        ("pull_request.synchronize.payload.json", "pull_request", 202),
        ("pull_request.ready_for_review.with-installation.payload.json", "pull_request", 202),
        ("pull_request.closed.payload.json", "pull_request", 200),
        ("pull_request.labeled.payload.json", "pull_request", 200),
        ("pull_request.converted_to_draft.payload.json", "pull_request", 200),
        ("check_run.rerequested.payload.json", "check_run", 200),
        ("issue_comment.created.payload.json", "issue_comment", 200),
    ],
)
def test_every_fixture_gets_its_status(fixture, event, status):
    reply, rec = _handle(_event(load_payload(fixture), event))
    assert reply.status == status
    assert len(rec.sent) == (1 if status == 202 else 0)
    if status == 200 and event != "ping":
        assert reply.body.get("reason")


def test_draft_pr_is_ignored_with_reason():
    payload = load_payload("pull_request.opened.payload.json")
    payload["pull_request"]["draft"] = True
    reply, rec = _handle(_event(payload, "pull_request"))
    assert reply.status == 200 and reply.body["reason"] == "pull request is a draft" and not rec.sent


def test_unsigned_wrong_and_malformed_deliveries():
    payload = load_payload("pull_request.opened.payload.json")
    assert _handle(_event(payload, "pull_request", sign=False))[0].status == 401
    assert _handle(_event(payload, "pull_request", secret=b"wrong"))[0].status == 401
    assert _handle(_event(None, "pull_request", raw=b"{not json"))[0].status == 400
    missing = _event(payload, "pull_request")
    del missing["headers"]["X-GitHub-Event"]
    assert _handle(missing)[0].status == 400
    no_delivery = _event(payload, "pull_request")
    del no_delivery["headers"]["X-GitHub-Delivery"]
    assert _handle(no_delivery)[0].status == 400


def test_redelivery_enqueues_nothing():
    payload = load_payload("pull_request.opened.payload.json")
    rec = Recorder()
    first, _ = _handle(_event(payload, "pull_request", delivery="same"), rec)
    second, _ = _handle(_event(payload, "pull_request", delivery="same"), rec)
    assert first.status == 202 and second.status == 200 and second.body["duplicate"] is True
    assert len(rec.sent) == 1


def test_failed_enqueue_forgets_the_delivery_so_github_can_redeliver():
    payload = load_payload("pull_request.opened.payload.json")
    rec = Recorder()

    def broken(_job):
        raise RuntimeError("SQS down")

    with pytest.raises(RuntimeError):
        webhook.handle(
            _event(payload, "pull_request", delivery="x"),
            secret=SECRET,
            first_seen=rec.first_seen,
            enqueue=broken,
            forget=rec.forget,
        )
    assert rec.forgotten == ["x"]
    reply, _ = _handle(_event(payload, "pull_request", delivery="x"), rec)
    assert reply.status == 202


def test_review_command_in_a_pr_comment_is_enqueued_for_permission_check():
    payload = load_payload("issue_comment.created.payload.json")
    payload["issue"]["pull_request"] = {"url": "https://api.github.com/repos/x/y/pulls/1"}
    payload["comment"]["body"] = "Looks odd.\n/prfleet review"
    reply, rec = _handle(_event(payload, "issue_comment"))
    assert reply.status == 202
    (job,) = rec.sent
    assert job.action == "comment" and job.requested_by == payload["comment"]["user"]["login"]
    assert parse_message(job.to_message()) == job


def test_rerun_on_prfleets_check_run_enqueues_a_rerun_for_the_sender():
    payload = load_payload("check_run.rerequested.payload.json")
    run = payload["check_run"]
    run["name"] = "prfleet"
    run["external_id"] = render.check_external_id(17, "first-delivery")  # found even with no pull_requests
    reply, rec = _handle(_event(payload, "check_run", delivery="rerun-1"))
    assert reply.status == 202 and reply.body["command"] == "rerun"
    (job,) = rec.sent
    assert (job.number, job.action, job.requested_by) == (17, "rerequested", payload["sender"]["login"])
    assert job.installation_id == payload["installation"]["id"]
    assert parse_message(job.to_message()) == job


def test_rerun_of_another_apps_check_or_of_a_pr_we_cannot_name_is_ignored_with_a_reason():
    payload = load_payload("check_run.rerequested.payload.json")  # "randscape", no external_id, no PRs
    reply, rec = _handle(_event(payload, "check_run"))
    assert reply.status == 200 and "not prfleet's" in reply.body["reason"] and not rec.sent
    payload["check_run"]["name"] = "prfleet"
    reply, rec = _handle(_event(payload, "check_run"))
    assert reply.status == 200 and "no pull request" in reply.body["reason"] and not rec.sent
    payload["action"] = "completed"
    reply, _ = _handle(_event(payload, "check_run"))
    assert reply.status == 200 and "not a re-run" in reply.body["reason"]


def test_rerun_of_the_check_suite_uses_its_pull_request():
    payload = load_payload("check_run.rerequested.payload.json")
    suite = dict(payload["check_run"]["check_suite"], head_sha=payload["check_run"]["head_sha"])
    suite["pull_requests"] = [{"number": 5, "head": {"sha": suite["head_sha"]}, "base": {"sha": "b" * 40}}]
    suite_payload = {**{k: v for k, v in payload.items() if k != "check_run"}, "check_suite": suite}
    reply, rec = _handle(_event(suite_payload, "check_suite"))
    assert reply.status == 202
    (job,) = rec.sent
    assert job.number == 5 and job.action == "rerequested"
    del suite_payload["check_suite"]
    reply, rec = _handle(_event(suite_payload, "check_suite"))
    assert reply.status == 400 and not rec.sent
