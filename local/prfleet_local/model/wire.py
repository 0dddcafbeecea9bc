"""Messages API wire formats: the error body and the server-sent events of a streamed message.

Streaming follows https://platform.claude.com/docs/en/build-with-claude/streaming: `message_start` (the message
with empty content and the full input usage, `stop_reason` null), then per content block
`content_block_start` / `content_block_delta` (text_delta, thinking_delta then one signature_delta,
input_json_delta with partial JSON) / `content_block_stop`, `ping` events, a `message_delta` with the
`stop_reason`, `stop_details` and the cumulative `usage`, and `message_stop`. An error after the 200 arrives as
`event: error` with the usual error body.
"""

from __future__ import annotations

import json
from typing import Any

LABEL = "offline model"


def error_body(kind: str, message: str, *, error_code: str | None = None, request_id: str = "") -> dict:
    """`{"type": "error", "error": {...}, "request_id": ...}` as on the errors page."""
    err: dict[str, Any] = {"type": kind, "message": f"{message} ({LABEL})"}
    if error_code:
        err["details"] = {"error_code": error_code}
    body: dict[str, Any] = {"type": "error", "error": err}
    if request_id:
        body["request_id"] = request_id
    return body


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def stream_events(message: dict[str, Any]) -> list[bytes]:
    """The SSE events of a complete message, in order."""
    usage = dict(message["usage"])
    start_usage = {**usage, "output_tokens": 1}
    head = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "stop_details": None}
    head["usage"] = start_usage
    out = [sse("message_start", {"type": "message_start", "message": head}), sse("ping", {"type": "ping"})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            out.append(
                sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            for piece in _chunks(block["text"], 40):
                out.append(
                    sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": piece},
                        },
                    )
                )
        elif kind == "thinking":
            out.append(
                sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                    },
                )
            )
            if block.get("thinking"):
                for piece in _chunks(block["thinking"], 60):
                    out.append(
                        sse(
                            "content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": index,
                                "delta": {"type": "thinking_delta", "thinking": piece},
                            },
                        )
                    )
            if block.get("signature"):
                out.append(
                    sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "signature_delta", "signature": block["signature"]},
                        },
                    )
                )
        elif kind == "tool_use":
            out.append(
                sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": block["id"],
                            "name": block["name"],
                            "input": {},
                        },
                    },
                )
            )
            for piece in _chunks(json.dumps(block["input"]), 50):
                out.append(
                    sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                    )
                )
        else:
            out.append(
                sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": block},
                )
            )
        out.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    out.append(
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message["stop_reason"],
                    "stop_sequence": message.get("stop_sequence"),
                    "stop_details": message.get("stop_details"),
                },
                "usage": {
                    "output_tokens": usage["output_tokens"],
                    "input_tokens": usage["input_tokens"],
                    "cache_creation_input_tokens": usage.get("cache_creation_input_tokens", 0),
                    "cache_read_input_tokens": usage.get("cache_read_input_tokens", 0),
                },
            },
        )
    )
    out.append(sse("message_stop", {"type": "message_stop"}))
    return out
