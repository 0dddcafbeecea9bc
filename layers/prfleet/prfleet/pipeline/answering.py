"""One ask job, start to end (issue 25): claim the run, read the question back from GitHub, run the ask agent under
the same ledger, PR budget and circuit as a file job, and reply once in the thread (or on the PR's conversation).

Its story, in `_answer` (read top to bottom):
  1. already answered (store.answers)? A redelivered or re-planned question stops here;
  2. the claim of the run (job_runs.start_run, keyed by the comment: a duplicate delivery stops here);
  3. a reply of an attempt that died after posting, found by its hidden marker, is recorded, not posted again;
  4. the spend-limit circuit and the run's cost cap; the agent's run under the LedgerGuard (runner.run_guard);
  5. the reply: the answer, or ONE line saying why there is none (the budget is spent, the API's spend limit paused
     the fleet, the cost cap, an error); the run's outcome; the `answered` event (CommentsAnswered).
A budget held only by open reservations, a model rate limit and a GitHub rate limit send the job back with a delay
(runner.RetryLater) instead: the answer comes a little later, not never. Anything else gives the claim back and
raises (SQS retries; the last delivery and the sweeper's stuck check reply in one line through `fail`).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prfleet import github
from prfleet.agents.ask import AskResult, Question, ask_spec, run_ask
from prfleet.config import now as config_now
from prfleet.config import settings
from prfleet.cost import circuit
from prfleet.cost.guard import CircuitOpen, RunCostCapReached
from prfleet.cost.ledger import BudgetExceeded, Ledger
from prfleet.github import GitHubPrSource
from prfleet.jobs import AskJob, sqs
from prfleet.observability.redaction import redact
from prfleet.pipeline import conversation, runner
from prfleet.pipeline.attempt import spending_guard
from prfleet.pipeline.webhook import ASK_COMMAND
from prfleet.repository.view import view_for
from prfleet.store import answers, headfiles, job_runs

DEADLINE_MARGIN_S = 20.0  # leave time to post the reply and record the run

BUDGET_SPENT = (
    "prfleet's budget for {scope} is spent, so this question is not answered now; ask again after it resets."
)
PAUSED = "prfleet's model calls are paused (the API's spend limit was reached); ask again once it is lifted."
COST_CAP = "prfleet stopped before answering: this question reached its per-run cost cap."
NO_ANSWER = "prfleet could not answer this: {reason}."


@dataclass
class _Ask:
    """One claimed attempt at an ask job: the job, its run, GitHub, the event emitter, the clock, what earlier
    attempts cost and when it started."""

    job: AskJob
    run_id: str
    gh: Any
    emit: Callable[..., None]
    clock: Callable[[], float]
    model: str
    carried: int = 0
    started: float = 0.0


def answer(
    job: AskJob,
    *,
    remaining_ms: Callable[[], int],
    client_for: Callable[[int | None], Any],
    model_client: Any,
    emitter: Any,
    final_attempt: bool = False,
    clock: Callable[[], float] = config_now,
) -> str:
    """Answer one ask job; returns how it ended (answered, refused, duplicate, failed). GitHub waits end before
    the Lambda's time does; a longer GitHub rate limit re-sends the job with its delay (runner.RetryLater)."""
    with github.deadline(time.time() + remaining_ms() / 1000.0 - DEADLINE_MARGIN_S):
        try:
            return _answer(job, remaining_ms, client_for, model_client, emitter, final_attempt, clock)
        except github.GitHubRateLimited as exc:
            delay = min(max(1.0, float(exc.retry_after)), float(sqs.MAX_DELAY))
            raise runner.RetryLater(
                exc.message, delay, job.next_attempt(job.spent_micros).to_message()
            ) from exc


def _answer(
    job: AskJob,
    remaining_ms: Callable[[], int],
    client_for: Callable[[int | None], Any],
    model_client: Any,
    emitter: Any,
    final_attempt: bool,
    clock: Callable[[], float],
) -> str:
    spec = ask_spec(settings())
    run_id = uuid.uuid4().hex[:16]
    emit = emitter.bind(run_id=run_id, agent="ask", model=spec.model).emit
    gh = client_for(job.installation_id)
    if answers.answer_of(job.repo, job.number, job.comment_id):
        emit("skipped", reason="comment already answered", duplicate=True, comment=job.comment_id)
        return "duplicate"
    try:
        claimed = job_runs.start_run(job, run_id, spec.model, now=clock(), last_delivery=final_attempt)
    except job_runs.RunInProgress as exc:
        if exc.status == "running" and not final_attempt:
            raise runner.RunBusy(str(exc)) from None  # back to SQS: it retries the question if that run fails
        emit("skipped", reason=str(exc), duplicate=True, comment=job.comment_id)
        return "duplicate"
    at = _Ask(job, run_id, gh, emit, clock, spec.model, max(claimed, job.spent_micros), clock())
    if job.attempt >= settings().max_job_attempts:
        return _reply(
            at, "failed", NO_ANSWER.format(reason=f"gave up after {job.attempt} attempts"), "refused"
        )
    marker = answers.answer_marker(job.comment_id)
    find = gh.find_review_comment if job.on == "review" else gh.find_issue_comment
    if find(job.repo, job.number, marker) is not None:  # posted by an attempt that died before recording it
        return _reply(at, "succeeded", "", "answered")
    ledger = Ledger.from_settings(settings())
    if circuit.open_reason(ledger):
        return _reply(at, "skipped", PAUSED, "refused")
    cap = runner.run_cost_cap(spec)
    if at.carried >= cap:
        return _reply(at, "skipped", COST_CAP, "refused")
    return _run(at, spec, ledger, cap, read_question(gh, job), model_client, remaining_ms, final_attempt)


def _run(
    at: _Ask,
    spec: Any,
    ledger: Ledger,
    cap: int,
    question: Question,
    model_client: Any,
    remaining_ms: Callable[[], int],
    final_attempt: bool,
) -> str:
    """The ask agent's run under the LedgerGuard, and the reply its result or its refusal means."""
    job, emit, clock = at.job, at.emit, at.clock
    emit("start", path=job.path, head_sha=job.head_sha, attempt=job.attempt, comment=job.comment_id)
    guard = spending_guard(
        ledger,
        job,
        at.run_id,
        spec.model,
        emit,
        model_client=model_client,
        clock=clock,
        carried=at.carried,
        cap_micros=cap,
        claimed_at=at.started,
    )
    listed = headfiles.load(job.repo, job.number, job.head_sha)
    source = GitHubPrSource(
        at.gh, job.repo, job.number, job.head_sha, **(listed.source_args() if listed else {})
    )
    snap = runner.job_snapshot(job, emit)
    deadline = clock() + remaining_ms() / 1000.0 - DEADLINE_MARGIN_S
    try:
        result = run_ask(
            job,
            spec,
            source,
            question,
            model_client,
            deadline=deadline,
            guard=guard,
            emit=emit,
            snapshot=snap,
            view=view_for(source, snap),
        )
    except job_runs.RunInProgress as exc:  # marked stuck and re-queued meanwhile: that worker owns it now
        emit("skipped", reason=str(exc), duplicate=True, comment=job.comment_id)
        return "duplicate"
    except RunCostCapReached:
        return _reply(at, "skipped", COST_CAP, "refused", spent=guard.spent)
    except CircuitOpen:
        return _reply(at, "skipped", PAUSED, "refused", spent=guard.spent)
    except BudgetExceeded as exc:
        return _over_budget(at, exc, guard.spent)
    except Exception as exc:
        _give_back(at, exc, guard.spent)
        raise
    if guard.spend_limited:
        return _reply(at, "skipped", PAUSED, "refused", spent=guard.spent)
    if result.status == "failed" and result.retry_after and not final_attempt:  # the API's rate limit
        _give_back(at, RuntimeError(result.error), guard.spent)
        delay = min(max(1.0, result.retry_after), float(sqs.MAX_DELAY))
        raise runner.RetryLater(
            str(result.error), delay, job.next_attempt(at.carried + guard.spent).to_message()
        )
    return _answered(at, result, guard.spent, guard.estimated)


def _over_budget(at: _Ask, exc: BudgetExceeded, spent: int) -> str:
    """A budget held by open reservations comes back soon (re-sent with a jittered delay); a spent one is
    answered in one line."""
    if exc.cause == "reserved":
        _give_back(at, exc, spent)
        delay = settings().pressure_retry_s * (0.5 + random.random())
        raise runner.RetryLater(str(exc), delay, at.job.next_attempt(at.carried + spent).to_message())
    scope = "this pull request" if str(exc.scope).startswith("pr") else "today"
    return _reply(at, "skipped", BUDGET_SPENT.format(scope=scope), "refused", spent=spent, error=str(exc))


def _answered(at: _Ask, result: AskResult, spent: int, estimated: int) -> str:
    """The agent's answer (or one line saying why there is none) posted, and the run's outcome."""
    cost = at.carried + spent
    if result.answer:
        text = f"{result.answer}\n\n<sub>prfleet ask agent · {result.model or at.model} · ${cost / 1e6:.4f}</sub>"
        status, outcome = "succeeded", "answered"
    else:
        text = NO_ANSWER.format(reason=(result.error or "the agent gave no answer").rstrip("."))
        status, outcome = (result.status if result.status != "succeeded" else "failed"), "refused"
    values = {
        "iterations": result.iterations,
        "estimated_micros": estimated or None,
        "error": result.error,
        **{k: int(v) for k, v in (result.usage or {}).items()},
    }
    return _reply(at, status, text, outcome, spent=spent, values=values, usage=result.usage)


def _reply(
    at: _Ask,
    status: str,
    text: str,
    outcome: str,
    *,
    spent: int = 0,
    error: str | None = None,
    values: dict[str, Any] | None = None,
    usage: dict[str, int] | None = None,
) -> str:
    """The one door of a claimed attempt: reply once (`text` empty: the reply is already on GitHub), record the
    run's outcome with what it cost, emit the run's end and `answered`."""
    job = at.job
    conversation.reply_once(
        at.gh, job.repo, job.number, job.comment_id, job.thread_id, job.on, text, outcome, run_id=at.run_id
    )
    duration_ms = int((at.clock() - at.started) * 1000)
    fields = {
        "model": at.model,
        "cost_micros": at.carried + spent,
        "duration_ms": duration_ms,
        **(values or {}),
    }
    if error or status != "succeeded":
        fields["error"] = error or fields.get("error") or text
    job_runs.finish_run(job, at.run_id, status, fields, owner=True, now=at.clock())
    at.emit(
        "complete",
        status=status,
        duration_ms=duration_ms,
        cost_usd=spent / 1e6,
        error=fields.get("error"),
        **(usage or {}),
    )
    at.emit("answered", outcome=outcome, comment=job.comment_id, thread=job.thread_id)
    return outcome


def _give_back(at: _Ask, exc: BaseException, spent: int) -> None:
    """Give the claim back as `retrying` with what the attempt spent (as runner._give_back does)."""
    values = {"error": redact(f"{type(exc).__name__}: {exc}"), "cost_micros": at.carried + spent}
    try:
        job_runs.finish_run(at.job, at.run_id, "retrying", values, owner=True, now=at.clock())
    except job_runs.RunInProgress:
        pass


def read_question(gh: Any, job: AskJob) -> Question:
    """The question as GitHub holds it now: the comment (its `/prfleet ask` left out), the thread before it, the
    finding's file and line, the PR's title and description (from the head's stored list, else GitHub)."""
    thread = conversation.read_thread(gh, job)
    text = ASK_COMMAND.sub("", str(thread.comment.get("body") or ""), count=1).strip()
    before = []
    if job.on == "review" and job.thread_id:
        before = [
            conversation.said(c)
            for c in conversation.thread_comments(gh, job.repo, job.number, job.thread_id)
            if int(c.get("id") or 0) < job.comment_id
        ]
    first = thread.first if thread.finding else None
    listed = headfiles.load(job.repo, job.number, job.head_sha)
    if listed is not None:
        title, body = listed.title, listed.body
    else:
        pr = gh.pr(job.repo, job.number)
        title, body = str(pr.get("title") or ""), str(pr.get("body") or "")
    return Question(
        text=text or "(no question text)",
        author=job.author,
        thread=before,
        finding_path=str((first or {}).get("path") or ""),
        finding_line=int((first or {}).get("line") or (first or {}).get("original_line") or 0),
        pr_title=title,
        pr_body=body,
    )


def fail(
    client_for: Callable[[int | None], Any], job: AskJob, emitter: Any, reason: str, error_type: str
) -> str:
    """The last delivery of an ask job that keeps failing, or a stuck one: say so in one line in the thread and
    record the failure (nothing is dropped silently)."""
    run_id = uuid.uuid4().hex[:16]
    emit = emitter.bind(
        run_id=run_id, agent="ask", repository=job.repo, pr=job.number, delivery_id=job.delivery_id
    ).emit
    emit("error", error_type=error_type, message=reason[:300])
    try:
        conversation.reply_once(
            client_for(job.installation_id),
            job.repo,
            job.number,
            job.comment_id,
            job.thread_id,
            job.on,
            NO_ANSWER.format(reason="an error kept it from finishing; see the run logs"),
            "refused",
            run_id=run_id,
        )
    except github.GitHubError as exc:  # the run still records the failure; the log line says why no reply
        emit("error", error_type="ReplyFailed", message=redact(str(exc))[:300])
    try:
        job_runs.finish_run(job, run_id, "failed", {"error": reason})
    except job_runs.RunInProgress:
        pass
    emit("answered", outcome="failed", comment=job.comment_id, thread=job.thread_id)
    return "failed"
