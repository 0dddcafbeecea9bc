"""The head's file list in StateTable: chunked under DynamoDB's 400 KB item limit, read back whole or not at all."""

from __future__ import annotations

import os
import random

import boto3
import pytest

from prfleet import aws, config, headfiles
from prfleet_local.stack.moto_proc import moto_server

ENV = {
    "STATE_TABLE": "state",
    **{
        k: "unused"
        for k in (
            "DELIVERIES_TABLE",
            "RESULTS_TABLE",
            "LEDGER_TABLE",
            "PR_QUEUE_URL",
            "JOBS_QUEUE_URL",
            "ALERT_TOPIC_ARN",
            "WEBHOOK_SECRET_ID",
            "GITHUB_SECRET_ID",
            "ANTHROPIC_SECRET_ID",
        )
    },
}


@pytest.fixture(scope="module")
def table():
    with moto_server() as url:
        saved = dict(os.environ)
        os.environ.update(
            ENV,
            AWS_ENDPOINT_URL=url,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="t",
            AWS_SECRET_ACCESS_KEY="t",
        )
        config.settings.cache_clear()
        aws.client.cache_clear()
        ddb = boto3.client("dynamodb")
        ddb.create_table(
            TableName="state",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in ("pk", "sk")],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
        )
        try:
            yield ddb
        finally:
            os.environ.clear()
            os.environ.update(saved)
            config.settings.cache_clear()
            aws.client.cache_clear()


def listing(n: int, patch_bytes: int) -> headfiles.HeadFiles:
    rng = random.Random(n)
    files = [
        {
            "filename": f"pkg/f{i:04d}.py",
            "status": "modified",
            "sha": f"{i:040x}",
            "additions": 1,
            "deletions": 1,
            "changes": 2,
            # random text compresses poorly, so the list really needs several items
            "patch": "@@ -1 +1 @@\n" + "".join(rng.choice("abcdefghij\n") for _ in range(patch_bytes)),
            "mode": "100644",
            "size": 10,
        }
        for i in range(n)
    ]
    return headfiles.HeadFiles("T", "B", files, ["link"], True)


def test_a_large_list_is_chunked_and_read_back_whole(table):
    big = listing(300, 4000)  # about 1.2 MB of patches
    chunks = headfiles.save("a/b", 1, "h1", big, now=1000)
    assert chunks >= 2
    items = table.query(
        TableName="state",
        KeyConditionExpression="pk = :p AND begins_with(sk, :s)",
        ExpressionAttributeValues={":p": {"S": "PR#a/b#1"}, ":s": {"S": "FILES#h1#"}},
    )["Items"]
    assert len(items) == chunks and all(len(i["data"]["B"]) <= headfiles.CHUNK_BYTES for i in items)
    assert all(int(i["expires_at"]["N"]) == 1000 + headfiles.TTL for i in items)
    assert headfiles.load("a/b", 1, "h1") == big
    assert headfiles.load("a/b", 1, "other-head") is None


def test_a_list_with_a_missing_chunk_is_not_read(table):
    headfiles.save("a/b", 2, "h2", listing(300, 4000), now=1000)
    table.delete_item(TableName="state", Key={"pk": {"S": "PR#a/b#2"}, "sk": {"S": "FILES#h2#0001"}})
    assert headfiles.load("a/b", 2, "h2") is None  # the job then lists from GitHub, never a partial list


def test_a_small_list_is_one_item(table):
    assert headfiles.save("a/b", 3, "h3", listing(20, 50), now=1000) == 1
    assert headfiles.load("a/b", 3, "h3").symlinks == ["link"]
