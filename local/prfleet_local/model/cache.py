"""Prompt caching as the API does it (https://platform.claude.com/docs/en/build-with-claude/prompt-caching).

- The prefix is tools -> system -> messages; a `cache_control` block marks a breakpoint, and the cached prefix
  is everything up to and including that block.
- A breakpoint whose prefix is shorter than the model's minimum cacheable length caches nothing: no write, no
  read, and every token of it is billed as input (the minimums, with their sources, are prices.json's
  "cache_minimum_tokens", read through prfleet.pricing).
- On a request, the system looks for a hit at every earlier block boundary, up to 20 blocks before each
  breakpoint (the lookback window); a hit refreshes the entry's lifetime.
- Entries live 5 minutes (`ttl` "5m", the default) or 1 hour (`"1h"`); the write is billed in the bucket of
  its TTL (`cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens`).
- Caches are not shared across organizations; here they are scoped per API key, which shares no more.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any

from prfleet.cost import pricing
from prfleet_local.model import tokens

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
LOOKBACK_BLOCKS = 20
MESSAGE_OVERHEAD_TOKENS = 3  # role and turn delimiters


def cache_minimum(model: str) -> int:
    """The minimum cacheable prompt length of `model`, from prfleet's price table (strictest when unknown)."""
    return pricing.cache_minimum_tokens(model)


def block_text(block: Any) -> str:
    """The text a block contributes to the prompt (what the tokenizer sees)."""
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return str(block)
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "thinking":
        return str(block.get("thinking", ""))
    if kind == "redacted_thinking":
        return ""
    if kind == "tool_use":
        return f"{block.get('name', '')} {json.dumps(block.get('input') or {}, sort_keys=True)}"
    if kind == "tool_result":
        content = block.get("content", "")
        if isinstance(content, list):
            return "\n".join(block_text(b) for b in content)
        return str(content)
    clean = {k: v for k, v in block.items() if k != "cache_control"}
    return json.dumps(clean, sort_keys=True)


def flatten(body: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """[(canonical block json, prompt text, ttl or None when the block carries no breakpoint)] in prefix order."""
    blocks: list[tuple[str, str, str | None]] = []

    def add(kind: str, block: Any) -> None:
        b = dict(block) if isinstance(block, dict) else {"type": "text", "text": str(block)}
        cc = b.pop("cache_control", None)
        ttl = (cc.get("ttl") or "5m") if isinstance(cc, dict) else None
        blocks.append((json.dumps([kind, b], sort_keys=True, separators=(",", ":")), block_text(b), ttl))

    for tool in body.get("tools") or []:
        add("tool", tool)
    system = body.get("system")
    if isinstance(system, str) and system:
        add("system", system)
    elif isinstance(system, list):
        for b in system:
            add("system", b)
    for msg in body.get("messages") or []:
        content = msg.get("content")
        for i, b in enumerate(content if isinstance(content, list) else [content]):
            add(str(msg.get("role")) + ("" if i else "+"), b)  # "+": the message's first block
    return blocks


def _block_tokens(canonical: str, text: str, model: str) -> int:
    """Tokens of one block; a message's first block also carries the turn delimiters."""
    first = canonical.startswith('["user+"') or canonical.startswith('["assistant+"')
    return tokens.count(text, model) + (MESSAGE_OVERHEAD_TOKENS if first else 0)


def prompt_tokens(body: dict[str, Any]) -> int:
    """All input tokens of a request (cached or not)."""
    model = str(body.get("model", ""))
    return sum(_block_tokens(c, text, model) for c, text, _ in flatten(body))


class PromptCache:
    """Prefix hashes at cache_control breakpoints, with their lifetimes, per API key."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.entries: dict[str, tuple[float, str]] = {}  # hash -> (expiry, ttl)
        self.lock = threading.Lock()
        self.enforce_minimum = True  # FaultPlan.cache_minimums: False caches prefixes of any size (lenient!)

    def usage(self, body: dict[str, Any], scope: str = "") -> dict[str, Any]:
        """The input side of `usage` for this request, updating the cache as the API would."""
        model = str(body.get("model", ""))
        blocks = flatten(body)
        counts = [_block_tokens(canonical, text, model) for canonical, text, _ in blocks]
        cum = [0]
        for t in counts:
            cum.append(cum[-1] + t)
        hashes = []
        h = hashlib.sha256(f"{scope}|{model}".encode()).hexdigest()
        for canonical, _, _ in blocks:
            h = hashlib.sha256((h + canonical).encode()).hexdigest()
            hashes.append(h)
        minimum = cache_minimum(model) if self.enforce_minimum else 1
        bps = [i for i, (_, _, ttl) in enumerate(blocks) if ttl]
        cacheable = [bp for bp in bps if cum[bp + 1] >= minimum]
        now = self.clock()
        with self.lock:
            read_upto = 0
            for bp in bps:
                for j in range(bp, max(-1, bp - LOOKBACK_BLOCKS), -1):
                    entry = self.entries.get(hashes[j])
                    if entry and entry[0] > now:
                        if j + 1 > read_upto:
                            read_upto = j + 1
                        self.entries[hashes[j]] = (now + TTL_SECONDS[entry[1]], entry[1])  # a hit refreshes
                        break
            writes = {"5m": 0, "1h": 0}
            prev = read_upto
            for bp in cacheable:
                ttl = blocks[bp][2] or "5m"
                if bp + 1 > prev:
                    writes[ttl] += cum[bp + 1] - cum[prev]
                    prev = bp + 1
                self.entries[hashes[bp]] = (now + TTL_SECONDS.get(ttl, 300.0), ttl)
        cached_end = max(read_upto, (cacheable[-1] + 1) if cacheable else 0)
        return {
            "input_tokens": cum[-1] - cum[cached_end],
            "cache_read_input_tokens": cum[read_upto],
            "cache_creation_input_tokens": writes["5m"] + writes["1h"],
            "cache_creation": {
                "ephemeral_5m_input_tokens": writes["5m"],
                "ephemeral_1h_input_tokens": writes["1h"],
            },
        }
