"""The offline judge: a deterministic stand-in for the LLM judge `prfleet eval` calls (prfleet_local.eval.judge).

It answers a request whose system prompt is the eval judge's, and only from what the request carries: the golden
comment (`<golden_issue>`) and the findings (`<untrusted_finding id=.. path=.. line=..>` blocks). A finding
matches when it shares enough words with the golden comment: both texts are cut into normalised tokens (lower
case, split on anything but letters and digits and on camelCase humps, words of 3 letters or more, a small list
of English stop words dropped, a plural `s` dropped), and a finding matches when it shares at least MIN_SHARED
tokens with the golden comment and those cover at least MIN_COVER of the smaller of the two token sets. Matches
are listed best first (most shared tokens over the union of both sets, ties in the request's order). It is not a
judge: two descriptions of one bug in other words do not match here, two remarks that share vocabulary do. Its
figures measure the plumbing (request, answer, assignment, cost), never the quality of a judge.

The answer keeps the request's contract as the API would: with structured outputs (`output_config.format`,
https://platform.claude.com/docs/en/build-with-claude/structured-outputs) the text is JSON of the schema given,
its properties in the schema's order and only ids from the schema's `enum`; without a format the model is free
to answer in prose, and does (a client that does not ask for the format gets what a model would give it). The
request itself was already checked by validate.py like any other (400s as the Messages API gives them).
"""

from __future__ import annotations

import json
import re
from typing import Any

from prfleet_local.model import tokens
from prfleet_local.model.policy import Turn
from prfleet_local.model.results import blocks, text_of

SYSTEM_MARK = "You are prfleet's eval judge"
MIN_SHARED = 3
MIN_COVER = 0.5
_GOLDEN = re.compile(r"<golden_issue[^>]*>\n?(.*?)\n?</golden_issue>", re.DOTALL)
_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z0-9]+")
STOP_WORDS = frozenset(
    """the and for are but not you all any can had her was one our out has have this that with from they will
    would there their what about which when make like than them then these some could into only other its also
    over such your more most very should does doing done being been were here just each both after before while
    where because without within instead""".split()
)


def is_judge_request(body: dict[str, Any]) -> bool:
    """Whether the request is the eval judge's (its system prompt says so)."""
    return text_of(body.get("system", "")).startswith(SYSTEM_MARK)


def words(text: str) -> set[str]:
    """The normalised tokens of `text` (module docstring)."""
    out = set()
    for raw in _WORD.findall(_HUMP.sub(" ", text)):
        w = raw.lower()
        if len(w) < 3 or w in STOP_WORDS or w.isdigit():
            continue
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.add(w)
    return out


def matches(golden: str, findings: list[tuple[str, str]]) -> list[str]:
    """The ids of the findings (id, text) that match the golden comment, best first."""
    g = words(golden)
    ranked = []
    for order, (fid, text) in enumerate(findings):
        f = words(text)
        shared = len(g & f)
        if shared >= MIN_SHARED and shared >= MIN_COVER * min(len(g), len(f)):
            ranked.append((-shared / len(g | f), order, fid))
    return [fid for _, _, fid in sorted(ranked)]


def _format(body: dict[str, Any]) -> dict[str, Any] | None:
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    return fmt if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None


def answer(body: dict[str, Any]) -> Turn | None:
    """The judge's turn for an eval judge request, None for any other request (the review policy answers it)."""
    if not is_judge_request(body):
        return None
    messages = body.get("messages") or []
    text = text_of(messages[-1].get("content")) if messages else ""
    golden = _GOLDEN.search(text)
    findings = [(a.get("id", ""), f"{a.get('path', '')} {body_}") for a, body_ in blocks("finding", text)]
    named = matches(golden.group(1), findings) if golden else []
    fmt = _format(body)
    if fmt is None:  # no output format asked: prose, as a model would answer
        reply = f"The findings that match are: {', '.join(named) or 'none'}."
        return Turn([{"type": "text", "text": reply}], "end_turn", "end", work_tokens=tokens.count(text))
    schema = fmt.get("schema") or {}
    props = schema.get("properties") or {}
    allowed = ((props.get("matches") or {}).get("items") or {}).get("enum")
    if isinstance(allowed, list):
        named = [n for n in named if n in allowed]
    reason = (
        f"{len(named)} finding(s) share at least {MIN_SHARED} words with the golden issue (offline judge)"
        if golden
        else "no golden issue in the request (offline judge)"
    )
    values = {"matches": named, "reason": reason}
    ordered = {k: values[k] for k in props if k in values} or values
    reply = json.dumps(ordered)
    return Turn([{"type": "text", "text": reply}], "end_turn", "end", work_tokens=tokens.count(text))
