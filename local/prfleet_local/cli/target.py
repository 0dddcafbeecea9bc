"""Which stack a command reads: a deployed one (`--stack NAME`, found through CloudFormation) or the local one
(`--local`, found through the state file that `prfleet local serve` writes while it runs).

A deployed stack's tables, queues, topic and alarms are its resources' physical ids, so nothing is guessed from
names: `prfleet alarms --stack prfleet` lists exactly the alarms of `prfleet`, never those of `prfleet-prod`.

CloudFormation facts used here (AWS CloudFormation API Reference):
- DescribeStacks takes a stack name and returns that stack only, with its Outputs and Parameters; a name that
  does not exist is a ValidationError "Stack with id NAME does not exist".
  https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DescribeStacks.html
- DescribeStackResources returns the stack's resources with LogicalResourceId, PhysicalResourceId and
  ResourceType, but "only the first 100 resources"; for more, ListStackResources (paginated) is the documented way.
  https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DescribeStackResources.html
- The physical id of AWS::DynamoDB::Table is the table name, of AWS::SQS::Queue the queue URL, of AWS::SNS::Topic
  the topic ARN, of AWS::CloudWatch::Alarm the alarm name (the `Ref` return values of each resource type).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prfleet_local.cli.errors import CliError, aws_error

STATE_ENV = "PRFLEET_LOCAL_STATE"
_MAX_DESCRIBED = 100  # DescribeStackResources returns at most this many resources
ALARM_TYPES = ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")


def state_path() -> Path:
    """Where `prfleet local serve` records the stack it runs (PRFLEET_LOCAL_STATE overrides, e.g. in tests)."""
    override = os.environ.get(STATE_ENV)
    return Path(override) if override else Path.home() / ".prfleet" / "local-stack.json"


@dataclass(frozen=True)
class StackTarget:
    """A prfleet stack by its resources: logical id -> (type, physical id), plus outputs and parameters."""

    name: str
    region: str
    resources: dict[str, tuple[str, str]]
    outputs: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    endpoint_url: str | None = None  # the local stack's moto server; None for AWS
    local: dict[str, Any] = field(default_factory=dict)  # what serve wrote (webhook, GitHub, review pages)

    @property
    def where(self) -> str:
        return (
            f"the local stack ({self.endpoint_url})"
            if self.endpoint_url
            else f"stack {self.name} in {self.region}"
        )

    def physical(self, logical: str, kind: str) -> str:
        got = self.resources.get(logical)
        if got is None or got[0] != kind:
            raise CliError(f"{self.where} has no {kind} {logical}: is it a prfleet stack?")
        return got[1]

    def table(self, logical: str) -> str:
        return self.physical(logical, "AWS::DynamoDB::Table")

    def alarm_names(self) -> dict[str, str]:
        """physical alarm name -> logical id, for every alarm the stack created."""
        return {phys: logical for logical, (kind, phys) in self.resources.items() if kind in ALARM_TYPES}

    def activate(self) -> None:
        """Point prfleet.aws.client at this stack (region, and the local moto endpoint with its test keys)."""
        from prfleet.config import aws

        os.environ["AWS_REGION"] = os.environ["AWS_DEFAULT_REGION"] = self.region
        if self.endpoint_url:
            os.environ["AWS_ENDPOINT_URL"] = self.endpoint_url
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
                os.environ[key] = "testing"
            os.environ.pop("AWS_PROFILE", None)
        aws.client.cache_clear()


# ------------------------------------------------------------------------------------------------- AWS


def default_region() -> str | None:
    """The region the AWS CLI would use: AWS_REGION / AWS_DEFAULT_REGION, else the profile's configuration."""
    import boto3

    return os.environ.get("AWS_REGION") or boto3.session.Session().region_name


def from_cloudformation(name: str, region: str | None = None) -> StackTarget:
    """Resolve a deployed stack by exact name with DescribeStacks and DescribeStackResources."""
    from botocore.exceptions import BotoCoreError, ClientError

    from prfleet.config import aws

    region = region or default_region()
    if not region:
        raise CliError(f"cannot find stack {name}: no AWS region (give --region or set AWS_REGION)")
    os.environ["AWS_REGION"] = os.environ["AWS_DEFAULT_REGION"] = region
    aws.client.cache_clear()
    cf = aws.client("cloudformation")
    try:
        stacks = cf.describe_stacks(StackName=name)["Stacks"]
        rows = cf.describe_stack_resources(StackName=name)["StackResources"]
        if len(rows) >= _MAX_DESCRIBED:
            rows = [
                r
                for page in cf.get_paginator("list_stack_resources").paginate(StackName=name)
                for r in page["StackResourceSummaries"]
            ]
    except ClientError as exc:
        if "does not exist" in str(exc.response.get("Error", {}).get("Message", "")):
            raise CliError(f"no stack named {name} in {region} (check --stack and --region)") from None
        raise aws_error(exc, f"describe stack {name}") from None
    except BotoCoreError as exc:
        raise aws_error(exc, f"describe stack {name}") from None
    stack = stacks[0]
    status = str(stack.get("StackStatus", ""))
    if status in ("DELETE_COMPLETE", "CREATE_FAILED", "ROLLBACK_COMPLETE"):
        raise CliError(f"stack {name} in {region} is {status}: it has no resources to read")
    resources = {
        r["LogicalResourceId"]: (r["ResourceType"], r["PhysicalResourceId"])
        for r in rows
        if r.get("LogicalResourceId") and r.get("PhysicalResourceId")
    }
    return StackTarget(
        name=name,
        region=region,
        resources=resources,
        outputs={o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        parameters={p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])},
    )


# ----------------------------------------------------------------------------------------------- local


def _resources(stack: Any) -> dict[str, tuple[str, str]]:
    return {
        logical: (kind, str(stack.ctx.refs[logical]))
        for logical, kind in stack.created.items()
        if logical in stack.ctx.refs
    }


def target_of(stack: Any) -> StackTarget:
    """A running LocalStack in this process as a StackTarget (what `--local` resolves to, without the file)."""
    return StackTarget(
        name=stack.stack_name,
        region=os.environ.get("AWS_REGION", "us-east-1"),
        resources=_resources(stack),
        outputs={k: str(v) for k, v in stack.outputs.items()},
        parameters={k: str(v) for k, v in stack.ctx.parameters.items()},
        endpoint_url=stack.moto.endpoint,
    )


def write_local_state(path: Path, stack: Any, **extra: Any) -> None:
    """Record a running LocalStack (`prfleet local serve`) so that `--local` finds it; written atomically."""
    resources = _resources(stack)
    data = {
        "pid": os.getpid(),
        "started_at": time.time(),
        "stack_name": stack.stack_name,
        "region": os.environ.get("AWS_REGION", "us-east-1"),
        "endpoint_url": stack.moto.endpoint,
        "resources": resources,
        "outputs": {k: str(v) for k, v in stack.outputs.items()},
        "parameters": {k: str(v) for k, v in stack.ctx.parameters.items()},
        "xray_segments": str(getattr(getattr(stack, "xray", None), "record_to", "") or ""),
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def remove_local_state(path: Path) -> None:
    """Remove the state file if this process wrote it (a second serve must not delete the first one's)."""
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def from_local(path: Path | None = None) -> StackTarget:
    """The stack a running `prfleet local serve` recorded; an error if none runs."""
    path = path or state_path()
    try:
        data = json.loads(path.read_text())
        pid, endpoint = int(data["pid"]), str(data["endpoint_url"])
        resources = {k: (str(v[0]), str(v[1])) for k, v in data["resources"].items()}
    except FileNotFoundError:
        raise CliError(
            f"no local stack is running ({path} not found): start one with `prfleet local serve`"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise CliError(f"cannot read the local stack's state file {path}: {type(exc).__name__}") from None
    if not _alive(pid):
        raise CliError(f"the local stack recorded in {path} is gone (pid {pid}): start `prfleet local serve`")
    try:
        urllib.request.urlopen(endpoint + "/moto-api/", timeout=3).read()  # noqa: S310 - loopback
    except OSError:
        raise CliError(
            f"the local stack's AWS endpoint {endpoint} does not answer: restart `prfleet local serve`"
        ) from None
    return StackTarget(
        name=str(data.get("stack_name", "prfleet-local")),
        region=str(data.get("region", "us-east-1")),
        resources=resources,
        outputs=dict(data.get("outputs", {})),
        parameters=dict(data.get("parameters", {})),
        endpoint_url=endpoint,
        local=data,
    )


# ------------------------------------------------------------------------------------------------ args


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """--stack NAME | --local, and --region: the same three options on every command that reads a stack."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--stack", metavar="NAME", help="a deployed stack, resolved through CloudFormation")
    group.add_argument(
        "--local", action="store_true", help="the stack `prfleet local serve` is running on this machine"
    )
    parser.add_argument(
        "--region", help="AWS region of --stack (default: AWS_REGION or the profile's region)"
    )


def resolve(args: argparse.Namespace) -> StackTarget:
    """The stack named by the command's options, activated for prfleet.aws.client."""
    if getattr(args, "local", False):
        if args.region:
            raise CliError("--region applies to --stack, not to --local")
        target = from_local()
    else:
        name = args.stack or os.environ.get("PRFLEET_STACK")
        if not name:
            raise CliError(
                "which stack? give --stack NAME (deployed, e.g. prfleet) or --local (`prfleet local serve`)"
            )
        target = from_cloudformation(name, args.region)
    target.activate()
    return target
