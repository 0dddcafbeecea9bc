"""Model ids across providers: the Claude API model a Bedrock profile or Claude Platform id names.

The offline model's per-model semantics (thinking rules, tokenizer) are the Claude API model's own, so the
provider wires (providers.py), the tokenizer (tokens.py) and the thinking rules (thinking.py) all map an id here.
"""

from __future__ import annotations

import re

from prfleet.cost import pricing


def claude_api_model(model: str) -> str:
    """The Claude API model a provider's id names ("global.anthropic.claude-sonnet-4-6" -> "claude-sonnet-4-6"),
    so the Messages semantics (thinking rules, tokenizer) are the model's own; any other id as it is."""
    if "anthropic." not in model:
        return model
    try:
        return pricing.table().canonical(model)
    except pricing.UnknownModel:
        return model


_VERSION_SUFFIX = re.compile(r"-v\d+(:\d+)?$")


def bedrock_response_model(model_id: str) -> str:
    """The `model` a Bedrock response names for a call to `model_id`: the Anthropic model's own id, not the
    inference profile invoked ("us.anthropic.claude-haiku-4-5-20251001-v1:0" -> "claude-haiku-4-5-20251001",
    "global.anthropic.claude-opus-4-6-v1" -> "claude-opus-4-6"). The InvokeModel body is the Messages response
    of the model that processed the request
    (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-anthropic-claude-messages-request-response.html,
    "model": the ID of the Anthropic Claude model that processed the request); Bedrock's own responses
    (ids `msg_bdrk_...`) name e.g. "claude-opus-4-6" or "claude-opus-4-20250514" whatever profile was called."""
    _, sep, base = model_id.partition("anthropic.")
    return _VERSION_SUFFIX.sub("", base) if sep else model_id
