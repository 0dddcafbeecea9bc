"""Agents: the agent specs and prompts, the read-only tool-use loop, its tools, the findings schema and the model
client."""

from prfleet.agents.loop import (
    AGENT_NAMES,
    DEFAULT_LIMITS,
    PROMPTS,
    AgentSpec,
    IncompleteStream,
    RetryPolicy,
    agent_specs,
    build_first_message,
    effort_for,
    retry_after_seconds,
    run_agent,
    system_prompt,
)

__all__ = [
    "AGENT_NAMES",
    "DEFAULT_LIMITS",
    "PROMPTS",
    "AgentSpec",
    "IncompleteStream",
    "RetryPolicy",
    "agent_specs",
    "build_first_message",
    "effort_for",
    "retry_after_seconds",
    "run_agent",
    "system_prompt",
]
