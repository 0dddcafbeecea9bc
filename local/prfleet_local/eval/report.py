"""`prfleet eval`'s output: a table per case and in total (with per agent, per model and per agent, model and
effort), the judge's calls and cost apart, or one JSON object."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prfleet_local.eval.scoring import AgentModelEffort, CaseResult, Score, judge_totals, totals

OFFLINE_NOTE = "offline model: these figures measure the pipeline, not Claude"
OFFLINE_JUDGE_NOTE = (
    "offline judge: it matches by shared words; its figures measure the plumbing, not a judge"
)


@dataclass(frozen=True)
class JudgeInfo:
    """What the run's judge is, for the output: its model (None: no judge), where it runs, why there is none."""

    model: str | None
    offline: bool = False
    why_none: str = ""

    def describe(self) -> str:
        if self.model is None:
            return f"no judge ({self.why_none})" if self.why_none else "no judge"
        return f"{self.model}" + (" (the offline judge)" if self.offline else "")


def per_agent_model_effort(scores: dict[AgentModelEffort, Score]) -> list[dict[str, Any]]:
    """`per_agent_model_effort` in --json: one object per (agent, model, effort) with the Score fields."""
    return [
        {"agent": agent, "model": model, "effort": effort, **s.to_json()}
        for (agent, model, effort), s in scores.items()
    ]


def to_json(
    results: Sequence[CaseResult],
    *,
    model: str,
    offline: bool,
    judge: JudgeInfo | None = None,
    parameters: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The whole evaluation as one object: the --param values, cases, total, per agent, per model, per agent,
    model and effort (names as in scoring.py), and the judge apart (judge.JudgeStats' names): its figures are never
    inside cost_usd."""
    sums = totals(results)
    total, agents, models = sums.total, sums.by_agent, sums.by_model
    judge = judge or JudgeInfo(None)
    jt = judge_totals(results)
    return {
        "model": model,
        "note": OFFLINE_NOTE if offline else "",
        "parameters": dict(parameters or {}),
        "judge": {
            "model": judge.model,
            "note": OFFLINE_JUDGE_NOTE if judge.offline and judge.model else (judge.why_none or ""),
            "calls": jt.calls,
            "errors": jt.errors,
            "unjudged": jt.unjudged,
            "cost_usd": round(jt.cost_micros / 1e6, 6),
            "input_tokens": jt.input_tokens,
            "output_tokens": jt.output_tokens,
            "error_messages": jt.error_messages,
        },
        "cases": [
            {
                "case": r.name,
                "url": r.url or None,
                "reviewed": r.reviewed,
                "error": r.error or None,
                **r.total.to_json(),
                **r.judge.to_json(),
                "per_agent": {k: v.to_json() for k, v in r.by_agent.items()},
                "per_model": {k: v.to_json() for k, v in r.by_model.items()},
                "per_agent_model_effort": per_agent_model_effort(r.by_agent_model_effort),
                "golden_issues": r.matches,
            }
            for r in results
        ],
        "total": {
            "cases": len(results),
            "reviewed": sum(r.reviewed for r in results),
            **total.to_json(),
            **jt.to_json(),
        },
        "per_agent": {k: v.to_json() for k, v in agents.items()},
        "per_model": {k: v.to_json() for k, v in models.items()},
        "per_agent_model_effort": per_agent_model_effort(sums.by_agent_model_effort),
    }


def _fmt(x: float | None, pattern: str) -> str:
    return "-" if x is None else pattern.format(x)


def header(width: int = 32) -> str:
    """The column names over rows whose label column is `width` wide."""
    return (
        f"{'':<{width}} {'golden':>6} {'found':>6} {'tp':>4} {'prec':>6} {'recall':>6} {'f1':>6} "
        f"{'cost $':>10} {'$/tp':>10} {'time s':>7}"
    )


HEADER = header()


def row(label: str, s: Score, width: int = 32) -> str:
    """One row of figures; a label longer than `width` is cut (the effort section widens its column instead)."""
    return (
        f"{label[:width]:<{width}} {s.golden:>6} {s.findings:>6} {s.true_positives:>4} "
        f"{_fmt(s.precision, '{:.2f}'):>6} {_fmt(s.recall, '{:.2f}'):>6} {_fmt(s.f1, '{:.2f}'):>6} "
        f"{s.cost_micros / 1e6:>10.6f} {_fmt(s.usd_per_true_positive, '{:.6f}'):>10} "
        f"{_fmt(s.time_to_review_s, '{:.1f}'):>7}"
    )


JUDGE_HEADER = f"{'':<32} {'judged':>6} {'calls':>6} {'errors':>6} {'unjudged':>8} {'judge $':>10}"


def _judge_lines(results: Sequence[CaseResult], judge: JudgeInfo) -> list[str]:
    """The judge's own table (billed apart: not in the cost $ column above), and why a golden issue without a path
    could not be judged. Empty when no case has one."""
    pathless = {r.name: sum(1 for m in r.matches if m.get("matched_by") == "judge") for r in results}
    jt = judge_totals(results)
    if not any(pathless.values()) and not jt.calls:
        return []
    lines = ["", f"judge: {judge.describe()} -- billed apart, not in cost $ above"]
    if judge.offline and judge.model:
        lines.append(f"({OFFLINE_JUDGE_NOTE})")
    lines.append(JUDGE_HEADER)

    def jrow(label: str, judged: int, calls: int, errors: int, unjudged: int, micros: int) -> str:
        return f"{label[:32]:<32} {judged:>6} {calls:>6} {errors:>6} {unjudged:>8} {micros / 1e6:>10.6f}"

    for r in results:
        j = r.judge
        lines.append(jrow(r.name, pathless[r.name], j.calls, j.errors, j.unjudged, j.cost_micros))
    lines.append(jrow("total", sum(pathless.values()), jt.calls, jt.errors, jt.unjudged, jt.cost_micros))
    if jt.unjudged:
        lines.append(
            f"{jt.unjudged} golden issue(s) without a path were not judged ({judge.why_none or 'no judge'}): "
            "each is counted as missed"
        )
    if jt.errors:
        lines.append(f"{jt.errors} judge answer(s) unusable, each golden issue counted as missed; first:")
        lines.append(f"  {jt.error_messages[0]}")
    return lines


def table(
    results: Sequence[CaseResult],
    *,
    model: str,
    offline: bool,
    judge: JudgeInfo | None = None,
    parameters: dict[str, str] | None = None,
) -> list[str]:
    """The lines `prfleet eval` prints: the --param values, one row per case, the total, per agent, per model and
    per agent, model and effort (each case's rows, then the total's), then the judge."""
    judge = judge or JudgeInfo(None)
    sums = totals(results)
    total, agents, models = sums.total, sums.by_agent, sums.by_model
    lines = [f"model: {model}"]
    if offline:
        lines.append(f"({OFFLINE_NOTE})")
    if parameters:
        lines.append("parameters: " + " ".join(f"{k}={v}" for k, v in parameters.items()))
    lines += ["", HEADER]
    for r in results:
        lines.append(row(r.name, r.total) if r.reviewed else f"{r.name[:32]:<32} NOT REVIEWED: {r.error}")
    lines.append(row("total", total))
    lines += ["", "per agent (each agent's findings matched alone against all golden issues)"]
    lines += [row(f"  {name}", s) for name, s in agents.items()]
    lines += ["", "per model"]
    lines += [row(f"  {name}", s) for name, s in models.items()]
    lines += [
        "",
        "per agent, model and effort (effort: what the stack sent the model; none: it takes no effort)",
    ]
    lines += _effort_lines(results, sums.by_agent_model_effort)
    lines += _judge_lines(results, judge)
    missed = [(r.name, m) for r in results for m in r.matches if not m["found"]]
    if missed:
        lines += ["", "golden issues not found:"]
        lines += [f"  {case}: {_where(m)}" for case, m in missed]
    lines += [
        "",
        "tp: findings within 5 lines of a golden issue's range, or named by the judge for one without a path; one "
        "to one. time: webhook to posted review (median in the total)",
    ]
    return lines


def _effort_lines(results: Sequence[CaseResult], total: dict[AgentModelEffort, Score]) -> list[str]:
    """Each reviewed case's (agent, model, effort) rows when there are several cases, then the total's; the label
    column as wide as the longest label (a model id is never cut off its effort)."""
    groups: list[tuple[str | None, dict[AgentModelEffort, Score]]] = []
    if len(results) > 1:
        groups += [(r.name, r.by_agent_model_effort) for r in results if r.reviewed]
        groups.append(("total", total))
    else:
        groups.append((None, total))
    indent = "    " if len(groups) > 1 else "  "
    width = max([32, *(len(indent + " ".join(key)) for _, scores in groups for key in scores)])
    lines = [header(width)]
    for name, scores in groups:
        if name is not None:
            lines.append(f"  {name}")
        lines += [row(indent + " ".join(key), s, width) for key, s in scores.items()]
    return lines


def _where(m: dict[str, Any]) -> str:
    if m.get("path") is None:
        text = " ".join(str(m.get("comment") or "").split())
        return f'(no path) "{text[:70]}{"..." if len(text) > 70 else ""}"'
    return f"{m['path']}:{m['line']}-{m['end_line']}"
