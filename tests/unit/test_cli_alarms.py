"""`prfleet alarms` output and paging over describe_alarms replies shaped like AWS's: exactly the stack's alarms by
name, at most 100 names per request (DescribeAlarms' AlarmNames limit), every page printed."""

from __future__ import annotations

import datetime as dt
import io

from prfleet_local.cli.alarms import describe, render


class Pages:
    """describe_alarms answering from a set of alarms, a page of at most `page` per reply; records the requests."""

    def __init__(self, alarms: list[dict], page: int = 2) -> None:
        self.alarms, self.page = alarms, page
        self.calls: list[dict] = []

    def describe_alarms(self, **kwargs):
        self.calls.append(kwargs)
        assert len(kwargs["AlarmNames"]) <= 100 and "AlarmNamePrefix" not in kwargs
        hits = [a for a in self.alarms if a["AlarmName"] in kwargs["AlarmNames"]]
        start = int(kwargs.get("NextToken") or 0)
        reply = {"MetricAlarms": hits[start : start + self.page]}
        if start + self.page < len(hits):
            reply["NextToken"] = str(start + self.page)
        return reply


def alarm(name: str, state: str, reason: str = "Threshold Crossed: x") -> dict:
    when = dt.datetime(2026, 11, 28, 12, 30, 5, tzinfo=dt.timezone.utc)
    return {"AlarmName": name, "StateValue": state, "StateReason": reason, "StateUpdatedTimestamp": when}


def test_only_the_named_alarms_are_described_never_a_prefix_match():
    ours = [
        alarm("prfleet-SpendAlarm-AAAABBBBCCCC", "ALARM"),
        alarm("prfleet-ErrorRateAlarm-DDDDEEEEFFFF", "OK"),
    ]
    prod = [alarm("prfleet-prod-SpendAlarm-GGGGHHHHIIII", "ALARM")]
    client = Pages(ours + prod, page=1)
    got = describe([a["AlarmName"] for a in ours], client=client)
    assert [a["AlarmName"] for a in got] == sorted(a["AlarmName"] for a in ours)
    assert [c.get("NextToken") for c in client.calls] == [None, "1"]


def test_more_than_100_alarms_take_one_request_per_100_names():
    many = [alarm(f"s-Alarm{i:03}-X", "OK") for i in range(230)]
    client = Pages(many, page=100)
    assert len(describe([a["AlarmName"] for a in many], client=client)) == 230
    assert [len(c["AlarmNames"]) for c in client.calls] == [100, 100, 30]


def test_rows_are_printed_with_state_time_reason_and_the_firing_ones_by_logical_id():
    rows = [
        alarm("prfleet-SpendAlarm-AAAABBBBCCCC", "ALARM", "Threshold\nCrossed: 92.1"),
        alarm("prfleet-ErrorRateAlarm-DDDDEEEEFFFF", "OK"),
        alarm("prfleet-Paging-GGGGHHHHIIII", "INSUFFICIENT_DATA"),
    ]
    out = io.StringIO()
    render(sorted(rows, key=lambda a: a["AlarmName"]), {"prfleet-SpendAlarm-AAAABBBBCCCC": "SpendAlarm"}, out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["ALARM", "NAME", "STATE", "SINCE", "REASON"]
    spend = next(line for line in lines if line.startswith("prfleet-SpendAlarm"))
    assert "ALARM" in spend and "2026-11-28 12:30:05 UTC" in spend and "Threshold Crossed: 92.1" in spend
    assert lines[-1] == "3 alarms: 1 ALARM, 1 INSUFFICIENT_DATA, 1 OK; firing: SpendAlarm"
