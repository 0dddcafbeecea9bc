"""The noise budget of a review (issue 24): which findings go inline, in which order, and where the rest go.

A reader sees at most MaxInlineComments comments on the PR's lines (the template's parameter, default 10; a
repository's .prfleet.toml `max_inline_comments` may lower it, never raise it), the most important ones:
- Low and info findings are never inline: they always fold into ONE collapsed section of the review body
  (`<details><summary>N low and info findings</summary>`), wherever they are.
- Critical, high and medium findings on a diff line are ranked (`rank_key`): severity (critical > high > medium),
  then the verifier's confidence when a finding has one (`confidence`, 0..1, higher first; a finding without one
  after those with one, since nothing vouched for it), then the relation to the PR ("changed" before "affected"
  before "preexisting"; a missing or unknown relation counts as "changed"), then path, line and agent (stable).
  The first MaxInlineComments go inline; the rest are listed in the body in the same order, each linked to its line.
- Nothing is dropped: every finding is inline, in the body, or (past GitHub's body limit) counted in a note of the
  body and in the check run's summary (`placement_note`).

Pure: how a finding reads is prfleet.pipeline.render's business; this module only decides where it goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_COMMENTS = 50  # the highest MaxInlineComments may be (template.yaml bounds it to 0..50)
DEFAULT_INLINE_COMMENTS = 10  # MaxInlineComments' default: the noise budget of one review
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
FOLDED_SEVERITIES = frozenset({"low", "info"})  # never inline: one collapsed section of the body
RELATION_ORDER = {"changed": 0, "affected": 1, "preexisting": 2}


def get(f: Any, name: str, default: Any = None) -> Any:
    """A finding's field, whether it is a Finding object or a stored dict."""
    if isinstance(f, Mapping):
        return f.get(name, default)
    return getattr(f, name, default)


def severity(f: Any) -> str:
    """A finding's severity, "info" when missing or unknown (so a malformed one never takes an inline slot)."""
    s = str(get(f, "severity", "info") or "info").lower()
    return s if s in SEVERITY_ORDER else "info"


def confidence(f: Any) -> float | None:
    """The verifier's confidence in a finding (0..1, clamped), or None when it has none (or not a number)."""
    raw = get(f, "confidence")
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw:  # NaN is no confidence
        return None
    return min(1.0, max(0.0, float(raw)))


def rank_key(f: Any) -> tuple[int, int, float, int, str, int, str, str]:
    """The order findings compete for inline slots and are listed in the body (the module docstring):
    severity, confidence (present before absent, higher first), relation, then path, line, agent, title."""
    c = confidence(f)
    relation = RELATION_ORDER.get(str(get(f, "relation", "changed") or "changed"), 0)
    return (
        SEVERITY_ORDER[severity(f)],
        1 if c is None else 0,
        -(c or 0.0),
        relation,
        str(get(f, "path", "")),
        int(get(f, "line", 0) or 0),
        str(get(f, "agent", "") or ""),
        str(get(f, "title", "") or ""),
    )


Placed = tuple[Any, str, str]  # (finding, fingerprint, why it is where it is)


@dataclass
class Placement:
    """Where each new finding of a review goes: inline on its diff line, or into a section of the body."""

    comments: list[dict[str, Any]] = field(default_factory=list)  # the inline comments, ready to post
    inline_fps: list[str] = field(default_factory=list)
    folded: list[Placed] = field(default_factory=list)  # on the diff, not inline (over the cap, or refused)
    outside: list[Placed] = field(default_factory=list)  # critical..medium outside the diff
    low: list[Placed] = field(default_factory=list)  # low and info ones, wherever they are (collapsed)
    duplicates: list[Any] = field(
        default_factory=list
    )  # already posted (on an earlier head or in this batch)


def place(
    findings: Iterable[Any],
    line_maps: Mapping[str, Mapping[int, str]],
    already_posted: Iterable[str],
    *,
    inline: bool,
    max_comments: int,
    fingerprint: Callable[[Any, str], str],
    comment: Callable[[Any, str], str],
) -> Placement:
    """In rank order: a critical, high or medium finding on a diff line gets an inline slot while the
    `max_comments` slots last; the rest are folded; low and info ones always go to the collapsed section.
    `fingerprint(finding, code_line)` and `comment(finding, fp)` (the inline comment's body) come from render."""
    seen = {fp.lower() for fp in already_posted}
    out = Placement()
    for f in sorted(findings, key=rank_key):
        path = str(get(f, "path", ""))
        line = int(get(f, "line", 0) or 0)
        lines = line_maps.get(path, {})
        fp = fingerprint(f, lines.get(line, "")).lower()
        if fp in seen:
            out.duplicates.append(f)
            continue
        seen.add(fp)
        where = (
            "file not changed by this PR"
            if path not in line_maps
            else ("on the diff" if line in lines else "line not in the diff")
        )
        if severity(f) in FOLDED_SEVERITIES:
            out.low.append((f, fp, where))
        elif where != "on the diff":
            out.outside.append((f, fp, where))
        elif not inline:
            out.folded.append((f, fp, "inline comments were refused"))
        elif len(out.comments) >= max_comments:
            out.folded.append((f, fp, f"over {max_comments} inline comments"))  # ranked after those inline
        else:
            out.inline_fps.append(fp)
            out.comments.append({"path": path, "line": line, "side": "RIGHT", "body": comment(f, fp)})
    return out


def collapsed(summary: str, entries: str) -> str:
    """A section GitHub shows folded: <details> with its summary line (blank lines keep the Markdown inside)."""
    return f"\n\n<details><summary>{summary}</summary>\n\n{entries}\n\n</details>"


def review_body(
    prefix: str,
    sections: Sequence[tuple[str, Sequence[Placed], bool]],
    entry: Callable[[Any, str, str], str],
    room: int,
    limit: int,
) -> tuple[str, list[tuple[Any, str]], list[Any]]:
    """`prefix`, then each (heading, findings, collapsed) section with the entries (`entry(finding, fp, why)`)
    that fit in `room` characters (of GitHub's `limit`); a collapsed section is one <details> whose summary is "N <heading>". Returns
    the body, the (finding, fingerprint) pairs placed in it and the findings omitted (counted in a note at the
    end: never dropped silently)."""
    headers = sum(len(h) + (len(collapsed("", "")) + 12 if c else 8) for h, items, c in sections if items)
    budget = room - len(prefix) - headers - 120  # room for the "omitted" note
    placed: list[tuple[Any, str]] = []
    omitted: list[Any] = []
    used = 0
    body = prefix
    for heading, items, folded in sections:
        entries: list[str] = []
        for f, fp, reason in items:
            text = entry(f, fp, reason)
            if used + len(text) + 2 > budget:
                omitted.append(f)
                continue
            entries.append(text)
            placed.append((f, fp))
            used += len(text) + 2
        if entries and folded:
            body += collapsed(f"{len(entries)} {heading}", "\n\n".join(entries))
        elif entries:
            body += f"\n\n### {heading}\n\n" + "\n\n".join(entries)
    if omitted:
        body += f"\n\n_{len(omitted)} more finding(s) did not fit GitHub's {limit}-character limit._"
    return body, placed, omitted


def placement_note(placement: Mapping[str, int], max_body: int) -> str:
    """One sentence for the check run: how many new findings went inline, into the review body, into its
    collapsed low-and-info section, and how many did not fit GitHub's body limit (never dropped silently)."""
    n = {k: int(placement.get(k, 0) or 0) for k in ("inline", "body", "collapsed", "omitted")}
    text = (
        f"Review: {n['inline']} inline comment(s), {n['body']} finding(s) in the review body, "
        f"{n['collapsed']} low and info finding(s) folded"
    )
    if n["omitted"]:
        text += f", {n['omitted']} did not fit GitHub's {max_body}-character body limit (counted, not posted)"
    return text + "."
