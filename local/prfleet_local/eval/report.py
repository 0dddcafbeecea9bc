"""`prfleet eval`'s output: a table per case and in total (with per agent and per model), or one JSON object."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prfleet_local.eval.scoring import CaseResult, Score, totals

OFFLINE_NOTE = "offline model: these figures measure the pipeline, not Claude"


def to_json(results: Sequence[CaseResult], *, model: str, offline: bool) -> dict[str, Any]:
    """The whole evaluation as one object: cases, total, per agent, per model (names as in scoring.py)."""
    total, agents, models = totals(results)
    return {
        "model": model,
        "note": OFFLINE_NOTE if offline else "",
        "cases": [
            {
                "case": r.name,
                "reviewed": r.reviewed,
                "error": r.error or None,
                **r.total.to_json(),
                "per_agent": {k: v.to_json() for k, v in r.by_agent.items()},
                "per_model": {k: v.to_json() for k, v in r.by_model.items()},
                "golden_issues": r.matches,
            }
            for r in results
        ],
        "total": {
            "cases": len(results),
            "reviewed": sum(r.reviewed for r in results),
            **total.to_json(),
        },
        "per_agent": {k: v.to_json() for k, v in agents.items()},
        "per_model": {k: v.to_json() for k, v in models.items()},
    }


def _fmt(x: float | None, pattern: str) -> str:
    return "-" if x is None else pattern.format(x)


HEADER = (
    f"{'':<32} {'golden':>6} {'found':>6} {'tp':>4} {'prec':>6} {'recall':>6} {'f1':>6} "
    f"{'cost $':>10} {'$/tp':>10} {'time s':>7}"
)


def row(label: str, s: Score) -> str:
    return (
        f"{label[:32]:<32} {s.golden:>6} {s.findings:>6} {s.true_positives:>4} "
        f"{_fmt(s.precision, '{:.2f}'):>6} {_fmt(s.recall, '{:.2f}'):>6} {_fmt(s.f1, '{:.2f}'):>6} "
        f"{s.cost_micros / 1e6:>10.6f} {_fmt(s.usd_per_true_positive, '{:.6f}'):>10} "
        f"{_fmt(s.time_to_review_s, '{:.1f}'):>7}"
    )


def table(results: Sequence[CaseResult], *, model: str, offline: bool) -> list[str]:
    """The lines `prfleet eval` prints: one row per case, the total, then per agent and per model."""
    total, agents, models = totals(results)
    lines = [f"model: {model}"]
    if offline:
        lines.append(f"({OFFLINE_NOTE})")
    lines += ["", HEADER]
    for r in results:
        lines.append(row(r.name, r.total) if r.reviewed else f"{r.name[:32]:<32} NOT REVIEWED: {r.error}")
    lines.append(row("total", total))
    lines += ["", "per agent (each agent's findings matched alone against all golden issues)"]
    lines += [row(f"  {name}", s) for name, s in agents.items()]
    lines += ["", "per model"]
    lines += [row(f"  {name}", s) for name, s in models.items()]
    missed = [(r.name, m) for r in results for m in r.matches if not m["found"]]
    if missed:
        lines += ["", "golden issues not found:"]
        lines += [f"  {case}: {m['path']}:{m['line']}-{m['end_line']}" for case, m in missed]
    lines += [
        "",
        "tp: findings within 5 lines of a golden issue's range, one to one; time: webhook to posted review "
        "(median in the total)",
    ]
    return lines
