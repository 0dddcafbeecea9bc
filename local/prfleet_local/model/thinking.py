"""Adaptive thinking as the current models do it, and what each model accepts.

Sources, per behaviour:
- Sonnet 5.5 and Haiku 5.5 think by default (adaptive), at effort `high` and `medium`; thinking tokens are
  billed as output tokens and count toward `max_tokens`
  (https://platform.claude.com/docs/en/models/sonnet-5-5/overview,
  https://platform.claude.com/docs/en/models/haiku-5-5/whats-new-haiku-5-5, the pricing page).
- `output_config.effort` is one of low, medium, high, xhigh, max (https://platform.claude.com/docs/en/build-with-claude/effort).
- Thinking text is omitted by default on these models (`thinking.display` "omitted": an empty `thinking` with a
  `signature`); "summarized" returns it. Text between tool calls comes back in thinking blocks (Sonnet 5.5
  overview, "breaking changes").
- `redacted_thinking` blocks (`{"type": "redacted_thinking", "data": <encrypted>}`) carry thinking the safety
  systems encrypted; they are decrypted when passed back and must come back unchanged
  (https://platform.claude.com/docs/en/build-with-claude/extended-thinking, "thinking redaction";
  https://docs.aws.amazon.com/bedrock/latest/userguide/claude-messages-thinking-encryption.html). The Bedrock
  page says "Claude 4 models handle thinking differently and do not produce redacted thinking blocks", so the
  server emits one only when `FaultPlan.redacted_thinking` asks (a client must still handle the block type the
  API defines).
- Thinking blocks are bound to the model and the conversation: a block whose signature does not match (edited,
  moved to another model, or an earlier turn changed) is rejected (same page; Haiku 5.5: "changing earlier turns
  invalidates thinking blocks").
- Rejected with 400 on these models: `thinking.type` "enabled" (manual budgets), "disabled" on Sonnet 5.5,
  forced tool use (`tool_choice` any / tool), non-default `temperature`, any `top_p` / `top_k`, and an assistant
  prefill (a last message with role assistant) (Sonnet 5.5 overview and migration guide; Haiku 5.5 what's new).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from prfleet_local.model.model_ids import claude_api_model

EFFORTS = ("low", "medium", "high", "xhigh", "max")
EFFORT_SCALE = {"low": 0.3, "medium": 0.6, "high": 1.0, "xhigh": 1.6, "max": 2.5}
_SECRET = b"prfleet-offline-thinking-signature"


@dataclass(frozen=True)
class ModelRules:
    """What one model family accepts and how it thinks."""

    adaptive_default: bool  # thinks when `thinking` is omitted
    default_effort: str | None
    rejects_disabled: bool
    rejects_sampling: bool
    rejects_forced_tools: bool
    rejects_prefill: bool
    display_default: str  # "omitted" or "summarized"
    max_output: int
    context_window: int
    adaptive: bool = True  # accepts thinking.type "adaptive"
    efforts: tuple[str, ...] = EFFORTS  # the output_config.effort values it accepts (() = no effort at all)


# Effort (https://platform.claude.com/docs/en/build-with-claude/effort): Fable 5, Mythos 5, Opus 5, Opus 4.8,
# Opus 4.7, Opus 4.6, Sonnet 5, Sonnet 4.6 and Opus 4.5; `max` on all of them but Opus 4.5, `xhigh` only on Fable
# 5, Mythos 5, Opus 5, Opus 4.8, Opus 4.7 and Sonnet 5; the later 5.x models (not on that list) keep every level,
# no page found restricting them. Adaptive
# thinking (https://docs.aws.amazon.com/bedrock/latest/userguide/claude-messages-adaptive-thinking.html, the same
# models on the Claude API): the 5.x models, Opus 4.7, Opus 4.6 and Sonnet 4.6; "older models (Claude Sonnet
# 4.5, Claude Opus 4.5, etc.) do not support adaptive thinking". Either field on a model without it is answered
# with a 400 here (stricter than a silent acceptance, never more lenient).
_NO_XHIGH = ("low", "medium", "high", "max")
_OLD = dict(adaptive=False, efforts=())
CURRENT = ModelRules(True, "high", False, True, True, True, "omitted", 128_000, 1_000_000)
_RULES: list[tuple[re.Pattern[str], ModelRules]] = [
    (
        re.compile(r"^claude-sonnet-5-5"),
        ModelRules(True, "high", True, True, True, True, "omitted", 128_000, 1_000_000),
    ),
    (
        re.compile(r"^claude-haiku-5-5"),
        ModelRules(True, "medium", False, True, True, True, "omitted", 128_000, 1_000_000),
    ),
    (
        re.compile(r"^claude-opus-5-5"),
        ModelRules(True, "medium", True, True, True, True, "omitted", 128_000, 1_000_000),
    ),
    (
        re.compile(r"^claude-(fable|mythos)-5"),
        ModelRules(True, "high", True, True, True, True, "omitted", 128_000, 1_000_000),
    ),
    (
        re.compile(r"^claude-(sonnet|opus)-5"),
        ModelRules(True, "high", False, True, True, True, "summarized", 128_000, 1_000_000),
    ),
    (
        re.compile(r"^claude-opus-4-[78]"),
        ModelRules(False, "high", False, True, False, True, "summarized", 128_000, 1_000_000),
    ),
    (
        re.compile(r"^claude-opus-4-6"),
        ModelRules(
            False, "high", False, True, False, True, "summarized", 128_000, 1_000_000, efforts=_NO_XHIGH
        ),
    ),
    (  # the older models' rules, with adaptive thinking and effort (no xhigh)
        re.compile(r"^claude-sonnet-4-6"),
        ModelRules(
            False, "high", False, False, False, False, "summarized", 64_000, 200_000, efforts=_NO_XHIGH
        ),
    ),
    (  # effort without max or xhigh, and no adaptive thinking
        re.compile(r"^claude-opus-4-5"),
        ModelRules(
            False,
            "high",
            False,
            False,
            False,
            False,
            "summarized",
            64_000,
            200_000,
            adaptive=False,
            efforts=("low", "medium", "high"),
        ),
    ),
    (
        re.compile(r"^claude-"),
        ModelRules(False, None, False, False, False, False, "summarized", 64_000, 200_000, **_OLD),
    ),
]


def rules_for(model: str) -> ModelRules:
    """The rules of `model` (an unknown claude-* model gets the current models' strict rules)."""
    model = claude_api_model(model)  # a Bedrock profile has its model's rules (issue 15)
    for pattern, rules in _RULES[:-1]:
        if pattern.match(model):
            return rules
    if re.match(r"^claude-(sonnet|haiku|opus)-[34]", model):
        return _RULES[-1][1]
    return CURRENT


def effort_of(body: dict[str, Any]) -> str | None:
    oc = body.get("output_config")
    return oc.get("effort") if isinstance(oc, dict) else None


def thinks(body: dict[str, Any]) -> bool:
    """Whether this request runs with thinking on."""
    cfg = body.get("thinking")
    rules = rules_for(str(body.get("model", "")))
    if cfg is None:
        return rules.adaptive_default
    return isinstance(cfg, dict) and cfg.get("type") in ("adaptive", "enabled")


def display_of(body: dict[str, Any]) -> str:
    cfg = body.get("thinking")
    if isinstance(cfg, dict) and cfg.get("display"):
        return str(cfg["display"])
    return rules_for(str(body.get("model", ""))).display_default


def budget(kind: str, work_tokens: int, body: dict[str, Any], scale: float = 1.0) -> int:
    """Thinking tokens for one turn: more for the report (proportional to the code read), scaled by effort."""
    rules = rules_for(str(body.get("model", "")))
    effort = effort_of(body) or rules.default_effort or "high"
    base = {"plan": 150, "tool": 80, "report": max(300, min(12_000, work_tokens // 2)), "end": 40}[kind]
    if effort == "low" and kind in ("tool", "end"):
        return 0  # adaptive: at low effort a simple turn needs no thinking
    return int(math.ceil(base * EFFORT_SCALE.get(effort, 1.0) * scale))


def _conversation_key(model: str, messages: list[dict[str, Any]]) -> str:
    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k != "cache_control"}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return hashlib.sha256(json.dumps([model, clean(messages)], sort_keys=True).encode()).hexdigest()


def sign(model: str, prior_messages: list[dict[str, Any]], thinking_text: str, tokens: int) -> str:
    """The signature of a thinking block issued after `prior_messages` (binds model, conversation, content)."""
    payload = f"{_conversation_key(model, prior_messages)}|{tokens}|{thinking_text}".encode()
    mac = hmac.new(_SECRET, payload, hashlib.sha256).hexdigest()
    return base64.b64encode(json.dumps({"v": 1, "t": tokens, "mac": mac}).encode()).decode()


def verify(model: str, prior_messages: list[dict[str, Any]], block: dict[str, Any]) -> bool:
    """Whether a thinking block sent back is one this model issued at this point of this conversation."""
    try:
        meta = json.loads(base64.b64decode(str(block.get("signature", "")), validate=True))
        expected = sign(model, prior_messages, str(block.get("thinking", "")), int(meta["t"]))
    except (ValueError, KeyError, TypeError):
        return False
    return hmac.compare_digest(expected, str(block.get("signature", "")))


def sign_redacted(model: str, prior_messages: list[dict[str, Any]], tokens: int) -> str:
    """The `data` of a redacted_thinking block issued after `prior_messages`: opaque to the client, bound to the
    model and the conversation like a thinking signature, verifiable only by the server."""
    payload = f"{_conversation_key(model, prior_messages)}|redacted|{tokens}".encode()
    mac = hmac.new(_SECRET, payload, hashlib.sha256).hexdigest()
    return base64.b64encode(json.dumps({"v": 1, "r": 1, "t": tokens, "mac": mac}).encode()).decode()


def verify_redacted(model: str, prior_messages: list[dict[str, Any]], block: dict[str, Any]) -> bool:
    """Whether a redacted_thinking block sent back is one this model issued at this point of this conversation,
    with its `data` unchanged (the extended-thinking page: redacted blocks are passed back as received)."""
    data = str(block.get("data", ""))
    try:
        meta = json.loads(base64.b64decode(data, validate=True))
        expected = sign_redacted(model, prior_messages, int(meta["t"]))
    except (ValueError, KeyError, TypeError):
        return False
    return hmac.compare_digest(expected, data)


def thinking_text(kind: str, path: str | None, n_tokens: int, display: str) -> str:
    """The (summarized) thinking text, or "" when the display is omitted."""
    if display == "omitted" or n_tokens == 0:
        return ""
    what = {
        "plan": "decide what to read first",
        "tool": "decide the next tool call",
        "report": "weigh each candidate finding",
        "end": "confirm the report was recorded",
    }[kind]
    return f"(offline model, summarized thinking: {what} for {path or 'the file'}; {n_tokens} tokens)"
