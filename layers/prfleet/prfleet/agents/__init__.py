"""Agents: the agent specs and prompts, the read-only tool-use loop, its model calls, its tools, the findings
schema and the model client."""

from prfleet.agents.calls import CallGuard, IncompleteStream, RetryPolicy, retry_after_seconds
from prfleet.agents.loop import RunResult, run_agent
from prfleet.agents.specs import (
    AGENT_NAMES,
    DEFAULT_LIMITS,
    PROMPTS,
    AgentSpec,
    agent_specs,
    effort_for,
    system_prompt,
    verify_spec,
)

__all__ = [
    "AGENT_NAMES",
    "DEFAULT_LIMITS",
    "PROMPTS",
    "AgentSpec",
    "CallGuard",
    "IncompleteStream",
    "RetryPolicy",
    "RunResult",
    "agent_specs",
    "effort_for",
    "retry_after_seconds",
    "run_agent",
    "system_prompt",
    "verify_spec",
]
