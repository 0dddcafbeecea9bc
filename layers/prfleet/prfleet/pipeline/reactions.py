"""What the team thinks of prfleet's findings: the 👍 / 👎 on its own inline comments, read back from GitHub.

GitHub sends no webhook for a reaction, but every review comment carries a `reactions` roll-up (`+1`, `-1`,
`laugh`, ... and `total_count`) when the PR's review comments are listed
(https://docs.github.com/en/rest/pulls/comments#list-review-comments-on-a-pull-request, the `reaction-rollup`
schema; the reaction types: https://docs.github.com/en/rest/reactions/reactions#about-reactions). So one listing
per PR reads them all:
- at each new head of a PR (the planner, after planning: `after_new_head`), and
- by the sweeper for PRs that went quiet (`sweep_quiet`): QUIET_AFTER after the PR's latest head, again later.

prfleet's own comments are the ones its App wrote (author type Bot) at the top of a thread (not a reply), carrying
the hidden fingerprint marker of a finding prfleet recorded as posted on this PR (prfleet.store.posting). Each
finding's counts replace the stored ones (prfleet.store.reactions.record) and only the change is published
(FindingsUpvoted / FindingsDownvoted, prfleet.observability.metrics.publish_feedback), per agent, model and
category; the category and agent come from the comment itself (its first line, as prfleet.pipeline.render writes
it), the model from the head's run of that file and agent, else "unknown".

With a plain token instead of a GitHub App (TokenAuth) prfleet's comments are authored by the token's user, not a
Bot: they are not told apart from a person's and no reaction is read.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prfleet.config import now as config_now
from prfleet.github import GitHubRateLimited
from prfleet.jobs import PrJob
from prfleet.observability.metrics import make_metrics, publish_feedback
from prfleet.store import job_runs, posting
from prfleet.store import reactions as store
from prfleet.store.reactions import FindingReactions, Rejection

log = logging.getLogger(__name__)

THUMBS_UP, THUMBS_DOWN = "+1", "-1"  # the roll-up's keys for 👍 and 👎
# render.fp_marker / render._comment_body's format: the marker closes the body, the first line is
# "<icon> **<severity>** · <category> · _<agent>_", the second paragraph "**<title>**".
_FP_RE = re.compile(r"<!-- prfleet:fp=([0-9a-f]+) -->")
_HEAD_RE = re.compile(r"^\S+ \*\*(?P<severity>[a-z]+)\*\* · (?P<category>[^·\n]+?) · _(?P<agent>[^\n]*)_\s*$")
_TITLE_RE = re.compile(r"^\*\*(?P<title>.+)\*\*$", re.DOTALL)
QUIET_AFTER = (86400, 3 * 86400, 7 * 86400)  # the sweeper's reads after a PR's latest head: 1, 3 and 7 days
QUIET_PER_SWEEP = 20  # PRs one sweep reads at most (one GitHub listing each)
QUIET_MARGIN_S = 20.0  # a PR is read only while more than this is left of the sweeper's invocation


@dataclass(frozen=True)
class ReadSummary:
    """What one read of a PR's reactions found and changed."""

    comments: int = 0  # review comments listed
    findings: int = 0  # of them, prfleet's inline findings
    changed: int = 0  # findings whose counts changed (or were seen for the first time)
    upvoted: int = 0  # the change in 👍 over all findings (published as FindingsUpvoted)
    downvoted: int = 0  # the change in 👎 (FindingsDownvoted)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def rollup_counts(comment: Mapping[str, Any]) -> tuple[int, int]:
    """(👍, 👎) of a comment's `reactions` roll-up; (0, 0) without one."""
    rollup = comment.get("reactions")
    if not isinstance(rollup, Mapping):
        return 0, 0
    return _count(rollup.get(THUMBS_UP)), _count(rollup.get(THUMBS_DOWN))


def by_the_app(comment: Mapping[str, Any]) -> bool:
    """Written by a GitHub App, at the top of its thread (not a reply). What an App does with an installation
    token is attributed to the App (https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/authenticating-as-a-github-app-installation),
    whose account is its bot user: type `Bot`, login `<slug>[bot]`."""
    user = comment.get("user") or {}
    return (
        user.get("type") == "Bot"
        and str(user.get("login") or "").endswith("[bot]")
        and not comment.get("in_reply_to_id")
    )


def _epoch(text: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_comment(comment: Mapping[str, Any], repo: str, number: int) -> FindingReactions | None:
    """A prfleet inline finding as its review comment shows it, or None for any other comment."""
    body = str(comment.get("body") or "")
    markers = _FP_RE.findall(body)
    head = _HEAD_RE.match(body.split("\n", 1)[0])
    posted_at = _epoch(comment.get("created_at"))
    if not markers or head is None or posted_at is None or not isinstance(comment.get("id"), int):
        return None
    paragraphs = body.split("\n\n")
    title = _TITLE_RE.match(paragraphs[1].strip()) if len(paragraphs) > 1 else None
    line = comment.get("line") or comment.get("original_line")
    up, down = rollup_counts(comment)
    return FindingReactions(
        repo=repo,
        number=number,
        fingerprint=markers[-1],
        comment_id=int(comment["id"]),
        agent=head["agent"],
        category=head["category"].strip(),
        severity=head["severity"],
        title=title["title"].strip() if title else "",
        path=str(comment.get("path") or ""),
        line=int(line) if isinstance(line, int) else None,
        head_sha=str(comment.get("original_commit_id") or comment.get("commit_id") or ""),
        posted_at=posted_at,
        up=up,
        down=down,
    )


def own_findings(
    comments: Iterable[Mapping[str, Any]], posted: set[str], repo: str, number: int
) -> list[FindingReactions]:
    """prfleet's inline findings among a PR's review comments: by the App, not a reply, with the marker of a
    finding recorded as posted on this PR; one per fingerprint (the first)."""
    out: dict[str, FindingReactions] = {}
    for c in comments:
        if not by_the_app(c):
            continue
        f = parse_comment(c, repo, number)
        if f is not None and f.fingerprint in posted and f.fingerprint not in out:
            out[f.fingerprint] = f
    return list(out.values())


def model_for(runs: Iterable[Mapping[str, Any]], path: str, agent: str) -> str:
    """The model of the run that reported a finding: the head's run of that file and agent; else, for a finding
    on another file (a caller it breaks), the agent's model when all its runs of the head used one; else unknown."""
    runs = [r for r in runs if r.get("agent") == agent and r.get("model")]
    exact = {str(r["model"]) for r in runs if r.get("path") == path}
    if len(exact) == 1:
        return exact.pop()
    models = {str(r["model"]) for r in runs}
    return models.pop() if len(models) == 1 else "unknown"


def changes(old: tuple[int, int], new: tuple[int, int]) -> list[tuple[str, int]]:
    """The metrics one finding's new counts publish: only what changed, signed (a 👎 taken back is -1)."""
    out = [("FindingsUpvoted", new[0] - old[0]), ("FindingsDownvoted", new[1] - old[1])]
    return [(name, delta) for name, delta in out if delta]


def read_reactions(gh: Any, repo: str, number: int, *, now: float | None = None) -> ReadSummary:
    """Read the PR's reactions once (one listing of its review comments) and record what changed.

    No request when prfleet has posted no finding on the PR. The model of a finding seen for the first time comes
    from its head's runs (one Query per head)."""
    now = config_now() if now is None else now
    posted = posting.recorded_fingerprints(repo, number)
    if not posted:
        return ReadSummary()
    comments = gh.list_review_comments(repo, number)
    found = own_findings(comments, posted, repo, number)
    known = store.stored(found)
    # A Metrics made now shares the class-level metric set of the handler's (Powertools keeps it in class
    # attributes), which the handler flushes; one made at import could hold a set the handler never flushes.
    metrics = make_metrics()
    runs: dict[str, list[dict[str, Any]]] = {}
    changed = up = down = 0
    for f in found:
        item = known.get(f.fingerprint)
        if item is not None and (int(item.get("up", 0)), int(item.get("down", 0))) == (f.up, f.down):
            continue
        if item is not None:
            model = str(item.get("model") or "unknown")
        else:
            if f.head_sha not in runs:
                runs[f.head_sha] = job_runs.runs_of_head(repo, number, f.head_sha) if f.head_sha else []
            model = model_for(runs[f.head_sha], f.path, f.agent)
        old = store.record(f, model=model, read_at=now)
        if old is None:  # a later read is stored: its change is the one published
            continue
        changed += 1
        for name, delta in changes(old, (f.up, f.down)):
            publish_feedback(metrics, name, delta, agent=f.agent, model=model, category=f.category)
            up += delta if name == "FindingsUpvoted" else 0
            down += delta if name == "FindingsDownvoted" else 0
    summary = ReadSummary(len(comments), len(found), changed, up, down)
    log.info(
        "reactions read",
        extra={"event": "reactions", "repository": repo, "pr": number, **summary.__dict__},
    )
    return summary


def after_new_head(gh: Any, job: PrJob, *, now: float | None = None) -> ReadSummary | None:
    """The planner's step at a new head (after planning): schedule the PR's quiet read, then read its reactions.

    Never raises: the head is planned whatever happens here; a failed read is logged, and the quiet read (already
    scheduled) reads them later."""
    now = config_now() if now is None else now
    try:
        store.schedule_quiet(
            job.repo, job.number, job.installation_id, since=now, round_=0, due=now + QUIET_AFTER[0]
        )
        return read_reactions(gh, job.repo, job.number, now=now)
    except Exception as exc:  # noqa: BLE001 - planning is done; reactions are read again by the sweeper
        log.warning(
            "reactions not read",
            extra={
                "event": "error",
                "error_type": type(exc).__name__,
                "reason": str(exc)[:300],
                "repository": job.repo,
                "pr": job.number,
            },
        )
        return None


def sweep_quiet(
    client_for: Callable[[int | None], Any], *, now: float, time_left: Callable[[], float] | None = None
) -> int:
    """The sweeper's step: read the reactions of the PRs due for a quiet read (at most QUIET_PER_SWEEP, while
    time is left), each taken once, and schedule each one's next round. Returns how many PRs were read."""
    read = 0
    for entry in store.due_quiet(now):
        if read >= QUIET_PER_SWEEP or (time_left is not None and time_left() <= QUIET_MARGIN_S):
            break
        if not store.take_quiet(entry):
            continue
        try:
            read_reactions(client_for(entry.installation_id), entry.repo, entry.number, now=now)
        except GitHubRateLimited as exc:  # the same round again once GitHub allows it; the rest next sweep
            _reschedule(entry, round_=entry.round, due=now + max(60.0, exc.retry_after))
            break
        except Exception as exc:  # noqa: BLE001 - one PR's failure must not stop the sweep: its next round reads
            log.warning(
                "reactions not read",
                extra={
                    "event": "error",
                    "error_type": type(exc).__name__,
                    "reason": str(exc)[:300],
                    "repository": entry.repo,
                    "pr": entry.number,
                },
            )
        read += 1
        if entry.round + 1 < len(QUIET_AFTER):
            _reschedule(entry, round_=entry.round + 1, due=entry.since + QUIET_AFTER[entry.round + 1])
    return read


def _reschedule(entry: store.QuietRead, *, round_: int, due: float) -> None:
    store.schedule_quiet(
        entry.repo,
        entry.number,
        entry.installation_id,
        since=entry.since,
        round_=round_,
        due=due,
        replacing=entry.sk,
    )


def recent_rejections(repo: str, limit: int) -> list[Rejection]:
    """The repository's most recent findings the team turned down (more 👎 than 👍), newest first: title,
    category, agent and path, for the verification pass (prfleet.store.reactions.recent_rejections)."""
    return store.recent_rejections(repo, limit)
