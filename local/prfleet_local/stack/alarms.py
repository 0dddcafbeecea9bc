"""CloudWatch alarm evaluation, locally: the template's AWS::CloudWatch::Alarm definitions applied to metrics.

Why: moto stores alarms but never evaluates them (and has no percentiles or metric-math arithmetic), so the
local stack and the tests evaluate the template's own alarm definitions here, the way CloudWatch does. Pure:
no AWS, no clock; the caller passes datapoints and `now` (epoch seconds).

Semantics followed (CloudWatch User Guide; each rule is also quoted next to its code and has a unit test named
after its page). "alarm-evaluation" and "alarms-and-missing-data" are the sections of AlarmThatSendsEmail.html
as last published in github.com/awsdocs/amazon-cloudwatch-user-guide (doc_source/AlarmThatSendsEmail.md):
- Alarm evaluation: states OK / ALARM / INSUFFICIENT_DATA, M out of N, evaluated every minute over a sliding
  window that ends at the last whole minute (the minute in progress is not evaluated):
  https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/alarm-evaluation.html
  https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/alarm-evaluation-window.html
- Missing data (missing / notBreaching / breaching / ignore), the evaluation range (EvaluationPeriods + 2) and the
  premature-alarm rule: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/alarms-and-missing-data.html
- Statistics and percentiles: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/Statistics-definitions.html
  Percentiles are computed over the raw values (nearest rank; CloudWatch does not document its interpolation).
  EvaluateLowSampleCountPercentile=ignore keeps the state while a period has fewer than 10/(1-p) samples
  (p >= 0.5) or 10/p (p < 0.5): https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/percentiles-with-low-samples.html
- Metric math in alarms (Metrics with Id / MetricStat / Expression / ReturnData):
  https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/Create-alarm-on-metric-math-expression.html
  https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/using-metric-math.html
  Supported: + - * / ^, parentheses, numbers, ids, comparisons (> < >= <= == !=), AND / OR (&& ||),
  IF(cond, a[, b]), FILL(m, value | REPEAT | LINEAR), ABS(m), DIFF(m); anything else is refused. Between two
  series a value missing in one of them counts as 0; a division by zero drops the datapoint; IF follows the
  page's tables. Parsed by a small recursive-descent parser (no eval).
- Dimensions match exactly, as in CloudWatch: a metric published with {service, agent} is a different metric
  from one with {service}: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch_concepts.html#Dimension
- The SNS notification body follows the JSON CloudWatch publishes to SNS for alarm state changes:
  https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/alarm-sns-notifications.html
- EMF parsing: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class AlarmState(StrEnum):
    """The three CloudWatch alarm states (a str, so `state == "ALARM"` holds)."""

    OK = "OK"
    ALARM = "ALARM"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"

    def __str__(self) -> str:
        return self.value


class AlarmDefinitionError(ValueError):
    """An alarm definition this evaluator cannot apply (the message names the alarm and the field)."""


@dataclass(frozen=True)
class Datapoint:
    """One metric value as CloudWatch would store it."""

    namespace: str
    name: str
    dimensions: Mapping[str, str]
    timestamp: float  # epoch seconds
    value: float
    unit: str | None = None


@dataclass(frozen=True)
class Transition:
    """An alarm state change (recorded only when the state actually changes, like CloudWatch's history)."""

    alarm: str  # the key of the definition (the template's logical id)
    alarm_name: str  # AlarmName, or the key when the template lets CloudFormation name it
    old_state: AlarmState
    new_state: AlarmState
    reason: str
    timestamp: float
    reason_data: dict[str, Any] = field(default_factory=dict)


def transition_line(t: Transition) -> str:
    """One console line for a state change (the serve console prints these): time, alarm, old -> new, reason."""
    when = dt.datetime.fromtimestamp(t.timestamp, dt.timezone.utc).strftime("%H:%M:%S")
    return f"{when} alarm {t.alarm_name}: {t.old_state} -> {t.new_state}: {t.reason}"


# ------------------------------------------------------------------------------------------------- statistics

_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?|100)$", re.IGNORECASE)
_BASIC = {
    "sum": "Sum",
    "average": "Average",
    "minimum": "Minimum",
    "maximum": "Maximum",
    "samplecount": "SampleCount",
}


def _normalize_stat(stat: str) -> str:
    key = stat.strip()
    if key.lower() in _BASIC:
        return _BASIC[key.lower()]
    if _PERCENTILE.match(key):
        return key.lower()
    raise AlarmDefinitionError(f"unsupported statistic {stat!r}")


def statistic(values: Sequence[float], stat: str) -> float:
    """One statistic over the raw values of a period (Sum, Average, Minimum, Maximum, SampleCount, pNN)."""
    if not values:
        raise ValueError("no values")
    name = _normalize_stat(stat)
    if name == "Sum":
        return float(math.fsum(values))
    if name == "Average":
        return float(math.fsum(values) / len(values))
    if name == "Minimum":
        return float(min(values))
    if name == "Maximum":
        return float(max(values))
    if name == "SampleCount":
        return float(len(values))
    p = float(name[1:])
    if not 0 < p <= 100:
        raise AlarmDefinitionError(f"percentile out of range: {stat!r}")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered) - 1e-9))  # nearest rank
    return float(ordered[rank - 1])


def low_sample_threshold(stat: str) -> float | None:
    """The fewest samples a period needs before EvaluateLowSampleCountPercentile=ignore lets it count: 10/(1-p)
    for 0.5 <= p < 1 and 10/p for 0 < p < 0.5 ("Percentile-based alarms and low data samples",
    percentiles-with-low-samples.html). None for other statistics and p100."""
    if not _PERCENTILE.match(stat):
        return None
    p = float(stat[1:]) / 100
    if p >= 1 or p <= 0:
        return None
    return round(10 / (1 - p) if p >= 0.5 else 10 / p, 9)


def _low_sample(stat: str, samples: int) -> bool:
    need = low_sample_threshold(stat)
    return need is not None and samples < need


# --------------------------------------------------------------------------------------------- metric math

Value = float | tuple[float | None, ...]

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>>=|<=|==|!=|&&|\|\||[-+*/^(),<>]))"
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise AlarmDefinitionError(f"cannot parse expression at {text[pos:]!r}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


class _Parser:
    """Recursive descent: or, and, comparison, additive, multiplicative, unary, power, primary."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def parse(self) -> tuple:
        node = self._or()
        if self.i != len(self.tokens):
            raise AlarmDefinitionError(f"unexpected {self.tokens[self.i][1]!r} in {self.text!r}")
        return node

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _accept(self, *values: str) -> str | None:
        tok = self._peek()
        if tok and (tok[1] in values or (tok[0] == "name" and tok[1].upper() in values)):
            self.i += 1
            return tok[1].upper() if tok[0] == "name" else tok[1]
        return None

    def _expect(self, value: str) -> None:
        if not self._accept(value):
            raise AlarmDefinitionError(f"expected {value!r} in {self.text!r}")

    def _or(self) -> tuple:
        node = self._and()
        while self._accept("OR", "||"):
            node = ("or", node, self._and())
        return node

    def _and(self) -> tuple:
        node = self._cmp()
        while self._accept("AND", "&&"):
            node = ("and", node, self._cmp())
        return node

    def _cmp(self) -> tuple:
        node = self._add()
        while True:
            op = self._accept(">=", "<=", "==", "!=", ">", "<")
            if not op:
                return node
            node = (op, node, self._add())

    def _add(self) -> tuple:
        node = self._mul()
        while True:
            op = self._accept("+", "-")
            if not op:
                return node
            node = (op, node, self._mul())

    def _mul(self) -> tuple:
        node = self._unary()
        while True:
            op = self._accept("*", "/")
            if not op:
                return node
            node = (op, node, self._unary())

    def _unary(self) -> tuple:
        if self._accept("-"):
            return ("neg", self._unary())
        if self._accept("+"):
            return self._unary()
        return self._pow()

    def _pow(self) -> tuple:
        node = self._primary()
        if self._accept("^"):
            return ("^", node, self._unary())  # right-associative
        return node

    def _primary(self) -> tuple:
        tok = self._peek()
        if tok is None:
            raise AlarmDefinitionError(f"unexpected end of {self.text!r}")
        kind, text = tok
        self.i += 1
        if kind == "num":
            return ("num", float(text))
        if text == "(":
            node = self._or()
            self._expect(")")
            return node
        if kind == "name":
            if self._accept("("):
                args: list[tuple] = []
                if not self._accept(")"):
                    args.append(self._or())
                    while self._accept(","):
                        args.append(self._or())
                    self._expect(")")
                return ("call", text.upper(), tuple(args))
            if text.upper() in ("REPEAT", "LINEAR"):
                return ("fillmode", text.upper())
            return ("id", text)
        raise AlarmDefinitionError(f"unexpected {text!r} in {self.text!r}")


def _binary(op: str, a: float, b: float) -> float | None:
    """One operator on two present values; None = the datapoint is dropped (division by zero)."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return None if b == 0 else a / b
    if op == "^":
        try:
            return float(a**b)
        except (OverflowError, ZeroDivisionError, ValueError):
            return None
    if op == ">":
        return float(a > b)
    if op == "<":
        return float(a < b)
    if op == ">=":
        return float(a >= b)
    if op == "<=":
        return float(a <= b)
    if op == "==":
        return float(a == b)
    if op == "!=":
        return float(a != b)
    if op == "and":
        return float(bool(a) and bool(b))
    if op == "or":
        return float(bool(a) or bool(b))
    raise AlarmDefinitionError(f"unknown operator {op!r}")


def _as_series(v: Value | None, n: int) -> tuple[float | None, ...]:
    if v is None:
        return (None,) * n
    return v if isinstance(v, tuple) else (float(v),) * n


def _apply(op: str, a: Value, b: Value) -> Value:
    """`a op b` with the documented missing-value rules (using-metric-math.html, "Basic arithmetic functions" and
    "Comparison and logical operators"): between two time series a value missing in one of them is 0 (missing
    in both: no datapoint); a time series with a scalar has datapoints only where the series has; a division by
    zero drops the datapoint."""
    if not isinstance(a, tuple) and not isinstance(b, tuple):
        out = _binary(op, a, b)
        if out is None:
            raise AlarmDefinitionError(f"{a} {op} {b}: division by zero between constants")
        return out
    if isinstance(a, tuple) and isinstance(b, tuple):
        return tuple(
            None if x is None and y is None else _binary(op, x or 0.0, y or 0.0)
            for x, y in zip(a, b, strict=True)
        )
    if isinstance(a, tuple):
        return tuple(None if x is None else _binary(op, x, b) for x in a)  # type: ignore[arg-type]
    return tuple(None if y is None else _binary(op, a, y) for y in b)  # type: ignore[union-attr]


def _map(fn: Any, v: Value) -> Value:
    return tuple(None if x is None else fn(x) for x in v) if isinstance(v, tuple) else fn(v)


def _if(cond: Value, yes: Value, no: Value | None, n: int) -> Value:
    """IF as "Using IF expressions" (using-metric-math.html) defines it, each rule from its tables:
    a missing condition datapoint drops the datapoint; TRUE with the true-series missing there gives 0;
    FALSE with the false-series missing there, or no false value at all, drops it. IF(scalar, a, b) picks a
    or b whole (an omitted b gives an empty series)."""
    if not isinstance(cond, tuple):
        if cond:
            return yes
        return no if no is not None else (None,) * n
    ys = _as_series(yes, n)
    out: list[float | None] = []
    for i, c in enumerate(cond):
        if c is None:
            out.append(None)
        elif c:
            out.append(0.0 if ys[i] is None else ys[i])
        elif no is None:
            out.append(None)
        else:
            out.append(_as_series(no, n)[i])
    return tuple(out)


def _diff(series: Value) -> Value:
    """DIFF: each value minus the preceding value of the series (using-metric-math.html, function table); the
    first value has no predecessor and gives no datapoint."""
    if not isinstance(series, tuple):
        raise AlarmDefinitionError("DIFF takes a time series")
    out: list[float | None] = []
    last: float | None = None
    for v in series:
        out.append(None if v is None or last is None else v - last)
        last = v if v is not None else last
    return tuple(out)


def _fill(series: Value, how: Value | str, n: int) -> Value:
    if not isinstance(series, tuple):
        return series
    if how == "REPEAT":
        out, last = [], None
        for v in series:
            last = v if v is not None else last
            out.append(last)
        return tuple(out)
    if how == "LINEAR":
        known = [(i, v) for i, v in enumerate(series) if v is not None]
        out2: list[float | None] = list(series)
        for (i0, v0), (i1, v1) in zip(known, known[1:], strict=False):
            for j in range(i0 + 1, i1):
                out2[j] = v0 + (v1 - v0) * (j - i0) / (i1 - i0)
        return tuple(out2)
    fill = _as_series(how, n)  # type: ignore[arg-type]
    return tuple(v if v is not None else f for v, f in zip(series, fill, strict=True))


def evaluate_expression(expression: str, variables: Mapping[str, Value], n: int) -> Value:
    """Evaluate a metric-math expression over `n` periods; variables map ids to series (tuples) or numbers."""
    tree = _Parser(expression).parse()
    return _eval(tree, lambda name: _lookup(variables, name), n)


def _lookup(variables: Mapping[str, Value], name: str) -> Value:
    if name not in variables:
        raise AlarmDefinitionError(f"unknown id {name!r}")
    return variables[name]


def _eval(node: tuple, resolve: Any, n: int) -> Value:
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "id":
        return resolve(node[1])
    if kind == "neg":
        return _map(lambda a: -a, _eval(node[1], resolve, n))
    if kind == "fillmode":
        raise AlarmDefinitionError(f"{node[1]} is only valid as FILL's second argument")
    if kind == "call":
        name, args = node[1], node[2]
        if name == "IF":
            if len(args) not in (2, 3):
                raise AlarmDefinitionError("IF takes (condition, true value[, false value])")
            no = _eval(args[2], resolve, n) if len(args) == 3 else None
            return _if(_eval(args[0], resolve, n), _eval(args[1], resolve, n), no, n)
        if name == "FILL":
            if len(args) != 2:
                raise AlarmDefinitionError("FILL takes (metric, value | REPEAT | LINEAR)")
            how: Value | str = args[1][1] if args[1][0] == "fillmode" else _eval(args[1], resolve, n)
            return _fill(_eval(args[0], resolve, n), how, n)
        if name == "ABS":
            if len(args) != 1:
                raise AlarmDefinitionError("ABS takes one argument")
            return _map(abs, _eval(args[0], resolve, n))
        if name == "DIFF":
            if len(args) != 1:
                raise AlarmDefinitionError("DIFF takes one argument")
            return _diff(_eval(args[0], resolve, n))
        raise AlarmDefinitionError(f"unsupported function {name}()")
    return _apply(kind, _eval(node[1], resolve, n), _eval(node[2], resolve, n))


# --------------------------------------------------------------------------------------------- definitions

_OPERATORS = {
    "GreaterThanThreshold": (lambda v, t: v > t, "greater than"),
    "GreaterThanOrEqualToThreshold": (lambda v, t: v >= t, "greater than or equal to"),
    "LessThanThreshold": (lambda v, t: v < t, "less than"),
    "LessThanOrEqualToThreshold": (lambda v, t: v <= t, "less than or equal to"),
}
_TREATMENTS = ("missing", "notBreaching", "breaching", "ignore")
# The evaluation range: "CloudWatch retrieves the 5 most recent data points when evaluating the alarm, in case some
# of the most recent 3 data points are missing. 5 is the evaluation range" (alarms-and-missing-data, EvaluationPeriods
# 3). The docs give no other size, so every alarm here retrieves EvaluationPeriods + 2.
EXTRA_PERIODS = 2


def _truthy(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _dims(raw: Any, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for d in raw or []:
        name, value = d.get("Name"), d.get("Value")
        if not isinstance(name, str) or not isinstance(value, (str, int, float)):
            raise AlarmDefinitionError(f"{where}: dimension {d!r} is not resolved to plain strings")
        out[name] = str(value)
    return out


@dataclass(frozen=True)
class _MetricQuery:
    id: str
    namespace: str
    name: str
    dimensions: dict[str, str]
    stat: str
    period: int
    unit: str | None


@dataclass(frozen=True)
class _Alarm:
    key: str
    name: str
    props: Mapping[str, Any]
    period: int
    evaluation_periods: int
    datapoints_to_alarm: int
    threshold: float
    operator: str
    treat_missing: str
    low_sample: str
    metrics: tuple[_MetricQuery, ...]
    expressions: dict[str, str]
    returned: str


def _check_range(where: str, period: int, evaluation_periods: int) -> None:
    """PutMetricAlarm's limits on the period and the evaluation range (API Reference, `Period`): "Valid values are
    10, 20, 30, and any multiple of 60"; "Period multiplied by EvaluationPeriods can't be more than 604,800 seconds.
    For alarms with a period of less than one hour (3,600 seconds), the total evaluation period can't be longer than
    one day (86,400 seconds)." https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html"""
    if period not in (10, 20, 30) and period % 60:
        raise AlarmDefinitionError(f"{where}: Period must be 10, 20, 30 or a multiple of 60, got {period}")
    total = period * evaluation_periods
    if total > 604_800 or (period < 3600 and total > 86_400):
        raise AlarmDefinitionError(
            f"{where}: Period x EvaluationPeriods ({total} s) is over CloudWatch's evaluation range "
            "(7 days; 1 day for a period under an hour)"
        )


def _parse_alarm(key: str, props: Mapping[str, Any]) -> _Alarm:
    where = f"alarm {key}"
    operator = props.get("ComparisonOperator")
    if operator not in _OPERATORS:
        raise AlarmDefinitionError(f"{where}: unsupported ComparisonOperator {operator!r}")
    treat = props.get("TreatMissingData") or "missing"
    if treat not in _TREATMENTS:
        raise AlarmDefinitionError(f"{where}: TreatMissingData must be one of {_TREATMENTS}")
    try:
        n = int(props["EvaluationPeriods"])
        threshold = float(props["Threshold"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AlarmDefinitionError(f"{where}: EvaluationPeriods and Threshold are required numbers") from exc
    m = int(props.get("DatapointsToAlarm") or n)
    if not 1 <= m <= n:
        raise AlarmDefinitionError(f"{where}: DatapointsToAlarm must be between 1 and EvaluationPeriods")

    metrics: list[_MetricQuery] = []
    expressions: dict[str, str] = {}
    if props.get("Metrics"):
        returned: list[str] = []
        implicit: list[str] = []
        for q in props["Metrics"]:
            qid = q.get("Id")
            if not isinstance(qid, str):
                raise AlarmDefinitionError(f"{where}: every Metrics entry needs an Id")
            if "Expression" in q:
                expressions[qid] = str(q["Expression"])
            elif "MetricStat" in q:
                ms = q["MetricStat"]
                metric = ms.get("Metric", {})
                metrics.append(
                    _MetricQuery(
                        id=qid,
                        namespace=str(metric.get("Namespace")),
                        name=str(metric.get("MetricName")),
                        dimensions=_dims(metric.get("Dimensions"), where),
                        stat=_normalize_stat(str(ms.get("Stat"))),
                        period=int(ms.get("Period") or q.get("Period") or 0),
                        unit=ms.get("Unit"),
                    )
                )
            else:
                raise AlarmDefinitionError(
                    f"{where}: Metrics entry {qid} has neither Expression nor MetricStat"
                )
            if "ReturnData" in q and _truthy(q["ReturnData"], True):
                returned.append(qid)
            elif "ReturnData" not in q:
                implicit.append(qid)
        candidates = returned or implicit
        if len(candidates) != 1:
            raise AlarmDefinitionError(f"{where}: exactly one Metrics entry must have ReturnData true")
        ret = candidates[0]
        periods = {q.period for q in metrics if q.period}
        if len(periods) != 1:
            raise AlarmDefinitionError(
                f"{where}: the MetricStat entries need one common Period, got {periods}"
            )
        period = periods.pop()
    else:
        stat = props.get("ExtendedStatistic") or props.get("Statistic")
        if not stat:
            raise AlarmDefinitionError(f"{where}: Statistic or ExtendedStatistic is required")
        period = int(props.get("Period") or 0)
        metrics.append(
            _MetricQuery(
                id="m1",
                namespace=str(props.get("Namespace")),
                name=str(props.get("MetricName")),
                dimensions=_dims(props.get("Dimensions"), where),
                stat=_normalize_stat(str(stat)),
                period=period,
                unit=props.get("Unit"),
            )
        )
        ret = "m1"
    if period <= 0:
        raise AlarmDefinitionError(f"{where}: Period must be a positive number of seconds")
    _check_range(where, period, n)
    return _Alarm(
        key=key,
        name=str(props.get("AlarmName") or key),
        props=props,
        period=period,
        evaluation_periods=n,
        datapoints_to_alarm=m,
        threshold=threshold,
        operator=operator,
        treat_missing=treat,
        low_sample=str(props.get("EvaluateLowSampleCountPercentile") or "evaluate"),
        metrics=tuple(metrics),
        expressions=expressions,
        returned=ret,
    )


# ------------------------------------------------------------------------------------------------- evaluation


def _fmt_time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%d/%m/%y %H:%M:%S")


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def _fmt_value(v: float) -> str:
    return repr(float(v))


@dataclass
class AlarmStatus:
    """The latest evaluation of one alarm: state, reason, and the values per period (oldest first)."""

    state: AlarmState
    reason: str
    values: list[tuple[float, float | None]] = field(default_factory=list)
    reason_data: dict[str, Any] = field(default_factory=dict)


class AlarmEvaluator:
    """Evaluates alarm definitions (CloudFormation `Properties` with intrinsics already resolved) over time.

    Keeps each alarm's state between calls (starting at INSUFFICIENT_DATA, as CloudWatch does) and records a
    Transition only when the state changes."""

    def __init__(self, definitions: Mapping[str, Mapping[str, Any]]) -> None:
        self.alarms: dict[str, _Alarm] = {key: _parse_alarm(key, props) for key, props in definitions.items()}
        self.status: dict[str, AlarmStatus] = {
            key: AlarmStatus(AlarmState.INSUFFICIENT_DATA, "Unchecked: Initial alarm creation")
            for key in self.alarms
        }
        self.transitions: list[Transition] = []
        self.last_transitions: list[Transition] = []
        self.evaluated_at: list[float] = []  # every instant evaluated, the minutes caught up included

    @property
    def states(self) -> dict[str, AlarmState]:
        """The current state of every alarm."""
        return {key: s.state for key, s in self.status.items()}

    def evaluate(self, datapoints: Iterable[Datapoint], now: float) -> dict[str, AlarmState]:
        """Evaluate every alarm at `now`, after the minutes missed since the last call (`missed_minutes`); returns
        the states and sets `last_transitions` to the changes."""
        points = list(datapoints)
        self.last_transitions = []
        last = self.evaluated_at[-1] if self.evaluated_at else None
        for at in [*missed_minutes(points, last, now), now]:
            self.evaluated_at.append(at)
            for key, alarm in self.alarms.items():
                old = self.status[key].state
                new = self._evaluate_one(alarm, points, at, old)
                self.status[key] = new
                if new.state != old:
                    t = Transition(key, alarm.name, old, new.state, new.reason, at, new.reason_data)
                    self.transitions.append(t)
                    self.last_transitions.append(t)
        return self.states

    def actions(self, key: str, state: AlarmState | str) -> list[Any]:
        """The actions the definition lists for entering `state` (AlarmActions, OKActions, ...)."""
        prop = {"ALARM": "AlarmActions", "OK": "OKActions", "INSUFFICIENT_DATA": "InsufficientDataActions"}
        return list(self.alarms[key].props.get(prop[str(state)]) or [])

    def notification(
        self, transition: Transition, *, region: str = "us-east-1", account_id: str = "123456789012"
    ) -> dict[str, Any]:
        """The JSON body CloudWatch publishes to SNS for this state change."""
        return notification_body(
            self.alarms[transition.alarm], transition, region=region, account_id=account_id
        )

    # ------------------------------------------------------------------------------------------------------

    def _evaluate_one(
        self, alarm: _Alarm, points: list[Datapoint], now: float, current: AlarmState
    ) -> AlarmStatus:
        p = alarm.period
        r = alarm.evaluation_periods + EXTRA_PERIODS
        starts = window(now, p, r)
        first, end = starts[0], starts[-1] + p

        raw: dict[str, list[list[float]]] = {}
        for q in alarm.metrics:
            buckets: list[list[float]] = [[] for _ in starts]
            for d in points:
                if (
                    first <= d.timestamp < end
                    and d.namespace == q.namespace
                    and d.name == q.name
                    and dict(d.dimensions) == q.dimensions
                    and (q.unit is None or d.unit == q.unit)
                ):
                    buckets[int((d.timestamp - first) // p)].append(float(d.value))
            raw[q.id] = buckets

        series: dict[str, Value] = {
            q.id: tuple(statistic(b, q.stat) if b else None for b in raw[q.id]) for q in alarm.metrics
        }
        if alarm.returned in series:
            result = series[alarm.returned]
        else:
            result = self._expression(alarm, alarm.returned, series, r, set())
        if not isinstance(result, tuple):
            # "The final result of any math expression must be a single time series" (using-metric-math).
            raise AlarmDefinitionError(
                f"alarm {alarm.key}: {alarm.returned} gives a number, not a time series"
            )
        values = list(result)
        timeline = list(zip(starts, values, strict=True))

        single = alarm.metrics[0] if not alarm.expressions else None
        if single is not None and alarm.low_sample == "ignore":
            counts = [len(b) for b in raw[single.id] if b][-alarm.evaluation_periods :]
            if any(_low_sample(single.stat, c) for c in counts):
                need = low_sample_threshold(single.stat)
                reason = (
                    f"Low sample count for {single.stat}: a period has fewer than {need:g} samples "
                    "(EvaluateLowSampleCountPercentile=ignore), the state is kept."
                )
                return AlarmStatus(current, reason, timeline)
        return _decide(alarm, timeline, current, now, single)

    def _expression(self, alarm: _Alarm, qid: str, series: dict[str, Value], n: int, seen: set[str]) -> Value:
        if qid in series:
            return series[qid]
        if qid not in alarm.expressions:
            raise AlarmDefinitionError(f"alarm {alarm.key}: unknown id {qid!r}")
        if qid in seen:
            raise AlarmDefinitionError(f"alarm {alarm.key}: expression {qid} refers to itself")
        tree = _Parser(alarm.expressions[qid]).parse()
        value = _eval(tree, lambda name: self._expression(alarm, name, series, n, seen | {qid}), n)
        series[qid] = value
        return value


def missed_minutes(points: Iterable[Datapoint], last: float | None, now: float) -> list[float]:
    """The whole minutes CloudWatch would have evaluated between the evaluation at `last` and the one at `now` that
    saw data no other evaluation here sees: the end of each minute that holds a datapoint, after `last`'s range and
    before `now`'s. CloudWatch evaluates every minute (alarm-evaluation, "Evaluating an alarm"); the caller here may
    not (a clock moved ahead, a message's age filed at its receive time once the queues are sampled), and without
    these a breach filed in a skipped minute would never be evaluated: more lenient than CloudWatch. A skipped
    minute without a datapoint in it is not caught up (a day's jump would be 1,440 evaluations): from one such
    minute to the next a range only loses datapoints, which can breach only a ratio whose denominator ages out
    first."""
    if last is None:
        return []
    after, before = math.floor(last / 60) * 60, math.floor(now / 60) * 60
    ends = {math.floor(d.timestamp / 60) * 60 + 60 for d in points}
    return sorted(e for e in ends if after < e < before)


def window(now: float, period: int, count: int) -> list[float]:
    """The start of each period of the sliding evaluation range at `now`, oldest first.

    "For any period of one minute or longer, an alarm is evaluated every minute and the evaluation is based on
    the window of time defined by the Period and Evaluation Periods ... at the end of minute 5 the alarm
    evaluates based on data from minutes 1 to 5. Then at the end of minute 6, ... minutes 2 to 6"
    (alarm-evaluation, "Evaluating an alarm"; SlidingWindow is the default, alarm-evaluation-window.html).
    So the range ends at the last whole minute before `now` (the minute in progress is not evaluated) and its
    periods slide with it instead of being aligned to multiples of the period."""
    end = math.floor(now / 60) * 60
    return [end - (count - i) * period for i in range(count)]


def _decide(
    alarm: _Alarm,
    timeline: list[tuple[float, float | None]],
    current: AlarmState,
    now: float,
    single: _MetricQuery | None,
) -> AlarmStatus:
    """The state from the evaluation range, as "How alarm state is evaluated when data is missing" and
    "Avoiding premature transitions to alarm state" (alarms-and-missing-data) describe it:

    - at least N real datapoints in the range: the N most recent real ones are evaluated (treatment unused);
    - none: missing -> INSUFFICIENT_DATA, ignore -> the state is kept, breaching -> ALARM, notBreaching -> OK;
    - fewer than N: every real one is evaluated, and for breaching / notBreaching the rest is filled with the
      treatment; with missing / ignore there are no fills: ALARM if M of them breach, or (missing only) if none
      is non-breaching and the oldest breaching one is at least M periods old; otherwise OK if one of them is
      non-breaching, else INSUFFICIENT_DATA (missing) or the state kept (ignore).
    Each branch is checked against the docs' two tables in tests/unit/test_alarms.py."""
    n, m, thr = alarm.evaluation_periods, alarm.datapoints_to_alarm, alarm.threshold
    breaches, phrase = _OPERATORS[alarm.operator]
    real = [(ts, v) for ts, v in timeline if v is not None]
    data: dict[str, Any] = {
        "version": "1.0",
        "queryDate": _iso(now),
        "period": alarm.period,
        "threshold": thr,
        "recentDatapoints": [v for _, v in real[-n:]],
    }
    if single is not None:
        data["statistic"] = single.stat
    s = "s" if n != 1 else ""
    treat = alarm.treat_missing

    if not real:
        if treat == "missing":
            reason = f"Insufficient Data: {len(timeline)} datapoints were unknown."
            return AlarmStatus(AlarmState.INSUFFICIENT_DATA, reason, timeline, data)
        if treat == "ignore":
            return AlarmStatus(
                current, "No datapoints: missing data ignored, the state is kept.", timeline, data
            )
        label = "Breaching" if treat == "breaching" else "NonBreaching"
        state = AlarmState.ALARM if treat == "breaching" else AlarmState.OK
        reason = (
            f"Threshold Crossed: no datapoints were received for {n} period{s} and {n} missing "
            f"datapoint{s} {'were' if n != 1 else 'was'} treated as [{label}]."
        )
        return AlarmStatus(state, reason, timeline, data)

    evaluated = real[-n:]
    fills = n - len(evaluated) if treat in ("breaching", "notBreaching") else 0
    breaching = sum(1 for _, v in evaluated if breaches(v, thr))
    if treat == "breaching":
        breaching += fills
    data["startDate"] = _iso(evaluated[0][0])
    data["evaluatedDatapoints"] = [{"timestamp": _iso(ts), "value": v} for ts, v in reversed(evaluated)]
    shown = ", ".join(f"{_fmt_value(v)} ({_fmt_time(ts)})" for ts, v in reversed(evaluated))
    filled = f" and {fills} missing datapoint{'s' if fills != 1 else ''}" if fills else ""

    def alarm_reason(count: int) -> str:
        verb = "was" if count == 1 else "were"
        return (
            f"Threshold Crossed: {count} out of the last {n} datapoint{s} [{shown}]{filled} {verb} {phrase} "
            f"the threshold ({_fmt_value(thr)}) (minimum {m} datapoint{'s' if m != 1 else ''} for "
            f"OK -> ALARM transition)."
        )

    if breaching >= m:
        return AlarmStatus(AlarmState.ALARM, alarm_reason(breaching), timeline, data)
    short = len(evaluated) < n and treat in ("missing", "ignore")
    non_breaching = any(not breaches(v, thr) for _, v in evaluated)
    if short and not non_breaching:
        oldest = evaluated[0][0]
        age = sum(1 for ts, _ in timeline if ts >= oldest)  # 1 = the newest period of the range
        if treat == "missing" and age >= m:
            return AlarmStatus(AlarmState.ALARM, alarm_reason(breaching), timeline, data)
        if treat == "missing":
            reason = (
                f"Insufficient Data: only {len(evaluated)} of {n} datapoints, all breaching but too recent "
                f"(premature alarm state avoided)."
            )
            return AlarmStatus(AlarmState.INSUFFICIENT_DATA, reason, timeline, data)
        reason = f"Only {len(evaluated)} of {n} datapoints, all breaching: missing data ignored, the state is kept."
        return AlarmStatus(current, reason, timeline, data)
    ok = len(evaluated) + fills - breaching
    verb = "was" if ok == 1 else "were"
    reason = (
        f"Threshold Crossed: {ok} out of the last {n} datapoint{s} [{shown}]{filled} {verb} not {phrase} "
        f"the threshold ({_fmt_value(thr)}) (minimum {n - m + 1} datapoint{'s' if n - m + 1 != 1 else ''} "
        f"for ALARM -> OK transition)."
    )
    return AlarmStatus(AlarmState.OK, reason, timeline, data)


# ------------------------------------------------------------------------------------------------- SNS body

_REGION_NAMES = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-1": "US West (N. California)",
    "us-west-2": "US West (Oregon)",
    "eu-west-1": "EU (Ireland)",
    "eu-central-1": "EU (Frankfurt)",
    "ap-southeast-2": "Asia Pacific (Sydney)",
    "ap-northeast-1": "Asia Pacific (Tokyo)",
}


def _sns_dims(dims: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"value": v, "name": k} for k, v in dims.items()]


def notification_body(
    alarm: _Alarm | Mapping[str, Any],
    transition: Transition,
    *,
    region: str = "us-east-1",
    account_id: str = "123456789012",
) -> dict[str, Any]:
    """The message CloudWatch sends to SNS on a state change (AlarmName, NewStateValue, Trigger...)."""
    a = alarm if isinstance(alarm, _Alarm) else _parse_alarm(transition.alarm, alarm)
    props = a.props
    trigger: dict[str, Any] = {
        "Period": a.period,
        "EvaluationPeriods": a.evaluation_periods,
        "DatapointsToAlarm": a.datapoints_to_alarm,
        "ComparisonOperator": a.operator,
        "Threshold": a.threshold,
        "TreatMissingData": a.treat_missing,
        "EvaluateLowSampleCountPercentile": props.get("EvaluateLowSampleCountPercentile", ""),
    }
    if a.expressions:
        metrics: list[dict[str, Any]] = []
        for q in props.get("Metrics", []):
            entry: dict[str, Any] = {"Id": q["Id"], "ReturnData": q["Id"] == a.returned}
            if "Expression" in q:
                entry["Expression"] = q["Expression"]
                if "Label" in q:
                    entry["Label"] = q["Label"]
            else:
                mq = next(x for x in a.metrics if x.id == q["Id"])
                entry["MetricStat"] = {
                    "Metric": {
                        "Dimensions": _sns_dims(mq.dimensions),
                        "MetricName": mq.name,
                        "Namespace": mq.namespace,
                    },
                    "Period": mq.period,
                    "Stat": q["MetricStat"].get("Stat"),
                }
            metrics.append(entry)
        trigger["Metrics"] = metrics
    else:
        q = a.metrics[0]
        trigger = {
            "MetricName": q.name,
            "Namespace": q.namespace,
            "StatisticType": "ExtendedStatistic" if _PERCENTILE.match(q.stat) else "Statistic",
            **({"ExtendedStatistic": q.stat} if _PERCENTILE.match(q.stat) else {"Statistic": q.stat.upper()}),
            "Unit": q.unit,
            "Dimensions": _sns_dims(q.dimensions),
            **trigger,
        }
    return {
        "AlarmName": a.name,
        "AlarmDescription": props.get("AlarmDescription"),
        "AWSAccountId": account_id,
        "AlarmConfigurationUpdatedTimestamp": _iso(transition.timestamp),
        "NewStateValue": str(transition.new_state),
        "NewStateReason": transition.reason,
        "StateChangeTime": _iso(transition.timestamp),
        "Region": _REGION_NAMES.get(region, region),
        "AlarmArn": f"arn:aws:cloudwatch:{region}:{account_id}:alarm:{a.name}",
        "OldStateValue": str(transition.old_state),
        "OKActions": list(props.get("OKActions") or []),
        "AlarmActions": list(props.get("AlarmActions") or []),
        "InsufficientDataActions": list(props.get("InsufficientDataActions") or []),
        "Trigger": trigger,
    }


def notification_subject(transition: Transition, *, region: str = "us-east-1") -> str:
    """The SNS Subject CloudWatch uses: 'ALARM: "name" in US East (N. Virginia)' (at most 100 characters)."""
    subject = f'{transition.new_state}: "{transition.alarm_name}" in {_REGION_NAMES.get(region, region)}'
    return subject[:100]


# ------------------------------------------------------------------------------------------------- EMF


def emf_to_datapoints(lines: Iterable[str]) -> list[Datapoint]:
    """Datapoints from EMF log lines: each metric once per dimension set; a list value gives one per element.

    Lines that are not EMF JSON (ordinary log lines, text) are skipped: a whole log stream can be passed."""
    out: list[Datapoint] = []
    for line in lines:
        line = line.strip()
        if '"_aws"' not in line:
            continue
        try:
            obj = json.loads(line[line.index("{") :])
        except ValueError:
            continue
        meta = obj.get("_aws") if isinstance(obj, dict) else None
        if not isinstance(meta, dict):
            continue
        try:
            ts = float(meta["Timestamp"]) / 1000
        except (KeyError, TypeError, ValueError):
            continue
        for directive in meta.get("CloudWatchMetrics") or []:
            namespace = directive.get("Namespace")
            dim_sets = directive.get("Dimensions") or [[]]
            for metric in directive.get("Metrics") or []:
                name = metric.get("Name")
                if name not in obj:
                    continue
                raw = obj[name]
                values = raw if isinstance(raw, list) else [raw]
                for dim_keys in dim_sets:
                    if any(not isinstance(obj.get(k), str) for k in dim_keys):
                        continue  # EMF requires dimension values to be strings on the root node
                    dims = {k: obj[k] for k in dim_keys}
                    for v in values:
                        if isinstance(v, (int, float)) and not isinstance(v, bool):
                            out.append(Datapoint(namespace, name, dims, ts, float(v), metric.get("Unit")))
    return out
