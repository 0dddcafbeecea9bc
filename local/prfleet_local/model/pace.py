"""How fast the offline model answers: at once (`instant`, the default, so the suite runs fast) or at a real
model's pace (`realistic`), so a benchmark of the pipeline sees the waits a PR's review is made of.

At `realistic` pace a Messages response takes its model's time to first token (TTFT), then its output tokens
(thinking included: `usage.output_tokens` counts them, and they are generated before the answer) at the model's
output speed: `seconds = ttft + output_tokens / tokens_per_second`. A streamed response sends `message_start`
after the TTFT and spreads the output time over the content's delta events (each block's share: a thinking block
its thinking tokens, the other blocks the visible tokens in proportion to their size), so the SDK sees tokens
arrive as the API sends them; a whole (non-streamed) response is held for the same total. The figures are per
tier (Opus, Sonnet, Haiku), taken from public benchmarks of output speed and TTFT (below, looked up 2026-12-07).
They describe the API under a benchmark's load, not any one request: offline figures measure the pipeline at a
modelled pace, not Claude. TTFT is a constant here (a real one grows with the uncached prompt; prompt caching
shortens it).

| tier | TTFT | output tokens/s | source |
| --- | --- | --- | --- |
| Sonnet | 1.207 s | 95.3 | measured: BridgeBench SpeedBench, Claude Sonnet 4.6 (median of 6 TTFT and 8 throughput runs, long technical outputs), https://www.bridgebench.ai/speedbench/claude-sonnet-4-6 (2026). Artificial Analysis measured 63 tokens/s and 1.80 s for Sonnet 4.5 (quoted at https://lattice.uptownhr.com/claude-opus-4-5/speed-analysis, 2025-11-24): the Sonnet figure is the faster of two measurements |
| Opus | 2.67 s | 42.7 | output speed measured: Artificial Analysis, Opus 4.7 standard mode on Anthropic's API (quoted at https://api.treerouter.ai/en/blog/claude-opus-4-7-fast-mode-vs-standard-benchmark, May 2026); TTFT: Artificial Analysis, Opus 4.1 (quoted at https://lattice.uptownhr.com/claude-opus-4-5/speed-analysis, 2025-11-24), an older Opus: **estimate** for the current one |
| Haiku | 1.239 s | 150 | TTFT measured: Haiku 4.5, p50 over 5 prompts and 2 warm phases, proxy overhead subtracted, via Bedrock (https://www.krabarena.com/claims/557140f7-a2c3-47eb-9c49-27ec59caf675, 2026); output speed: **estimate**, no measurement of Haiku 4.5 or 5.5 found; Anthropic calls Haiku 4.5 more than twice as fast as Sonnet 4 (https://lattice.uptownhr.com/claude-code/haiku-vs-sonnet-performance), and an approximate table gives ~150 tokens/s (https://www.skills.sh/jeremylongshore/claude-code-plugins-plus-skills/clade-performance-tuning) |

Models of other families take the nearest tier, said in `speed_for(...).note`: Fable and Mythos the Opus figures
(Anthropic's model overview rates Fable 5.1's latency "Slower" than Opus 5.5's "Moderate",
https://platform.claude.com/docs/en/models/sonnet-5-5/overview, so for them the pace is a lower bound), an unknown
model the Sonnet figures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PACES = ("instant", "realistic")


@dataclass(frozen=True)
class Speed:
    """One tier's pace: seconds to the first token, then output tokens per second."""

    tier: str
    ttft_s: float
    tokens_per_s: float
    note: str = ""

    def seconds(self, output_tokens: int) -> float:
        """The whole response's time: TTFT plus its output tokens at the tier's speed."""
        return self.ttft_s + max(0, int(output_tokens)) / self.tokens_per_s


# Looked up 2026-12-07; sources and which figures are estimates: the module docstring.
SPEEDS = {
    "opus": Speed("opus", 2.67, 42.7, "output speed measured (Opus 4.7); TTFT an estimate (Opus 4.1's)"),
    "sonnet": Speed("sonnet", 1.207, 95.3, "measured (Sonnet 4.6)"),
    "haiku": Speed("haiku", 1.239, 150.0, "TTFT measured (Haiku 4.5); output speed an estimate"),
}
_THINKING = frozenset({"thinking", "redacted_thinking"})
_FAMILY = {"opus": "opus", "sonnet": "sonnet", "haiku": "haiku", "fable": "opus", "mythos": "opus"}


def speed_for(model: str) -> Speed:
    """The tier of a model id (a Claude API id, an alias, a Bedrock profile or a Claude Platform id all name
    their family); Fable and Mythos take Opus's figures, anything else Sonnet's, each saying so in `note`."""
    name = model.lower()
    for family, tier in _FAMILY.items():
        if family in name:
            speed = SPEEDS[tier]
            if family != tier:
                return Speed(
                    tier, speed.ttft_s, speed.tokens_per_s, f"{family}: no figures, {tier}'s (a lower bound)"
                )
            return speed
    speed = SPEEDS["sonnet"]
    return Speed("sonnet", speed.ttft_s, speed.tokens_per_s, f"{model}: unknown family, sonnet's figures")


@dataclass(frozen=True)
class Pace:
    """`instant` (every wait 0) or `realistic` (SPEEDS)."""

    name: str = "instant"

    def __post_init__(self) -> None:
        if self.name not in PACES:
            raise ValueError(f"unknown pace {self.name!r}; one of {', '.join(PACES)}")

    @property
    def realistic(self) -> bool:
        return self.name == "realistic"

    def seconds(self, model: str, output_tokens: int) -> float:
        """How long a whole (non-streamed) response is held before it is sent."""
        return speed_for(model).seconds(output_tokens) if self.realistic else 0.0

    def stream_gaps(self, model: str, events: Sequence[bytes], usage: dict[str, Any]) -> list[float]:
        """The wait before each server-sent event of one streamed response: the TTFT before `message_start`, each
        content block's output time spread over its delta events (or before its stop when it has none), and what
        is left of the output time before `message_delta`. The gaps add up to `seconds(model, output_tokens)`."""
        gaps = [0.0] * len(events)
        if not self.realistic or not events:
            return gaps
        speed = speed_for(model)
        output = max(0, int(usage.get("output_tokens") or 0))
        details = usage.get("output_tokens_details") or {}
        thinking = min(output, max(0, int(details.get("thinking_tokens") or 0)))
        parsed = [_parse(e) for e in events]
        blocks = _blocks(parsed)
        shares = _token_shares(blocks, thinking=thinking, visible=output - thinking)
        gaps[0] = speed.ttft_s
        spent = 0.0
        for index, block in blocks.items():
            places = block["deltas"] or ([block["stop"]] if block["stop"] is not None else [])
            if not places:
                continue
            seconds = shares.get(index, 0.0) / speed.tokens_per_s
            for pos in places:
                gaps[pos] += seconds / len(places)
            spent += seconds
        rest = output / speed.tokens_per_s - spent
        if rest > 0:
            tail = next((i for i, (name, _) in enumerate(parsed) if name == "message_delta"), -1)
            gaps[tail] += rest
        return gaps


def _parse(event: bytes) -> tuple[str, dict[str, Any]]:
    """(event name, data) of one `event: NAME\\ndata: JSON\\n\\n` (wire.sse); other frames read as ("", {})."""
    name, data = "", {}
    for line in event.decode("utf-8", "replace").splitlines():
        if line.startswith("event: "):
            name = line[7:].strip()
        elif line.startswith("data: "):
            try:
                data = json.loads(line[6:])
            except ValueError:
                data = {}
    return name, data if isinstance(data, dict) else {}


def _blocks(parsed: list[tuple[str, dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """Per content block index: its type, its size in characters, its delta events' positions, its stop's."""
    blocks: dict[int, dict[str, Any]] = {}
    for pos, (name, data) in enumerate(parsed):
        index = data.get("index")
        if not isinstance(index, int):
            continue
        if name == "content_block_start":
            block = data.get("content_block") or {}
            blocks[index] = {"type": block.get("type", ""), "size": 0, "deltas": [], "stop": None}
        elif index in blocks and name == "content_block_delta":
            delta = data.get("delta") or {}
            text = delta.get("text") or delta.get("thinking") or delta.get("partial_json") or ""
            blocks[index]["size"] += len(text)
            blocks[index]["deltas"].append(pos)
        elif index in blocks and name == "content_block_stop":
            blocks[index]["stop"] = pos
    return blocks


def _token_shares(blocks: dict[int, dict[str, Any]], *, thinking: int, visible: int) -> dict[int, float]:
    """Output tokens per block: the thinking tokens to the thinking blocks, the visible ones to the others, each
    group in proportion to the blocks' sizes (equally when none has any)."""
    shares: dict[int, float] = {}
    for thinks, tokens in ((True, thinking), (False, visible)):
        members = [i for i, b in blocks.items() if (b["type"] in _THINKING) == thinks]
        if not members or tokens <= 0:
            continue
        total = sum(blocks[i]["size"] for i in members)
        for i in members:
            weight = blocks[i]["size"] / total if total else 1 / len(members)
            shares[i] = tokens * weight
    return shares
