"""prfleet_local.stack.alarms: CloudWatch alarm semantics applied to the template's alarm definitions, locally."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_lambda_powertools import single_metric

from prfleet import events
from prfleet_local.stack import alarms
from prfleet_local.stack.alarms import AlarmDefinitionError, AlarmEvaluator, AlarmState, Datapoint
from prfleet_local.stack.emf_capture import capture

SERVICE = {"service": "prfleet"}
T0 = 1_795_000_500.0  # a multiple of 300 and of 900
assert T0 % 900 == 0


def dp(name: str, value: float, ts: float, dims: dict[str, str] | None = None, **kw: Any) -> Datapoint:
    return Datapoint(kw.get("namespace", "prfleet"), name, dims or SERVICE, ts, value, kw.get("unit"))


def simple(name: str = "StuckRuns", **overrides: Any) -> dict[str, Any]:
    props = {
        "Namespace": "prfleet",
        "MetricName": name,
        "Dimensions": [{"Name": "service", "Value": "prfleet"}],
        "Statistic": "Sum",
        "Period": 300,
        "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1,
        "Threshold": 1,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "notBreaching",
    }
    props.update(overrides)
    return props


def error_rate(**overrides: Any) -> dict[str, Any]:
    def stat(qid: str, metric: str) -> dict[str, Any]:
        return {
            "Id": qid,
            "ReturnData": False,
            "MetricStat": {
                "Metric": {
                    "Namespace": "prfleet",
                    "MetricName": metric,
                    "Dimensions": [{"Name": "service", "Value": "prfleet"}],
                },
                "Period": 300,
                "Stat": "Sum",
            },
        }

    props = {
        "ComparisonOperator": "GreaterThanThreshold",
        "Threshold": 20,
        "EvaluationPeriods": 3,
        "DatapointsToAlarm": 3,
        "TreatMissingData": "notBreaching",
        "Metrics": [
            stat("started", "RunsStarted"),
            stat("failed", "RunsFailed"),
            {
                "Id": "rate",
                "Expression": "IF(started >= 5, 100 * FILL(failed, 0) / started, 0)",
                "ReturnData": True,
            },
        ],
    }
    props.update(overrides)
    return props


# ----------------------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    ("stat", "values", "expected"),
    [
        ("Sum", [1, 2, 3, 4], 10),
        ("Average", [1, 2, 3, 4], 2.5),
        ("Minimum", [4, 2, 9], 2),
        ("Maximum", [4, 2, 9], 9),
        ("SampleCount", [4, 2, 9, 9], 4),
        # nearest rank: p95 of 1..20 is the 19th value; of 1..100 the 95th; p50 of 1..4 the 2nd
        ("p95", list(range(20, 0, -1)), 19),
        ("p95", list(range(1, 101)), 95),
        ("p50", [4, 1, 3, 2], 2),
        ("p99.9", list(range(1, 1001)), 999),
        ("p100", [3, 7, 5], 7),
        ("p95", [130_000], 130_000),
    ],
)
def test_statistics(stat: str, values: list[float], expected: float) -> None:
    assert alarms.statistic(values, stat) == expected


def test_unknown_statistic_is_refused() -> None:
    with pytest.raises(AlarmDefinitionError):
        alarms.statistic([1.0], "Median")


def test_p95_alarm_over_raw_values_not_over_averages() -> None:
    latency = simple(
        "RunDuration",
        Statistic=None,
        ExtendedStatistic="p95",
        Unit="Milliseconds",
        Threshold=120_000,
        ComparisonOperator="GreaterThanThreshold",
    )
    ev = AlarmEvaluator({"Latency": latency})
    # 18 fast runs and 2 slow ones: p95 (19th of 20) is slow although the average is 18 s.
    values = [10_000.0] * 18 + [190_000.0, 200_000.0]
    points = [dp("RunDuration", v, T0 + i, unit="Milliseconds") for i, v in enumerate(values)]
    assert ev.evaluate(points, T0 + 60)["Latency"] == AlarmState.ALARM
    assert ev.status["Latency"].values[-1] == (T0, 190_000.0)
    # 19 fast ones and 1 slow: p95 is fast.
    values = [10_000.0] * 19 + [200_000.0]
    points = [dp("RunDuration", v, T0 + 300 + i, unit="Milliseconds") for i, v in enumerate(values)]
    assert ev.evaluate(points, T0 + 360)["Latency"] == AlarmState.OK


def test_unit_must_match_when_the_alarm_names_one() -> None:
    ev = AlarmEvaluator(
        {"Latency": simple("RunDuration", Unit="Milliseconds", Statistic="Maximum", Threshold=5)}
    )
    states = ev.evaluate([dp("RunDuration", 10, T0, unit="Seconds")], T0 + 10)
    # the Seconds datapoint is another metric, so the period is missing (-> notBreaching)
    assert states["Latency"] == AlarmState.OK


def test_low_sample_percentiles_can_be_ignored() -> None:
    props = simple("RunDuration", Statistic=None, ExtendedStatistic="p95", Threshold=100)
    props["EvaluateLowSampleCountPercentile"] = "ignore"
    ev = AlarmEvaluator({"Latency": props})
    ev.evaluate([dp("RunDuration", 1, T0 + i) for i in range(20)], T0 + 30)  # 20 samples: evaluated
    assert ev.states["Latency"] == AlarmState.OK
    ev.evaluate([dp("RunDuration", 500, T0 + 300)], T0 + 330)  # one sample: too few for p95, state kept
    assert ev.states["Latency"] == AlarmState.OK


# ----------------------------------------------------------------------------------------------- metric math


def rate_points(started: int, failed: int, at: float) -> list[Datapoint]:
    points = [dp("RunsStarted", 1, at + i) for i in range(started)]
    points += [dp("RunsFailed", 1, at + i) for i in range(failed)]
    return points


@pytest.mark.parametrize(
    ("started", "failed", "state"),
    [
        (10, 3, AlarmState.ALARM),  # 30 % in every period
        (10, 2, AlarmState.OK),  # exactly 20 % is not greater than 20
        (4, 4, AlarmState.OK),  # 100 % but below the minimum volume of 5 runs
        (10, 0, AlarmState.OK),  # no RunsFailed datapoints at all: FILL makes it 0 %
    ],
)
def test_error_rate_with_minimum_volume_guard(started: int, failed: int, state: AlarmState) -> None:
    ev = AlarmEvaluator({"ErrorRate": error_rate()})
    points = [p for k in range(3) for p in rate_points(started, failed, T0 + 300 * k)]
    assert ev.evaluate(points, T0 + 600 + 120)["ErrorRate"] == state


def test_error_rate_needs_all_three_periods_breaching() -> None:
    ev = AlarmEvaluator({"ErrorRate": error_rate()})
    points = rate_points(10, 5, T0) + rate_points(10, 5, T0 + 300) + rate_points(10, 1, T0 + 600)
    assert ev.evaluate(points, T0 + 700)["ErrorRate"] == AlarmState.OK
    assert [v for _, v in ev.status["ErrorRate"].values[-3:]] == [50.0, 50.0, 10.0]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("a + b * 2", 8.0),
        ("(a + b) * 2", 10.0),
        ("a - -b", 5.0),
        ("2 ^ 3 ^ 2", 512.0),
        ("a / 0", None),  # division by zero: no datapoint
        ("a > b", 0.0),
        ("a <= b AND b == 3", 1.0),
        ("a > b OR NOT (b != 3)", 1.0),
        ("a > b || b >= 3 && a < 1", 0.0),
        ("IF(a > 1, 100, 7)", 100.0),
        ("IF(a > 5, 100, 7)", 7.0),
        ("IF(a > 5, 100)", None),
        ("ABS(a - b)", 1.0),
        ("FILL(m, 0) + a", 2.0),
        ("m + a", None),  # a missing operand makes the result missing
        ("1.5e1 - .5", 14.5),
    ],
)
def test_metric_math_expressions(expression: str, expected: float | None) -> None:
    variables = {"a": (2.0,), "b": (3.0,), "m": (None,)}
    result = alarms.evaluate_expression(expression, variables, 1)
    assert (result if isinstance(result, tuple) else (result,)) == (expected,)


def test_fill_repeat_and_linear() -> None:
    m = (1.0, None, None, 4.0, None)
    assert alarms.evaluate_expression("FILL(m, REPEAT)", {"m": m}, 5) == (1.0, 1.0, 1.0, 4.0, 4.0)
    assert alarms.evaluate_expression("FILL(m, LINEAR)", {"m": m}, 5) == (1.0, 2.0, 3.0, 4.0, None)


@pytest.mark.parametrize(
    "expression",
    ["__import__('os').system('true')", "a +", "unknown * 2", "SEARCH('x', 'Sum', 300)", "a; b", "IF(a)"],
)
def test_metric_math_refuses_what_it_cannot_parse(expression: str) -> None:
    with pytest.raises(AlarmDefinitionError):
        alarms.evaluate_expression(expression, {"a": (1.0,), "b": (2.0,)}, 1)


def test_expressions_may_use_other_expressions() -> None:
    props = error_rate()
    props["Metrics"][2] = {"Id": "fraction", "Expression": "FILL(failed, 0) / started", "ReturnData": False}
    props["Metrics"].append({"Id": "pct", "Expression": "100 * fraction"})
    ev = AlarmEvaluator({"ErrorRate": props})
    points = [p for k in range(3) for p in rate_points(10, 5, T0 + 300 * k)]
    assert ev.evaluate(points, T0 + 700)["ErrorRate"] == AlarmState.ALARM


# ------------------------------------------------------------------------------------------- M of N, missing


def queue_age(**overrides: Any) -> dict[str, Any]:
    return simple(
        "ApproximateAgeOfOldestMessage",
        Namespace="AWS/SQS",
        Dimensions=[{"Name": "QueueName", "Value": "prfleet-jobs"}],
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=3,
        DatapointsToAlarm=2,
        Threshold=300,
        ComparisonOperator="GreaterThanThreshold",
        **overrides,
    )


def ages(*values: float | None, start: float = T0) -> list[Datapoint]:
    return [
        Datapoint(
            "AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": "prfleet-jobs"}, start + 60 * i, v
        )
        for i, v in enumerate(values)
        if v is not None
    ]


@pytest.mark.parametrize(
    ("values", "state"),
    [
        ((10, 400, 500), AlarmState.ALARM),  # 2 of 3
        ((400, 10, 500), AlarmState.ALARM),  # 2 of 3, not adjacent
        ((400, 10, 20), AlarmState.OK),  # 1 of 3
        ((10, 20, 30), AlarmState.OK),
    ],
)
def test_m_out_of_n(values: tuple[float, ...], state: AlarmState) -> None:
    ev = AlarmEvaluator({"Age": queue_age()})
    now = T0 + 60 * (len(values) - 1) + 30
    assert ev.evaluate(ages(*values), now)["Age"] == state


@pytest.mark.parametrize(
    ("treatment", "state"),
    [
        ("missing", AlarmState.INSUFFICIENT_DATA),
        ("notBreaching", AlarmState.OK),
        ("breaching", AlarmState.ALARM),
        ("ignore", AlarmState.INSUFFICIENT_DATA),  # the initial state is kept
    ],
)
def test_all_datapoints_missing(treatment: str, state: AlarmState) -> None:
    ev = AlarmEvaluator({"Age": queue_age(TreatMissingData=treatment)})
    assert ev.evaluate([], T0)["Age"] == state


def test_missing_is_the_default_treatment() -> None:
    props = queue_age()
    del props["TreatMissingData"]
    assert AlarmEvaluator({"Age": props}).evaluate([], T0)["Age"] == AlarmState.INSUFFICIENT_DATA


def test_ignore_keeps_the_alarm_state_when_data_stops() -> None:
    ev = AlarmEvaluator({"Age": queue_age(TreatMissingData="ignore")})
    assert ev.evaluate(ages(400, 500, 600), T0 + 150)["Age"] == AlarmState.ALARM
    assert ev.evaluate([], T0 + 3600)["Age"] == AlarmState.ALARM


@pytest.mark.parametrize(
    ("treatment", "state"),
    [
        ("breaching", AlarmState.ALARM),  # 1 real breaching + 2 missing treated as breaching
        ("notBreaching", AlarmState.OK),
        ("missing", AlarmState.OK),
        ("ignore", AlarmState.INSUFFICIENT_DATA),  # fewer than N real datapoints and below M: kept
    ],
)
def test_partly_missing_fills_with_the_treatment(treatment: str, state: AlarmState) -> None:
    ev = AlarmEvaluator({"Age": queue_age(TreatMissingData=treatment)})
    # evaluation range is 5 periods; only the newest has data (breaching)
    assert ev.evaluate(ages(None, None, None, None, 400), T0 + 4 * 60 + 30)["Age"] == state


def test_enough_real_datapoints_further_back_are_used_before_filling() -> None:
    ev = AlarmEvaluator({"Age": queue_age(TreatMissingData="breaching")})
    # 3 real datapoints in the 5-period range (2 missing): the 3 real ones decide, the treatment is unused.
    assert ev.evaluate(ages(10, None, 20, None, 30), T0 + 4 * 60 + 30)["Age"] == AlarmState.OK


def test_dimensions_must_match_exactly() -> None:
    ev = AlarmEvaluator({"Stuck": simple(TreatMissingData="missing")})
    per_agent = [dp("StuckRuns", 5, T0, {"service": "prfleet", "agent": "review"})]
    assert ev.evaluate(per_agent, T0 + 10)["Stuck"] == AlarmState.INSUFFICIENT_DATA
    other_service = [dp("StuckRuns", 5, T0, {"service": "other"})]
    assert ev.evaluate(other_service, T0 + 10)["Stuck"] == AlarmState.INSUFFICIENT_DATA
    assert ev.evaluate([dp("StuckRuns", 5, T0)], T0 + 10)["Stuck"] == AlarmState.ALARM


def test_periods_are_aligned_and_the_future_is_ignored() -> None:
    ev = AlarmEvaluator({"Stuck": simple(TreatMissingData="missing")})
    # a datapoint at exactly T0 + 300 opens the next period, so at T0 + 299 nothing is known yet
    assert ev.evaluate([dp("StuckRuns", 1, T0 + 300)], T0 + 299)["Stuck"] == AlarmState.INSUFFICIENT_DATA
    assert ev.evaluate([dp("StuckRuns", 1, T0 + 300)], T0 + 300)["Stuck"] == AlarmState.ALARM
    assert ev.status["Stuck"].values[-1] == (T0 + 300, 1.0)


# ----------------------------------------------------------------------------------------------- transitions


def test_transitions_are_recorded_only_on_change() -> None:
    ev = AlarmEvaluator({"Stuck": simple()})
    ev.evaluate([], T0)
    ev.evaluate([], T0 + 60)
    assert [(t.old_state, t.new_state, t.timestamp) for t in ev.transitions] == [
        (AlarmState.INSUFFICIENT_DATA, AlarmState.OK, T0)
    ]
    stuck = [dp("StuckRuns", 1, T0 + 120)]
    ev.evaluate(stuck, T0 + 120)
    assert [t.new_state for t in ev.last_transitions] == [AlarmState.ALARM]
    ev.evaluate(stuck, T0 + 180)
    assert ev.last_transitions == []
    ev.evaluate(stuck, T0 + 900)  # the stuck run left the evaluation range: back to OK
    assert [(t.old_state, t.new_state) for t in ev.transitions] == [
        (AlarmState.INSUFFICIENT_DATA, AlarmState.OK),
        (AlarmState.OK, AlarmState.ALARM),
        (AlarmState.ALARM, AlarmState.OK),
    ]
    alarm = ev.transitions[1]
    assert alarm.timestamp == T0 + 120
    assert alarm.reason.startswith("Threshold Crossed: 1 out of the last 1 datapoint [1.0 (")
    assert "greater than or equal to the threshold (1.0)" in alarm.reason


def test_actions_follow_the_definition() -> None:
    props = simple(AlarmActions=["arn:topic"], OKActions=["arn:topic"])
    ev = AlarmEvaluator({"Stuck": props})
    assert ev.actions("Stuck", AlarmState.ALARM) == ["arn:topic"]
    assert ev.actions("Stuck", "INSUFFICIENT_DATA") == []


def test_notification_body_has_the_cloudwatch_sns_shape() -> None:
    props = simple(
        "RunDuration",
        AlarmName="prfleet-latency",
        AlarmDescription="p95 above 120 s",
        Statistic=None,
        ExtendedStatistic="p95",
        Threshold=120_000,
        ComparisonOperator="GreaterThanThreshold",
        AlarmActions=["arn:aws:sns:us-east-1:123456789012:alerts"],
    )
    ev = AlarmEvaluator({"LatencyAlarm": props})
    ev.evaluate([dp("RunDuration", 200_000, T0)], T0 + 5)
    (transition,) = ev.last_transitions
    body = ev.notification(transition, region="us-east-1", account_id="111122223333")
    json.dumps(body)  # serialisable as the SNS Message
    assert body["AlarmName"] == "prfleet-latency"
    assert body["AlarmDescription"] == "p95 above 120 s"
    assert body["AWSAccountId"] == "111122223333"
    assert body["NewStateValue"] == "ALARM"
    assert body["OldStateValue"] == "INSUFFICIENT_DATA"
    assert body["NewStateReason"] == transition.reason
    assert body["StateChangeTime"] == "2026-11-18T11:15:05.000+0000"
    assert body["Region"] == "US East (N. Virginia)"
    assert body["AlarmArn"] == "arn:aws:cloudwatch:us-east-1:111122223333:alarm:prfleet-latency"
    assert body["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:alerts"]
    trigger = body["Trigger"]
    assert trigger["MetricName"] == "RunDuration"
    assert trigger["Namespace"] == "prfleet"
    assert trigger["StatisticType"] == "ExtendedStatistic"
    assert trigger["ExtendedStatistic"] == "p95"
    assert trigger["Dimensions"] == [{"value": "prfleet", "name": "service"}]
    assert (trigger["Period"], trigger["EvaluationPeriods"], trigger["Threshold"]) == (300, 1, 120_000.0)
    assert trigger["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarms.notification_subject(transition) == 'ALARM: "prfleet-latency" in US East (N. Virginia)'


def test_notification_for_a_metric_math_alarm_lists_its_queries() -> None:
    ev = AlarmEvaluator({"ErrorRate": error_rate()})
    ev.evaluate([], T0)
    body = ev.notification(ev.transitions[0])
    assert body["AlarmName"] == "ErrorRate"
    metrics = body["Trigger"]["Metrics"]
    assert [m["Id"] for m in metrics] == ["started", "failed", "rate"]
    assert [m["ReturnData"] for m in metrics] == [False, False, True]
    assert metrics[0]["MetricStat"]["Metric"]["MetricName"] == "RunsStarted"
    assert metrics[2]["Expression"].startswith("IF(")


@pytest.mark.parametrize(
    "broken",
    [
        {"ComparisonOperator": "LessThanLowerOrGreaterThanUpperThreshold"},
        {"TreatMissingData": "sometimes"},
        {"DatapointsToAlarm": 5},
        {"Period": 0},
        {"Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["JobsQueue", "QueueName"]}}]},
    ],
)
def test_definitions_it_cannot_evaluate_are_refused(broken: dict[str, Any]) -> None:
    with pytest.raises(AlarmDefinitionError):
        AlarmEvaluator({"Bad": simple(**broken)})


# ----------------------------------------------------------------------------------------------- EMF


def test_emf_parsing_of_real_powertools_output() -> None:
    metrics = events.make_metrics(namespace="prfleet", service="prfleet")
    metrics.clear_metrics()
    with capture() as cap:
        metrics.add_metric(name="RunDuration", unit="Milliseconds", value=1500)
        metrics.add_metric(name="RunDuration", unit="Milliseconds", value=2500)  # becomes a list value
        metrics.add_metric(name="RunsStarted", unit="Count", value=1)
        metrics.flush_metrics()
        with single_metric(
            name="StuckRuns", unit="Count", value=1, namespace="prfleet", default_dimensions=SERVICE
        ) as m:
            m.add_dimension(name="agent", value="docs")
        print("not json at all")
        print(json.dumps({"level": "INFO", "message": "a log line", "_aws_like": 1}))
    points = alarms.emf_to_datapoints(cap.lines)
    now = points[0].timestamp
    by = {(p.name, p.value, tuple(sorted(p.dimensions.items())), p.unit) for p in points}
    assert by == {
        ("RunDuration", 1500.0, (("service", "prfleet"),), "Milliseconds"),
        ("RunDuration", 2500.0, (("service", "prfleet"),), "Milliseconds"),
        ("RunsStarted", 1.0, (("service", "prfleet"),), "Count"),
        ("StuckRuns", 1.0, (("agent", "docs"), ("service", "prfleet")), "Count"),
    }
    assert all(p.namespace == "prfleet" for p in points)
    assert all(abs(p.timestamp - now) < 60 for p in points)


def test_emf_with_several_dimension_sets_yields_one_datapoint_per_set() -> None:
    line = json.dumps(
        {
            "_aws": {
                "Timestamp": int(T0 * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": "prfleet",
                        "Dimensions": [["service"], ["service", "agent"]],
                        "Metrics": [{"Name": "RunsFailed", "Unit": "Count"}],
                    }
                ],
            },
            "service": "prfleet",
            "agent": "tests",
            "RunsFailed": [1, 1],
        }
    )
    points = alarms.emf_to_datapoints([line])
    assert [(p.dimensions, p.value, p.timestamp) for p in points] == [
        ({"service": "prfleet"}, 1.0, T0),
        ({"service": "prfleet"}, 1.0, T0),
        ({"service": "prfleet", "agent": "tests"}, 1.0, T0),
        ({"service": "prfleet", "agent": "tests"}, 1.0, T0),
    ]


def test_emitted_events_drive_the_alarm_end_to_end() -> None:
    """A failed run, published by the Emitter, read back from stdout and evaluated like CloudWatch would."""
    metrics = events.make_metrics(namespace="prfleet", service="prfleet")
    metrics.clear_metrics()
    logger = events.make_logger("prfleet-alarms-test")
    with capture() as cap:
        for i in range(6):
            e = events.Emitter(logger, metrics, run_id=f"e2e-{i}", agent="review")
            e.emit("start")
            e.emit("complete", status="failed" if i < 2 else "succeeded", duration_ms=1000)
        e.flush()
    points = cap.datapoints()
    now = max(p.timestamp for p in points)
    ev = AlarmEvaluator({"ErrorRate": error_rate(EvaluationPeriods=1, DatapointsToAlarm=1)})
    assert ev.evaluate(points, now)["ErrorRate"] == AlarmState.ALARM  # 2 of 6 = 33 %
    assert ev.status["ErrorRate"].values[-1][1] == pytest.approx(100 * 2 / 6)


# ----------------------------------------------------------------------------------------------- template


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation short tags: !Ref X -> "X", !GetAtt X.Attr -> "X", others -> their text."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "GetAtt":
        return (value if isinstance(value, str) else ".".join(value)).split(".")[0]
    return value if isinstance(value, str) else json.dumps(value)


_CfnLoader.add_multi_constructor("!", _tag)
TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def template_alarms() -> dict[str, dict[str, Any]]:
    resources = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)["Resources"]  # noqa: S506 - SafeLoader subclass
    return {k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}


@pytest.mark.skipif(not TEMPLATE.exists(), reason="no template.yaml")
def test_every_template_alarm_can_be_evaluated_and_starts_quiet() -> None:
    definitions = template_alarms()
    assert definitions, "the template defines alarms"
    ev = AlarmEvaluator(definitions)
    states = ev.evaluate([], T0)
    # With no traffic, nothing pages: only alarms that treat missing data as missing lack data.
    assert AlarmState.ALARM not in states.values()
    for key, state in states.items():
        missing = definitions[key].get("TreatMissingData", "missing") == "missing"
        expected = AlarmState.INSUFFICIENT_DATA if missing else AlarmState.OK
        assert state == expected, key


@pytest.mark.skipif(not TEMPLATE.exists(), reason="no template.yaml")
def test_template_error_rate_alarm_fires_on_failed_runs_only_with_volume() -> None:
    definitions = {k: v for k, v in template_alarms().items() if "Metrics" in v}
    assert definitions, "the template has a metric-math error-rate alarm"
    ev = AlarmEvaluator(definitions)
    quiet = ev.evaluate(rate_points(3, 3, T0), T0 + 60)  # 100 % of 3 runs: below the volume guard
    assert set(quiet.values()) == {AlarmState.OK}
    loud = ev.evaluate(rate_points(20, 8, T0), T0 + 60)  # 40 % of 20 runs
    assert set(loud.values()) == {AlarmState.ALARM}
