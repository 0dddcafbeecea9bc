"""Pure review rendering: which findings go inline, which into the body, what the check run says.

The noise budget (how many inline comments, which ones, where the rest go): prfleet.pipeline.noise.

Nothing here talks to GitHub; `prfleet.github` posts what this module plans. Findings may be
`prfleet.agents.findings.Finding` objects or plain dicts with the same keys (as stored in the state table): this
module reads their path, line, severity, category, title, body, suggestion, agent and fingerprint, nothing else.

GitHub facts used here:
- Review, review comment and issue comment bodies are rejected above 65,536 characters
  ("body is too long (maximum is 65536 characters)", a 422; see
  https://docs.github.com/en/rest/pulls/reviews#create-a-review-for-a-pull-request and the same limit on
  https://docs.github.com/en/rest/issues/comments#create-an-issue-comment).
- An inline review comment must sit on a line that is part of the diff (`line` + `side`); see
  https://docs.github.com/en/rest/pulls/comments#create-a-review-comment-for-a-pull-request.
- Check run annotations: at most 50 per request; more need successive updates, which append; see
  https://docs.github.com/en/rest/checks/runs#update-a-check-run (`output.annotations`).
- GitHub documents no hard number of comments per review, but creating content quickly triggers secondary
  rate limits (https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits);
  MAX_COMMENTS bounds the operator's MaxInlineComments parameter.
- A finding outside the diff (a file the PR does not change, or a line GitHub cannot comment on) goes into the
  body under "Outside the diff" with a permanent link to the line at the head commit ({web}/{repo}/blob/{sha}/
  {path}#L{line}: https://docs.github.com/en/repositories/working-with-files/using-files/getting-permanent-links-to-files).
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prfleet.config.repo_config import FAIL_ON, preexisting_note
from prfleet.pipeline import noise, verify_text
from prfleet.pipeline.noise import DEFAULT_INLINE_COMMENTS, MAX_COMMENTS, rank_key
from prfleet.pipeline.noise import get as _get
from prfleet.pipeline.noise import severity as _severity
from prfleet.pipeline.suppression import suppressed_note
from prfleet.pipeline.verification import Verification

MAX_BODY = 65_536  # characters, GitHub's limit for review / comment bodies
MAX_ANNOTATION_MESSAGE = 64 * 1024  # bytes: "The maximum size is 64 KB" (the annotation object, same page)
MAX_ANNOTATION_TITLE = 255  # characters: "The maximum size is 255 characters"

CHECK_NAME = "prfleet"  # the check run of a PR head: fan-in creates it, the webhook takes its Re-runs
SUMMARY_MARKER = "<!-- prfleet:summary -->"
REVIEW_MARKER = "<!-- prfleet:review -->"


def check_external_id(number: int, delivery_id: str) -> str:
    """A check run's external_id: the PR number (Re-run events of fork PRs list no pull request) and the
    delivery (a retried create finds the run it may already have made)."""
    return f"pr={int(number)};delivery={delivery_id}"


def pr_from_external_id(external_id: str | None) -> int | None:
    """The PR number in a check_external_id value, or None for a check run prfleet did not make."""
    for part in (external_id or "").split(";"):
        key, _, value = part.partition("=")
        if key == "pr" and value.isdigit():
            return int(value)
    return None


def review_marker(head_sha: str, claim: str, plan: object) -> str:
    """The hidden marker of one posting (head, claim, plan): a retried POST looks for it before re-sending."""
    return f"<!-- prfleet:review head={head_sha} claim={claim} plan={plan} -->"


_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")

_SEVERITY_ICON = {"critical": "🔴", "high": "🟠", "medium": "🟡", "low": "🔵", "info": "⚪"}
_ANNOTATION_LEVEL = {
    "critical": "failure",
    "high": "failure",
    "medium": "warning",
    "low": "notice",
    "info": "notice",
}
_COUNT_KEYS = (
    "findings",
    "cost_micros",
    "succeeded",
    "partial",
    "failed",
    "cached",
    "deferred",
    "skipped",
    "superseded",
)


# --- diff parsing ---


def diff_line_map(patch: str | None) -> dict[int, str]:
    """New-side (RIGHT) line numbers that are part of the diff -> their text (added or context lines).

    GitHub's `patch` field starts at the first `@@` hunk header; `---`/`+++` headers are tolerated.
    """
    out: dict[int, str] = {}
    if not patch:
        return out
    new_no = 0
    remaining_old = remaining_new = 0
    in_hunk = False
    for raw in patch.splitlines():
        m = _HUNK_RE.match(raw)
        if m:
            new_no = int(m.group(3))
            remaining_old = int(m.group(2)) if m.group(2) is not None else 1
            remaining_new = int(m.group(4)) if m.group(4) is not None else 1
            in_hunk = True
            continue
        if not in_hunk:
            continue
        if raw.startswith("\\"):  # "\ No newline at end of file"
            continue
        if remaining_old <= 0 and remaining_new <= 0:
            in_hunk = False  # trailing text after a complete hunk (e.g. a following file header)
            continue
        tag, text = (raw[:1], raw[1:]) if raw else (" ", "")
        if tag == "+":
            out[new_no] = text
            new_no += 1
            remaining_new -= 1
        elif tag == "-":
            remaining_old -= 1
        elif tag == " ":
            out[new_no] = text
            new_no += 1
            remaining_new -= 1
            remaining_old -= 1
        else:
            in_hunk = False
    return out


# --- fingerprints ---


def fingerprint_of(f: Any, code_line: str = "") -> str:
    """A finding's fingerprint: its `fingerprint` string, its `fingerprint(code_line)` method, or derived.

    The derived form mirrors prfleet.agents.findings.fingerprint (agent, path, title, normalised code line).
    """
    fp = _get(f, "fingerprint")
    if callable(fp):
        fp = fp(code_line)
    if isinstance(fp, str) and fp:
        # markers carry hex only (fp_marker); anything else is hashed so that a marker can still carry it
        return fp.lower() if _HEX_RE.fullmatch(fp) else hashlib.sha256(fp.encode()).hexdigest()[:32]
    key = "\x1f".join(
        [
            str(_get(f, "agent", "") or ""),
            str(_get(f, "path", "") or ""),
            " ".join(str(_get(f, "title", "") or "").lower().split()),
            " ".join(code_line.split()),
        ]
    )
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def fp_marker(fp: str) -> str:
    """Hidden marker carried by every posted finding so later heads can recognise it."""
    return f"<!-- prfleet:fp={fp} -->"


# --- the review plan ---


@dataclass
class ReviewPlan:
    """What to post for one head: the review (body + inline comments) and the summary comment."""

    body: str
    comments: list[dict[str, Any]]
    folded: list[Any] = field(default_factory=list)  # findings placed in the body instead of inline
    outside: list[Any] = field(default_factory=list)  # those of `folded` outside the diff (their own heading)
    collapsed: list[Any] = field(
        default_factory=list
    )  # those of `folded` that are low or info (one <details>)
    skipped_duplicates: list[Any] = field(default_factory=list)  # already posted on an earlier head
    omitted: list[Any] = field(default_factory=list)  # did not fit in the body limit at all
    summary: str = ""  # the issue comment edited in place (starts with SUMMARY_MARKER)
    fingerprints: set[str] = field(default_factory=set)  # fingerprints this plan posts (inline + folded)

    @property
    def empty(self) -> bool:
        """True when the review would say nothing new."""
        return not self.comments and not self.folded

    @property
    def placement(self) -> dict[str, int]:
        """Where this review put its new findings, for the check run's summary (placement_note)."""
        return {
            "inline": len(self.comments),
            "body": len(self.folded) - len(self.collapsed),
            "collapsed": len(self.collapsed),
            "omitted": len(self.omitted),
        }


def _truncate(text: str, limit: int, note: str = "\n\n… (truncated)") -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(note))] + note


def _truncate_bytes(text: str, limit: int, note: str = "\n\n… (truncated)") -> str:
    """`text` within `limit` UTF-8 bytes (GitHub sizes an annotation's message in KB, not characters)."""
    if len(text.encode("utf-8")) <= limit:
        return text
    room = max(0, limit - len(note.encode("utf-8")))
    return text.encode("utf-8")[:room].decode("utf-8", "ignore") + note


def _comment_body(f: Any, fp: str, *, max_body: int) -> str:
    sev = _severity(f)
    head = (
        f"{_SEVERITY_ICON[sev]} **{sev}** · {_get(f, 'category', '') or 'general'} · _{verify_text.who(f)}_"
        + verify_text.label(f)
    )
    parts = [head, f"**{str(_get(f, 'title', '')).strip()}**", str(_get(f, "body", "") or "").strip()]
    suggestion = _get(f, "suggestion")
    if suggestion:
        parts.append(f"```suggestion\n{str(suggestion).rstrip()}\n```")
    marker = fp_marker(fp)
    text = "\n\n".join(p for p in parts if p)
    return _truncate(text, max_body - len(marker) - 1) + "\n" + marker


def web_url(api_url: str) -> str:
    """github.com's web address for an API URL (GitHub Enterprise: the host without /api/v3)."""
    api_url = api_url.rstrip("/")
    if api_url == "https://api.github.com":
        return "https://github.com"
    return api_url[: -len("/api/v3")] if api_url.endswith("/api/v3") else api_url


def line_link(web: str, repo: str, head_sha: str, path: str, line: int) -> str:
    """A permanent link to one line of a file at the head commit."""
    return f"{web.rstrip('/')}/{repo}/blob/{head_sha}/{urllib.parse.quote(path, safe='/')}#L{int(line)}"


def _folded_entry(f: Any, fp: str, reason: str, link: str | None = None) -> str:
    sev = _severity(f)
    where = f"`{_get(f, 'path', '')}:{_get(f, 'line', '')}`"
    if link:
        where = f"[{where}]({link})"
    body = str(_get(f, "body", "") or "").strip().replace("\n", "\n  ")
    lines = [
        f"- {_SEVERITY_ICON[sev]} **{sev}** {where} — **{str(_get(f, 'title', '')).strip()}** "
        f"(_{verify_text.who(f)}_{verify_text.label(f)}, {reason})",
    ]
    if body:
        lines.append(f"  {body}")
    suggestion = _get(f, "suggestion")
    if suggestion:
        lines.append(
            "  Suggested change:\n  ```\n  " + str(suggestion).rstrip().replace("\n", "\n  ") + "\n  ```"
        )
    lines.append(f"  {fp_marker(fp)}")
    return "\n".join(lines)


def _usd(micros: int) -> str:
    return f"${micros / 1_000_000:.4f}"


def _rows(summary_rows: Mapping[str, Any] | Sequence[Any] | None) -> list[tuple[str, dict[str, int]]]:
    """Normalise {agent: row} or [row-with-agent] into sorted (agent, counts) pairs."""
    if not summary_rows:
        return []
    items: list[tuple[str, Any]]
    if isinstance(summary_rows, Mapping):
        items = [(str(k), v) for k, v in summary_rows.items()]
    else:
        items = [(str(_get(r, "agent", "?")), r) for r in summary_rows]
    out = []
    for agent, row in items:
        out.append((agent, {k: int(_get(row, k, 0) or 0) for k in _COUNT_KEYS}))
    return sorted(out)


def summary_table(summary_rows: Mapping[str, Any] | Sequence[Any] | None) -> str:
    """Markdown table: per agent findings, cost, and cached / deferred / skipped / superseded counts."""
    rows = _rows(summary_rows)
    if not rows:
        return "_No agent ran on this head._"
    lines = [
        "| agent | runs | findings | cost | cached | deferred | skipped | superseded | failed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    total = dict.fromkeys(_COUNT_KEYS, 0)
    for agent, c in rows:
        for k in _COUNT_KEYS:
            total[k] += c[k]
        runs = c["succeeded"] + c["partial"] + c["failed"]
        lines.append(
            f"| {agent} | {runs} | {c['findings']} | {_usd(c['cost_micros'])} | {c['cached']} | "
            f"{c['deferred']} | "
            f"{c['skipped']} | {c['superseded']} | {c['failed']} |"
        )
    if len(rows) > 1:
        runs = total["succeeded"] + total["partial"] + total["failed"]
        lines.append(
            f"| **total** | {runs} | {total['findings']} | {_usd(total['cost_micros'])} | "
            f"{total['cached']} | "
            f"{total['deferred']} | {total['skipped']} | {total['superseded']} | {total['failed']} |"
        )
    return "\n".join(lines)


def _skipped_section(skipped_files: Sequence[Any] | None, limit: int = 50) -> str:
    if not skipped_files:
        return ""
    lines = [f"<details><summary>{len(skipped_files)} file(s) not reviewed</summary>\n"]
    for s in list(skipped_files)[:limit]:
        lines.append(f"- `{_get(s, 'path', s)}`: {_get(s, 'reason', '') if not isinstance(s, str) else ''}")
    if len(skipped_files) > limit:
        lines.append(f"- … and {len(skipped_files) - limit} more")
    lines.append("\n</details>")
    return "\n".join(lines)


def _instructions_section(sources: Sequence[str] | None) -> str:
    """Which of the repository's own review instructions applied (their sources), if any."""
    if not sources:
        return ""
    return "Repository instructions applied: " + ", ".join(f"`{s}`" for s in dict.fromkeys(sources)) + "."


def snapshot_note(reasons: Iterable[str] | None) -> str:
    """One line saying the review ran without the repository's snapshot, and why (the runs' distinct reasons):
    grep then covered only the changed files and the files read, so a reader knows what the agents could not see."""
    why = list(dict.fromkeys(r.strip() for r in reasons or () if r and r.strip()))
    if not why:
        return ""
    return (
        f"Reviewed without a snapshot of the repository: {'; '.join(why)}; "
        "grep covered only the changed files and the files read."
    )


def _finding_link(f: Any, web: str, repo: str | None, head_sha: str | None) -> str | None:
    """A permanent link to a finding's line at the head, when the repository and head are known."""
    if not (repo and head_sha):
        return None
    return line_link(web, repo, head_sha, str(_get(f, "path", "")), max(1, int(_get(f, "line", 1) or 1)))


def _check_cap(max_comments: object) -> None:
    """A clear error for an inline comment limit outside MaxInlineComments' bounds (0..MAX_COMMENTS)."""
    if (
        isinstance(max_comments, bool)
        or not isinstance(max_comments, int)
        or not 0 <= max_comments <= MAX_COMMENTS
    ):
        raise ValueError(f"max_comments must be an integer from 0 to {MAX_COMMENTS}, got {max_comments!r}")


def _intro(placement: noise.Placement, max_comments: int) -> str:
    """The review's first line: how many new findings, how many inline, below, folded, and not repeated."""
    comments, folded, outside, low = placement.comments, placement.folded, placement.outside, placement.low
    below = len(folded) + len(outside)
    intro = f"{len(comments) + below + len(low)} new finding(s): {len(comments)} inline, {below} below"
    intro += f" ({len(outside)} outside the diff)" if outside else ""
    intro += f", {len(low)} low and info folded." if low else "."
    if any(reason.startswith("over ") for _, _, reason in folded):
        intro += f" At most {max_comments} inline comment(s) per review: the others are ranked below."
    if placement.duplicates:
        intro += f" {len(placement.duplicates)} already posted on an earlier commit and not repeated."
    return intro


def _notes(
    placement: noise.Placement,
    max_comments: int,
    preexisting_hidden: int,
    suppressed: int,
    verification: Verification | None,
) -> str:
    """The review's opening lines: where its findings went, what was held back (pre-existing, suppressed by the
    team) and what the verification pass made of them."""
    intro = (
        _intro(placement, max_comments) + preexisting_note(preexisting_hidden) + suppressed_note(suppressed)
    )
    return intro + verify_text.review_line(verification, sep="\n\n")


def build_review(
    findings: Iterable[Any],
    patches_by_path: Mapping[str, str | None],
    summary_rows: Mapping[str, Any] | Sequence[Any] | None = None,
    *,
    already_posted: set[str] | frozenset[str] = frozenset(),
    max_comments: int = DEFAULT_INLINE_COMMENTS,
    max_body: int = MAX_BODY,
    skipped_files: Sequence[Any] | None = None,
    inline: bool = True,
    head_sha: str | None = None,
    repo: str | None = None,
    web: str = "https://github.com",
    instructions: Sequence[str] | None = None,
    no_snapshot: Sequence[str] | None = None,
    preexisting_hidden: int = 0,  # pre-existing findings the fan-in held back: counted, never silent
    suppressed: int = 0,  # findings the team's rules suppress (pipeline.suppression): counted, never posted
    verification: Verification | None = None,  # the verification pass's outcome, said in one line
) -> ReviewPlan:
    """Plan one COMMENT review: at most `max_comments` inline comments (the noise budget, MaxInlineComments: the
    rules are prfleet.pipeline.noise's), only on diff lines, everything else in the body.

    Findings whose fingerprint is in `already_posted` (or repeated within this batch) are skipped; the best
    ranked critical, high and medium findings on diff lines get the inline slots; the rest are listed in the body
    in rank order ("Findings not placed inline", "Outside the diff"), low and info ones in one collapsed section,
    each linked to its line at `head_sha` in `repo` (on `web`); the body is kept under `max_body` (overflowing
    findings go to `omitted`, counted in a note). `inline=False` puts everything in the body (the fallback after
    GitHub answers 422 on an inline comment).
    `instructions`: the sources of the repository's own instructions that applied, listed in the body.
    `no_snapshot`: why jobs ran without the repository's snapshot (their runs' reasons), said in one line.
    """
    _check_cap(max_comments)
    line_maps = {p: diff_line_map(patch) for p, patch in patches_by_path.items()}
    placement = noise.place(
        findings,
        line_maps,
        already_posted,
        inline=inline,
        max_comments=max_comments,
        fingerprint=fingerprint_of,
        comment=lambda f, fp: _comment_body(f, fp, max_body=max_body),
    )
    folded, outside, low = placement.folded, placement.outside, placement.low
    table = summary_table(summary_rows)
    skipped_text = _skipped_section(skipped_files)
    intro = _notes(placement, max_comments, preexisting_hidden, suppressed, verification)
    applied = _instructions_section(instructions)
    fallback = snapshot_note(no_snapshot)
    head = "## prfleet review" + (f" of `{head_sha[:12]}`" if head_sha else "")

    outside_ids = {id(f) for f, _, _ in outside}
    low_ids = {id(f) for f, _, _ in low}

    suffix = "\n\n" + REVIEW_MARKER
    body, placed, omitted = noise.review_body(
        "\n\n".join(p for p in (head, intro, fallback, applied, table, skipped_text) if p),
        [
            ("Findings not placed inline", folded, False),
            ("Outside the diff", outside, False),
            ("low and info findings", low, True),
        ],
        lambda f, fp, why: _folded_entry(f, fp, why, _finding_link(f, web, repo, head_sha)),
        max_body - len(suffix),
        max_body,
    )
    summary_head = "## prfleet summary" + (f" for `{head_sha[:12]}`" if head_sha else "")
    summary = "\n\n".join(
        p for p in (SUMMARY_MARKER, summary_head, table, intro, fallback, applied, skipped_text) if p
    )
    return ReviewPlan(
        body=_truncate(body, max_body - len(suffix)) + suffix,
        comments=placement.comments,
        folded=[f for f, _ in placed],
        outside=[f for f, _ in placed if id(f) in outside_ids],
        collapsed=[f for f, _ in placed if id(f) in low_ids],
        skipped_duplicates=placement.duplicates,
        omitted=omitted,
        summary=_truncate(summary, max_body),
        fingerprints=set(placement.inline_fps) | {fp for _, fp in placed},
    )


# --- check run ---


def _totals(counts: Mapping[str, Any]) -> dict[str, int]:
    """Accept flat totals or {agent: row} as built by the fan-in."""
    if counts and all(isinstance(v, Mapping) for v in counts.values()):
        total = dict.fromkeys(_COUNT_KEYS, 0)
        for row in counts.values():
            for k in _COUNT_KEYS:
                total[k] += int(row.get(k, 0) or 0)
        return total
    return {k: int(counts.get(k, 0) or 0) for k in _COUNT_KEYS}


def check_conclusion(
    counts: Mapping[str, Any],
    *,
    findings: Iterable[Any] = (),
    fail_on: str = "never",
    deferred_reasons: Iterable[str] = (),
    outside_diff: int = 0,
    no_snapshot: Iterable[str] = (),
    placement: Mapping[str, int] | None = None,
    preexisting_hidden: int = 0,  # pre-existing findings not posted, counted in the summary
    suppressed: int = 0,  # findings the team's rules suppress, counted in the summary
    verification: Verification | None = None,  # the verification pass's outcome: its counts or why not
) -> tuple[str, str, str]:
    """(conclusion, title, summary) for the check run.

    failure when jobs errored; neutral (never failing) when the budget or the API's spend limit deferred work,
    saying which (`deferred_reasons`: the deferred runs' errors); failure when a finding is at or above the FailOn
    policy (never: findings never fail the check; critical; high); else success. `outside_diff`: how many
    findings are outside the diff (in the review body, not on the PR's lines), said in the summary.
    `no_snapshot`: why jobs ran without the repository's snapshot, said in one line of every summary.
    `placement`: where the review put its new findings (ReviewPlan.placement), said in one sentence.
    """
    gating = [f for f in findings if _severity(f) in FAIL_ON.get(fail_on, ())]
    t = _totals(counts)
    ran = t["succeeded"] + t["partial"] + t["failed"]
    facts = (
        f"{ran} job(s) ran ({t['cached']} from cache), {t['findings']} finding(s), "
        f"cost {_usd(t['cost_micros'])}; "
        f"{t['deferred']} deferred, {t['skipped']} skipped, {t['superseded']} superseded."
    )
    if outside_diff:
        facts += f" {outside_diff} finding(s) outside the diff, listed in the review body with links."
    if placement:
        facts += " " + noise.placement_note(placement, MAX_BODY)
    facts += preexisting_note(preexisting_hidden) + suppressed_note(suppressed)
    facts += verify_text.review_line(verification, sep=" ")
    fallback = snapshot_note(no_snapshot)
    if fallback:
        facts += " " + fallback
    if t["failed"]:
        title = f"{t['failed']} review job(s) failed"
        text = (
            f"{t['failed']} job(s) ended with an error; see the run logs "
            "(correlation id in the check's external id). " + facts
        )
        return "failure", title, text
    spend_limit = [r for r in deferred_reasons if "spend limit" in (r or "").lower()]
    if t["deferred"] and spend_limit:
        title = f"{t['deferred']} job(s) waiting: the Anthropic API's spend limit was reached"
        text = (
            f"{t['deferred']} job(s) are waiting because the Anthropic API refused calls: "
            f"{spend_limit[0][:300]}. prfleet stopped calling the API for the whole fleet; a probe retries it "
            "regularly, and the jobs (kept, not dropped) run once it gets through. This check is neutral, not "
            "failing: the limit is the account's, not a problem in this pull request. " + facts
        )
        return "neutral", title, text
    if t["deferred"]:
        title = f"{t['deferred']} job(s) deferred by the budget"
        text = (
            f"{t['deferred']} job(s) are waiting because prfleet's spending limit for today "
            "(or for this pull request) was reached. They are kept, not dropped, and run after the budget "
            "resets; this check is neutral, not failing, because the limit is prfleet's own. " + facts
        )
        return "neutral", title, text
    if gating:
        title = f"{len(gating)} finding(s) at or above {fail_on} severity"
        text = (
            f"This repository fails the check on {' and '.join(FAIL_ON[fail_on])} findings (FailOn={fail_on}, "
            "from the stack's FailOn parameter or the base branch's .prfleet.toml fail_on). " + facts
        )
        return "failure", title, text
    shown = t["findings"] if verification is None or verification.state == "off" else len(verification.posted)
    title = f"{shown} finding(s)" if shown else "No findings"
    if verification is not None and verification.state == "unverified":
        title += " (unverified)"
    text = facts
    if t["partial"]:
        text += f" {t['partial']} job(s) stopped at their iteration or token limit with partial results."
    return "success", title, text


def annotations(findings: Iterable[Any]) -> list[dict[str, Any]]:
    """Check-run annotations, most severe first (GitHub shows them in order)."""
    out = []
    for f in sorted(findings, key=rank_key):
        line = max(1, int(_get(f, "line", 1) or 1))
        message = str(_get(f, "body", "") or _get(f, "title", "") or "").strip() or "(no details)"
        out.append(
            {
                "path": str(_get(f, "path", "")),
                "start_line": line,
                "end_line": line,
                "annotation_level": _ANNOTATION_LEVEL[_severity(f)],
                "message": _truncate_bytes(message, MAX_ANNOTATION_MESSAGE),
                "title": _truncate(
                    f"[{_severity(f)}] {str(_get(f, 'title', '')).strip()}", MAX_ANNOTATION_TITLE, "…"
                ),
            }
        )
    return out
