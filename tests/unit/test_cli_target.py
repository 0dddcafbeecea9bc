"""Stack resolution without AWS: the DescribeStackResources cap, the local state file's failure modes."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from prfleet.config import aws
from prfleet_local.cli import target as tgt
from prfleet_local.cli.errors import CliError


class FakeCloudFormation:
    """DescribeStackResources capped at 100 rows as documented; ListStackResources paginated."""

    def __init__(self, n: int) -> None:
        self.rows = [
            {"LogicalResourceId": f"Alarm{i:03}", "PhysicalResourceId": f"s-Alarm{i:03}-X", "ResourceType":
             "AWS::CloudWatch::Alarm"} for i in range(n)
        ]  # fmt: skip
        self.calls: list[str] = []

    def describe_stacks(self, StackName):  # noqa: N803 - boto3's names
        self.calls.append("describe_stacks")
        return {"Stacks": [{"StackName": StackName, "StackStatus": "UPDATE_COMPLETE", "Outputs": [],
                            "Parameters": [{"ParameterKey": "BudgetTimezone", "ParameterValue": "Europe/Paris"}]}]}  # fmt: skip

    def describe_stack_resources(self, StackName):  # noqa: N803
        self.calls.append("describe_stack_resources")
        return {"StackResources": self.rows[:100]}

    def get_paginator(self, name):
        assert name == "list_stack_resources"
        rows = self.rows

        class Pages:
            def paginate(self, StackName):  # noqa: N803
                for start in range(0, len(rows), 40):
                    yield {"StackResourceSummaries": rows[start : start + 40]}

        self.calls.append("list_stack_resources")
        return Pages()


@pytest.fixture
def fake_cf(monkeypatch):
    holder: dict = {}

    def client(service):
        assert service == "cloudformation"
        return holder["cf"]

    client.cache_clear = lambda: None
    monkeypatch.setattr(aws, "client", client)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    return holder


@pytest.mark.parametrize(("n", "listed"), [(99, False), (100, True), (230, True)])
def test_more_than_100_resources_are_listed_page_by_page(fake_cf, n, listed):
    fake_cf["cf"] = cf = FakeCloudFormation(n)
    target = tgt.from_cloudformation("s")
    assert len(target.alarm_names()) == n
    assert ("list_stack_resources" in cf.calls) is listed
    assert target.parameters["BudgetTimezone"] == "Europe/Paris" and target.region == "eu-west-1"


def _state(tmp_path, **data) -> str:
    path = tmp_path / "local-stack.json"
    path.write_text(json.dumps({"resources": {}, "endpoint_url": "http://127.0.0.1:1", **data}))
    return str(path)


def test_a_local_state_of_a_dead_process_is_refused(tmp_path):
    with pytest.raises(CliError, match="is gone"):
        tgt.from_local(tgt.Path(_state(tmp_path, pid=2**22 + 12345)))


def test_a_local_state_whose_endpoint_does_not_answer_is_refused(tmp_path):
    with pytest.raises(CliError, match="does not answer"):
        tgt.from_local(tgt.Path(_state(tmp_path, pid=os.getpid())))


def test_region_with_local_is_a_mistake():
    with pytest.raises(CliError, match="--region applies to --stack"):
        tgt.resolve(argparse.Namespace(local=True, stack=None, region="eu-west-1"))


def test_another_process_state_file_is_not_removed(tmp_path):
    path = tgt.Path(_state(tmp_path, pid=os.getpid() + 1))
    tgt.remove_local_state(path)
    assert path.exists()
    path.write_text(json.dumps({"pid": os.getpid()}))
    tgt.remove_local_state(path)
    assert not path.exists()
