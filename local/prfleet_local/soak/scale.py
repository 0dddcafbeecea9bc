"""How big the soak is and how hard it is pushed: PRs, files, repositories, fault rates, the day-one budget and
the agent's Timeout (python -m prfleet_local.soak's options)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prfleet_local.stack import template as tpl


@dataclass
class Scale:
    prs: int = 50
    files: int = 10
    agents: int = (
        3  # the template's three agents (review, tests, docs); the template has no parameter to vary it
    )
    repos: int = 3
    seed: int = 1
    fault_rate: float = 0.02  # base rate; each fault kind is a multiple of it
    budget_fraction: float = 0.6  # the day-one budget as a share of what the whole run costs
    second_push: float = 0.3
    redeliver: float = 0.3
    comments: float = 0.1
    reruns: float = 0.1
    senders: int = 4
    timeout: float = 5400.0  # seconds for the whole soak at most (the default scale takes about 30 minutes)
    # For the day-one budget, measured on the offline model (docs/reliability.md): what a job books before
    # reconciliation (calls that may have been billed are booked at their worst case, $0.38 for a review call,
    # until the Usage API reconciles them: 72 % of day one's bookings in the default-scale run of 14:24 UTC, whose
    # 829 jobs of day one booked $14.09 and whose deferred review jobs $0.07 each on day two), and the worst case
    # one call reserves (review agent: max_tokens at the output price), times the agent concurrency.
    cost_per_job_usd: float = 0.03
    max_days: int = 8  # budget days the soak moves through until nothing deferred is left
    worst_call_usd: float = 0.4  # review agent on the default model, max_tokens sized for thinking
    agent_concurrency: int = 5  # the template's AgentMaxConcurrency default
    daily_budget_usd: float | None = None  # overrides the computed day-one budget
    agent_timeout: float = 60.0  # seconds (the template: 300; the runner keeps a 20 s margin)

    def visibility_timeout(self) -> int:
        """The queues' visibility timeout at the template's own ratio to the agent's Timeout (JobsQueue 1,800 s for
        300 s: six times, as Lambda's SQS guide asks, https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html).
        A shorter one sends live jobs back as duplicate deliveries AWS would not make (1,713 at depth with 3 s)."""
        t = tpl.load()
        queue = tpl.resources(t, "AWS::SQS::Queue")["JobsQueue"]["Properties"]["VisibilityTimeout"]
        ratio = int(queue) / float(tpl.function_setting(t, "AgentFunction", "Timeout"))
        return math.ceil(ratio * self.agent_timeout)
