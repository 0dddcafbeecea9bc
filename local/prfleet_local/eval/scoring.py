"""Precision, recall, F1, cost and time of reviews against golden issues, per case, per agent, per model, per
(agent, model, effort) and in total.

Definitions (`--json` uses these names): golden = golden issues, findings = every finding of the head's runs
(each counted once), true_positives = matched pairs (matching.py), precision = true_positives / findings, recall
= true_positives / golden, f1 = 2 tp / (findings + golden) (the harmonic mean of the two, also defined when one
is), cost_usd = what the head's runs cost, usd_per_true_positive = cost_usd / true_positives, time_to_review_s =
webhook delivered to review posted. A ratio whose denominator is 0 is null. Totals add the counts over the cases
(micro-averages) and give the median case's time. Per agent (and per model): that agent's findings matched on
their own against all the case's golden issues (its recall is what it alone finds) and its runs' cost; for a
golden issue without a path, the findings of that agent among those the judge named (the judge is called once
per golden issue with every finding of the case, never again per agent). The judge's calls and cost are kept
apart (judge.JudgeStats): cost_usd is what the reviews cost, never the judge.

Per (agent, model, effort): the same, split also by the effort the stack sent that agent's model: the level the
stack's settings give the agent (prfleet.config.environment Settings.efforts, which the verify run reads as
VerifyEffort) as prfleet.agents.specs.effort_for turns it into a request, "none" for a model that takes no effort.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prfleet.agents.specs import effort_for
from prfleet_local.eval.corpus import Golden
from prfleet_local.eval.judge import Judgement, JudgeStats, finding_id
from prfleet_local.eval.matching import match

AgentModelEffort = tuple[str, str, str]
K = TypeVar("K", str, AgentModelEffort)  # a breakdown's key: an agent or a model, or (agent, model, effort)
NO_EFFORT = "none"  # the model takes no effort (effort_for is None): none is sent


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
    judged: Mapping[int, Sequence[int]] | None = None,
) -> Score:
    """The score of one set of findings against the golden issues (`judged`: the finding indices the judge
    named per golden issue without a path, matching.match)."""
    return Score(
        len(golden),
        len(findings),
        match(golden, findings, judged=judged).true_positives,
        cost_micros,
        [seconds] if seconds is not None else [],
    )


def breakdown(
    golden: Sequence[Golden],
    findings: Sequence[Mapping[str, Any]],
    runs: Iterable[Mapping[str, Any]],
    key: str,
    judged: Mapping[int, Sequence[int]] | None = None,
) -> dict[str, Score]:
    """Per value of `key` ("agent" or "model"): its findings scored alone against every golden issue (the judge's
    candidates narrowed to them), and the cost of its runs. Every value that ran is listed, also one without
    findings."""
    return grouped(golden, findings, runs, lambda item: str(item.get(key) or "?"), judged)


def grouped(
    golden: Sequence[Golden],
    findings: Sequence[Mapping[str, Any]],
    runs: Iterable[Mapping[str, Any]],
    label: Callable[[Mapping[str, Any]], K],
    judged: Mapping[int, Sequence[int]] | None = None,
) -> dict[K, Score]:
    """Per label of a finding or run (`label` gives it: an agent, a model, a tuple of them), scored as
    `breakdown` scores one; labels sorted."""
    runs = list(runs)
    finding_labels = [label(f) for f in findings]
    run_labels = [label(r) for r in runs]
    out: dict[K, Score] = {}
    for name in sorted(set(run_labels) | set(finding_labels)):
        kept = [j for j, lab in enumerate(finding_labels) if lab == name]
        where = {j: k for k, j in enumerate(kept)}  # index in the case -> index among this label's findings
        mine_judged = {i: [where[j] for j in named if j in where] for i, named in (judged or {}).items()}
        cost = sum(
            int(r.get("cost_micros") or 0) for r, lab in zip(runs, run_labels, strict=True) if lab == name
        )
        out[name] = score(golden, [findings[j] for j in kept], cost, judged=mine_judged)
    return out


def effort_label(efforts: Mapping[str, str]) -> Callable[[Mapping[str, Any]], AgentModelEffort]:
    """(agent, model, effort) of a finding or run, the effort being what the stack sent: the agent's level in
    `efforts` (the stack's Settings.efforts) for that model (effort_for: "none" for a model that takes no effort;
    "?" for an agent the settings have no level for)."""

    def label(item: Mapping[str, Any]) -> AgentModelEffort:
        agent, model = str(item.get("agent") or "?"), str(item.get("model") or "?")
        level = efforts.get(agent)
        if not level:
            return agent, model, "?"
        return agent, model, effort_for(model, level) or NO_EFFORT

    return label


@dataclass
class CaseResult:
    """One case: reviewed or not (a timeout is reported, never dropped), its score and its breakdowns."""

    name: str
    reviewed: bool
    total: Score
    by_agent: dict[str, Score] = field(default_factory=dict)
    by_model: dict[str, Score] = field(default_factory=dict)
    by_agent_model_effort: dict[AgentModelEffort, Score] = field(default_factory=dict)
    matches: list[dict[str, Any]] = field(default_factory=list)  # each golden issue: found by which finding
    error: str = ""
    judge: JudgeStats = field(default_factory=JudgeStats)
    url: str = ""


def case_result(
    name: str,
    golden: Sequence[Golden],
    findings: Sequence[Mapping[str, Any]],
    runs: Sequence[Mapping[str, Any]],
    seconds: float | None,
    judgements: Mapping[int, Judgement] | None = None,
    judge: JudgeStats | None = None,
    efforts: Mapping[str, str] | None = None,
) -> CaseResult:
    """Score a reviewed case: in total, per agent, per model, per (agent, model, effort) (`efforts`: the level
    per agent the case's stack read, Settings.efforts), and which finding found each golden issue (for one without
    a path: how it was judged, or that it was not)."""
    cost = sum(int(r.get("cost_micros") or 0) for r in runs)
    judged = {i: j.matches for i, j in (judgements or {}).items()}
    pairs = dict(match(golden, findings, judged=judged).pairs)
    stats = judge or JudgeStats()
    matches = []
    for i, g in enumerate(golden):
        j = pairs.get(i)
        f = findings[j] if j is not None else None
        item: dict[str, Any] = {
            "path": g.path,
            "line": g.line,
            "end_line": g.end_line,
            "matched_by": "judge" if g.judged else "location",
            "found": f is not None,
            "finding": None
            if f is None or j is None
            else {
                "id": finding_id(j),
                **{k: f.get(k) for k in ("path", "line", "agent", "severity", "title")},
            },
        }
        if g.judged:
            item["comment"] = g.comment
            item["severity"] = g.severity or None
            judgement = (judgements or {}).get(i)
            item["judge"] = judgement.to_json() if judgement else None
        matches.append(item)
    stats.unjudged = sum(1 for i, g in enumerate(golden) if g.judged and i not in (judgements or {}))
    return CaseResult(
        name,
        True,
        score(golden, findings, cost, seconds, judged),
        breakdown(golden, findings, runs, "agent", judged),
        breakdown(golden, findings, runs, "model", judged),
        grouped(golden, findings, runs, effort_label(efforts or {}), judged),
        matches,
        judge=stats,
    )


def judge_totals(results: Sequence[CaseResult]) -> JudgeStats:
    """The judge's figures over every case (reviewed or not: a call made is a call paid)."""
    total = JudgeStats()
    for res in results:
        total.add(res.judge)
    return total


@dataclass
class Totals:
    """The reviewed cases added up: in total, per agent, per model and per (agent, model, effort)."""

    total: Score
    by_agent: dict[str, Score]
    by_model: dict[str, Score]
    by_agent_model_effort: dict[AgentModelEffort, Score]


def totals(results: Sequence[CaseResult]) -> Totals:
    """The reviewed cases added up (a case not reviewed adds nothing: it is reported apart)."""
    out = Totals(Score(), {}, {}, {})
    for res in results:
        if not res.reviewed:
            continue
        out.total.add(res.total)
        for name, s in res.by_agent.items():
            out.by_agent.setdefault(name, Score()).add(s)
        for name, s in res.by_model.items():
            out.by_model.setdefault(name, Score()).add(s)
        for key, s in res.by_agent_model_effort.items():
            out.by_agent_model_effort.setdefault(key, Score()).add(s)
    out.by_agent_model_effort = dict(sorted(out.by_agent_model_effort.items()))
    return out
