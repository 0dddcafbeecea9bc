"""The conversation (issue 25), on the planner's side: a comment the webhook accepted (a CommentJob) is read back
from GitHub, judged with what needs the API or the repository's config, and carried out.

- ask: an AskJob goes to JobsQueue; the agent function answers it (pipeline.answering).
- ignore (`/prfleet ignore [reason]` in reply to a finding) and resolve (a finding's thread resolved while its
  line is unchanged): a suppression is recorded (store.feedback) unless `.prfleet.toml` says `[conversation]
  learn = false`, and prfleet replies in the thread in one line, once (store.answers and the reply's marker).

Who may ask: the comment as GitHub holds it now (not the payload) by a non-bot author whose `author_association`
is OWNER, MEMBER or COLLABORATOR, or whose login the base branch's `.prfleet.toml` lists in `[conversation]
trusted`; a resolved thread counts when the resolver has write access (the event carries no association). Anyone
else is refused with a log line and CommentsIgnored (`comment_ignored` in the returned summary).

GitHub facts used here: a reply's `in_reply_to_id` names the comment it answers, and replies go to the thread's
first comment ("Replies to replies are not supported",
https://docs.github.com/en/rest/pulls/comments#create-a-reply-for-a-review-comment); `original_commit_id` and
`original_line` are where a review comment was made, `line` where it applies on the current diff, null when the
comment is outdated (https://docs.github.com/en/rest/pulls/comments#get-a-review-comment-for-a-pull-request).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prfleet.agents.ask import Said, clean_answer
from prfleet.config import now as config_now
from prfleet.config import settings
from prfleet.config.repo_config import RepoConfig, RepoConfigError, parse_repo_config
from prfleet.github import GitHubError
from prfleet.jobs import AskJob, CommentJob, sqs
from prfleet.pipeline import suppression
from prfleet.pipeline.webhook import ASK_COMMAND, IGNORE_COMMAND, TRUSTED_ASSOCIATIONS, bot_reason, mentions
from prfleet.store import answers, feedback, job_runs

WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
FP_MARKER = re.compile(r"<!--\s*prfleet:fp=([0-9a-f]+)\s*-->")
# render._comment_body's first two paragraphs: "{icon} **{severity}** · {category} · _{agent}_", "**{title}**"
_HEADER = re.compile(r"\*\*(?P<severity>\w+)\*\* · (?P<category>[^·\n]+?) · _(?P<agent>[\w-]+)_")
_TITLE = re.compile(r"^\*\*(?P<title>.+?)\*\*\s*$", re.MULTILINE)
MAX_HOPS = (
    3  # in_reply_to_id hops to a thread's first comment (GitHub names it directly; a bound all the same)
)
MAX_THREAD = 20  # comments of a thread shown to the ask agent (the first and the latest ones)


@dataclass(frozen=True)
class Thread:
    """A comment and its thread as GitHub holds them: `first` is the thread's first comment (the comment itself
    for a new thread; None on the PR conversation), `finding` whether that first comment is a prfleet finding."""

    comment: dict[str, Any]
    first: dict[str, Any] | None
    finding: bool


def fingerprint_in(body: str) -> str | None:
    """The fingerprint a prfleet finding's comment carries in its hidden marker (render.fp_marker)."""
    m = FP_MARKER.search(body or "")
    return m.group(1) if m else None


def is_finding(comment: Mapping[str, Any] | None, app_slug: str) -> bool:
    """A review comment prfleet posted for a finding: by its own bot, with a fingerprint marker."""
    return (
        bool(comment)
        and bot_reason(comment.get("user"), app_slug) == "self"
        and bool(fingerprint_in(str(comment.get("body") or "")))
    )


def read_thread(gh: Any, job: CommentJob | AskJob) -> Thread:
    """The comment and its thread's first comment, read from GitHub (a deleted comment raises GitHubError 404)."""
    slug = settings().app_slug
    if job.on == "issue":
        return Thread(gh.issue_comment(job.repo, job.comment_id), None, False)
    comment = gh.review_comment(job.repo, job.comment_id)
    first = comment
    for _ in range(MAX_HOPS):
        parent = first.get("in_reply_to_id")
        if not isinstance(parent, int):
            break
        first = gh.review_comment(job.repo, parent)
    return Thread(comment, first, is_finding(first, slug))


def thread_comments(gh: Any, repo: str, number: int, first_id: int) -> list[dict[str, Any]]:
    """The thread of review comment `first_id`, oldest first (one paginated listing of the PR's comments)."""
    found = [
        c
        for c in gh.list_review_comments(repo, number)
        if c.get("id") == first_id or c.get("in_reply_to_id") == first_id
    ]
    found.sort(key=lambda c: (str(c.get("created_at") or ""), int(c.get("id") or 0)))
    return found if len(found) <= MAX_THREAD else found[:1] + found[-(MAX_THREAD - 1) :]


def said(comment: Mapping[str, Any]) -> Said:
    """A comment as the ask agent is shown it: author and body, prfleet's hidden markers left out."""
    return Said(
        str((comment.get("user") or {}).get("login") or "?"), clean_answer(str(comment.get("body") or ""))
    )


def repo_config_at(gh: Any, repo: str, base_sha: str) -> RepoConfig:
    """The base branch's .prfleet.toml (defaults when absent or broken: the planner reports a broken one)."""
    raw = gh.file_at(repo, ".prfleet.toml", base_sha)
    if not raw:
        return RepoConfig()
    try:
        return parse_repo_config(raw.decode("utf-8", "replace"))
    except RepoConfigError:
        return RepoConfig()


def trusted(gh: Any, job: CommentJob, comment: Mapping[str, Any], cfg: RepoConfig) -> bool:
    """Whether prfleet acts on this author: a member by association, listed in `[conversation] trusted`, or
    (a resolved thread, which carries no association) a user with write access."""
    if job.author.lower() in cfg.trusted:
        return True
    if job.command == "resolve":
        return gh.collaborator_permission(job.repo, job.author) in WRITE_PERMISSIONS
    return str(comment.get("author_association") or "") in TRUSTED_ASSOCIATIONS


def _ignored(reason: str, why: str, *, counted: bool = True) -> dict[str, Any]:
    return {"status": "ignored", "reason": why, **({"comment_ignored": reason} if counted else {})}


def take_comment(
    job: CommentJob, gh: Any, *, send: Callable[[list[AskJob]], None] | None = None
) -> dict[str, Any]:
    """The planner's whole step for one CommentJob; returns a summary for the log line (`comment_ignored`: a
    refusal the handler counts as CommentsIgnored)."""
    pr = gh.pr(job.repo, job.number)
    if pr.get("state") == "closed":
        return _ignored("closed", "the pull request is closed")
    try:
        thread = read_thread(gh, job)
    except GitHubError as exc:
        if exc.status == 404:
            return _ignored("deleted", "the comment no longer exists")
        raise
    comment = thread.comment if job.command != "resolve" else (thread.first or thread.comment)
    slug = settings().app_slug
    actor = {"login": job.author, "type": "User"} if job.command == "resolve" else comment.get("user")
    bot = bot_reason(actor, slug)
    if bot:
        return _ignored(bot, f"{job.author} is a bot: never answered")
    cfg = repo_config_at(gh, job.repo, pr["base"]["sha"])
    if not trusted(gh, job, comment, cfg):
        association = comment.get("author_association") or "no association"
        return _ignored("untrusted", f"{job.author} ({association}) is not trusted by this repository")
    if job.command == "ask":
        return _ask(job, pr, thread, send or sqs.send_file_jobs)
    if not thread.finding or thread.first is None:
        return _ignored(
            "not_a_finding", f"`{job.command}` applies to a prfleet finding's thread", counted=False
        )
    if job.command == "resolve" and not _unchanged(gh, job.repo, pr, thread.first):
        return {"status": "ignored", "reason": "the finding's line changed since: fixed, not dismissed"}
    return _learn(job, gh, thread, cfg)


def _ask(
    job: CommentJob, pr: Mapping[str, Any], thread: Thread, send: Callable[[list[AskJob]], None]
) -> dict[str, Any]:
    """A question: in a prfleet thread any reply is one; elsewhere only `/prfleet ask` or a mention."""
    text = str(thread.comment.get("body") or "")
    if (
        job.on == "review"
        and not thread.finding
        and not (ASK_COMMAND.match(text) or mentions(text, settings().app_slug))
    ):
        return _ignored("not_prfleets", "a reply in a thread that is not prfleet's", counted=False)
    first = thread.first if job.on == "review" else None
    ask = AskJob(
        repo=job.repo,
        number=job.number,
        head_sha=str(pr["head"]["sha"]),
        base_sha=str(pr["base"]["sha"]),
        comment_id=job.comment_id,
        on=job.on,
        thread_id=int(first["id"]) if first else 0,
        path=str((first or {}).get("path") or ""),
        author=job.author,
        installation_id=job.installation_id,
        delivery_id=job.delivery_id,
    )
    send([ask])
    return {"status": "asked", "job_id": ask.job_id, "thread": ask.thread_id, "path": ask.path}


def _unchanged(gh: Any, repo: str, pr: Mapping[str, Any], first: Mapping[str, Any]) -> bool:
    """Whether the finding's line reads the same at the PR's head as where prfleet commented (a thread resolved
    without a change teaches; one resolved because the code was fixed does not). An outdated comment (`line`
    null: the diff no longer shows its line) counts as changed."""
    path, line, then = first.get("path"), first.get("line"), first.get("original_line")
    commit = first.get("original_commit_id") or first.get("commit_id")
    if not isinstance(line, int) or not isinstance(then, int) or not path or not commit:
        return False
    before = (gh.file_at(repo, str(path), str(commit)) or b"").decode("utf-8", "replace").splitlines()
    now = (gh.file_at(repo, str(path), str(pr["head"]["sha"])) or b"").decode("utf-8", "replace").splitlines()
    if not (0 < then <= len(before) and 0 < line <= len(now)):
        return False
    return " ".join(before[then - 1].split()) == " ".join(now[line - 1].split())


def finding_of(repo: str, number: int, first: Mapping[str, Any]) -> dict[str, Any] | None:
    """The finding a prfleet comment was posted for: from the runs of the head it was posted on (by its
    fingerprint), else read from the comment's own header (render._comment_body's layout)."""
    fp = fingerprint_in(str(first.get("body") or ""))
    commit = str(first.get("original_commit_id") or first.get("commit_id") or "")
    if fp and commit:
        for run in job_runs.runs_of_head(repo, number, commit):
            raw = run.get("findings")
            for f in (json.loads(raw) if isinstance(raw, str) else raw) or []:
                if str(f.get("fingerprint") or "").lower() == fp:
                    return {**f, "agent": f.get("agent") or run.get("agent")}
    body = str(first.get("body") or "")
    head, title = _HEADER.search(body), _TITLE.search(body)
    if not head or not title:
        return None
    path = str(first.get("path") or "")
    return {
        "agent": head["agent"],
        "category": head["category"].strip(),
        "title": title["title"],
        "path": path,
    }


def _learn(job: CommentJob, gh: Any, thread: Thread, cfg: RepoConfig) -> dict[str, Any]:
    """`/prfleet ignore` or a resolved thread: record the rule (unless learning is off), reply once."""
    first = thread.first or {}
    if not cfg.learn:
        text = "Not recorded: this repository turned learning off (`[conversation] learn = false` in .prfleet.toml)."
        replied = reply_once(
            gh, job.repo, job.number, job.comment_id, int(first["id"]), "review", text, "not_learned"
        )
        return {"status": "not_learned", "replied": replied}
    finding = finding_of(job.repo, job.number, first)
    if finding is None:
        return {"status": "ignored", "reason": "the finding's rule could not be read from its comment"}
    why = (
        IGNORE_COMMAND.sub("", str(thread.comment.get("body") or ""), count=1).strip()
        if job.command == "ignore"
        else ""
    )
    rule = feedback.Suppression(
        id=feedback.rule_id(job.repo, int(first["id"])),
        repo=job.repo,
        agent=str(finding.get("agent") or ""),
        category=str(finding.get("category") or ""),
        title=suppression.normalise_title(str(finding.get("title") or "")),
        path_glob=suppression.path_glob_for(str(finding.get("path") or first.get("path") or "")),
        who=job.author,
        when=int(config_now()),
        why=(why or ("thread resolved without a change" if job.command == "resolve" else ""))[:500],
        source=job.command,
        pr=job.number,
        comment_id=job.comment_id,
    )
    new = feedback.record(rule)
    text = (
        "Noted: findings like this are no longer reported on this repository. "
        f"`prfleet feedback forget {rule.id}` undoes it."
    )
    replied = reply_once(gh, job.repo, job.number, job.comment_id, int(first["id"]), "review", text, "noted")
    return {"status": "suppressed", "rule": rule.id, "new": new, "replied": replied}


def reply_once(
    gh: Any,
    repo: str,
    number: int,
    comment_id: int,
    thread_id: int,
    on: str,
    text: str,
    outcome: str,
    *,
    run_id: str = "-",
) -> int | None:
    """Post prfleet's reply to `comment_id` once: not when it is recorded (store.answers), nor when GitHub already
    holds a reply with its marker (an attempt that died after posting). In a review thread the reply goes to the
    thread's first comment (`thread_id`); on the PR conversation it is a new comment. Returns its id."""
    if answers.answer_of(repo, number, comment_id):
        return None
    marker = answers.answer_marker(comment_id)
    find = gh.find_review_comment if on == "review" else gh.find_issue_comment
    found = find(repo, number, marker)
    if found is None:
        body = f"{text}\n\n{marker}"
        if on == "review":
            found = gh.reply_to_review_comment(repo, number, thread_id, body, marker=marker)
        else:
            found = gh.create_issue_comment(repo, number, body, marker=marker)
    reply_id = int(found["id"]) if found and found.get("id") is not None else None
    answers.record_answer(repo, number, comment_id, outcome=outcome, reply_id=reply_id, run_id=run_id)
    return reply_id
