"""The faults the soak injects, at rates derived from its scale: in the model (rate limits, overload, truncated
and cut-off replies, the usage tier's spend limit), in AWS (throttling, lost responses, lost SQS deletes), in
GitHub (5xx before and after a write, secondary rate limits) and in Lambda (crashes and hangs)."""

from __future__ import annotations

from prfleet_local.github.server import GitHubServer
from prfleet_local.model.server import FaultPlan as ModelFaults
from prfleet_local.model.server import FaultRule as ModelRule
from prfleet_local.soak.scale import Scale
from prfleet_local.stack.invocations import InvocationFault
from prfleet_local.stack.local_stack import LocalStack
from prfleet_local.stack.moto_proc import FaultPlan as AwsFaults
from prfleet_local.stack.moto_proc import FaultRule as AwsRule


def model_faults(s: Scale) -> ModelFaults:
    r = s.fault_rate
    return ModelFaults(
        rules=[
            # The usage tier's monthly cap, once, about a third of the way through day one's calls: the circuit
            # opens, waiting jobs are deferred until the sweeper's probe gets through.
            ModelRule("spend_limit", requests=[max(2, s.prs * s.files * s.agents)]),
            ModelRule("429", probability=r, retry_after=1),
            ModelRule("529", probability=r, retry_after=1),
            ModelRule("500", probability=r),
            ModelRule("truncated", probability=r / 2),
            ModelRule("timeout_after_billing", probability=r / 2),
            ModelRule("reset_after_read", probability=r / 2),
            ModelRule("stream_error", probability=r / 2),
        ],
        seed=s.seed,
    )


def aws_faults(s: Scale) -> AwsFaults:
    r = s.fault_rate
    return AwsFaults(
        rules=[
            AwsRule("throttle", rate=r),
            AwsRule("throttling", rate=r / 2),
            AwsRule("lost_response", rate=r / 2),
            AwsRule("sqs_delete_lost", queues=["JobsQueue", "PrQueue"], rate=r),
        ],
        seed=s.seed,
    )


def lambda_faults(stack: LocalStack, s: Scale) -> None:
    """Invocations that die: a crash right after a model call or in the middle of one (the model API has the
    request and bills it, the reservation stays open until the sweeper expires it; nothing after it runs, EMF
    unflushed, the batch back after its visibility timeout) and a hang that the runtime abandons at the
    function's Timeout."""
    n = max(1, int(s.prs * s.fault_rate * 2))
    stack.inject(InvocationFault("AgentFunction", "crash", after='"api_call"', times=n))
    stack.inject(InvocationFault("AgentFunction", "crash", during="model_call", times=n))
    stack.inject(InvocationFault("AgentFunction", "hang", after='"api_call"', times=max(1, n // 2)))
    stack.inject(InvocationFault("PlannerFunction", "crash", after='"planned"', times=1))


def github_faults(servers: dict[str, GitHubServer], s: Scale) -> None:
    """GitHub's failures, count-based as the fake offers them: 5xx before anything is done, 5xx after a write
    was applied (reviews, comments, check runs), secondary rate limits."""
    n = max(1, int(s.prs * s.fault_rate * 5))
    for srv in servers.values():
        srv.inject(r"/pulls/\d+/files", 502, n, method="GET")
        srv.fail_after_write(r"/pulls/\d+/reviews$", n, status=502, method="POST")
        srv.fail_after_write(r"/issues/\d+/comments$", n, status=0, method="POST")
        srv.fail_after_write(r"/check-runs/\d+$", n, status=502, method="PATCH")
        srv.rate_limit(r"/git/", n, retry_after=1)
