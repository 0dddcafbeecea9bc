"""What the verification pass adds to what is posted (pure): who found a finding and whether it is unverified (each
comment and body entry), one line in the review body and the check run's summary, the check run's details (the
dropped findings with their reasons, the merged ones), and the check run of a held posting.

GitHub facts used here: a check run's `output.text` ("The details of the check run. This parameter supports
Markdown. Maximum length: 65535 characters.", https://docs.github.com/en/rest/checks/runs#update-a-check-run) is
what the check run's page shows under its summary; GitHub counts that maximum in bytes in practice
(github/rest-api-description#5399), so the details are kept within 65,535 UTF-8 bytes, with a count of what was
left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prfleet.pipeline.noise import get as _get
from prfleet.pipeline.verification import Verification

MAX_CHECK_TEXT = 65_535  # output.text, counted in UTF-8 bytes (the stricter reading)
UNVERIFIED = "unverified"


def who(f: Any) -> str:
    """The agent(s) a comment names: every agent whose candidate a kept finding absorbed, else its own agent."""
    found_by = _get(f, "found_by") or []
    if isinstance(found_by, list) and len(found_by) > 1:
        return "found by " + ", ".join(str(a) for a in found_by)
    return str(_get(f, "agent", "") or "")


def label(f: Any) -> str:
    """' · **unverified**' for a finding the verifier did not check (posted without verification), else ''."""
    return f" · **{UNVERIFIED}**" if _get(f, "verified") is False else ""


def review_line(v: Verification | None, sep: str = "") -> str:
    """The review body's (and the check summary's) sentence about the verification pass, after `sep`; '' when
    it was off."""
    if v is None or v.state == "off":
        return ""
    return sep + _line(v)


def _line(v: Verification) -> str:
    if v.state == "verified":
        text = f"Verified: {v.counts}."
        if v.judged.dropped or v.judged.merged:
            text = text[:-1] + "; the check run's details list what was dropped or merged, and why."
        if v.judged.unjudged:
            why = f" ({v.reason})" if v.reason else ""
            text += f" {len(v.judged.unjudged)} candidate(s) the verifier did not reach{why} are marked {UNVERIFIED}."
        return text
    if v.state == "unverified":
        return (
            f"**Unverified**: {v.candidates} candidate finding(s) posted without verification, because "
            f"{v.reason}. Each is marked {UNVERIFIED}."
        )
    return f"Held: {v.candidates} candidate finding(s) wait for verification ({v.reason})."


def _entry(f: Mapping[str, Any], why: str) -> str:
    title = " ".join(str(f.get("title") or "").split())
    return (
        f"- `{f.get('path', '')}:{f.get('line', '')}` **{title}** "
        f"(_{f.get('agent', '')}_, {f.get('severity', '')}, {f.get('category', '')}): {why}"
    )


def verification_details(v: Verification | None, limit: int = MAX_CHECK_TEXT) -> str:
    """The check run's details (output.text): every dropped candidate with the verifier's reason, every merged one
    with the finding that absorbed it, within `limit` UTF-8 bytes (what does not fit is counted); '' when there is
    nothing to say."""
    if v is None or v.state != "verified" or not (v.judged.dropped or v.judged.merged):
        return ""
    kept_title = {str(f.get("fingerprint") or "").lower(): f for f in v.judged.kept}
    merged = [
        _entry(f, "same problem as `{}:{}` {}".format(*_where(kept_title.get(into, {}))))
        for f, into in v.judged.merged
    ]
    dropped = [_entry(f, reason) for f, reason in v.judged.dropped]
    sections = [  # the merged first: few (each absorbed by a kept finding), and they explain the duplicates
        (f"### Merged into another finding ({len(merged)})", merged),
        (f"### Dropped by the verifier ({len(dropped)})", dropped),
    ]
    out, used, left = [], 0, 0
    for heading, entries in sections:
        if not entries:
            continue
        block = [heading, ""]
        for e in entries:
            size = len(e.encode("utf-8")) + 1
            if used + size + len(heading) + 200 > limit:
                left += 1
                continue
            block.append(e)
            used += size
        out.append("\n".join(block))
    text = "\n\n".join(out)
    if left:
        text += (
            f"\n\n_{left} more dropped or merged finding(s) did not fit the check run's {limit}-byte limit._"
        )
    return text


def _where(f: Mapping[str, Any]) -> tuple[str, str, str]:
    return str(f.get("path", "?")), str(f.get("line", "?")), f"**{f.get('title', '')}**" if f else ""


def held_note(count: int, reason: str, *, comes_back: bool) -> str:
    """The check run's summary for a held posting: what is held, why, and what brings it back."""
    then = (
        "The verify job waits for the budget or the spend limit and comes back by itself; the findings are posted "
        "once it has verified them."
        if comes_back
        else "Push a new commit or comment `/prfleet review` to verify them again."
    )
    return (
        f"{count} candidate finding(s) of this head are held, not posted: {reason}. This repository's "
        ".prfleet.toml sets require_verification, so nothing is posted unverified. " + then
    )
