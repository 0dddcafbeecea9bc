"""Spend signals: when a scope's spend first reaches 80 % of its budget on a day, exactly one `spend` notice event is
logged (a conditional write in the ledger makes it once per scope per day), whatever the later settlements. None of
them is sent to the alert topic: the one page for a daily crossing is SpendAlarm on DailySpendPercent (which only the
daily scope publishes), and a PR scope's crossing pages nobody."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from prfleet import config
from prfleet.config import aws
from prfleet.cost.guard import _spend_signal
from prfleet.cost.ledger import Ledger
from prfleet.observability.metrics import make_metrics
from prfleet_local.stack.emf_capture import capture
from prfleet_local.stack.moto_proc import moto_server


@pytest.fixture
def env(monkeypatch):
    with moto_server() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        kw = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        ddb, sns, sqs = boto3.client("dynamodb", **kw), boto3.client("sns", **kw), boto3.client("sqs", **kw)
        ddb.create_table(
            TableName="ledger",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in ("scope", "day")],
            KeySchema=[
                {"AttributeName": "scope", "KeyType": "HASH"},
                {"AttributeName": "day", "KeyType": "RANGE"},
            ],
        )
        topic = sns.create_topic(Name="alerts")["TopicArn"]
        queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
        for name in ("DELIVERIES_TABLE", "STATE_TABLE", "RESULTS_TABLE", "PR_QUEUE_URL", "JOBS_QUEUE_URL"):
            monkeypatch.setenv(name, "unused")
        for name in ("WEBHOOK_SECRET_ID", "GITHUB_SECRET_ID", "ANTHROPIC_SECRET_ID"):
            monkeypatch.setenv(name, "unused")
        monkeypatch.setenv("LEDGER_TABLE", "ledger")
        monkeypatch.setenv("ALERT_TOPIC_ARN", topic)
        config.settings.cache_clear()
        aws.client.cache_clear()
        yield ddb, sqs, queue
    config.settings.cache_clear()
    aws.client.cache_clear()


def _notices(sqs, queue):
    out = []
    while msgs := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
        "Messages"
    ):
        out += [json.loads(m["Body"]) for m in msgs]
        sqs.delete_message_batch(
            QueueUrl=queue,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
        )
    return out


def test_one_notice_per_scope_and_day_at_80_percent(env):
    ddb, sqs, queue = env
    ledger = Ledger("ledger", daily_limit_micros=1_000_000, pr_limit_micros=500_000, client=ddb)
    now = time.time()
    events = []
    emit = lambda event, **fields: events.append((event, fields))  # noqa: E731

    def spend(pr: str, amount: int) -> None:
        r = ledger.reserve(pr, amount, now=now)
        _spend_signal(ledger.settle(r, amount, now=now), emit)

    metrics = make_metrics()
    metrics.clear_metrics()
    with capture() as cap:
        spend("pr#acme/shop#1", 300_000)  # daily 30 %, PR 60 %
        assert [e for e, _ in events] == []
        spend("pr#acme/shop#1", 150_000)  # PR 90 %: its notice
        spend("pr#acme/shop#2", 350_000)  # daily 80 % (PR 70 %): its notice
        spend("pr#acme/shop#3", 50_000)  # daily 85 %: nothing new
        metrics.flush_metrics()  # what the agent handler does when the record ends
    notices = [f for e, f in events if e == "spend"]
    assert [n["scope"] for n in notices] == ["pr#acme/shop#1", "daily"]
    daily = notices[1]
    assert daily["percent"] == 80.0 and daily["limit_usd"] == 1.0 and daily["paged_by"] == "SpendAlarm"
    assert notices[0]["paged_by"] is None
    assert (
        _notices(sqs, queue) == []
    )  # not one message on the alert topic: the alarm pages, the notice does not
    # What SpendAlarm reads: the daily scope's percent after every settlement, never a PR's 90 %.
    percents = [p.value for p in cap.datapoints() if p.name == "DailySpendPercent"]
    assert percents == [30.0, 45.0, 80.0, 85.0]
