"""The local AWS's faults and request counts (prfleet_local.stack.moto_proc), through real boto3 clients.

What the soak and the benchmarks rely on: a throttled request applies nothing and has DynamoDB's error shape (so
botocore retries it as it would in AWS); a lost response applies the write and the SDK's retry then sees its own
write; an SQS delete that was lost brings the message back after its visibility timeout; every request is counted.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from prfleet_local.stack.moto_proc import FaultPlan, FaultRule, MotoProcess

NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1})  # max_attempts counts retries
PRFLEET_RETRY = Config(retries={"mode": "standard", "max_attempts": 5})  # prfleet.aws's policy


@pytest.fixture(scope="module")
def moto():
    proc = MotoProcess()
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def aws(moto):
    moto.set_faults(FaultPlan())
    moto.reset_counts()

    def make(service, config=NO_RETRY):
        return boto3.client(
            service,
            endpoint_url=moto.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=config,
        )

    return make


def table(aws, name):
    ddb = aws("dynamodb")
    try:
        ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ResourceInUseException"
    return name


def test_a_throttled_write_has_dynamodbs_shape_and_applies_nothing(moto, aws):
    name = table(aws, "prfleet-local-LedgerTable")
    moto.set_faults(FaultPlan([FaultRule("throttle", tables=["LedgerTable"], requests=[1])]))
    ddb = aws("dynamodb")
    with pytest.raises(ClientError) as err:
        ddb.put_item(TableName=name, Item={"pk": {"S": "a"}})
    resp = err.value.response
    assert resp["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
    (reason,) = resp["ThrottlingReasons"]
    assert reason["reason"] == "TableWriteKeyRangeThroughputExceeded"
    assert reason["resource"].endswith(":table/" + name)
    assert "Item" not in ddb.get_item(TableName=name, Key={"pk": {"S": "a"}})
    assert moto.injected() == {("throttle", "dynamodb", "PutItem"): 1}


def test_botocore_retries_a_throttle_and_every_attempt_is_counted(moto, aws):
    name = table(aws, "prfleet-local-StateTable")
    moto.set_faults(FaultPlan([FaultRule("throttling", operations=["GetItem"], requests=[1, 2])]))
    ddb = aws("dynamodb", PRFLEET_RETRY)
    moto.reset_counts()
    ddb.get_item(TableName=name, Key={"pk": {"S": "x"}})
    assert moto.counts()[("dynamodb", "GetItem")] == 3


def test_throttling_exception_shape(moto, aws):
    name = table(aws, "prfleet-local-StateTable")
    moto.set_faults(FaultPlan([FaultRule("throttling", requests=[1])]))
    with pytest.raises(ClientError) as err:
        aws("dynamodb").update_item(
            TableName=name,
            Key={"pk": {"S": "t"}},
            UpdateExpression="SET v = :v",
            ExpressionAttributeValues={":v": {"N": "1"}},
        )
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_faults_only_hit_the_chosen_tables(moto, aws):
    ledger, state = table(aws, "prfleet-local-LedgerTable"), table(aws, "prfleet-local-StateTable")
    moto.set_faults(FaultPlan([FaultRule("throttle", tables=["LedgerTable"], rate=1.0)]))
    ddb = aws("dynamodb")
    ddb.put_item(TableName=state, Item={"pk": {"S": "fine"}})
    with pytest.raises(ClientError):
        ddb.put_item(TableName=ledger, Item={"pk": {"S": "no"}})


def test_a_lost_response_applies_the_write_and_the_sdk_retry_meets_it(moto, aws):
    """The hazard the soak hunts: a conditional write answered 500 was applied; botocore's retry then fails the
    condition against its own first attempt."""
    name = table(aws, "prfleet-local-DeliveriesTable")
    moto.set_faults(FaultPlan([FaultRule("lost_response", tables=["DeliveriesTable"], requests=[1])]))
    with pytest.raises(ClientError) as err:
        aws("dynamodb").put_item(
            TableName=name, Item={"pk": {"S": "d1"}}, ConditionExpression="attribute_not_exists(pk)"
        )
    assert err.value.response["Error"]["Code"] == "InternalServerError"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "Item" in aws("dynamodb").get_item(TableName=name, Key={"pk": {"S": "d1"}})  # it was applied

    moto.set_faults(FaultPlan([FaultRule("lost_response", tables=["DeliveriesTable"], requests=[1])]))
    with pytest.raises(ClientError) as err:
        aws("dynamodb", PRFLEET_RETRY).put_item(
            TableName=name, Item={"pk": {"S": "d2"}}, ConditionExpression="attribute_not_exists(pk)"
        )
    assert err.value.response["Error"]["Code"] == "ConditionalCheckFailedException"


def test_a_retried_transaction_with_its_token_is_applied_once(moto, aws):
    name = table(aws, "prfleet-local-LedgerTable")
    moto.set_faults(FaultPlan([FaultRule("lost_response", operations=["TransactWriteItems"], requests=[1])]))
    aws("dynamodb", PRFLEET_RETRY).transact_write_items(
        TransactItems=[
            {
                "Update": {
                    "TableName": name,
                    "Key": {"pk": {"S": "counter"}},
                    "UpdateExpression": "ADD n :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}},
                }
            }
        ]
    )
    item = aws("dynamodb").get_item(TableName=name, Key={"pk": {"S": "counter"}})["Item"]
    assert item["n"]["N"] == "1"  # the SDK's retry reused its ClientRequestToken: not applied twice
    assert moto.counts()[("dynamodb", "TransactWriteItems")] == 2


def test_a_throttled_transaction_is_cancelled_with_a_throttling_reason(moto, aws):
    name = table(aws, "prfleet-local-LedgerTable")
    moto.set_faults(FaultPlan([FaultRule("throttle", operations=["TransactWriteItems"], requests=[1])]))
    with pytest.raises(ClientError) as err:
        aws("dynamodb").transact_write_items(
            TransactItems=[{"Put": {"TableName": name, "Item": {"pk": {"S": "tx"}}}}]
        )
    assert err.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in err.value.response["CancellationReasons"]] == ["ThrottlingError"]


def test_a_lost_sqs_delete_brings_the_message_back_after_its_visibility_timeout(moto, aws):
    sqs = aws("sqs")
    url = sqs.create_queue(QueueName="prfleet-local-JobsQueue", Attributes={"VisibilityTimeout": "1"})[
        "QueueUrl"
    ]
    sqs.send_message(QueueUrl=url, MessageBody="job")
    moto.set_faults(FaultPlan([FaultRule("sqs_delete_lost", queues=["JobsQueue"], requests=[1])]))
    (m,) = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    reply = sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": "0", "ReceiptHandle": m["ReceiptHandle"]}])
    assert reply["Successful"] == [{"Id": "0"}] and not reply.get("Failed")
    assert sqs.receive_message(QueueUrl=url).get("Messages") is None  # still in flight
    time.sleep(1.5)
    (again,) = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    assert again["MessageId"] == m["MessageId"] and again["Attributes"]["ApproximateReceiveCount"] == "2"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])  # the second delete is not lost
    time.sleep(1.5)
    assert sqs.receive_message(QueueUrl=url).get("Messages") is None


def test_a_seeded_rate_is_reproducible(moto, aws):
    name = table(aws, "prfleet-local-ResultsTable")
    outcomes = []
    for _ in range(2):
        moto.set_faults(FaultPlan([FaultRule("throttle", rate=0.3)], seed=7))
        run = []
        for i in range(40):
            try:
                aws("dynamodb").get_item(TableName=name, Key={"pk": {"S": str(i)}})
                run.append(True)
            except ClientError:
                run.append(False)
        outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert 4 <= outcomes[0].count(False) <= 20


def test_requests_are_counted_by_service_and_operation(moto, aws):
    aws("sqs").list_queues()
    aws("secretsmanager").list_secrets()
    aws("sns").list_topics()
    aws("cloudwatch").list_metrics()
    counts = moto.counts()
    for key in [("sqs", "ListQueues"), ("secretsmanager", "ListSecrets"), ("sns", "ListTopics")]:
        assert counts[key] == 1, counts
    assert counts[("monitoring", "ListMetrics")] == 1, counts


def test_a_bad_plan_is_refused_with_a_reason(moto):
    req = urllib.request.Request(
        moto.endpoint + "/_prfleet/faults",
        data=json.dumps({"rules": [{"kind": "explode"}]}).encode(),
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400 and b"unknown fault kind" in err.value.read()
    with pytest.raises(ValueError):
        FaultRule("throttle", rate=1.5)
