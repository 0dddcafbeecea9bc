"""The local alarm publisher is as strict as CloudWatch about an encrypted alert topic: an alarm's notification
reaches the topic only when the topic's key lets cloudwatch.amazonaws.com use it (kms:GenerateDataKey* and
kms:Decrypt), which the AWS managed alias/aws/sns never does
(https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services). Otherwise the
alarm still changes state, but the action fails and nobody is paged."""

from __future__ import annotations

import copy
import json

import boto3
import pytest

from prfleet_local.stack import template as tpl
from prfleet_local.stack.alerts import Alerting, cloudwatch_cannot_publish, subscribe_alerts
from prfleet_local.stack.metrics import CloudWatchMetrics
from prfleet_local.stack.moto_proc import moto_server


@pytest.fixture
def aws(monkeypatch):
    with moto_server() as endpoint:
        for k, v in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }.items():
            monkeypatch.setenv(k, v)
        yield lambda service: boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


def _template_key_policy() -> dict:
    """AlertKey's policy as CloudFormation creates it (the account's id and partition substituted)."""
    sam = tpl.load()
    return tpl.Context(sam).resolve(copy.deepcopy(sam["Resources"]["AlertKey"]["Properties"]["KeyPolicy"]))


def _topic(client, name: str, policy: dict | None = None, key: str | None = None) -> str:
    if policy is not None:
        key = client("kms").create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]
    attrs = {"KmsMasterKeyId": key} if key else {}
    return client("sns").create_topic(Name=name, Attributes=attrs)["TopicArn"]


def test_the_templates_key_lets_alarms_publish_and_an_unencrypted_topic_takes_them_too(aws):
    assert cloudwatch_cannot_publish(_topic(aws, "template-key", _template_key_policy())) is None
    assert cloudwatch_cannot_publish(_topic(aws, "plain")) is None


def test_keys_that_do_not_let_cloudwatch_in_stop_the_notification(aws):
    policy = _template_key_policy()
    account_only = {**policy, "Statement": policy["Statement"][:1]}
    decrypt_only = copy.deepcopy(policy)
    decrypt_only["Statement"][1]["Action"] = ["kms:Decrypt"]
    conditioned = copy.deepcopy(policy)  # a condition the stand-in cannot evaluate is not taken to grant
    conditioned["Statement"][1]["Condition"] = {"StringEquals": {"aws:SourceAccount": "999999999999"}}
    denied = copy.deepcopy(policy)
    denied["Statement"].append({**denied["Statement"][1], "Effect": "Deny"})
    cases = {
        "aws-managed": _topic(aws, "aws-managed", key="alias/aws/sns"),
        "account-only": _topic(aws, "account-only", account_only),
        "decrypt-only": _topic(aws, "decrypt-only", decrypt_only),
        "conditioned": _topic(aws, "conditioned", conditioned),
        "denied": _topic(aws, "denied", denied),
    }
    reasons = {name: cloudwatch_cannot_publish(arn) for name, arn in cases.items()}
    assert "AWS managed key" in reasons["aws-managed"]
    assert "kms:Decrypt" in reasons["account-only"] and "kms:GenerateDataKey" in reasons["account-only"]
    assert "['kms:GenerateDataKey']" in reasons["decrypt-only"]
    assert "does not allow" in reasons["conditioned"]
    assert "denies" in reasons["denied"]
    # A disabled key serves nobody.
    key = aws("kms").create_key(Policy=json.dumps(policy))["KeyMetadata"]
    aws("kms").disable_key(KeyId=key["KeyId"])
    assert "Disabled" in cloudwatch_cannot_publish(_topic(aws, "disabled", key=key["Arn"]))


def test_an_alarm_on_a_topic_cloudwatch_cannot_use_changes_state_but_pages_nobody(aws):
    policy = _template_key_policy()
    good = _topic(aws, "good", policy)
    bad = _topic(aws, "bad", {**policy, "Statement": policy["Statement"][:1]})
    inboxes = {arn: subscribe_alerts(arn, f"inbox-{i}") for i, arn in enumerate((good, bad))}
    for name, topic in (("GoodAlarm", good), ("BadAlarm", bad)):
        aws("cloudwatch").put_metric_alarm(
            AlarmName=name,
            Namespace="prfleet",
            MetricName="RunsFailed",
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            AlarmActions=[topic],
        )
    alerting = Alerting(CloudWatchMetrics())
    for name, topic in (("GoodAlarm", good), ("BadAlarm", bad)):
        alerting.alarm_definitions[name] = {
            "Namespace": "prfleet",
            "MetricName": "RunsFailed",
            "Statistic": "Sum",
            "Period": 60,
            "EvaluationPeriods": 1,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "breaching",
            "AlarmActions": [topic],
        }
    alerting.evaluate(at=1_800_000_000.0)  # missing data treated as breaching: both go to ALARM
    states = {a["AlarmName"]: a["StateValue"] for a in aws("cloudwatch").describe_alarms()["MetricAlarms"]}
    assert states == {"GoodAlarm": "ALARM", "BadAlarm": "ALARM"}
    assert [m.alarm for m in inboxes[good].receive(wait=5)] == ["GoodAlarm"]
    assert inboxes[bad].receive() == []
    assert [(a, t) for a, t, _ in alerting.failed_actions] == [("BadAlarm", bad)]
