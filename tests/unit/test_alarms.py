"""prfleet_local.stack.alarms: CloudWatch alarm semantics applied to the template's alarm definitions, locally."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_lambda_powertools import single_metric

from prfleet.observability import events
from prfleet.observability.logger import make_logger
from prfleet.observability.metrics import make_metrics
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


def error_rate(period: int = 300, **overrides: Any) -> dict[str, Any]:
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
                "Period": period,
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
                "Expression": "IF(FILL(started, 0) >= 5, 100 * FILL(failed, 0) / started, 0)",
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
    assert ev.status["Latency"].values[-1] == (T0 - 240, 190_000.0)
    # 19 fast ones and 1 slow, 5 minutes later: p95 is fast.
    values = [10_000.0] * 19 + [200_000.0]
    points = [dp("RunDuration", v, T0 + 300 + i, unit="Milliseconds") for i, v in enumerate(values)]
    assert ev.evaluate(points, T0 + 360)["Latency"] == AlarmState.OK


def test_unit_must_match_when_the_alarm_names_one() -> None:
    ev = AlarmEvaluator(
        {"Latency": simple("RunDuration", Unit="Milliseconds", Statistic="Maximum", Threshold=5)}
    )
    states = ev.evaluate([dp("RunDuration", 10, T0, unit="Seconds")], T0 + 60)
    # the Seconds datapoint is another metric, so the period is missing (-> notBreaching)
    assert states["Latency"] == AlarmState.OK


@pytest.mark.parametrize(
    ("stat", "needed"),
    [("p99", 1000), ("p95", 200), ("p90", 100), ("p50", 20), ("p25", 40), ("p10", 100), ("p100", None)],
)
def test_percentiles_with_low_samples_thresholds(stat: str, needed: float | None) -> None:
    """percentiles-with-low-samples: fewer than 10/(1-p) samples for 0.5 <= p < 1 ("fewer than 1000 samples for an
    alarm on a p99 percentile"), 10/p for p < 0.5."""
    assert alarms.low_sample_threshold(stat) == needed


def test_percentiles_with_low_samples_ignore_keeps_the_state_below_10_over_1_minus_p() -> None:
    props = simple("RunDuration", Statistic=None, ExtendedStatistic="p95", Threshold=100)
    props["EvaluateLowSampleCountPercentile"] = "ignore"
    ev = AlarmEvaluator({"Latency": props})
    # 199 samples of a breaching value: fewer than 10 / (1 - 0.95) = 200, so the state is not changed.
    ev.evaluate([dp("RunDuration", 500, T0 + i % 60) for i in range(199)], T0 + 60)
    assert ev.states["Latency"] == AlarmState.INSUFFICIENT_DATA
    # 200 samples are enough: evaluated.
    ev.evaluate([dp("RunDuration", 500, T0 + i % 60) for i in range(200)], T0 + 60)
    assert ev.states["Latency"] == AlarmState.ALARM
    # "evaluate" (the default) evaluates a single sample.
    del props["EvaluateLowSampleCountPercentile"]
    ev = AlarmEvaluator({"Latency": props})
    assert ev.evaluate([dp("RunDuration", 500, T0)], T0 + 60)["Latency"] == AlarmState.ALARM


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
    assert ev.evaluate(points, T0 + 900)["ErrorRate"] == state


def test_error_rate_needs_all_three_periods_breaching() -> None:
    ev = AlarmEvaluator({"ErrorRate": error_rate()})
    points = rate_points(10, 5, T0) + rate_points(10, 5, T0 + 300) + rate_points(10, 1, T0 + 600)
    assert ev.evaluate(points, T0 + 900)["ErrorRate"] == AlarmState.OK
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
        ("a > b || b >= 3 && a < 1", 0.0),
        ("IF(a > 1, 100, 7)", 100.0),
        ("IF(a > 5, 100, 7)", 7.0),
        ("IF(a > 5, 100)", None),
        ("ABS(a - b)", 1.0),
        ("FILL(m, 0) + a", 2.0),
        ("m + a", 2.0),  # between two series a missing value is 0 (using-metric-math, basic arithmetic)
        ("m + m", None),  # missing in both: no datapoint
        ("m * 2", None),  # a series and a scalar: only where the series has a value
        ("m < a", 1.0),  # comparisons between two series: the missing one is 0
        ("1.5e1 - .5", 14.5),
    ],
)
def test_metric_math_expressions(expression: str, expected: float | None) -> None:
    variables = {"a": (2.0,), "b": (3.0,), "m": (None,)}
    result = alarms.evaluate_expression(expression, variables, 1)
    assert (result if isinstance(result, tuple) else (result,)) == (expected,)


def test_using_metric_math_comparison_example() -> None:
    """using-metric-math, "Comparison and logical operators": metric1 [30, 20, 0, 0], metric2 [20, -, 20, -]."""
    v = {"metric1": (30.0, 20.0, 0.0, 0.0), "metric2": (20.0, None, 20.0, None)}
    assert alarms.evaluate_expression("(metric1 < metric2)", v, 4) == (0.0, 0.0, 1.0, 0.0)
    assert alarms.evaluate_expression("(metric1 >= 30)", v, 4) == (1.0, 0.0, 0.0, 0.0)
    assert alarms.evaluate_expression("(metric1 > 15 AND metric2 > 15)", v, 4) == (1.0, 0.0, 0.0, 0.0)


def test_using_metric_math_if_examples() -> None:
    """using-metric-math, "Using IF expressions": the three example tables."""
    v = {
        "metric1": (1.0, 1.0, 0.0, 0.0, None),
        "metric2": (30.0, None, 0.0, 0.0, 30.0),
        "metric3": (0.0, 0.0, 20.0, None, 20.0),
    }
    assert alarms.evaluate_expression("IF(metric1, metric2, metric3)", v, 5) == (30.0, 0.0, 20.0, None, None)
    assert alarms.evaluate_expression("IF(metric1, 5, metric3)", v, 5) == (5.0, 5.0, 20.0, None, None)
    assert alarms.evaluate_expression("IF(metric1, metric2, 5)", v, 5) == (30.0, 0.0, 5.0, 5.0, None)
    assert alarms.evaluate_expression("IF(metric1, metric2)", v, 5) == (30.0, 0.0, None, None, None)
    assert alarms.evaluate_expression("IF(1, metric2)", v, 5) == v["metric2"]
    assert alarms.evaluate_expression("IF(0, metric2)", v, 5) == (None,) * 5


def test_using_metric_math_division_by_zero_drops_the_datapoint() -> None:
    v = {"a": (1.0, 2.0), "b": (0.0, 4.0)}
    assert alarms.evaluate_expression("a / b", v, 2) == (None, 0.5)


def test_using_metric_math_diff() -> None:
    """DIFF: "the difference between each value in the time series and the preceding value"."""
    v = {"m": (1.0, 1.0, 3.0, None, 4.0)}
    assert alarms.evaluate_expression("DIFF(m)", v, 5) == (None, 0.0, 2.0, None, 1.0)


def test_fill_repeat_and_linear() -> None:
    m = (1.0, None, None, 4.0, None)
    assert alarms.evaluate_expression("FILL(m, REPEAT)", {"m": m}, 5) == (1.0, 1.0, 1.0, 4.0, 4.0)
    assert alarms.evaluate_expression("FILL(m, LINEAR)", {"m": m}, 5) == (1.0, 2.0, 3.0, 4.0, None)


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "a +",
        "unknown * 2",
        "SEARCH('x', 'Sum', 300)",
        "a; b",
        "IF(a)",
        "NOT a",  # not an operator the page lists (comparison: == != <= >= < >; logical: AND && OR ||)
        "!a",
    ],
)
def test_metric_math_refuses_what_it_cannot_parse(expression: str) -> None:
    with pytest.raises(AlarmDefinitionError):
        alarms.evaluate_expression(expression, {"a": (1.0,), "b": (2.0,)}, 1)


def test_an_alarm_expression_must_give_a_time_series() -> None:
    props = error_rate()
    props["Metrics"][2]["Expression"] = "IF(1, 2, 3)"
    with pytest.raises(AlarmDefinitionError, match="not a time series"):
        AlarmEvaluator({"ErrorRate": props}).evaluate([], T0)


def test_expressions_may_use_other_expressions() -> None:
    props = error_rate()
    props["Metrics"][2] = {"Id": "fraction", "Expression": "FILL(failed, 0) / started", "ReturnData": False}
    props["Metrics"].append({"Id": "pct", "Expression": "100 * fraction"})
    ev = AlarmEvaluator({"ErrorRate": props})
    points = [p for k in range(3) for p in rate_points(10, 5, T0 + 300 * k)]
    assert ev.evaluate(points, T0 + 900)["ErrorRate"] == AlarmState.ALARM


# ----------------------------------------------------------------------- alarm-evaluation: the sliding window


def queue_age(**overrides: Any) -> dict[str, Any]:
    props = simple(
        "ApproximateAgeOfOldestMessage",
        Namespace="AWS/SQS",
        Dimensions=[{"Name": "QueueName", "Value": "prfleet-jobs"}],
        Statistic="Maximum",
        Period=300,
        EvaluationPeriods=3,
        DatapointsToAlarm=3,
        Threshold=300,
        ComparisonOperator="GreaterThanThreshold",
    )
    props.update(overrides)
    return props


def range_points(pattern: str, *, period: int = 300, now: float = T0) -> list[Datapoint]:
    """The docs' notation, oldest first: 0 a non-breaching datapoint (10), X a breaching one (400), - missing."""
    pattern = pattern.replace(" ", "")
    starts = alarms.window(now, period, len(pattern))
    values = {"0": 10.0, "X": 400.0}
    return [
        Datapoint(
            "AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": "prfleet-jobs"}, start + 1, values[c]
        )
        for start, c in zip(starts, pattern, strict=True)
        if c != "-"
    ]


def test_alarm_evaluation_the_window_slides_by_the_minute_and_excludes_the_minute_in_progress() -> None:
    """alarm-evaluation ("Evaluating an alarm"): Period 5 minutes, 1 evaluation period: at the end of minute 5 the
    alarm evaluates minutes 1 to 5, at the end of minute 6 minutes 2 to 6."""
    assert alarms.window(T0 + 59, 300, 1) == [T0 - 300]  # still minute T0..T0+60 in progress
    assert alarms.window(T0 + 60, 300, 1) == [T0 - 240]  # the window moved one minute, not one period
    assert alarms.window(T0 + 60, 300, 3) == [T0 - 840, T0 - 540, T0 - 240]
    ev = AlarmEvaluator({"Stuck": simple(TreatMissingData="missing")})
    # a datapoint in the minute in progress is not evaluated yet ...
    assert ev.evaluate([dp("StuckRuns", 1, T0 + 10)], T0 + 30)["Stuck"] == AlarmState.INSUFFICIENT_DATA
    # ... it is at the end of its minute, and for the next 5 minutes of evaluations, whatever the boundaries
    for minute in range(1, 6):
        assert ev.evaluate([dp("StuckRuns", 1, T0 + 10)], T0 + 60 * minute)["Stuck"] == AlarmState.ALARM
    # alarms-and-missing-data: "CloudWatch alarms might repeatedly re-evaluate the last set of data points for a
    # period of time after the metric has stopped flowing": the datapoint stays the most recent real one in the
    # evaluation range (EvaluationPeriods + 2 = 3 periods, 15 minutes) ...
    assert ev.evaluate([dp("StuckRuns", 1, T0 + 10)], T0 + 900)["Stuck"] == AlarmState.ALARM
    # ... and once it left the range, all is missing.
    assert ev.evaluate([dp("StuckRuns", 1, T0 + 10)], T0 + 960)["Stuck"] == AlarmState.INSUFFICIENT_DATA


def test_alarm_evaluation_catches_up_the_minutes_a_caller_skipped() -> None:
    """CloudWatch evaluates every minute (alarm-evaluation). The template's queue-age alarm (Maximum, 1 of 1 over
    60 s) sees a message that waited 400 s at the end of its minute; a caller whose clock jumped ten minutes on
    must still page, not only evaluate the range at its own instant, where newer samples hide the breach."""
    ev = AlarmEvaluator({"Age": queue_age(Period=60, EvaluationPeriods=1, DatapointsToAlarm=1)})
    age = lambda ts, value: Datapoint(  # noqa: E731 - the queue's age sample
        "AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": "prfleet-jobs"}, ts, value
    )
    assert ev.evaluate([age(T0 - 30, 0.0)], T0 + 5)["Age"] == AlarmState.OK
    points = [age(T0 - 30, 0.0), age(T0 + 20, 400.0), *(age(T0 + 60 * k + 1, 0.0) for k in range(1, 11))]
    assert ev.evaluate(points, T0 + 630)["Age"] == AlarmState.OK  # at its own instant the breach is hidden
    assert [(t.new_state, t.timestamp) for t in ev.last_transitions] == [
        (AlarmState.ALARM, T0 + 60),  # the minute after the breach, as CloudWatch would have evaluated it
        (AlarmState.OK, T0 + 120),
    ]
    # every minute with a sample up to the last whole one (T0 + 600 is the range of the evaluation at T0 + 630)
    assert ev.evaluated_at == [T0 + 5, *(T0 + 60 * k for k in range(1, 10)), T0 + 630]
    # a clock that goes back evaluates at its own instant only
    assert ev.evaluate(points, T0 + 200)["Age"] == AlarmState.OK
    assert ev.evaluated_at[-1] == T0 + 200 and not ev.last_transitions


def test_alarm_evaluation_a_15_minute_rate_does_not_reset_at_the_quarter_hour() -> None:
    """The issue's case: with aligned 15-minute buckets the error-rate alarm went OK at every quarter hour; with the
    docs' sliding window the last 15 minutes are evaluated at every minute."""
    ev = AlarmEvaluator({"ErrorRate": error_rate(EvaluationPeriods=1, DatapointsToAlarm=1, period=900)})
    points = rate_points(10, 5, T0 + 800)  # 50 % of 10 runs, 100 s before a quarter-hour boundary (T0 + 900)
    assert ev.evaluate(points, T0 + 900)["ErrorRate"] == AlarmState.ALARM
    assert ev.evaluate(points, T0 + 960)["ErrorRate"] == AlarmState.ALARM  # a new quarter hour: still ALARM
    assert (
        ev.evaluate(points, T0 + 1680)["ErrorRate"] == AlarmState.ALARM
    )  # the runs are 15 min old at T0 + 1700
    assert ev.evaluate(points, T0 + 1740)["ErrorRate"] == AlarmState.OK


def test_alarm_evaluation_m_out_of_n_need_not_be_consecutive() -> None:
    """alarm-evaluation: "The breaching data points don't have to be consecutive"."""
    two_of_three = queue_age(DatapointsToAlarm=2)
    for pattern, state in [("X0X", AlarmState.ALARM), ("0XX", AlarmState.ALARM), ("X00", AlarmState.OK)]:
        ev = AlarmEvaluator({"Age": two_of_three})
        assert ev.evaluate(range_points("00" + pattern), T0)["Age"] == state, pattern


# ------------------------------------------------------------- alarms-and-missing-data: the docs' two tables

MISSING, IGNORE, BREACHING, NOT_BREACHING = "missing", "ignore", "breaching", "notBreaching"
ALM, OK_, INS, KEEP = AlarmState.ALARM, AlarmState.OK, AlarmState.INSUFFICIENT_DATA, "retain current state"

# "Datapoints to Alarm and Evaluation Periods are both 3. CloudWatch retrieves the 5 most recent data points"
THREE_OF_THREE = [
    ("0 - X - X", {MISSING: OK_, IGNORE: OK_, BREACHING: OK_, NOT_BREACHING: OK_}),
    ("0 - - - -", {MISSING: OK_, IGNORE: OK_, BREACHING: OK_, NOT_BREACHING: OK_}),
    ("- - - - -", {MISSING: INS, IGNORE: KEEP, BREACHING: ALM, NOT_BREACHING: OK_}),
    ("0 X X - X", {MISSING: ALM, IGNORE: ALM, BREACHING: ALM, NOT_BREACHING: ALM}),
    ("- - X - -", {MISSING: ALM, IGNORE: KEEP, BREACHING: ALM, NOT_BREACHING: OK_}),
]
# "Datapoints to Alarm is only 2 while Evaluation Periods is 3. This is a 2 out of 3, M out of N alarm"
TWO_OF_THREE = [
    ("0 - X - X", {MISSING: ALM, IGNORE: ALM, BREACHING: ALM, NOT_BREACHING: ALM}),
    ("0 0 X 0 X", {MISSING: ALM, IGNORE: ALM, BREACHING: ALM, NOT_BREACHING: ALM}),
    ("0 - X - -", {MISSING: OK_, IGNORE: OK_, BREACHING: ALM, NOT_BREACHING: OK_}),
    ("- - - - 0", {MISSING: OK_, IGNORE: OK_, BREACHING: ALM, NOT_BREACHING: OK_}),
    ("- - - X -", {MISSING: ALM, IGNORE: KEEP, BREACHING: ALM, NOT_BREACHING: OK_}),
]


def _table_case(m: int, pattern: str, treatment: str, expected: Any) -> None:
    for start in (AlarmState.OK, AlarmState.ALARM):  # "retain current state" must hold from either state
        ev = AlarmEvaluator({"Age": queue_age(DatapointsToAlarm=m, TreatMissingData=treatment)})
        ev.status["Age"].state = start
        got = ev.evaluate(range_points(pattern), T0)["Age"]
        assert got == (start if expected == KEEP else expected), (m, pattern, treatment, start)


@pytest.mark.parametrize(
    ("pattern", "treatment", "expected"),
    [(p, t, e) for p, row in THREE_OF_THREE for t, e in row.items()],
)
def test_alarms_and_missing_data_first_table_3_of_3(pattern: str, treatment: str, expected: Any) -> None:
    _table_case(3, pattern, treatment, expected)


@pytest.mark.parametrize(
    ("pattern", "treatment", "expected"),
    [(p, t, e) for p, row in TWO_OF_THREE for t, e in row.items()],
)
def test_alarms_and_missing_data_second_table_2_of_3(pattern: str, treatment: str, expected: Any) -> None:
    _table_case(2, pattern, treatment, expected)


def test_alarms_and_missing_data_premature_alarm_state_is_avoided() -> None:
    """ "Avoiding premature transitions to alarm state": with - - - - X or - - - X - (3 of 3) the alarm does not go
    into ALARM; once the breaching datapoint is 3 periods old (- - X - -) it does, even with missing. The state
    it takes meanwhile is the earlier edition's table row "- - - - X: Insufficient data / Retain current state"."""
    for pattern in ("- - - - X", "- - - X -"):
        ev = AlarmEvaluator({"Age": queue_age(TreatMissingData="missing")})
        assert ev.evaluate(range_points(pattern), T0)["Age"] == AlarmState.INSUFFICIENT_DATA, pattern
    ev = AlarmEvaluator({"Age": queue_age(TreatMissingData="missing")})
    assert ev.evaluate(range_points("X - - - -"), T0)["Age"] == AlarmState.ALARM


def test_alarms_and_missing_data_the_default_treatment_is_missing() -> None:
    props = queue_age()
    del props["TreatMissingData"]
    assert AlarmEvaluator({"Age": props}).evaluate([], T0)["Age"] == AlarmState.INSUFFICIENT_DATA


def test_alarms_and_missing_data_ignore_keeps_the_alarm_state_when_data_stops() -> None:
    ev = AlarmEvaluator({"Age": queue_age(TreatMissingData="ignore")})
    assert ev.evaluate(range_points("- - X X X"), T0)["Age"] == AlarmState.ALARM
    assert ev.evaluate([], T0 + 3600)["Age"] == AlarmState.ALARM


def test_dimensions_must_match_exactly() -> None:
    ev = AlarmEvaluator({"Stuck": simple(TreatMissingData="missing")})
    per_agent = [dp("StuckRuns", 5, T0, {"service": "prfleet", "agent": "review"})]
    assert ev.evaluate(per_agent, T0 + 60)["Stuck"] == AlarmState.INSUFFICIENT_DATA
    other_service = [dp("StuckRuns", 5, T0, {"service": "other"})]
    assert ev.evaluate(other_service, T0 + 60)["Stuck"] == AlarmState.INSUFFICIENT_DATA
    assert ev.evaluate([dp("StuckRuns", 5, T0)], T0 + 60)["Stuck"] == AlarmState.ALARM


# ----------------------------------------------------------------------------------------------- transitions


def test_transitions_are_recorded_only_on_change() -> None:
    ev = AlarmEvaluator({"Stuck": simple()})
    ev.evaluate([], T0)
    ev.evaluate([], T0 + 60)
    assert [(t.old_state, t.new_state, t.timestamp) for t in ev.transitions] == [
        (AlarmState.INSUFFICIENT_DATA, AlarmState.OK, T0)
    ]
    stuck = [dp("StuckRuns", 1, T0 + 120)]
    ev.evaluate(stuck, T0 + 180)
    assert [t.new_state for t in ev.last_transitions] == [AlarmState.ALARM]
    ev.evaluate(stuck, T0 + 240)
    assert ev.last_transitions == []
    ev.evaluate(stuck, T0 + 1020)  # still the most recent real datapoint of the 15-minute range
    assert ev.last_transitions == []
    ev.evaluate(stuck, T0 + 1080)  # the stuck run left the evaluation range: back to OK
    assert [(t.old_state, t.new_state) for t in ev.transitions] == [
        (AlarmState.INSUFFICIENT_DATA, AlarmState.OK),
        (AlarmState.OK, AlarmState.ALARM),
        (AlarmState.ALARM, AlarmState.OK),
    ]
    alarm = ev.transitions[1]
    assert alarm.timestamp == T0 + 180
    assert alarm.reason.startswith("Threshold Crossed: 1 out of the last 1 datapoint [1.0 (")
    assert "greater than or equal to the threshold (1.0)" in alarm.reason


def test_a_transition_reads_as_one_console_line() -> None:
    ev = AlarmEvaluator({"Stuck": simple(AlarmName="prfleet-local-StuckRunsAlarm")})
    ev.evaluate([dp("StuckRuns", 1, T0)], T0 + 60)
    line = alarms.transition_line(ev.last_transitions[0])
    assert line.startswith(
        "11:16:00 alarm prfleet-local-StuckRunsAlarm: INSUFFICIENT_DATA -> ALARM: Threshold Crossed"
    )
    assert "\n" not in line


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
    ev.evaluate([dp("RunDuration", 200_000, T0)], T0 + 60)
    (transition,) = ev.last_transitions
    body = ev.notification(transition, region="us-east-1", account_id="111122223333")
    json.dumps(body)  # serialisable as the SNS Message
    assert body["AlarmName"] == "prfleet-latency"
    assert body["AlarmDescription"] == "p95 above 120 s"
    assert body["AWSAccountId"] == "111122223333"
    assert body["NewStateValue"] == "ALARM"
    assert body["OldStateValue"] == "INSUFFICIENT_DATA"
    assert body["NewStateReason"] == transition.reason
    assert body["StateChangeTime"] == "2026-11-18T11:16:00.000+0000"
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
    metrics = make_metrics(namespace="prfleet", service="prfleet")
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
    metrics = make_metrics(namespace="prfleet", service="prfleet")
    metrics.clear_metrics()
    logger = make_logger("prfleet-alarms-test")
    with capture() as cap:
        for i in range(6):
            e = events.Emitter(logger, metrics, run_id=f"e2e-{i}", agent="review")
            e.emit("start")
            e.emit("complete", status="failed" if i < 2 else "succeeded", duration_ms=1000)
        e.flush()
    points = cap.datapoints()
    now = max(p.timestamp for p in points) + 60  # the next evaluation after the minute the runs ended in
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


def template_alarm(name: str) -> AlarmEvaluator:
    return AlarmEvaluator({name: template_alarms()[name]})


def lambda_errors(function: str, count: int, at: float) -> list[Datapoint]:
    return [Datapoint("AWS/Lambda", "Errors", {"FunctionName": function}, at + i, 1.0) for i in range(count)]


def test_template_error_rate_alarm_fires_on_failed_runs_only_with_volume() -> None:
    ev = template_alarm("ErrorRateAlarm")
    assert ev.evaluate(rate_points(3, 3, T0), T0 + 60)["ErrorRateAlarm"] == AlarmState.OK  # 3 runs: below 5
    assert ev.evaluate(rate_points(20, 8, T0), T0 + 60)["ErrorRateAlarm"] == AlarmState.ALARM  # 40 % of 20


def test_template_error_rate_alarm_counts_invocations_killed_before_they_flushed() -> None:
    """Every run times out: no RunsStarted, no RunsFailed ever reaches CloudWatch, only AWS/Lambda Errors."""
    ev = template_alarm("ErrorRateAlarm")
    assert ev.evaluate(lambda_errors("AgentFunction", 5, T0), T0 + 60)["ErrorRateAlarm"] == AlarmState.ALARM
    # One timeout among 10 flushed runs is 1 / 11 = 9 %: no page.
    ev = template_alarm("ErrorRateAlarm")
    points = rate_points(10, 0, T0) + lambda_errors("AgentFunction", 1, T0)
    assert ev.evaluate(points, T0 + 60)["ErrorRateAlarm"] == AlarmState.OK
    assert ev.status["ErrorRateAlarm"].values[-1][1] == pytest.approx(100 / 11)
    # Another function's errors are not agent runs.
    ev = template_alarm("ErrorRateAlarm")
    assert ev.evaluate(lambda_errors("WebhookFunction", 9, T0), T0 + 60)["ErrorRateAlarm"] == AlarmState.OK


def durations(values: list[float], at: float) -> list[Datapoint]:
    return [dp("RunDuration", v, at + i % 50, unit="Milliseconds") for i, v in enumerate(values)]


def test_template_latency_alarm_one_slow_run_never_pages() -> None:
    ev = template_alarm("LatencyAlarm")
    assert ev.evaluate(durations([200_000.0], T0), T0 + 60)["LatencyAlarm"] == AlarmState.OK  # 1 run
    slow_few = durations([200_000.0] * 19, T0)  # 19 slow runs: below the 20-run guard
    assert template_alarm("LatencyAlarm").evaluate(slow_few, T0 + 60)["LatencyAlarm"] == AlarmState.OK
    one_in_20 = durations([10_000.0] * 19 + [200_000.0], T0)  # p95 of 20 is the second slowest
    assert template_alarm("LatencyAlarm").evaluate(one_in_20, T0 + 60)["LatencyAlarm"] == AlarmState.OK


def slot_runs(
    duration_s: float, *, slots: int, start: float, until: float, gap_s: float = 2.0
) -> list[Datapoint]:
    """RunDuration as `slots` consumers running runs of `duration_s` back to back (each `gap_s` apart) emit it:
    one datapoint per run, when it completes. The consumers' phases are spread over a run (as they drift apart in
    steady state), the worst case for how many runs a window holds: floor(W / d) per consumer, never ceil."""
    points = []
    for slot in range(slots):
        t = start + slot * (duration_s + gap_s) / slots + duration_s
        while t < until:
            points.append(dp("RunDuration", duration_s * 1000, t, unit="Milliseconds"))
            t += duration_s + gap_s
    return points


def template_latency_facts() -> dict[str, float]:
    """What the LatencyAlarm's arithmetic rests on, read from the template and the runner (not restated)."""
    from prfleet.pipeline import runner

    resources = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    latency = resources["Resources"]["LatencyAlarm"]["Properties"]
    (guard_expr,) = [q["Expression"] for q in latency["Metrics"] if q["Id"] == "latency"]
    (period,) = {q["MetricStat"]["Period"] for q in latency["Metrics"] if "MetricStat" in q}
    return {
        "period": float(period),
        "guard": float(guard_expr.split(">=")[1].split(",")[0]),
        "threshold_s": float(latency["Threshold"]) / 1000,
        "concurrency": float(resources["Parameters"]["AgentMaxConcurrency"]["Default"]),
        "timeout": float(resources["Resources"]["AgentFunction"]["Properties"]["Timeout"]),
        "margin": float(runner.DEADLINE_MARGIN_S),
    }


def test_template_latency_alarm_window_holds_the_guard_at_every_duration_up_to_the_timeout() -> None:
    """The arithmetic of the template's comment: at the default concurrency, a window holds at least the guard's
    20 runs of the slowest duration a run can have (Timeout - the runner's margin), and of the Timeout itself."""
    f = template_latency_facts()
    assert f["guard"] == 20 and f["threshold_s"] == 120 and f["concurrency"] == 5
    slowest = f["timeout"] - f["margin"]
    assert slowest == 280
    for d in range(int(f["threshold_s"]) + 1, int(f["timeout"]) + 1):
        assert f["concurrency"] * (f["period"] // d) >= f["guard"], d
    assert f["concurrency"] * (f["period"] // slowest) == 30
    # The former 15-minute window: blind from 226 s on (5 x floor(900 / 226) = 15 < 20).
    assert f["concurrency"] * (900 // 225) == 20 and f["concurrency"] * (900 // 226) == 15


@pytest.mark.parametrize("duration_s", [130, 200, 250, 279])
def test_template_latency_alarm_sustained_slow_runs_page_at_the_default_concurrency(duration_s: int) -> None:
    """5 consumers (AgentMaxConcurrency's default) run slow runs back to back for 40 minutes; the alarm, evaluated
    every minute as CloudWatch does, pages once 20 of them finished within its window, and stays in ALARM."""
    f = template_latency_facts()
    points = slot_runs(duration_s, slots=int(f["concurrency"]), start=T0, until=T0 + 2400)
    ev = template_alarm("LatencyAlarm")
    fired_at = None
    for minute in range(1, 41):
        state = ev.evaluate(points, T0 + 60 * minute)["LatencyAlarm"]
        if state == AlarmState.ALARM and fired_at is None:
            fired_at = minute
        if fired_at is not None:
            assert state == AlarmState.ALARM, minute  # sustained slowness keeps it paging
    assert fired_at is not None, f"{duration_s} s runs at concurrency 5 never paged"
    # It fires when the 20th slow run finished (the 4th of the last consumer, at most 5 runs' time), not later.
    assert fired_at <= 5 * (duration_s + 2) / 60 + 2
    # With the former 15-minute window, runs over 225 s could not page: fewer than 20 fit in it (it could only
    # flap, in the minutes when the consumers happened to run in step).
    old = {**template_alarms()["LatencyAlarm"]}
    old["Metrics"] = [
        {**q, "MetricStat": {**q["MetricStat"], "Period": 900}} if "MetricStat" in q else q
        for q in old["Metrics"]
    ]
    ev_old = AlarmEvaluator({"LatencyAlarm": old})
    seen = {str(ev_old.evaluate(points, T0 + 60 * minute)["LatencyAlarm"]) for minute in range(1, 41)}
    assert ("ALARM" in seen) == (duration_s <= 225)
    # With CloudWatch's own low-sample rule for p95 instead, 200 samples per period: never in 30 minutes.
    assert alarms.low_sample_threshold("p95") == 200 > f["concurrency"] * f["period"] / f["threshold_s"]


@pytest.mark.parametrize("fast_runs", [0, 5, 19, 20, 38, 60])
def test_template_latency_alarm_one_slow_run_at_the_timeout_never_pages(fast_runs: int) -> None:
    """However many fast runs share the window, one run at the slowest possible duration is no page."""
    points = durations([5_000.0] * fast_runs + [280_000.0], T0)
    ev = template_alarm("LatencyAlarm")
    for minute in range(1, 35):
        assert ev.evaluate(points, T0 + 60 * minute)["LatencyAlarm"] == AlarmState.OK, minute


def dlq_depth(depths: list[float], now: float, in_flight: list[float] | None = None) -> list[Datapoint]:
    """One SQS sample per minute, as SQS publishes them: the DLQ's visible and (optionally) in-flight counts."""
    starts = alarms.window(now, 60, len(depths))
    points = [
        Datapoint("AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": "JobsDLQ"}, s + 1, d)
        for s, d in zip(starts, depths, strict=True)
    ]
    points += [
        Datapoint("AWS/SQS", "ApproximateNumberOfMessagesNotVisible", {"QueueName": "JobsDLQ"}, s + 1, d)
        for s, d in zip(starts, in_flight or [], strict=False)
    ]
    return points


def run_minutes(
    alarm: str, visible: list[float], in_flight: list[float] | None = None
) -> tuple[AlarmEvaluator, int]:
    """Evaluate `alarm` once a minute over the samples so far; returns the evaluator and the pages (-> ALARM)."""
    ev = template_alarm(alarm)
    pages = 0
    for minute in range(len(visible)):
        now = T0 + 60 * (minute + 1)
        flight = in_flight[: minute + 1] if in_flight is not None else None
        ev.evaluate(dlq_depth(visible[: minute + 1], now, flight), now)
        pages += sum(1 for t in ev.last_transitions if t.new_state == AlarmState.ALARM)
    return ev, pages


def test_template_dlq_alarm_pages_for_every_new_dead_letter() -> None:
    ev, pages = run_minutes("JobsDLQAlarm", [0, 1, 1, 1, 2, 2, 3, 3, 3])  # three dead letters, minutes apart
    assert pages == 3
    assert ev.states["JobsDLQAlarm"] == AlarmState.OK  # no new dead letter in the last minute
    # An idle DLQ publishes nothing; its first dead letter still counts (each count FILLed with 0 before DIFF).
    ev = template_alarm("JobsDLQAlarm")
    only_now = dlq_depth([1.0], T0)
    assert ev.evaluate(only_now, T0)["JobsDLQAlarm"] == AlarmState.ALARM


@pytest.mark.parametrize("alarm", ["JobsDLQAlarm", "PrDLQAlarm"])
def test_template_dlq_alarm_reading_the_dead_letters_is_no_new_page(alarm: str) -> None:
    """The runbook's first step receives the DLQ's messages (visibility timeout 30 s): they go from visible to in
    flight and back (sqs-available-cloudwatch-metrics.html: NotVisible = received, not yet deleted or expired).
    Visible alone reads 3 -> 0 -> 3, and its DIFF paged for a "new" +3; visible + in flight stays 3."""
    queue = "JobsDLQ" if alarm == "JobsDLQAlarm" else "PrDLQ"
    definition = template_alarms()[alarm]
    queries = {q["Id"]: q for q in definition["Metrics"]}
    assert queries["visible"]["MetricStat"]["Metric"]["Dimensions"] == [{"Name": "QueueName", "Value": queue}]
    assert queries["inflight"]["MetricStat"]["Metric"]["Dimensions"] == [
        {"Name": "QueueName", "Value": queue}
    ]

    def samples(visible: list[float], in_flight: list[float], now: float) -> list[Datapoint]:
        return [
            Datapoint(p.namespace, p.name, {"QueueName": queue}, p.timestamp, p.value)
            for p in dlq_depth(visible, now, in_flight)
        ]

    ev = AlarmEvaluator({alarm: definition})
    visible = [0.0, 3.0, 3.0, 0.0, 3.0, 3.0, 4.0, 4.0]  # 3 dead letters, read, visible again, then a 4th
    in_flight = [0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]
    states, pages = [], 0
    for minute in range(len(visible)):
        now = T0 + 60 * (minute + 1)
        ev.evaluate(samples(visible[: minute + 1], in_flight[: minute + 1], now), now)
        pages += sum(1 for t in ev.last_transitions if t.new_state == AlarmState.ALARM)
        states.append(str(ev.states[alarm]))
    # minute 1: the 3 arrive (a page); 3-5: read and visible again (no page); 6: a real 4th dead letter (a page)
    assert states == ["OK", "ALARM", "OK", "OK", "OK", "OK", "ALARM", "OK"]
    assert pages == 2
    # The visible count alone, as the alarm read it before: the read's return would have paged a second time.
    _, old_pages = run_minutes_visible_only(visible)
    assert old_pages == 3


def run_minutes_visible_only(visible: list[float]) -> tuple[AlarmEvaluator, int]:
    legacy = {
        **template_alarms()["JobsDLQAlarm"],
        "Metrics": [
            {
                "Id": "depth",
                "ReturnData": False,
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SQS",
                        "MetricName": "ApproximateNumberOfMessagesVisible",
                        "Dimensions": [{"Name": "QueueName", "Value": "JobsDLQ"}],
                    },
                    "Period": 60,
                    "Stat": "Maximum",
                },
            },
            {"Id": "newletters", "ReturnData": True, "Expression": "DIFF(FILL(depth, 0))"},
        ],
    }
    ev = AlarmEvaluator({"JobsDLQAlarm": legacy})
    pages = 0
    for minute in range(len(visible)):
        now = T0 + 60 * (minute + 1)
        ev.evaluate(dlq_depth(visible[: minute + 1], now), now)
        pages += sum(1 for t in ev.last_transitions if t.new_state == AlarmState.ALARM)
    return ev, pages


def test_template_webhook_alarm_sees_crashes_and_throttles_the_handler_cannot_report() -> None:
    for namespace, metric, dims in [
        ("AWS/ApiGateway", "5xx", {"ApiId": "WebhookApi"}),
        ("AWS/Lambda", "Errors", {"FunctionName": "WebhookFunction"}),
        ("AWS/Lambda", "Throttles", {"FunctionName": "WebhookFunction"}),
    ]:
        ev = template_alarm("WebhookErrorsAlarm")
        point = Datapoint(namespace, metric, dims, T0, 1.0)
        assert ev.evaluate([point], T0 + 60)["WebhookErrorsAlarm"] == AlarmState.ALARM, metric
    assert template_alarm("WebhookErrorsAlarm").evaluate([], T0)["WebhookErrorsAlarm"] == AlarmState.OK
