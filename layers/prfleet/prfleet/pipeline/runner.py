"""One file job, start to end: superseded? cached? within budget? run the agent, store, settle, fan in.

Every path ends in a recorded outcome (succeeded / partial / failed / cached / superseded / skipped / deferred) or
in an exception that SQS retries and, after maxReceiveCount, moves to the dead-letter queue with the job intact.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from typing import Any

from prfleet import agents, github
from prfleet.config import now as config_now
from prfleet.config import settings
from prfleet.config.aws import client
from prfleet.config.repo_config import parse_repo_config
from prfleet.cost import billing, circuit, ledger, pricing
from prfleet.github import GitHubPrSource
from prfleet.jobs import FileJob, sqs
from prfleet.observability import events
from prfleet.observability.redaction import redact
from prfleet.pipeline import fanin
from prfleet.store import headfiles, result_cache, state

DEADLINE_MARGIN_S = 20.0  # leave time to store the result, settle the ledger and post the review
# A run's heartbeat and the circuit are read at most this often during a run (not on every model call): the sweeper
# takes a run for stuck, and another worker may take it over, only after state's 300 s of silence (5x this), and
# a circuit opened meanwhile is met by the call itself (the spend-limit error is not billed and defers the job).
HEARTBEAT_EVERY_S = 60.0
CIRCUIT_RECHECK_S = 60.0


class RetryLater(Exception):
    """The job must come back later (a rate limit longer than the time left, or a budget held by open
    reservations): re-sent with a delay of `delay`, as `body` (the next attempt, carrying what it has cost)."""

    def __init__(self, reason: str, delay: float, body: str | None = None) -> None:
        super().__init__(reason)
        self.delay = delay
        self.body = body


class RunCostCapReached(Exception):
    """The job has spent its agent's per-run cost cap (across all its attempts): it ends failed."""


class CircuitOpen(Exception):
    """The spend-limit circuit is open: no model call until the sweeper's probe succeeds."""


@dataclass
class Outcome:
    status: str
    run_id: str
    cost_micros: int = 0
    findings: int = 0
    posted: str | None = None
    reason: str = ""


@dataclass
class _Call:
    """One model call's reservation and what is known about it (the CallGuard token)."""

    reservation: ledger.Reservation
    model: str
    input_bound: int
    max_tokens: int
    geo: str
    messages: list[Any]
    head: str
    started: bool = False
    input_usage: Any = None


def run_cost_cap(spec: Any) -> int:
    """The agent's per-run cost cap in micro-dollars: its token cap priced at the worst case."""
    explicit = getattr(spec, "max_run_cost_micros", None)
    if explicit:
        return int(explicit)
    return pricing.worst_case_micros(
        spec.model, int(spec.max_run_tokens), int(spec.max_tokens), inference_geo="us"
    )


def _strip_cache(value: Any) -> Any:
    """A request part without cache_control markers (they move between turns; the text does not)."""
    if isinstance(value, dict):
        return {k: _strip_cache(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache(v) for v in value]
    return value


def _text(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


class LedgerGuard:
    """The agents' CallGuard: reserve the worst case before each model call, settle to what it cost after it.

    Reservation = input bound x the dearest input rate of the tier the bound falls in (so the higher tier whenever
    the bound can cross the threshold) + max_tokens (thinking included) x the output rate, x the inference-geo
    multiplier unless the request fixes the geo. After the first call the input side is exact: the previous call's
    prompt tokens (from its usage) plus a bound of only what was appended. A failed call is booked `estimated` or
    released as prfleet.billing decides; a spend-limit error opens the circuit."""

    def __init__(
        self,
        ledger: ledger.Ledger,
        job: FileJob,
        run_id: str,
        model: str,
        emit: Any,
        *,
        clock: Any = config_now,
        carried: int = 0,
        cap_micros: int | None = None,
        counter: Any = None,
        circuit_check: Any = None,
        on_spend_limit: Any = None,
        claimed_at: float | None = None,
        circuit_read_at: float | None = None,
    ) -> None:
        self.ledger = ledger
        self.model = model
        self.job = job
        self.run_id = run_id
        self.spent = 0  # micro-dollars booked by this attempt (exact + estimated)
        self.estimated = 0  # the part booked at a worst case (may have been billed)
        self.carried = carried  # what earlier attempts cost
        self.cap = cap_micros
        self.emit = emit
        self.clock = clock
        self.pr_scope = f"pr#{job.repo}#{job.number}"
        self.counter = counter  # messages.count_tokens for the first call (ExactInputTokens), or None
        self.circuit_check = circuit_check  # () -> reason or None
        self.on_spend_limit = on_spend_limit  # (reason) -> None
        self.spend_limited: str | None = None
        # When the run last proved itself alive (the claim counts) and the circuit was last read; None: never, so
        # the first call refreshes the heartbeat and reads the circuit.
        self.beat_at = float("-inf") if claimed_at is None else claimed_at
        self.circuit_at = float("-inf") if circuit_read_at is None else circuit_read_at
        self.estimates: list[str] = []  # why each estimated booking was made (logged with the run's outcome)
        self._prev: tuple[str, list[Any], int] | None = None  # (system+tools, messages, prompt tokens)

    def _input_bound(self, params: dict[str, Any]) -> int:
        head = _text(_strip_cache({k: params.get(k) for k in ("system", "tools")}))
        messages = _strip_cache(list(params.get("messages") or []))
        prev = self._prev
        if prev and prev[0] == head and messages[: len(prev[1])] == prev[1]:
            return prev[2] + ledger.input_bound(_text(messages[len(prev[1]) :]))
        if self.counter is not None:
            try:
                counted = self.counter(
                    **{
                        k: params[k]
                        for k in ("model", "system", "tools", "messages")
                        if params.get(k) is not None
                    }
                )
                self.emit("heartbeat", count_tokens_calls=1, counted_input_tokens=int(counted.input_tokens))
                return int(counted.input_tokens)
            except Exception as exc:  # the bound below is safe; say why the exact count was not used
                self.emit("error", error_type="count_tokens", message=f"{type(exc).__name__}: {exc}"[:300])
        return ledger.input_bound(head + _text(messages))

    def _heartbeat(self) -> None:
        """Refresh the run's heartbeat once HEARTBEAT_EVERY_S has passed; RunInProgress if it is no longer ours."""
        now = self.clock()
        if now - self.beat_at >= HEARTBEAT_EVERY_S:
            state.heartbeat(self.job, self.run_id, now=now)
            self.beat_at = now

    def before_call(self, model: str, params: dict[str, Any]) -> _Call:
        self._heartbeat()  # first: a run no longer ours reserves nothing
        if self.circuit_check and self.clock() - self.circuit_at >= CIRCUIT_RECHECK_S:
            self.circuit_at = self.clock()
            reason = self.circuit_check()
            if reason:
                raise CircuitOpen(reason)
        bound = self._input_bound(params)
        geo = str(params.get("inference_geo") or "us")  # not fixed by the request: the dearest geo
        max_tokens = int(params["max_tokens"])
        amount = pricing.worst_case_micros(model, bound, max_tokens, inference_geo=geo)
        if self.cap is not None and self.carried + self.spent + amount > self.cap:
            raise RunCostCapReached(
                f"per-run cost cap ${self.cap / 1e6:.4f} reached: spent ${(self.carried + self.spent) / 1e6:.4f}, "
                f"the next call may cost ${amount / 1e6:.4f}"
            )
        r = self.ledger.reserve(
            self.pr_scope,
            amount,
            now=self.clock(),
            model=model,
            worst_tokens=(bound, max_tokens),
            # every booking of this call goes onto the run, in the ledger's own transaction
            owner=state.run_owner(self.job),
        )
        head = _text(_strip_cache({k: params.get(k) for k in ("system", "tools")}))
        return _Call(r, model, bound, max_tokens, geo, _strip_cache(list(params.get("messages") or [])), head)

    def on_start(self, token: _Call, usage: Any) -> None:
        """message_start: the exact input usage of this call (a failure from here on is billed)."""
        token.started = True
        token.input_usage = usage

    def _geo(self, token: _Call, usage: Any) -> str:
        reported = getattr(usage, "inference_geo", None) or (
            usage.get("inference_geo") if isinstance(usage, dict) else None
        )
        return str(reported or token.geo)

    def after_call(self, token: _Call, usage: Any, *, model: str) -> int:
        cost = pricing.cost_micros(model, usage, inference_geo=self._geo(token, usage))
        tokens = pricing.split_usage(usage)
        status = self.ledger.settle(token.reservation, cost, now=self.clock(), model=model, tokens=tokens)
        if status.booked:
            self.spent += cost
        self._prev = (token.head, token.messages, tokens.prompt)
        _spend_signal(status, self.emit)
        self._heartbeat()
        return cost if status.booked else 0

    def on_error(self, token: _Call, exc: BaseException) -> int:

        limit = billing.spend_limit(exc)
        if limit:
            self.spend_limited = limit
            self.circuit_at = float("-inf")  # the next call reads the circuit this error opened
            if self.on_spend_limit:
                self.on_spend_limit(limit)
        verdict = billing.classify(exc, started=token.started)
        if not verdict.billed:
            self.ledger.release(token.reservation, now=self.clock())
            return 0
        cost = token.reservation.amount
        if token.input_usage is not None:  # exact input from message_start + the whole output allowance
            usage = pricing.split_usage(token.input_usage)
            cost = pricing.cost_micros(
                token.model,
                pricing.Tokens(
                    usage.input,
                    usage.cache_write_5m,
                    usage.cache_write_1h,
                    usage.cache_read,
                    token.max_tokens,
                ),
                inference_geo=self._geo(token, token.input_usage),
            )
        status = self.ledger.settle(
            token.reservation,
            cost,
            now=self.clock(),
            estimated=True,
            model=token.model,
            worst_tokens=(token.input_bound, token.max_tokens),
        )
        if not status.booked:
            return 0
        self.spent += cost
        self.estimated += cost
        self.estimates.append(verdict.reason)
        _spend_signal(status, self.emit)
        return cost


def _spend_signal(status: Any, emit: Any) -> None:
    """Spend metrics after each settlement, and one `spend` notice event per scope and day when it first reaches 80 %.

    The notice is a log event (Logs Insights, the serve console), not a page: the one page for a daily crossing is
    SpendAlarm on DailySpendPercent, which only the daily scope publishes (one page per crossing, not two), and a
    PR reaching 80 % of its own budget is worth a line, not waking anybody (docs/runbook.md#spendalarm)."""

    events.spend(status)
    for scope in (status, *getattr(status, "others", ())):
        if getattr(scope, "crossed_80", False):
            emit(
                "spend",
                scope=scope.scope,
                percent=round(scope.percent, 1),
                notice="budget-80-percent",
                limit_usd=scope.limit / 1e6,
                spent_usd=scope.settled / 1e6,
                paged_by="SpendAlarm" if scope.scope == "daily" else None,
            )


def make_ledger() -> ledger.Ledger:
    cfg = settings()
    return ledger.Ledger(
        cfg.ledger_table,
        daily_limit_micros=round(cfg.daily_budget_usd * 1_000_000),
        pr_limit_micros=round(cfg.pr_budget_usd * 1_000_000),
        tz=cfg.budget_timezone,
    )


def process(
    job: FileJob,
    *,
    remaining_ms: Any,
    gh_for: Any,
    anthropic_client: Any,
    emitter: Any,
    final_attempt: bool = False,
    clock: Any = config_now,
) -> Outcome:
    """Run one file job. `remaining_ms()` is the Lambda's remaining time; `gh_for(installation_id)` a GitHub client.

    GitHub waits (rate limits, backoff) end before the Lambda's time runs out (`github.deadline`). A rate limit
    that asks for longer (primary: until `x-ratelimit-reset`; secondary: `retry-after`, else a minute or more:
    https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit)
    sends the job back to SQS with that delay, capped at SQS's 900 s (sqs.MAX_DELAY), as its next attempt:
    delayed, not failed. What the attempt spent is on its run record (`retrying`), which the next claim reads.
    """
    import time

    with github.deadline(time.time() + remaining_ms() / 1000.0 - DEADLINE_MARGIN_S):
        try:
            return _process(
                job,
                remaining_ms=remaining_ms,
                gh_for=gh_for,
                anthropic_client=anthropic_client,
                emitter=emitter,
                final_attempt=final_attempt,
                clock=clock,
            )
        except github.GitHubRateLimited as exc:
            delay = min(max(1.0, float(exc.retry_after)), float(sqs.MAX_DELAY))
            body = job.next_attempt(job.spent_micros).to_message()
            raise RetryLater(exc.message, delay, body) from exc


def _process(
    job: FileJob,
    *,
    remaining_ms: Any,
    gh_for: Any,
    anthropic_client: Any,
    emitter: Any,
    final_attempt: bool,
    clock: Any,
) -> Outcome:
    """The job itself (process adds the GitHub deadline and turns a long GitHub rate limit into RetryLater)."""

    run_id = uuid.uuid4().hex[:16]
    reads = _job_reads(job)
    record = reads.record
    repo_config = parse_repo_config(record.repo_config) if record and record.repo_config else None
    specs = agents.agent_specs(settings(), repo_config)
    spec = specs.get(job.agent)
    emit = emitter.bind(run_id=run_id, agent=job.agent, model=getattr(spec, "model", None)).emit

    # No read of the run here: a redelivered job whose run is finished is refused by the conditional write of
    # whichever path it takes (finish_run for skipped / superseded / cached, start_run otherwise), and that refusal
    # counts the run's outcome (_already_done), so the common first delivery pays no extra GetItem.

    if spec is None:
        return _end(
            gh_for,
            job,
            run_id,
            "skipped",
            emit,
            reason=f"agent {job.agent!r} is disabled for this repository",
        )
    head = reads.current_head
    if head and head != job.head_sha:
        return _end(gh_for, job, run_id, "superseded", emit, reason=f"PR head moved to {head[:12]}")
    cfg = settings()
    if job.attempt >= cfg.max_job_attempts:
        return _end(
            gh_for,
            job,
            run_id,
            "failed",
            emit,
            reason=f"gave up after {job.attempt} re-queued attempts (MaxJobAttempts {cfg.max_job_attempts})",
        )

    key = result_cache.cache_key(job.blob_sha, spec.name, spec.model, spec.prompt_version)
    # The batch read the key of the settings' spec; the repository's config may only narrow it (today no key
    # field depends on it), and if it ever changes the key, the right key is read on its own.
    hit = (reads.cached if key == reads.cache_key else _read_cache(key)) if job.blob_sha else None
    if hit is not None:
        findings = [dict(f, path=job.path) for f in hit.get("findings", [])]
        try:
            state.finish_run(
                job,
                run_id,
                "cached",
                {"findings": json.dumps(findings), "cost_micros": 0, "model": spec.model},
            )
        except state.RunInProgress:
            return _already_done(gh_for, job, run_id) or Outcome(
                "duplicate", run_id, reason="finished elsewhere"
            )
        emit("cached", cache_key=key[:16], findings=len(findings), cost_usd=0.0)
        posted = fanin.finish_job(gh_for, job, "cached")
        return Outcome("cached", run_id, findings=len(findings), posted=posted)

    # The planner listed the head once (prfleet.headfiles); the head record above said it is still the head.
    listed = headfiles.from_first(job.repo, job.number, job.head_sha, reads.files_first)
    source = GitHubPrSource(
        gh_for(job.installation_id),
        job.repo,
        job.number,
        job.head_sha,
        **(listed.source_args() if listed else {}),
    )
    ledger = make_ledger()
    try:
        claimed_at = clock()
        claimed = state.start_run(job, run_id, spec.model, now=claimed_at, last_delivery=final_attempt)
        carried = max(claimed, job.spent_micros)
    except state.RunInProgress as exc:
        # A duplicate delivery while the first worker runs (or just finished) the job: leave it to that worker;
        # if it dies, its run goes stale and the sweeper re-queues the job.
        done = _already_done(gh_for, job, run_id)
        if done:
            return done
        emit("skipped", reason=str(exc), path=job.path, duplicate=True)
        return Outcome("duplicate", run_id, reason=str(exc))
    circuit_read_at = clock()
    blocked = circuit_reason(ledger)  # after the claim: a duplicate delivery cannot defer the job twice
    if blocked:
        return _defer_on_circuit(
            gh_for, job, run_id, spec.model, emit, blocked, carried=carried, clock=clock, owner=True
        )
    started = clock()
    emit("start", path=job.path, head_sha=job.head_sha, blob_sha=job.blob_sha, attempt=job.attempt)
    cap = run_cost_cap(spec)
    if carried >= cap:
        reason = f"per-run cost cap ${cap / 1e6:.4f} reached by earlier attempts (${carried / 1e6:.4f})"
        state.finish_run(
            job, run_id, "failed", {"error": reason, "cost_micros": carried}, owner=True, now=clock()
        )
        emit("failed", reason=reason, path=job.path)
        return Outcome("failed", run_id, posted=fanin.finish_job(gh_for, job, "failed"), reason=reason)
    guard = LedgerGuard(
        ledger,
        job,
        run_id,
        spec.model,
        emit,
        clock=clock,
        carried=carried,
        cap_micros=cap,
        counter=_token_counter(anthropic_client) if cfg.exact_input_tokens else None,
        circuit_check=lambda: circuit_reason(ledger),
        on_spend_limit=lambda reason: open_circuit(ledger, reason, emit, clock=clock),
        claimed_at=claimed_at,
        circuit_read_at=circuit_read_at,
    )
    deadline = clock() + remaining_ms() / 1000.0 - DEADLINE_MARGIN_S
    try:
        result = agents.run_agent(
            job, spec, source, anthropic_client, deadline=deadline, guard=guard, emit=emit
        )
    except (
        state.RunInProgress
    ) as exc:  # marked stuck and re-queued, or taken over: the other worker owns it now
        emit("skipped", reason=str(exc), path=job.path, duplicate=True)
        return Outcome("duplicate", run_id, reason=str(exc))
    except RunCostCapReached as exc:
        values = {"error": str(exc), "model": spec.model, "cost_micros": carried + guard.spent}
        state.finish_run(job, run_id, "failed", values, owner=True, now=clock())
        emit("failed", reason=str(exc), path=job.path)
        return Outcome(
            "failed", run_id, guard.spent, posted=fanin.finish_job(gh_for, job, "failed"), reason=str(exc)
        )
    except CircuitOpen as exc:
        return _defer_on_circuit(
            gh_for,
            job,
            run_id,
            spec.model,
            emit,
            str(exc),
            carried=carried + guard.spent,
            clock=clock,
            owner=True,
        )
    except ledger.BudgetExceeded as exc:
        spent = carried + guard.spent
        if exc.cause == "reserved":
            # Open reservations, not settled spend, fill the scope: the day has room, come back in a minute.
            reason = f"budget {exc.scope} held by open reservations: needs ${exc.needed / 1e6:.4f}, retrying"
            values = {"error": reason, "model": spec.model, "cost_micros": spent}
            state.finish_run(job, run_id, "retrying", values, owner=True, now=clock())
            delay = cfg.pressure_retry_s * (0.5 + random.random())
            emit("deferred", reason=reason, scope=exc.scope, until="retry", delay_s=round(delay, 1))
            raise RetryLater(reason, delay, job.next_attempt(spent).to_message()) from None
        day = ledger.day(clock())
        reason = f"budget {exc.scope} reached: needs ${exc.needed / 1e6:.4f}, ${exc.available / 1e6:.4f} left"
        state.defer(job.next_attempt(spent), day=day, reason=reason, now=clock())
        values = {"error": reason, "model": spec.model, "cost_micros": spent}
        state.finish_run(job, run_id, "deferred", values, owner=True, now=clock())
        emit("deferred", reason=reason, scope=exc.scope)
        posted = fanin.finish_job(gh_for, job, "deferred")
        return Outcome("deferred", run_id, posted=posted, reason=reason)
    except Exception as exc:
        # Anything else (GitHub down, a malformed reply): give the claim back as `retrying` with what this attempt
        # spent, so SQS's redelivery can claim the run instead of taking it for another worker's live run and
        # dropping it; the handler re-raises, and the last delivery records the failure (runner.fail).

        values = {"error": redact(f"{type(exc).__name__}: {exc}"), "cost_micros": carried + guard.spent}
        try:
            state.finish_run(job, run_id, "retrying", values, owner=True, now=clock())
        except state.RunInProgress:
            pass  # marked stuck and taken over meanwhile: that worker owns the run now
        except Exception as write_exc:  # noqa: BLE001 - the job's own error is the one to raise and record
            # The claim stays `running` until its heartbeat is stale (the sweeper's stuck check re-queues it);
            # say so, and let the handler see the job's error, not this one.
            emit(
                "error",
                error_type="RunNotReleased",
                message=redact(f"{type(write_exc).__name__}: {write_exc}")[:300],
            )
        raise

    if guard.spend_limited:
        return _defer_on_circuit(
            gh_for,
            job,
            run_id,
            spec.model,
            emit,
            guard.spend_limited,
            carried=carried + guard.spent,
            clock=clock,
            owner=True,
        )
    duration_ms = int((clock() - started) * 1000)
    if result.status == "failed" and result.retry_after and not final_attempt:
        spent = carried + guard.spent
        state.finish_run(
            job,
            run_id,
            "retrying",
            {
                "error": result.error,
                "model": spec.model,
                "cost_micros": spent,
                "estimated_micros": guard.estimated,
            },
            owner=True,
            now=clock(),
        )
        emit("error", error_type="RateLimited", message=result.error, retry_after=result.retry_after)
        raise RetryLater(
            result.error or "rate limited", result.retry_after, job.next_attempt(spent).to_message()
        )

    findings = [_with_fingerprint(f, source) for f in result.findings]
    values = {
        "findings": json.dumps(findings),
        "model": spec.model,
        "cost_micros": carried + guard.spent,  # earlier attempts (deferred, rate-limited) included
        "estimated_micros": guard.estimated or None,  # booked at a worst case: the call may have been billed
        "iterations": result.iterations,
        "duration_ms": duration_ms,
        "error": result.error,
        "stop_reason": result.stop_reason,
        **{f"{k}": int(v) for k, v in (result.usage or {}).items()},
    }
    # A succeeded run's result is cached in the same request as its outcome (one TransactWriteItems), and only if
    # the outcome is written: refused (RunInProgress, another worker's outcome stands), nothing is cached, as before.
    cached = (
        [result_cache.put_item(key, {"findings": findings, "usage": result.usage, "model": spec.model})]
        if result.status == "succeeded"
        else None
    )
    state.finish_run(job, run_id, result.status, values, owner=True, now=clock(), with_items=cached)
    emit(
        "complete",
        status=result.status,
        duration_ms=duration_ms,
        iterations=result.iterations,
        findings=len(findings),
        cost_usd=guard.spent / 1e6,
        error=result.error,
        **(
            {"estimated_usd": guard.estimated / 1e6, "estimated_reasons": guard.estimates}
            if guard.estimated
            else {}
        ),
        **{k: v for k, v in (result.usage or {}).items()},
    )
    posted = fanin.finish_job(gh_for, job, result.status)
    return Outcome(result.status, run_id, guard.spent, len(findings), posted, result.error or "")


@dataclass
class _Reads:
    """What a job reads before it claims its run, from one BatchGetItem."""

    record: state.HeadRecord | None
    current_head: str | None
    files_first: dict[str, Any] | None  # the head file list's first chunk, raw (prfleet.headfiles)
    cache_key: str | None  # the cache key read (the settings' spec of the job's agent), None if none was
    cached: dict[str, Any] | None


def _job_reads(job: FileJob) -> _Reads:
    """The head record, the PR's current head, the head file list's first chunk (StateTable, strongly consistent)
    and the cached result (ResultsTable, eventually consistent, as result_cache.get would read it) in ONE BatchGetItem, not four
    requests. The cache key comes from the agent's spec under the settings alone (model, prompt version): the
    repository's config, on the head record, can only disable an agent, so the key is right whenever the job runs;
    the caller checks it against the real spec's key anyway. On a superseded, skipped or cached job the file list's
    chunk is read for nothing (read units, up to 88 for a 350 KB chunk, not a request)."""

    cfg = settings()
    spec = agents.agent_specs(cfg, None).get(job.agent)
    key = result_cache.cache_key(job.blob_sha, spec.name, spec.model, spec.prompt_version) if spec else None
    want: dict[str, dict[str, Any]] = {
        cfg.state_table: {
            "Keys": [
                state.head_record_key(job.repo, job.number, job.head_sha),
                state.current_head_key(job.repo, job.number),
                headfiles.first_key(job.repo, job.number, job.head_sha),
            ],
            "ConsistentRead": True,
        }
    }
    if key and job.blob_sha:
        want[cfg.results_table] = {"Keys": [result_cache.item_key(key)]}
    else:
        key = None
    got = state.batch_get(want)
    by_sk = {i["sk"]["S"]: i for i in got.get(cfg.state_table, [])}
    record_key, head_key, files_key = want[cfg.state_table]["Keys"]
    cached = next(iter(got.get(cfg.results_table, [])), None)
    return _Reads(
        state.head_record_of(by_sk.get(record_key["sk"]["S"])),
        state.current_head_of(by_sk.get(head_key["sk"]["S"])),
        by_sk.get(files_key["sk"]["S"]),
        key,
        result_cache.from_item(cached),
    )


def _read_cache(key: str) -> dict[str, Any] | None:
    """The cached result under `key` alone (BatchGetItem of one key: the agent's role reads ResultsTable only so)."""
    table = settings().results_table
    got = state.batch_get({table: {"Keys": [result_cache.item_key(key)]}})
    return result_cache.from_item(next(iter(got.get(table, [])), None))


def _token_counter(anthropic_client: Any) -> Any:
    """messages.count_tokens for the first call of a run (ExactInputTokens); its calls are logged by the guard."""
    return lambda **params: anthropic_client.messages.count_tokens(**params)


def circuit_reason(ledger: ledger.Ledger) -> str | None:
    """The spend-limit circuit's reason while it is open, else None."""

    st = circuit.read_cached(ledger.ddb, ledger.table)  # at most every circuit.CACHE_S per container
    return st.reason or "spend limit reached" if st.open else None


def open_circuit(ledger: ledger.Ledger, reason: str, emit: Any, *, clock: Any = config_now) -> None:
    """Open the circuit; the worker that opened it sends the one notice."""

    if circuit.open_circuit(ledger.ddb, ledger.table, reason, now=clock()):
        emit(
            "error",
            error_type="SpendLimit",
            message=reason,
            circuit="open",
            notice="spend-limit-circuit-open",
        )
        circuit.notice(settings().alert_topic_arn, reason, sns=client("sns"))


def _defer_on_circuit(
    gh_for: Any,
    job: FileJob,
    run_id: str,
    model: str,
    emit: Any,
    reason: str,
    *,
    carried: int,
    clock: Any,
    owner: bool = False,
) -> Outcome:
    """Wait for the circuit to close: deferred (neutral check with the reason), re-queued by the sweeper."""
    reason = f"model calls paused: {reason}"
    day = make_ledger().day(clock())
    try:
        state.finish_run(
            job,
            run_id,
            "deferred",
            {"error": reason, "model": model, "cost_micros": carried},
            owner=owner,
            now=clock(),
        )
    except state.RunInProgress:
        return _already_done(gh_for, job, run_id) or Outcome("duplicate", run_id, reason="finished elsewhere")
    state.defer(job.next_attempt(carried), day=day, reason=reason, now=clock(), until="circuit")
    emit("deferred", reason=reason, scope="circuit")
    return Outcome("deferred", run_id, posted=fanin.finish_job(gh_for, job, "deferred"), reason=reason)


def _already_done(gh_for: Any, job: FileJob, run_id: str) -> Outcome | None:
    """A redelivered message whose work is done: count its outcome (idempotent) so the review is owed once."""
    previous = state.get_run(job)
    if not previous or previous.get("status") not in state.FINAL:
        return None
    posted = fanin.finish_job(gh_for, job, previous["status"])
    return Outcome(previous["status"], previous.get("run_id", run_id), posted=posted, reason="already done")


def killed_reason(silence: str) -> str:
    """Why the sweeper fails a run whose last delivery died: no handler code ran to say it."""
    return (
        "the job's last delivery ended without an outcome (its invocation was killed: Lambda timeout or crash; "
        f"{silence}); its message is in the dead-letter queue"
    )


def fail(gh_for: Any, job: FileJob, emitter: Any, reason: str, error_type: str) -> Outcome:
    """Last delivery of a job that keeps failing: record the failure so the PR's review still completes."""
    run_id = uuid.uuid4().hex[:16]
    # The job's own context too: the sweeper's emitter has none, and whoever drains the DLQ looks up the delivery.
    emit = emitter.bind(
        run_id=run_id,
        agent=job.agent,
        repository=job.repo,
        pr=job.number,
        head_sha=job.head_sha,
        path=job.path,
        delivery_id=job.delivery_id,
    ).emit
    emit("error", error_type=error_type, message=reason)
    return _end(gh_for, job, run_id, "failed", emit, reason=reason)


def _end(gh_for: Any, job: FileJob, run_id: str, status: str, emit: Any, *, reason: str) -> Outcome:
    try:
        state.finish_run(job, run_id, status, {"error": reason})
    except state.RunInProgress:
        return _already_done(gh_for, job, run_id) or Outcome("duplicate", run_id, reason="finished elsewhere")
    emit(status, reason=reason, path=job.path)
    posted = fanin.finish_job(gh_for, job, status)
    return Outcome(status, run_id, posted=posted, reason=reason)


def _with_fingerprint(finding: Any, source: Any) -> dict[str, Any]:
    data = finding.to_dict() if hasattr(finding, "to_dict") else dict(finding)
    if not data.get("fingerprint"):
        text = source.read_file(data["path"]) or ""
        lines = text.splitlines()
        line = lines[data["line"] - 1] if 0 < int(data.get("line") or 0) <= len(lines) else ""
        data["fingerprint"] = finding.fingerprint(line) if hasattr(finding, "fingerprint") else ""
    return data


PROBE_MAX_TOKENS = 16
PROBE_INPUT_BOUND = 64


def probe_call(client: Any, ledger: ledger.Ledger, model: str, *, clock: Any = config_now) -> None:
    """The circuit's probe: one minimal call, reserved and settled like any other (raises if it fails)."""

    params = {
        "model": model,
        "max_tokens": PROBE_MAX_TOKENS,
        "messages": [{"role": "user", "content": "ping"}],
    }
    worst = (PROBE_INPUT_BOUND, PROBE_MAX_TOKENS)
    amount = pricing.worst_case_micros(model, *worst, inference_geo="us")
    r = ledger.reserve(None, amount, now=clock(), ttl=120, model=model, worst_tokens=worst)
    try:
        message = client.messages.create(**params)
    except BaseException as exc:
        if billing.classify(exc).billed:
            ledger.settle(r, amount, now=clock(), estimated=True, model=model, worst_tokens=worst)
        else:
            ledger.release(r, now=clock())
        raise
    served = pricing.billed_model(
        model, getattr(message, "model", None) or model
    )  # Bedrock: the profile's price
    geo = getattr(message.usage, "inference_geo", None) or "us"
    cost = pricing.cost_micros(served, message.usage, inference_geo=geo)
    ledger.settle(r, cost, now=clock(), model=served, tokens=pricing.split_usage(message.usage))
