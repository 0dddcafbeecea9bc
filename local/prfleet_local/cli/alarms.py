"""`prfleet alarms`: each alarm of a stack with its state, when that state began, and why.

The alarms are found by name: SAM/CloudFormation names an AWS::CloudWatch::Alarm that has no AlarmName
`<stack name>-<LogicalId>-<random suffix>`, so `describe_alarms(AlarmNamePrefix="<stack>-")` lists the stack's
alarms (the local stack names them `<stack>-<LogicalId>` and mirrors every state change into moto with
set_alarm_state, so the same command works against it: AWS_ENDPOINT_URL is honoured by boto3).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Iterable
from typing import Any, TextIO

STATES = ("ALARM", "INSUFFICIENT_DATA", "OK")


def stack_alarms(stack: str, *, client: Any = None) -> list[dict[str, Any]]:
    """Metric and composite alarms whose names start with `<stack>-`, every page, sorted by name."""
    if client is None:
        import boto3

        client = boto3.client("cloudwatch")  # region and endpoint from the environment, as the AWS CLI
    alarms: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {
            "AlarmNamePrefix": f"{stack}-",
            "AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
        }
        if token:
            kwargs["NextToken"] = token
        page = client.describe_alarms(**kwargs)
        alarms.extend(page.get("MetricAlarms", []))
        alarms.extend(page.get("CompositeAlarms", []))
        token = page.get("NextToken")
        if not token:
            break
    return sorted(alarms, key=lambda a: a["AlarmName"])


def _when(value: Any) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value or "-")


def short_name(name: str, stack: str) -> str:
    """`<stack>-ErrorRateAlarm-1A2B3C` -> `ErrorRateAlarm` (the logical id, which the runbook uses)."""
    rest = name[len(stack) + 1 :] if name.startswith(f"{stack}-") else name
    head, _, tail = rest.rpartition("-")
    return head if head and tail.isalnum() and tail.isupper() and len(tail) >= 8 else rest


def render(alarms: Iterable[dict[str, Any]], stack: str, out: TextIO) -> None:
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
    firing = [short_name(a["AlarmName"], stack) for a in rows if a.get("StateValue") == "ALARM"]
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    out.write(
        f"\n{len(rows)} alarms: {summary}" + (f"; firing: {', '.join(firing)}" if firing else "") + "\n"
    )


def show_alarms(args: argparse.Namespace, *, out: TextIO | None = None, client: Any = None) -> int:
    """Print the stack's alarms. Exit code 0 when listed, 1 when the stack has no alarms, 2 on an AWS error."""
    out = out or sys.stdout
    stack = str(args.stack)
    try:
        alarms = stack_alarms(stack, client=client)
    except Exception as exc:  # botocore errors: no credentials, no endpoint, access denied
        print(f"prfleet alarms: cannot describe the alarms of {stack}: {exc}", file=sys.stderr)
        return 2
    if not alarms:
        print(f"prfleet alarms: no alarm named {stack}-* (is the stack name right? --stack)", file=sys.stderr)
        return 1
    render(alarms, stack, out)
    return 0
