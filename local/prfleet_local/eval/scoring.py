"""Precision, recall, F1, cost and time of reviews against golden issues, per case, per agent, per model and in
total.

Definitions (`--json` uses these names): golden = golden issues, findings = every finding of the head's runs
(each counted once), true_positives = matched pairs (matching.py), precision = true_positives / findings, recall
= true_positives / golden, f1 = 2 tp / (findings + golden) (the harmonic mean of the two, also defined when one
is), cost_usd = what the head's runs cost, usd_per_true_positive = cost_usd / true_positives, time_to_review_s =
webhook delivered to review posted. A ratio whose denominator is 0 is null. Totals add the counts over the cases
(micro-averages) and give the median case's time. Per agent (and per model): that agent's findings matched on
their own against all the case's golden issues (its recall is what it alone finds) and its runs' cost.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prfleet_local.eval.corpus import Golden
from prfleet_local.eval.matching import match


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


@dataclass
class Score:
    golden: int = 0
    findings: int = 0
    true_positives: int = 0
    cost_micros: int = 0
    seconds: list[float] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        return _ratio(self.true_positives, self.findings)

    @property
    def recall(self) -> float | None:
        return _ratio(self.true_positives, self.golden)

    @property
    def f1(self) -> float | None:
        return _ratio(2 * self.true_positives, self.findings + self.golden)

    @property
    def usd_per_true_positive(self) -> float | None:
        return _ratio(self.cost_micros / 1e6, self.true_positives)

    @property
    def time_to_review_s(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    def add(self, other: Score) -> None:
        self.golden += other.golden
        self.findings += other.findings
        self.true_positives += other.true_positives
        self.cost_micros += other.cost_micros
        self.seconds += other.seconds

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None, n: int = 4) -> float | None:
            return None if x is None else round(x, n)

        return {
            "golden": self.golden,
            "findings": self.findings,
            "true_positives": self.true_positives,
            "precision": r(self.precision),
            "recall": r(self.recall),
            "f1": r(self.f1),
            "cost_usd": round(self.cost_micros / 1e6, 6),
            "usd_per_true_positive": r(self.usd_per_true_positive, 6),
            "time_to_review_s": r(self.time_to_review_s, 2),
        }


def score(
    golden: Sequence[Golden],
    findings: Sequence[Mapping[str, Any]],
    cost_micros: int = 0,
    seconds: float | None = None,
) -> Score:
    """The score of one set of findings against the golden issues."""
    return Score(
        len(golden),
        len(findings),
        match(golden, findings).true_positives,
        cost_micros,
        [seconds] if seconds is not None else [],
    )


def breakdown(
    golden: Sequence[Golden],
    findings: Sequence[Mapping[str, Any]],
    runs: Iterable[Mapping[str, Any]],
    key: str,
) -> dict[str, Score]:
    """Per value of `key` ("agent" or "model"): its findings scored alone against every golden issue, and the
    cost of its runs. Every value that ran is listed, also one without findings."""
    runs = list(runs)
    names = sorted({str(r.get(key) or "?") for r in runs} | {str(f.get(key) or "?") for f in findings})
    out = {}
    for name in names:
        mine = [f for f in findings if str(f.get(key) or "?") == name]
        cost = sum(int(r.get("cost_micros") or 0) for r in runs if str(r.get(key) or "?") == name)
        out[name] = score(golden, mine, cost)
    return out


@dataclass
class CaseResult:
    """One case: reviewed or not (a timeout is reported, never dropped), its score and its breakdowns."""

    name: str
    reviewed: bool
    total: Score
    by_agent: dict[str, Score] = field(default_factory=dict)
    by_model: dict[str, Score] = field(default_factory=dict)
    matches: list[dict[str, Any]] = field(default_factory=list)  # each golden issue: found by which finding
    error: str = ""


def case_result(
    name: str,
    golden: Sequence[Golden],
    findings: Sequence[Mapping[str, Any]],
    runs: Sequence[Mapping[str, Any]],
    seconds: float | None,
) -> CaseResult:
    """Score a reviewed case: in total, per agent, per model, and which finding found each golden issue."""
    cost = sum(int(r.get("cost_micros") or 0) for r in runs)
    pairs = dict(match(golden, findings).pairs)
    matches = []
    for i, g in enumerate(golden):
        f = findings[pairs[i]] if i in pairs else None
        matches.append(
            {
                "path": g.path,
                "line": g.line,
                "end_line": g.end_line,
                "found": f is not None,
                "finding": None
                if f is None
                else {k: f.get(k) for k in ("path", "line", "agent", "severity", "title")},
            }
        )
    return CaseResult(
        name,
        True,
        score(golden, findings, cost, seconds),
        breakdown(golden, findings, runs, "agent"),
        breakdown(golden, findings, runs, "model"),
        matches,
    )


def totals(results: Sequence[CaseResult]) -> tuple[Score, dict[str, Score], dict[str, Score]]:
    """The reviewed cases added up: in total, per agent and per model."""
    total, agents, models = Score(), {}, {}
    for res in results:
        if not res.reviewed:
            continue
        total.add(res.total)
        for name, s in res.by_agent.items():
            agents.setdefault(name, Score()).add(s)
        for name, s in res.by_model.items():
            models.setdefault(name, Score()).add(s)
    return total, agents, models
