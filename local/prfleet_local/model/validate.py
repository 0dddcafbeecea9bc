"""Request validation: what the Messages API answers with 400 invalid_request_error.

Structure (https://platform.claude.com/docs/en/api/messages): model, positive integer `max_tokens` no larger
than the model's maximum output, non-empty `messages` starting with a user turn, at most 4 `cache_control`
blocks, and 1-hour cache entries before 5-minute ones (prompt-caching page, "mixing TTLs").
Tool use (https://platform.claude.com/docs/en/agents-and-tools/tool-use/handle-tool-calls): every `tool_use` of
an assistant turn needs a `tool_result` in the very next user turn, and those results come first in it.
Per model (see `thinking.py` for the pages): manual thinking budgets, `thinking.type` disabled where the model
rejects it, forced `tool_choice`, non-default sampling parameters, an assistant prefill, an unknown effort;
thinking blocks must carry this model's signature (redacted_thinking blocks: this model's `data`) for this
point of the conversation, and a turn issued with thinking must come back with its thinking and redacted_thinking
blocks unchanged, in order.
Structured outputs (https://platform.claude.com/docs/en/build-with-claude/structured-outputs, "JSON Schema
limitations"): `output_config.format` is `{"type": "json_schema", "schema": {...}}`; every object sets
`additionalProperties: false`; no numeric (minimum, maximum, multipleOf), string-length or array constraints beyond
`minItems` 0 or 1; an `enum` holds only strings, numbers, booleans or null; only local `$ref`s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prfleet_local.model import thinking
from prfleet_local.model.cache import flatten


def _blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    content = msg.get("content")
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return [{"type": "text", "text": content}] if isinstance(content, str) else []


def validate(
    body: Any,
    *,
    strict_fields: bool = True,
    issued_thinking: Callable[[str], list[str] | None] = lambda _id: None,
) -> str | None:
    """The 400 message for `body`, or None when the API would accept it."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "model: field required"
    rules = thinking.rules_for(model)
    mt = body.get("max_tokens")
    if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
        return "max_tokens: must be a positive integer"
    if mt > rules.max_output:
        return f"max_tokens: {mt} > {rules.max_output}, which is the maximum allowed number of output tokens for {model}"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    if not all(isinstance(m, dict) and m.get("role") in ("user", "assistant") for m in messages):
        return "messages: each message needs a role of user or assistant"
    if messages[0].get("role") != "user":
        return "messages: the first message must use the user role"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream: must be a boolean"
    count = json.dumps(body).count('"cache_control"')
    if count > 4:
        return f"A maximum of 4 blocks with cache_control may be provided. Found {count}."
    problem = _ttl_order(body) or _output_format(body)
    if problem:
        return problem
    if strict_fields:
        problem = _model_fields(body, rules)
        if problem:
            return problem
    return _turns(model, messages, issued_thinking)


_UNSUPPORTED_SCHEMA_KEYS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "patternProperties",
)


def _output_format(body: dict[str, Any]) -> str | None:
    """The 400 for an output_config.format the structured-outputs page does not allow (module docstring)."""
    config = body.get("output_config")
    if not isinstance(config, dict) or "format" not in config:
        return None
    fmt = config["format"]
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return "output_config.format.type: must be 'json_schema'"
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        return "output_config.format.schema: field required (a JSON schema object)"
    return _schema_problem(schema, "output_config.format.schema")


def _schema_problem(node: Any, where: str) -> str | None:
    if isinstance(node, list):
        for k, item in enumerate(node):
            problem = _schema_problem(item, f"{where}.{k}")
            if problem:
                return problem
        return None
    if not isinstance(node, dict):
        return None
    for key in _UNSUPPORTED_SCHEMA_KEYS:
        if key in node:
            return f"{where}: '{key}' is not supported in structured outputs' JSON schemas"
    if node.get("minItems", 0) not in (0, 1):
        return f"{where}: minItems must be 0 or 1 in structured outputs' JSON schemas"
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        return f"{where}: external $ref {ref!r} is not supported"
    kinds = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
    if "object" in kinds and node.get("additionalProperties") is not False:
        return f"{where}: additionalProperties must be set to false for every object"
    enum = node.get("enum")
    if enum is not None and (not isinstance(enum, list) or any(isinstance(v, dict | list) for v in enum)):
        return f"{where}.enum: only strings, numbers, booleans and null are supported"
    for key in ("properties", "$defs", "definitions"):
        for name, sub in (node.get(key) or {}).items() if isinstance(node.get(key), dict) else ():
            problem = _schema_problem(sub, f"{where}.{key}.{name}")
            if problem:
                return problem
    for key in ("items", "anyOf", "allOf"):
        if key in node:
            problem = _schema_problem(node[key], f"{where}.{key}")
            if problem:
                return problem
    return None


def _ttl_order(body: dict[str, Any]) -> str | None:
    seen_5m = False
    for _, _, ttl in flatten(body):
        if ttl == "5m":
            seen_5m = True
        elif ttl == "1h" and seen_5m:
            return "cache_control: a ttl='1h' cache entry must not come after a ttl='5m' entry"
        elif ttl not in (None, "5m", "1h"):
            return f"cache_control.ttl: must be '5m' or '1h', got {ttl!r}"
    return None


def _model_fields(body: dict[str, Any], rules: thinking.ModelRules) -> str | None:
    model = body["model"]
    if rules.rejects_sampling:
        temperature = body.get("temperature")
        if temperature is not None and temperature != 1:
            return f"temperature: non-default values are not supported for {model}"
        for key in ("top_p", "top_k"):
            if body.get(key) is not None:
                return f"{key}: non-default values are not supported for {model}"
    cfg = body.get("thinking")
    if cfg is not None:
        kind = cfg.get("type") if isinstance(cfg, dict) else None
        if kind not in ("adaptive", "enabled", "disabled", "between_tools"):
            return f"thinking.type: unknown value {kind!r}"
        if kind == "enabled" and rules.adaptive_default:
            return (
                f"thinking.type 'enabled' (manual budget_tokens) is not supported for {model}; use 'adaptive'"
            )
        if kind == "adaptive" and not rules.adaptive:
            return f"thinking.type 'adaptive' is not supported for {model}; use 'enabled' with budget_tokens"
        if kind == "disabled" and rules.rejects_disabled:
            return f"thinking.type 'disabled' is not supported for {model}; use 'between_tools'"
        display = cfg.get("display")
        if display not in (None, "omitted", "summarized"):
            return f"thinking.display: must be 'omitted' or 'summarized', got {display!r}"
    effort = thinking.effort_of(body)
    if body.get("output_config") is not None and not isinstance(body.get("output_config"), dict):
        return "output_config: must be an object"
    if effort is not None and effort not in thinking.EFFORTS:
        return f"output_config.effort: must be one of {', '.join(thinking.EFFORTS)}, got {effort!r}"
    if effort is not None and effort not in rules.efforts:
        if not rules.efforts:
            return f"output_config.effort: the effort parameter is not supported for {model}"
        return f"output_config.effort: {effort!r} is not supported for {model}; one of {', '.join(rules.efforts)}"
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        if rules.rejects_forced_tools or thinking.thinks(body):
            return f"tool_choice: forced tool use (type {choice.get('type')!r}) is not supported for {model}"
    if rules.rejects_prefill and body["messages"][-1].get("role") == "assistant":
        return f"messages: assistant message prefill is not supported for {model}; end with a user turn"
    return None


def _turns(
    model: str, messages: list[dict[str, Any]], issued_thinking: Callable[[str], list[str] | None]
) -> str | None:
    for i, msg in enumerate(messages):
        blocks = _blocks(msg)
        if msg["role"] == "user":
            if i == 0 or messages[i - 1]["role"] != "assistant":
                if any(b.get("type") == "tool_result" for b in blocks):
                    return f"messages.{i}: tool_result blocks must follow an assistant turn with tool_use"
            continue
        uses = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
        for j, b in enumerate(blocks):
            if b.get("type") == "thinking" and not thinking.verify(model, messages[:i], b):
                return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
            if b.get("type") == "redacted_thinking" and not thinking.verify_redacted(model, messages[:i], b):
                return f"messages.{i}.content.{j}: Invalid `data` in `redacted_thinking` block"
        signatures = [
            b.get("signature") if b.get("type") == "thinking" else b.get("data")
            for b in blocks
            if b.get("type") in ("thinking", "redacted_thinking")
        ]
        for use in uses:
            expected = issued_thinking(str(use))
            if expected and signatures != expected:
                return (
                    f"messages.{i}: the thinking blocks of the assistant turn with tool_use {use} must be passed "
                    "back unchanged"
                )
        if uses:
            nxt = _blocks(messages[i + 1]) if i + 1 < len(messages) else []
            if i + 1 < len(messages) and messages[i + 1]["role"] != "user":
                nxt = []
            results = [b.get("tool_use_id") for b in nxt if b.get("type") == "tool_result"]
            missing = [u for u in uses if u not in results]
            if i + 1 < len(messages) and missing:
                return (
                    "messages: tool_use ids were found without tool_result blocks immediately after: "
                    + ", ".join(str(m) for m in missing)
                    + ". Each tool_use block must have a corresponding tool_result block in the next message."
                )
            kinds = [b.get("type") for b in nxt]
            first_other = next((k for k, t in enumerate(kinds) if t != "tool_result"), len(kinds))
            if "tool_result" in kinds[first_other:]:
                return f"messages.{i + 1}: tool_result blocks must come first in the content of the user turn"
            stray = [r for r in results if r not in uses]
            if stray:
                return f"messages.{i + 1}: unexpected tool_use_id found in tool_result blocks: {stray[0]}"
    return None
