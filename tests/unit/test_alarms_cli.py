"""`prfleet alarms` output and paging, over describe_alarms replies shaped like AWS's (the e2e alarm tests run the
same command against the local stack's moto)."""

from __future__ import annotations

import argparse
import datetime as dt
import io

from prfleet_local.cli.alarms import short_name, show_alarms


class Pages:
    """describe_alarms returning the given pages in turn; records the requests."""

    def __init__(self, *pages: dict) -> None:
        self.pages = list(pages)
        self.calls: list[dict] = []

    def describe_alarms(self, **kwargs):
        self.calls.append(kwargs)
        return self.pages[len(self.calls) - 1]


def alarm(name: str, state: str, reason: str = "Threshold Crossed: x") -> dict:
    when = dt.datetime(2026, 11, 28, 12, 30, 5, tzinfo=dt.timezone.utc)
    return {"AlarmName": name, "StateValue": state, "StateReason": reason, "StateUpdatedTimestamp": when}


def test_cloudformation_names_map_back_to_the_logical_id():
    assert short_name("prfleet-ErrorRateAlarm-1A2B3C4D5E6F7", "prfleet") == "ErrorRateAlarm"
    assert short_name("prfleet-local-SpendAlarm", "prfleet-local") == "SpendAlarm"
    assert short_name("prfleet-Jobs-DLQ-alarm", "prfleet") == "Jobs-DLQ-alarm"


def test_every_page_of_the_stacks_alarms_is_printed_with_state_time_and_reason():
    client = Pages(
        {"MetricAlarms": [alarm("prfleet-SpendAlarm-AAAABBBBCCCC", "ALARM", "Threshold\nCrossed: 92.1")],
         "NextToken": "t1"},
        {"MetricAlarms": [alarm("prfleet-ErrorRateAlarm-DDDDEEEEFFFF", "OK")],
         "CompositeAlarms": [alarm("prfleet-Paging-GGGGHHHHIIII", "INSUFFICIENT_DATA")]},
    )  # fmt: skip
    out = io.StringIO()
    assert show_alarms(argparse.Namespace(stack="prfleet"), out=out, client=client) == 0
    assert [c.get("NextToken") for c in client.calls] == [None, "t1"]
    assert all(c["AlarmNamePrefix"] == "prfleet-" for c in client.calls)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["ALARM", "NAME", "STATE", "SINCE", "REASON"]
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert list(rows) == sorted(rows)
    spend = rows["prfleet-SpendAlarm-AAAABBBBCCCC"]
    assert "ALARM" in spend and "2026-11-28 12:30:05 UTC" in spend and "Threshold Crossed: 92.1" in spend
    assert lines[-1] == "3 alarms: 1 ALARM, 1 INSUFFICIENT_DATA, 1 OK; firing: SpendAlarm"


def test_no_alarm_for_the_stack_is_an_error_and_says_so(capsys):
    assert show_alarms(argparse.Namespace(stack="nope"), out=io.StringIO(), client=Pages({})) == 1
    assert "no alarm named nope-*" in capsys.readouterr().err


def test_an_aws_error_is_reported_not_raised(capsys):
    class Broken:
        def describe_alarms(self, **kwargs):
            raise RuntimeError("Unable to locate credentials")

    assert show_alarms(argparse.Namespace(stack="prfleet"), out=io.StringIO(), client=Broken()) == 2
    assert "Unable to locate credentials" in capsys.readouterr().err
