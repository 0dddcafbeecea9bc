"""What the loop sends the Messages API: the first user turn (the PR's context, the file and its diff, all as
untrusted data) and each iteration's request, with the agent's effort and the cache breakpoints that pay off.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from prfleet.agents.specs import AgentSpec
from prfleet.agents.tools import PrSource, number_lines, untrusted_block
from prfleet.cost import pricing
from prfleet.repository.hints import Hints
from prfleet.repository.instructions import Instruction, render_instructions

CACHE = {"type": "ephemeral"}


def _neutral_attr(text: str) -> str:
    return text.replace("\n", " ")[:300]


def build_first_content(
    job: Any,
    spec: AgentSpec,
    source: PrSource,
    text: str,
    diff: str,
    *,
    hints: Hints | None = None,
    instructions: Sequence[Instruction] = (),
) -> list[dict]:
    """The first user turn as two text blocks: the PR context every job of this PR shares (cached across its
    jobs), then this job's file, its diff, where to look in the repository (`hints`: its importers and tests)
    and the instruction; everything from the PR or the repository in untrusted blocks.

    The repository's own instructions (`instructions`, already scoped to this file) come after the PR context:
    those for every file in the shared block (cached across the PR's jobs), path-scoped ones in this file's."""
    lines = text.splitlines()
    numbered = number_lines(text)
    cut = len(numbered) > spec.max_file_chars
    if cut:
        numbered = numbered[: numbered.rfind("\n", 0, spec.max_file_chars)]
    shown = numbered.count("\n") + 1 if numbered else 0
    everywhere = render_instructions([i for i in instructions if not i.paths])
    scoped = render_instructions([i for i in instructions if i.paths])
    shared = "\n\n".join(
        [
            f"Pull request {job.repo}#{job.number}. Its title and description follow as untrusted data.",
            untrusted_block(
                "pr_description",
                f"Title: {source.title or ''}\n\n{source.body or ''}",
                repo=job.repo,
                number=job.number,
            ),
            *([everywhere] if everywhere else []),
        ]
    )
    parts = [
        f"Review the file `{_neutral_attr(job.path)}` of pull request {job.repo}#{job.number} "
        f"(head {job.head_sha}) as the {spec.name} agent.",
        "The file's diff and the file at the head SHA follow as untrusted data.",
        untrusted_block("diff", diff or "(no diff: the file is new, binary or unchanged)", path=job.path),
        untrusted_block(
            "file", numbered, path=job.path, sha=job.blob_sha, lines=f"1-{shown}", total=len(lines)
        ),
    ]
    if cut:
        parts.append(
            f"[truncated: the file has {len(lines)} lines; use read_file with start_line={shown + 1}]"
        )
    if hints is not None:
        parts.append(
            "Where to look: files of the repository that import this file, and test files that import it or "
            "mention its module or changed symbols (a bounded scan; read or grep them as needed)."
        )
        parts.append(untrusted_block("where_to_look", hints.render(), path=job.path))
    if scoped:
        parts.append(scoped)
    parts.append(
        f"Review `{_neutral_attr(job.path)}` now, using the tools as needed, then call report_findings once "
        "with path exactly as given."
    )
    return [{"type": "text", "text": shared}, {"type": "text", "text": "\n\n".join(parts)}]


def _prefix_tokens(*parts: Any) -> int:
    """A token count of the prefix made of `parts` that the real count is not below (so a breakpoint placed
    because of it is above the model's minimum cacheable length; an estimate that overshoots would spend a
    breakpoint on a prefix the API does not cache)."""

    return pricing.tokens_at_least(json.dumps(parts, separators=(",", ":")))


def _visible(history: list[dict]) -> list[dict]:
    """The history without thinking blocks, for a prefix estimate that must not overshoot: their signatures and
    encrypted data are not text the model reads as input tokens (earlier turns' thinking is not counted as input:
    the extended-thinking page, "thinking blocks from previous turns")."""
    return [
        {
            **m,
            "content": [
                b
                for b in m["content"]
                if not (isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking"))
            ],
        }
        if isinstance(m.get("content"), list)
        else m
        for m in history
    ]


def build_request(
    spec: AgentSpec, system: str, tools: list[dict], history: list[dict], *, cache: bool
) -> dict[str, Any]:
    """The request for this iteration: effort, and at most 4 cache breakpoints, each only where its prefix
    reaches the model's minimum cacheable length (below it the API caches nothing and raises no error: the
    prompt-caching page, "minimum cacheable prompt length"), judged by a count the real one is not below
    (`pricing.tokens_at_least`), so no breakpoint is spent on a prefix that would not be cached.

    Breakpoints, in prefix order (1h entries must precede 5m ones): the tools + system prefix shared by every
    job of the agent (`spec.shared_cache_ttl`), the PR context shared by the PR's jobs (5m), the end of the
    first user turn (this job's file, 5m), and the latest user turn (5m), which moves every iteration."""

    tools = copy.deepcopy(tools)
    sys_block: dict[str, Any] = {"type": "text", "text": system}
    messages = [dict(m) for m in history]
    if cache:
        minimum = pricing.cache_minimum_tokens(spec.model)
        shared = spec.cross_job_cache
        if shared and _prefix_tokens(tools, system) >= minimum:
            sys_block["cache_control"] = {"type": "ephemeral", "ttl": spec.shared_cache_ttl}
        marks: list[tuple[int, int]] = []
        first = messages[0]["content"]
        if shared and len(first) > 1 and _prefix_tokens(tools, system, first[0]) >= minimum:
            marks.append((0, 0))
        if _prefix_tokens(tools, system, first) >= minimum:
            marks.append((0, len(first) - 1))
        last = len(messages) - 1
        if (
            last > 0
            and messages[last]["role"] == "user"
            and _prefix_tokens(tools, system, _visible(history)) >= minimum
        ):
            marks.append((last, len(messages[last]["content"]) - 1))
        for index, block in marks:
            content = [dict(b) for b in messages[index]["content"]]
            content[block]["cache_control"] = CACHE
            messages[index] = {"role": messages[index]["role"], "content": content}
    params: dict[str, Any] = {
        "model": spec.model,
        "max_tokens": spec.max_tokens,
        "system": [sys_block],
        "tools": tools,
        "messages": messages,
    }
    if spec.effort:
        params["thinking"] = {"type": "adaptive"}
        params["output_config"] = {"effort": spec.effort}
    return params
