"""The sample events in events/ are what the handlers expect (so `sam local invoke -e` works with them)."""

from __future__ import annotations

import json
from pathlib import Path

from aws_lambda_powertools.utilities.data_classes import SQSEvent

from prfleet.jobs import FileJob, PrJob, parse_message
from prfleet.pipeline import webhook

EVENTS = Path(__file__).resolve().parents[2] / "events"


def _load(name):
    return json.loads((EVENTS / name).read_text())


def test_webhook_sample_is_signed_and_accepted():
    event = _load("webhook-pull-request-opened.json")
    sent = []
    reply = webhook.handle(
        event,
        secret=b"sample-webhook-secret",
        first_seen=lambda _d: True,
        enqueue=sent.append,
        forget=lambda _d: None,
    )
    assert reply.status == 202 and len(sent) == 1
    assert (
        webhook.handle(
            event,
            secret=b"another-secret",
            first_seen=lambda _d: True,
            enqueue=sent.append,
            forget=lambda _d: None,
        ).status
        == 401
    )


def test_queue_samples_carry_valid_jobs():
    (pr,) = [parse_message(r.body) for r in SQSEvent(_load("planner-pr-job.json")).records]
    (job,) = [parse_message(r.body) for r in SQSEvent(_load("agent-file-job.json")).records]
    assert isinstance(pr, PrJob) and isinstance(job, FileJob)
    assert (job.repo, job.number, job.head_sha) == (pr.repo, pr.number, pr.head_sha)


def test_schedule_sample_is_an_eventbridge_event():
    assert _load("sweeper-schedule.json")["detail-type"] == "Scheduled Event"
