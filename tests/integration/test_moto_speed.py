"""The serialized moto server's two patched hot paths (prfleet_local.stack.moto_speed) answer exactly what moto's own
code answers: same items in the same order and pages, same messages, same attributes, same errors."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from prfleet_local.stack import moto_speed


@pytest.fixture(autouse=True)
def _in_process_aws(monkeypatch):
    """moto's in-process mock, whatever an earlier test left in the environment (a local stack's endpoint)."""
    import os

    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL") or name == "AWS_PROFILE":
            monkeypatch.delenv(name)
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(k, v)


def _both(run: Callable[[], Any]) -> tuple[Any, Any]:
    """run() under moto's own code and under the patches, each in a fresh mock."""
    out = []
    for patched in (False, True):
        if patched:
            moto_speed.apply()
        try:
            with mock_aws():
                out.append(run())
        finally:
            moto_speed.revert()
    return out[0], out[1]


def _table(ddb: Any, name: str, range_type: str | None) -> None:
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
    if range_type:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attrs.append({"AttributeName": "sk", "AttributeType": range_type})
    ddb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST", KeySchema=keys, AttributeDefinitions=attrs
    )


def _queries() -> list[Any]:
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    _table(ddb, "s", "S")
    _table(ddb, "n", "N")
    _table(ddb, "h", None)
    rng = random.Random(7)
    for i in rng.sample(range(400), 400):
        ddb.put_item(TableName="s", Item={"pk": {"S": f"P{i % 7}"}, "sk": {"S": f"K{i}"}, "v": {"N": str(i)}})
        ddb.put_item(
            TableName="n", Item={"pk": {"S": f"P{i % 5}"}, "sk": {"N": str(i - 200)}, "v": {"S": "x" * i}}
        )
        ddb.put_item(TableName="h", Item={"pk": {"S": f"P{i}"}, "v": {"N": str(i)}})
    out: list[Any] = []
    cases = [
        ("s", "pk = :p", {":p": {"S": "P3"}}, {}),
        ("s", "pk = :p AND begins_with(sk, :b)", {":p": {"S": "P3"}, ":b": {"S": "K1"}}, {}),
        (
            "s",
            "pk = :p AND sk BETWEEN :a AND :b",
            {":p": {"S": "P1"}, ":a": {"S": "K10"}, ":b": {"S": "K3"}},
            {},
        ),
        ("s", "pk = :p", {":p": {"S": "P2"}}, {"ScanIndexForward": False, "Limit": 9}),
        ("s", "pk = :p", {":p": {"S": "nobody"}}, {}),
        ("n", "pk = :p AND sk > :z", {":p": {"S": "P4"}, ":z": {"N": "-50"}}, {"Limit": 13}),
        (
            "n",
            "pk = :p",
            {":p": {"S": "P0"}},
            {"FilterExpression": "size(v) > :l", "ExpressionAttributeValues": None},
        ),
        ("h", "pk = :p", {":p": {"S": "P17"}}, {}),
    ]
    for table, cond, values, extra in cases:
        extra = dict(extra)
        if extra.get("ExpressionAttributeValues", 1) is None:
            extra.pop("ExpressionAttributeValues")
            values = dict(values, **{":l": {"N": "150"}})
        pages, start = [], None
        while True:
            kw = dict(TableName=table, KeyConditionExpression=cond, ExpressionAttributeValues=values, **extra)
            if start:
                kw["ExclusiveStartKey"] = start
            reply = ddb.query(**kw)
            pages.append(
                (reply["Items"], reply["Count"], reply["ScannedCount"], reply.get("LastEvaluatedKey"))
            )
            start = reply.get("LastEvaluatedKey")
            if not start:
                break
        out.append(pages)
    out.append(ddb.scan(TableName="s", Limit=25)["Items"])  # not patched: scans still see the whole table
    return out


def test_query_answers_as_moto_does_page_by_page():
    own, patched = _both(_queries)
    assert own == patched
    assert sum(len(p[0]) for p in own[0]) == len([i for i in range(400) if i % 7 == 3])  # the cases ran


def _sqs() -> list[Any]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    q = sqs.create_queue(
        QueueName="q",
        Attributes={
            "VisibilityTimeout": "0",
            "MessageRetentionPeriod": "60",
            "RedrivePolicy": f'{{"deadLetterTargetArn": "{arn}", "maxReceiveCount": "2"}}',
        },
    )["QueueUrl"]
    for i in range(30):
        sqs.send_message(QueueUrl=q, MessageBody=f"m{i}", DelaySeconds=0 if i % 4 else 900)
    out: list[Any] = []
    for _ in range(5):
        got = sqs.receive_message(
            QueueUrl=q, MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"]
        )
        out.append(
            sorted((m["Body"], m["Attributes"]["ApproximateReceiveCount"]) for m in got.get("Messages", []))
        )
    for names in (
        ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed", "VisibilityTimeout"],
        ["All"],
        ["RedrivePolicy", "MessageRetentionPeriod"],
    ):
        attrs = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=names)["Attributes"]
        attrs.pop("CreatedTimestamp", None), attrs.pop("LastModifiedTimestamp", None)
        out.append(attrs)
    with pytest.raises(ClientError) as bad:
        sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["NoSuchAttribute"])
    out.append(bad.value.response["Error"]["Code"])
    out.append(
        sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    )
    return out


def test_receive_and_queue_attributes_answer_as_moto_does():
    own, patched = _both(_sqs)
    assert own == patched
    assert (
        own[0] and own[-1]["ApproximateNumberOfMessages"] != "0"
    )  # messages flowed and some were dead-lettered


def test_a_message_past_its_retention_period_is_not_received(monkeypatch):
    """The patched retention check still drops what the queue no longer retains."""
    import moto.core.utils as utils

    moto_speed.apply()
    try:
        with mock_aws():
            sqs = boto3.client("sqs", region_name="us-east-1")
            q = sqs.create_queue(QueueName="r", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
            sqs.send_message(QueueUrl=q, MessageBody="old")
            now = utils.unix_time()
            monkeypatch.setattr(utils, "unix_time", lambda dt=None: now + 61)
            assert sqs.receive_message(QueueUrl=q).get("Messages", []) == []
    finally:
        moto_speed.revert()


def _transactions() -> list[Any]:
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    _table(ddb, "ledger", "S")
    _table(ddb, "hashonly", None)
    for i in range(30):
        ddb.put_item(TableName="ledger", Item={"pk": {"S": "day"}, "sk": {"S": f"r{i}"}, "n": {"N": str(i)}})
        ddb.put_item(TableName="hashonly", Item={"pk": {"S": f"h{i}"}, "n": {"N": "0"}})

    def add(table: str, key: dict[str, Any], n: int, cond: str | None = None) -> dict[str, Any]:
        op: dict[str, Any] = {
            "TableName": table,
            "Key": key,
            "UpdateExpression": "ADD n :n",
            "ExpressionAttributeValues": {":n": {"N": str(n)}},
        }
        if cond:
            op["ConditionExpression"] = cond
            op["ExpressionAttributeValues"][":lim"] = {"N": "100"}
        return {"Update": op}

    day = {"pk": {"S": "day"}, "sk": {"S": "r3"}}
    cases = [
        # applied: an update on each table, a put of a new item, a delete
        [
            add("ledger", day, 5),
            add("hashonly", {"pk": {"S": "h1"}}, 7),
            {
                "Put": {
                    "TableName": "ledger",
                    "Item": {"pk": {"S": "day"}, "sk": {"S": "new"}, "n": {"N": "1"}},
                }
            },
            {"Delete": {"TableName": "hashonly", "Key": {"pk": {"S": "h2"}}}},
        ],
        # cancelled by the last item's condition: the earlier writes (applied by moto before it) are undone
        [
            add("ledger", day, 50),
            {"Put": {"TableName": "hashonly", "Item": {"pk": {"S": "fresh"}, "n": {"N": "1"}}}},
            {"Delete": {"TableName": "ledger", "Key": {"pk": {"S": "day"}, "sk": {"S": "r4"}}}},
            add("ledger", {"pk": {"S": "day"}, "sk": {"S": "r9"}}, 200, cond="n > :lim"),
        ],
        # refused: the same item twice
        [add("ledger", day, 1), add("ledger", day, 1)],
        # cancelled by a ConditionCheck on a missing item
        [
            add("hashonly", {"pk": {"S": "h5"}}, 3),
            {
                "ConditionCheck": {
                    "TableName": "ledger",
                    "Key": {"pk": {"S": "day"}, "sk": {"S": "nobody"}},
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
        ],
    ]
    out: list[Any] = []
    for items in cases:
        try:
            ddb.transact_write_items(TransactItems=items)
            out.append("applied")
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons")
            out.append((exc.response["Error"]["Code"], [r.get("Code") for r in reasons or []]))
        for table in ("ledger", "hashonly"):
            out.append(
                sorted(ddb.scan(TableName=table)["Items"], key=lambda i: json.dumps(i, sort_keys=True))
            )
    return out


def test_transactions_apply_cancel_and_refuse_as_moto_does():
    own, patched = _both(_transactions)
    assert own == patched
    outcomes = [x for x in own if not isinstance(x, list)]
    assert outcomes[0] == "applied" and outcomes[1][0] == "TransactionCanceledException"
    assert outcomes[2][0] == "ValidationException" and outcomes[3][0] == "TransactionCanceledException"
