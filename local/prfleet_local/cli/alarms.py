"""`prfleet alarms`: each alarm of one stack with its state, when that state began, and why.

The alarms are the stack's own AWS::CloudWatch::Alarm resources (their physical ids, from CloudFormation or from
the local stack's state file), described by name with DescribeAlarms `AlarmNames` (at most 100 names per call,
https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_DescribeAlarms.html). No prefix match: a
stack `prfleet` never shows the alarms of `prfleet-prod`. The local stack mirrors every state change of its
evaluator into moto with SetAlarmState, so the same command works against it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from prfleet_local.cli.errors import CliError, aws_error

STATES = ("ALARM", "INSUFFICIENT_DATA", "OK")
_NAMES_PER_CALL = 100


def describe(names: Iterable[str], *, client: Any = None) -> list[dict[str, Any]]:
    """Metric and composite alarms with exactly these names, every page, sorted by name."""
    if client is None:
        from prfleet.config.aws import client as aws_client

        client = aws_client("cloudwatch")
    wanted = sorted(set(names))
    alarms: list[dict[str, Any]] = []
    for start in range(0, len(wanted), _NAMES_PER_CALL):
        kwargs: dict[str, Any] = {
            "AlarmNames": wanted[start : start + _NAMES_PER_CALL],
            "AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
        }
        while True:
            page = client.describe_alarms(**kwargs)
            alarms.extend(page.get("MetricAlarms", []))
            alarms.extend(page.get("CompositeAlarms", []))
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
    return sorted(alarms, key=lambda a: a["AlarmName"])


def _when(value: Any) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value or "-")


def render(alarms: Iterable[dict[str, Any]], logical: Mapping[str, str], out: TextIO) -> None:
    """A table of the alarms, then counts and the firing ones by logical id (the runbook's names)."""
    rows = list(alarms)
    width = max([len("ALARM NAME")] + [len(a["AlarmName"]) for a in rows])
    out.write(f"{'ALARM NAME':<{width}}  {'STATE':<17}  {'SINCE':<23}  REASON\n")
    for a in rows:
        reason = " ".join(str(a.get("StateReason") or "").split())
        out.write(
            f"{a['AlarmName']:<{width}}  {a.get('StateValue', '?'):<17}  "
            f"{_when(a.get('StateUpdatedTimestamp')):<23}  {reason}\n"
        )
    counts = {s: sum(1 for a in rows if a.get("StateValue") == s) for s in STATES}
    firing = [logical.get(a["AlarmName"], a["AlarmName"]) for a in rows if a.get("StateValue") == "ALARM"]
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    out.write(
        f"\n{len(rows)} alarms: {summary}" + (f"; firing: {', '.join(firing)}" if firing else "") + "\n"
    )


def show_alarms(args: argparse.Namespace, *, out: TextIO | None = None, target: Any = None) -> int:
    """Print the stack's alarms (exit 0); a stack without alarms, or one AWS cannot describe, is a CliError.
    `target` (a StackTarget) skips resolving --stack/--local, e.g. for a LocalStack in the same process."""
    from botocore.exceptions import BotoCoreError, ClientError

    from prfleet_local.cli.target import resolve

    out = out or sys.stdout
    target = target or resolve(args)
    logical = target.alarm_names()
    if not logical:
        raise CliError(f"{target.where} has no CloudWatch alarms: is it a prfleet stack?")
    try:
        alarms = describe(logical, client=None)
    except (BotoCoreError, ClientError) as exc:
        raise aws_error(exc, f"describe the alarms of {target.where}") from None
    missing = sorted(set(logical) - {a["AlarmName"] for a in alarms})
    render(alarms, logical, out)
    if missing:
        out.write(f"not found in CloudWatch (deleted outside CloudFormation?): {', '.join(missing)}\n")
    return 0
