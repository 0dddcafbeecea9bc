"""The figures a soak reports beside its invariants: the scale, what was delivered and answered, jobs and their
pace on day one, what a job cost and what a day on the template's defaults would carry, the faults injected, the
DLQs, whether each phase settled, the sweeper's counts and the reconciliation passes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from prfleet_local.soak import invariants as inv
from prfleet_local.soak.scale import Scale
from prfleet_local.soak.traffic import Driven
from prfleet_local.stack import template as tpl
from prfleet_local.stack.local_stack import LocalStack


@dataclass
class Pace:
    """How the run went in time: day one's length and the jobs it finished, the whole run's wall time, and whether
    each phase (day_one, commands, later_days) settled before the deadline."""

    day_one_s: float = 0.0
    jobs_day_one: int = 0
    wall_s: float = 0.0
    idle: dict[str, bool] = field(default_factory=dict)


def figures(
    s: Scale,
    daily_budget: float,
    driven: Driven,
    observed: inv.Observed,
    pace: Pace,
    stack: LocalStack,
    dlq: dict[str, list[str]],
    *,
    days: int,
    swept: Counter[str],
    reconciled: dict[str, Any],
) -> dict[str, Any]:
    day_one, jobs_day_one = pace.day_one_s, pace.jobs_day_one
    jobs_done = sum(len(inv.job_ids(h)) for h in observed.heads.values())
    return {
        "prs": s.prs,
        "files": s.files,
        "agents": s.agents,
        "repos": s.repos,
        "fault_rate": s.fault_rate,
        "daily_budget_usd": daily_budget,
        "deliveries": dict(driven.deliveries),
        "webhook_statuses": dict(driven.statuses),
        "jobs_finished": jobs_done,
        "model_calls_served": observed.bill_calls,
        "day_one_s": round(day_one, 1),
        "wall_s": round(pace.wall_s, 1),
        "jobs_finished_day_one": jobs_day_one,
        # jobs the budget deferred to a later day (the heads' deferred sets): the day ran out
        "jobs_deferred": sum(len(inv.job_ids(h, "deferred_ids")) for h in observed.heads.values()),
        "jobs_per_s_day_one": round(jobs_day_one / day_one, 2) if day_one else None,
        # What a day on the template's defaults carries: the default DailyBudgetUsd over what a job cost here
        # (the offline model's usage and prices, faults and retries included), and the local pace over 24 h.
        "cost_per_job_usd": round(observed.bill_micros / 1e6 / jobs_done, 5) if jobs_done else None,
        "jobs_per_day_default_budget": (
            int(
                float(tpl.load()["Parameters"]["DailyBudgetUsd"]["Default"])
                * 1e6
                * jobs_done
                / observed.bill_micros
            )
            if observed.bill_micros
            else None
        ),
        "jobs_per_day_local_pace": int(86400 * jobs_day_one / day_one) if day_one else None,
        "aws_faults_injected": {"/".join(k): v for k, v in stack.moto.injected().items()},
        "aws_requests": sum(stack.moto.counts().values()),
        "dlq": {q: len(b) for q, b in dlq.items()},
        "idle": dict(pace.idle),
        "budget_days": days,
        "swept": dict(swept),
        "reconciled": reconciled,
    }
