"""What the offline model server does wrong, switchable per test: a FaultPlan of FaultRules.

Each kind imitates one documented failure of the Messages API, with the shape the docs give it:

- https://platform.claude.com/docs/en/api/errors — the error shape (`{"type": "error", "error": {...}}`,
  `request-id`), 429 `rate_limit_error` (with `retry-after` for ordinary rate limits), 529 `overloaded_error`,
  500 `api_error`; a spend limit you set on the organization or a workspace answers **400**
  `invalid_request_error` ("You have reached your specified [workspace] API usage limits ..."), the usage tier's
  monthly cap answers **429** with `error.details.error_code = "enforced_spend_limit_reached"` and **no**
  `retry-after`; only the Claude Code workspace's limit answers 429 with a `retry-after`.
- https://platform.claude.com/docs/en/api/handle-errors — an error can arrive inside a 200 stream (`event: error`).
- Billing help (founders' fact): a call whose client timed out or disconnected after sending it is still
  charged. The server therefore bills `timeout_after_billing`, `reset_after_read`, `truncated` and
  `stream_error` (the last is assumed billed: the stricter choice for a budget).

`x-should-retry` is sent only when a rule sets `should_retry` (the SDK honours it; the docs do not say which
responses carry it, so by default none does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FAULT_KINDS = (
    "429",
    "spend_limit",  # the usage tier's monthly cap: 429 + error_code enforced_spend_limit_reached, no retry-after
    "spend_limit_org",  # a spend limit set on the organization: 400 invalid_request_error
    "spend_limit_workspace",  # a spend limit set on a workspace: 400 invalid_request_error
    "spend_limit_claude_code",  # the Claude Code workspace's limit: 429 with retry-after
    "529",
    "500",
    "slow",
    "timeout_after_billing",  # bill, then hold the reply past the client's timeout
    "reset_after_read",  # read the request, bill it, reset the connection
    "truncated",  # billed 200 whose body is cut (unparseable JSON, or a stream without message_stop)
    "stream_error",  # billed 200 stream that ends in `event: error` (overloaded_error)
    "max_tokens",
    "refusal",
    "pause_turn",
    "context_exceeded",
    "stop_reason",
)
DEFAULT_RETRY_AFTER_S = 1  # an ordinary 429's retry-after when the rule sets none (whole seconds)
BILLED_FAULTS = frozenset({"timeout_after_billing", "reset_after_read", "truncated", "stream_error"})


@dataclass
class FaultRule:
    """One injected fault: on the listed request numbers (1-based, counted from when the plan was set) or with
    the given probability (seeded RNG)."""

    kind: str
    requests: list[int] = field(default_factory=list)
    probability: float = 0.0
    retry_after: float | None = None  # seconds; sent only for the kinds whose real responses carry it
    retry_after_ms: int | None = None
    delay: float = (
        0.0  # seconds, for "slow"; the hold for "timeout_after_billing" (0 = until the client leaves)
    )
    stop_reason: str | None = None  # for kind "stop_reason": any value, even an unknown one
    should_retry: bool | None = None  # x-should-retry header, only when set
    # kind "429": the API sends `retry-after` with an ordinary rate limit ("a 429 error describing which rate
    # limit was exceeded, along with a retry-after header indicating how long to wait",
    # https://platform.claude.com/docs/en/api/rate-limits), so the server does too (retry_after, else
    # DEFAULT_RETRY_AFTER_S); omit_retry_after leaves it out, for tests of a client without the header.
    omit_retry_after: bool = False
    after_events: int = 3  # for streamed "truncated" / "stream_error": SSE events sent before the cut
    # Only the requests of this prfleet agent (the one its system prompt names: "review", "verify", ...), counted
    # among all requests as ever; None: any request.
    agent: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")


@dataclass
class FaultPlan:
    """What the server does wrong, and how it explores and thinks.

    `read_chunks` splits read_file into N ranges and `read_windows` reads N windows instead (fixed iteration
    counts, for the caching benchmark); `invalid_reports` makes the first N reports invalid; `parallel_tools`
    asks for read_file and get_diff in one turn (two tool_use blocks). `thinking` switches adaptive thinking
    off (the model then never thinks: a stand-in for older models only); `thinking_scale` multiplies how much
    it thinks (to push a run past max_tokens); `strict_fields=False` accepts the request fields the current
    models reject (only to show that a test would catch them).

    `scripted` (None = off) is the scripted-reply mode: the model still makes its tool calls, but its report is
    exactly the scripted findings of the job's agent ("agent", default "review") and file ("path"), each with the
    report_findings fields (path, line, severity, category, title, body; optional suggestion, relation); a job
    with none scripted reports no finding. It makes what a review finds known in advance, e.g. to prove
    `prfleet eval`'s scoring. Items with "agent": "verify" script the verify run's verdicts instead (verify.py)."""

    rules: list[FaultRule] = field(default_factory=list)
    seed: int = 0
    invalid_reports: int = 0
    read_chunks: int = 1
    read_windows: int = 0  # instead of the whole file, read N 30-line windows around what looks suspicious
    parallel_tools: bool = True
    thinking: bool = True
    thinking_scale: float = 1.0
    strict_fields: bool = True
    refuse_models: list[str] = field(default_factory=list)  # models that refuse every request
    served_models: dict[str, str] = field(default_factory=dict)  # requested -> the model the response names
    cache_minimums: bool = True  # False caches prefixes of any length (more lenient than the API: demos only)
    # Every turn that thinks also returns a redacted_thinking block (encrypted `data` the server verifies when it
    # comes back, like a signature). Off by default: the current models do not produce them (thinking.py).
    redacted_thinking: bool = False
    scripted: list[dict[str, Any]] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultPlan:
        """Build from JSON (POST /_faults, --faults)."""
        return cls(
            rules=[FaultRule(**r) for r in data.get("rules", [])],
            seed=int(data.get("seed", 0)),
            invalid_reports=int(data.get("invalid_reports", 0)),
            read_chunks=max(1, int(data.get("read_chunks", 1))),
            read_windows=max(0, int(data.get("read_windows", 0))),
            parallel_tools=bool(data.get("parallel_tools", True)),
            thinking=bool(data.get("thinking", True)),
            thinking_scale=max(0.0, float(data.get("thinking_scale", 1.0))),
            strict_fields=bool(data.get("strict_fields", True)),
            refuse_models=[str(m) for m in data.get("refuse_models", [])],
            served_models={str(k): str(v) for k, v in data.get("served_models", {}).items()},
            cache_minimums=bool(data.get("cache_minimums", True)),
            redacted_thinking=bool(data.get("redacted_thinking", False)),
            scripted=_scripted(data.get("scripted")),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scripted(value: Any) -> list[dict[str, Any]] | None:
    """The scripted findings of a plan given as JSON: a list of objects each naming at least path and line."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(f, dict) and "path" in f and "line" in f for f in value
    ):
        raise ValueError("scripted must be a list of findings, each an object with at least path and line")
    return [dict(f) for f in value]
