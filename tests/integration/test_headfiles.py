"""The head's file list in StateTable: chunked under DynamoDB's 400 KB item limit, read back whole or not at all."""

from __future__ import annotations

import os
import random

import boto3
import pytest

from prfleet import config
from prfleet.config import aws
from prfleet.store import headfiles
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


class _Counting:
    """The DynamoDB client of prfleet.aws, counting requests by operation (and able to drop keys from a batch)."""

    def __init__(self, real, unprocess=0, answer=1):
        self.real, self.ops, self.unprocess, self.requests = real, [], unprocess, []
        self.answer = answer  # keys per table answered while unprocessing

    def __getattr__(self, name):
        attr = getattr(self.real, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.ops.append(name)
            if name == "batch_get_item":
                return self._batch(**kwargs)
            return attr(*args, **kwargs)

        return call

    def _batch(self, RequestItems):
        self.requests.append(RequestItems)
        if not self.unprocess:
            return self.real.batch_get_item(RequestItems=RequestItems)
        self.unprocess -= (
            1  # answer the first key of each table, leave the rest unprocessed (as DynamoDB may)
        )
        n = self.answer
        send = {t: {**r, "Keys": r["Keys"][:n]} for t, r in RequestItems.items() if r["Keys"][:n]}
        left = {t: {**r, "Keys": r["Keys"][n:]} for t, r in RequestItems.items() if len(r["Keys"]) > n}
        reply = self.real.batch_get_item(RequestItems=send) if send else {"Responses": {}}
        return {**reply, "UnprocessedKeys": left}


@pytest.fixture
def counting(table, monkeypatch):
    from prfleet.store import dynamo

    def install(unprocess=0, answer=1):
        c = _Counting(aws.client("dynamodb"), unprocess, answer)
        monkeypatch.setattr(dynamo, "client", lambda _service: c)
        monkeypatch.setattr(headfiles, "client", lambda _service: c)
        return c

    return install


def test_the_first_chunk_read_in_a_batch_gives_the_list_without_a_query(table, counting):
    from prfleet.store import dynamo

    small, big = listing(20, 50), listing(300, 4000)
    headfiles.save("a/b", 4, "h4", small, now=1000)
    headfiles.save("a/b", 5, "h5", big, now=1000)
    c = counting()
    keys = [headfiles.first_key("a/b", 4, "h4"), headfiles.first_key("a/b", 5, "h5")]
    got = dynamo.batch_get({"state": {"Keys": keys, "ConsistentRead": True}})["state"]
    first = {i["pk"]["S"]: i for i in got}
    assert headfiles.from_first("a/b", 4, "h4", first["PR#a/b#4"]) == small
    assert c.ops == ["batch_get_item"]  # one chunk: nothing more to read
    assert headfiles.from_first("a/b", 5, "h5", first["PR#a/b#5"]) == big
    assert c.ops == ["batch_get_item", "get_paginator"]  # several chunks: queried whole, as load() does
    assert headfiles.from_first("a/b", 6, "h6", None) is None  # not stored: the job lists from GitHub


def test_unprocessed_keys_are_sent_again_with_their_consistent_read(table, counting):
    from prfleet.store import dynamo

    for n in (7, 8, 9):
        headfiles.save("a/b", n, f"h{n}", listing(2, 10), now=1000)
    c = counting(unprocess=2)
    keys = [headfiles.first_key("a/b", n, f"h{n}") for n in (7, 8, 9)]
    got = dynamo.batch_get({"state": {"Keys": keys, "ConsistentRead": True}}, sleep=lambda _s: None)
    assert sorted(i["pk"]["S"] for i in got["state"]) == ["PR#a/b#7", "PR#a/b#8", "PR#a/b#9"]
    assert [len(r["state"]["Keys"]) for r in c.requests] == [3, 2, 1]
    assert all(r["state"]["ConsistentRead"] is True for r in c.requests)
    # keys left unprocessed every time: the job fails (SQS retries it), it never goes on without them
    c = counting(unprocess=100, answer=0)
    with pytest.raises(RuntimeError, match="unprocessed"):
        dynamo.batch_get({"state": {"Keys": keys, "ConsistentRead": True}}, sleep=lambda _s: None)
    assert len(c.requests) == dynamo.BATCH_ATTEMPTS


def test_a_job_reads_its_head_record_head_file_list_and_cache_in_one_request(table, counting, monkeypatch):
    from prfleet import agents
    from prfleet.jobs import FileJob
    from prfleet.pipeline import runner
    from prfleet.store import heads, result_cache

    table.create_table(
        TableName="results",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "cache_key", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "cache_key", "KeyType": "HASH"}],
    )
    monkeypatch.setenv("RESULTS_TABLE", "results")
    config.settings.cache_clear()
    try:
        job = FileJob("a/b", 10, "h10", "base", "app.py", "blob10", "review", None, "d-1")
        spec = agents.agent_specs(config.settings(), None)["review"]
        key = result_cache.cache_key(job.blob_sha, spec.name, spec.model, spec.prompt_version)
        listed = listing(3, 20)
        headfiles.save("a/b", 10, "h10", listed, now=1000)
        heads.set_head("a/b", 10, "h10", now=1000)
        heads.record_plan(
            "a/b",
            10,
            "h10",
            planned=3,
            skipped_files=[],
            repo_config=None,
            check_run_id=7,
            installation_id=None,
        )
        result_cache.put(key, {"findings": [{"line": 1}]}, now=1000)
        c = counting()
        reads = runner._job_reads(job)
        assert c.ops == ["batch_get_item"]
        assert len(c.requests) == 1 and c.requests[0]["state"]["ConsistentRead"] is True
        assert (
            "ConsistentRead" not in c.requests[0]["results"]
        )  # the cache is read as result_cache.get read it
        assert reads.record.planned == 3 and reads.record.check_run_id == 7
        assert reads.current_head == "h10"
        assert headfiles.from_first("a/b", 10, "h10", reads.files_first) == listed
        assert (reads.cache_key, reads.cached) == (key, {"findings": [{"line": 1}]})
        # a job of another head: nothing found, nothing made up
        other = runner._job_reads(FileJob("a/b", 11, "h11", "base", "x.py", "blob11", "review", None, "d"))
        assert (other.record, other.current_head, other.files_first, other.cached) == (None, None, None, None)
    finally:
        config.settings.cache_clear()
