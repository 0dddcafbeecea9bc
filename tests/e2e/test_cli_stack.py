"""`--stack NAME` against moto's CloudFormation: two stacks whose names share a prefix (`prfleet`, `prfleet-prod`),
and each command reads exactly its own stack's tables and alarms.

moto's CloudFormation does not create AWS::CloudWatch::Alarm (it warns and skips it), so this test teaches it the
way CloudFormation does: an alarm without AlarmName is named `<stack>-<LogicalId>-<random suffix>` and its physical
id (`Ref`) is that name (AWS::CloudWatch::Alarm "Return values", CloudFormation User Guide). The tables come from
template.yaml itself.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.cloudformation import parsing
from moto.cloudwatch.models import cloudwatch_backends

from prfleet_local.cli import main
from prfleet_local.stack import template as tpl

pytestmark = pytest.mark.e2e
REGION = "eu-west-1"


class _CfnAlarm:
    """AWS::CloudWatch::Alarm for moto's CloudFormation: put_metric_alarm under the generated physical name.
    Not a CloudFormationModel subclass (moto would then keep it for every later test): the fixture below adds it
    to moto's model map for one test only."""

    def __init__(self, name: str) -> None:
        self.physical_resource_id = name

    def is_created(self) -> bool:
        return True

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudWatch::Alarm"

    @staticmethod
    def cloudformation_name_type() -> str:
        return "AlarmName"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> _CfnAlarm:
        p = cloudformation_json["Properties"]
        cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=resource_name,
            namespace=p["Namespace"],
            metric_name=p["MetricName"],
            comparison_operator=p["ComparisonOperator"],
            evaluation_periods=int(p["EvaluationPeriods"]),
            period=int(p["Period"]),
            threshold=float(p["Threshold"]),
            statistic=p["Statistic"],
            description=p.get("AlarmDescription", ""),
            dimensions=[],
            alarm_actions=[],
        )
        return cls(resource_name)


@pytest.fixture
def cfn_alarms(monkeypatch):
    models, names = parsing.get_model_map(), parsing.get_name_type_map()
    kind = _CfnAlarm.cloudformation_type()
    monkeypatch.setattr(parsing, "get_model_map", lambda: {**models, kind: _CfnAlarm})
    monkeypatch.setattr(parsing, "get_name_type_map", lambda: {**names, kind: "AlarmName"})


def _stack_template() -> dict[str, Any]:
    real = tpl.load()["Resources"]
    tables = {
        name: {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {k: real[name]["Properties"][k] for k in ("AttributeDefinitions", "KeySchema")}
            | {"BillingMode": "PAY_PER_REQUEST"},
        }
        for name in ("LedgerTable", "StateTable")
    }
    alarms = {
        name: {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "Namespace": "prfleet",
                "MetricName": metric,
                "Statistic": "Sum",
                "Period": 60,
                "EvaluationPeriods": 1,
                "Threshold": 1,
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            },
        }
        for name, metric in (("ErrorRateAlarm", "RunsFailed"), ("StuckRunsAlarm", "StuckRuns"))
    }
    return {
        "Parameters": {"BudgetTimezone": {"Type": "String", "Default": "UTC"}},
        "Resources": {**tables, **alarms},
    }


def _deploy(cf: Any, name: str, settled: int) -> dict[str, str]:
    cf.create_stack(StackName=name, TemplateBody=json.dumps(_stack_template()))
    res = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in cf.describe_stack_resources(StackName=name)[
        "StackResources"]}  # fmt: skip
    import datetime as dt

    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    boto3.client("dynamodb", region_name=REGION).put_item(
        TableName=res["LedgerTable"],
        Item={
            "scope": {"S": "daily"},
            "day": {"S": today},
            "settled": {"N": str(settled)},
            "reserved": {"N": "0"},
            "limit": {"N": "10000000"},
        },
    )
    return res


@pytest.fixture
def two_stacks(monkeypatch, cfn_alarms, tmp_path):
    for k in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    from prfleet.config import aws

    with mock_aws():
        aws.client.cache_clear()
        cf = boto3.client("cloudformation", region_name=REGION)
        yield _deploy(cf, "prfleet", 111_000), _deploy(cf, "prfleet-prod", 999_000)
    aws.client.cache_clear()


def test_alarms_lists_exactly_the_stacks_own_alarms(two_stacks, capsys):
    ours, prod = two_stacks
    assert ours["ErrorRateAlarm"].startswith("prfleet-ErrorRateAlarm-")
    assert prod["ErrorRateAlarm"].startswith("prfleet-prod-ErrorRateAlarm-")  # shares the prefix "prfleet-"
    assert main(["alarms", "--stack", "prfleet", "--region", REGION]) == 0
    out = capsys.readouterr().out
    assert ours["ErrorRateAlarm"] in out and ours["StuckRunsAlarm"] in out
    assert "prfleet-prod" not in out
    assert "\n2 alarms:" in out
    assert main(["alarms", "--stack", "prfleet-prod", "--region", REGION]) == 0
    out = capsys.readouterr().out
    assert prod["StuckRunsAlarm"] in out and ours["StuckRunsAlarm"] not in out


def test_cost_report_reads_the_named_stacks_ledger(two_stacks, capsys):
    assert main(["cost", "report", "--stack", "prfleet", "--region", REGION, "--json", "--days", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [v["settled"] for v in report["by_day"].values()] == [111_000]
    assert report["stack"] == f"stack prfleet in {REGION}"
    assert main(["cost", "report", "--stack", "prfleet-prod", "--region", REGION, "--days", "1"]) == 0
    text = capsys.readouterr().out
    assert "$0.9990" in text and "$0.1110" not in text
    assert "(how: the settled spend of the last 1 budget days" in text


def test_a_stack_that_does_not_exist_is_one_line(two_stacks, capsys):
    assert main(["alarms", "--stack", "prfleet-dev", "--region", REGION]) == 2
    err = capsys.readouterr().err
    assert err == f"prfleet alarms: no stack named prfleet-dev in {REGION} (check --stack and --region)\n"


def test_region_comes_from_the_environment_like_the_aws_cli(two_stacks, capsys, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    assert main(["alarms", "--stack", "prfleet"]) == 0
    assert "2 alarms" in capsys.readouterr().out
