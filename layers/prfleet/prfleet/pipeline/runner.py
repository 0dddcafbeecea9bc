"""One file job, start to end: read, decide, claim, run the agent, and end through one door.

The job's story, in `_process`, `_claim_and_run` and `_run_agent` (read them top to bottom):
  1. one batched read: the head record, the PR's current head, the head's file list, the cached result;
  2. before the claim: is the agent disabled, the head superseded, the job out of attempts, its result cached?
  3. the claim of the run (a duplicate delivery stops here), then the spend-limit circuit and the run's cost cap;
  4. the agent's run under the LedgerGuard (prfleet.cost.guard); its refusals (cost cap, circuit, budget) end it;
  5. the run's ending.
The decisions are pure functions that return an `Ending` (prfleet.pipeline.endings); every Ending goes through
one door, `_finish`, which records the run's outcome, emits the event and counts the outcome for fan-in (which
posts the review once the head's set is complete). The only other way out is an exception that SQS retries and, after maxReceiveCount, moves to the
dead-letter queue with the job intact: RetryLater (re-sent with a delay), or an error (the claim given back first).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prfleet import agents, github
from prfleet.config import aws, settings
from prfleet.config import now as config_now
from prfleet.config.repo_config import parse_repo_config
from prfleet.cost import circuit, pricing
from prfleet.cost.guard import CircuitOpen, LedgerGuard, RunCostCapReached, token_counter
from prfleet.cost.ledger import BudgetExceeded, Ledger
from prfleet.github import GitHubPrSource
from prfleet.jobs import FileJob, sqs
from prfleet.observability import tracing
from prfleet.observability.redaction import redact
from prfleet.pipeline import fanin
from prfleet.pipeline.endings import (
    Ending,
    before_claim,
    cacheable,
    circuit_deferral,
    completed,
    cost_cap_reached,
    duplicate,
    from_cache,
    over_budget,
    over_cost_cap,
    rate_limited,
    unclaimed,
)
from prfleet.repository import snapshot
from prfleet.repository.instructions import Instruction, for_file, load_instructions
from prfleet.repository.view import RepoView, view_for
from prfleet.store import deferrals, dynamo, headfiles, heads, job_runs, result_cache

DEADLINE_MARGIN_S = 20.0  # leave time to store the result, settle the ledger and post the review


class RetryLater(Exception):
    """The job must come back later (a rate limit longer than the time left, or a budget held by open
    reservations): re-sent with a delay of `delay`, as `body` (the next attempt, carrying what it has cost)."""

    def __init__(self, reason: str, delay: float, body: str | None = None) -> None:
        super().__init__(reason)
        self.delay = delay
        self.body = body


class RunBusy(Exception):
    """A duplicate delivery met the job's run alive in another worker: this copy is handed back to SQS (a batch
    item failure) rather than deleted. Deleted, it left nothing to retry the job when that worker then failed and
    gave its run back as `retrying`: the job was lost, its head never reviewed (found with a core busy, where the
    local queues' 3 s visibility let a copy arrive mid-run). SQS shows the copy again after the visibility timeout
    (6 x the agent's Timeout in the template, so that run has ended by then: done, it is counted; given back, it is
    claimed and retried); on the message's last receive the copy is dropped as before, never dead-lettered."""


@dataclass
class Outcome:
    status: str
    run_id: str
    cost_micros: int = 0
    findings: int = 0
    posted: str | None = None
    reason: str = ""


def run_cost_cap(spec: Any) -> int:
    """The agent's per-run cost cap in micro-dollars: its token cap priced at the worst case."""
    explicit = getattr(spec, "max_run_cost_micros", None)
    if explicit:
        return int(explicit)
    return pricing.worst_case_micros(
        spec.model, int(spec.max_run_tokens), int(spec.max_tokens), inference_geo="us"
    )


# ---------------------------------------------------------------------------------------------------- the job


def process(
    job: FileJob,
    *,
    remaining_ms: Callable[[], int],
    client_for: Callable[[int], Any],
    model_client: Any,
    emitter: Any,
    final_attempt: bool = False,
    clock: Callable[[], float] = config_now,
) -> Outcome:
    """Run one file job. `remaining_ms()` is the Lambda's remaining time; `client_for(installation_id)` a GitHub
    client; `model_client` the SDK client of the configured provider (prfleet.agents.model_client).

    GitHub waits (rate limits, backoff) end before the Lambda's time runs out (`github.deadline`). A rate limit
    that asks for longer (primary: until `x-ratelimit-reset`; secondary: `retry-after`, else a minute or more:
    https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit)
    sends the job back to SQS with that delay, capped at SQS's 900 s (sqs.MAX_DELAY), as its next attempt:
    delayed, not failed. What the attempt spent is on its run record (`retrying`), which the next claim reads.
    """
    with github.deadline(time.time() + remaining_ms() / 1000.0 - DEADLINE_MARGIN_S):
        try:
            return _process(
                job,
                remaining_ms=remaining_ms,
                client_for=client_for,
                model_client=model_client,
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
    remaining_ms: Callable[[], int],
    client_for: Callable[[int], Any],
    model_client: Any,
    emitter: Any,
    final_attempt: bool,
    clock: Callable[[], float],
) -> Outcome:
    """Read, decide before the claim, then claim and run (process adds the GitHub deadline)."""
    run_id = uuid.uuid4().hex[:16]
    reads = _job_reads(job)
    record = reads.record
    repo_config = parse_repo_config(record.repo_config) if record and record.repo_config else None
    spec = agents.agent_specs(settings(), repo_config).get(job.agent)
    emit = emitter.bind(run_id=run_id, agent=job.agent, model=getattr(spec, "model", None)).emit
    at = _Attempt(job, run_id, emit, client_for, clock)

    # No read of the run here: a redelivered job whose run is finished is refused by the conditional write of
    # whichever path it takes (finish_run for skipped / superseded / cached, start_run otherwise), and that refusal
    # counts the run's outcome (_already_done), so the common first delivery pays no extra GetItem.
    ending = before_claim(job, spec, reads.current_head, settings().max_job_attempts)
    if ending:
        return _finish(at, ending)
    key = result_cache.cache_key(job.blob_sha, spec.name, spec.model, spec.prompt_version)
    # The batch read the key of the settings' spec; the repository's config may only narrow it (today no key
    # field depends on it), and if it ever changes the key, the right key is read on its own.
    hit = (reads.cached if key == reads.cache_key else _read_cache(key)) if job.blob_sha else None
    ending = from_cache(job, spec.model, key, hit)
    if ending:
        return _finish(at, ending)
    return _finish(
        at,
        _claim_and_run(at, spec, reads, remaining_ms, model_client=model_client, final_attempt=final_attempt),
    )


def _claim_and_run(
    at: _Attempt,
    spec: Any,
    reads: _Reads,
    remaining_ms: Callable[[], int],
    *,
    model_client: Any,
    final_attempt: bool,
) -> Ending:
    """Claim the run, check the circuit and the cost cap, run the agent under the ledger's guard."""
    job, clock, emit = at.job, at.clock, at.emit
    # The planner listed the head once (prfleet.store.headfiles); the head record said it is still the head.
    listed = headfiles.from_first(job.repo, job.number, job.head_sha, reads.files_first)
    source = GitHubPrSource(
        at.client_for(job.installation_id),
        job.repo,
        job.number,
        job.head_sha,
        **(listed.source_args() if listed else {}),
    )
    ledger = Ledger.from_settings(settings())
    try:
        claimed_at = clock()
        claimed = job_runs.start_run(job, at.run_id, spec.model, now=claimed_at, last_delivery=final_attempt)
    except job_runs.RunInProgress as exc:
        # A duplicate delivery while the first worker runs (or just finished) the job: leave it to that worker;
        # if it dies, its run goes stale and the sweeper re-queues the job. While that run is alive, this copy
        # goes back to SQS (RunBusy): it is what retries the job if that worker fails.
        if exc.status == "running" and not final_attempt:
            raise RunBusy(str(exc)) from None
        return duplicate(job, str(exc), count_theirs=True)
    carried = max(claimed, job.spent_micros)
    circuit_read_at = clock()
    blocked = circuit.open_reason(ledger)  # after the claim: a duplicate delivery cannot defer the job twice
    if blocked:
        return circuit_deferral(job, spec.model, blocked, carried=carried, day=ledger.day(clock()))
    started = clock()
    emit("start", path=job.path, head_sha=job.head_sha, blob_sha=job.blob_sha, attempt=job.attempt)
    cap = run_cost_cap(spec)
    ending = over_cost_cap(job, carried, cap)
    if ending:
        return ending
    guard = run_guard(
        ledger,
        job,
        at.run_id,
        spec.model,
        emit,
        clock=clock,
        carried=carried,
        cap_micros=cap,
        counter=token_counter(model_client) if settings().exact_input_tokens else None,
        circuit_check=lambda: circuit.open_reason(ledger),
        on_spend_limit=lambda reason: circuit.open_circuit(ledger, reason, emit, clock=clock),
        claimed_at=claimed_at,
        circuit_read_at=circuit_read_at,
    )
    snap = job_snapshot(job, at.emit)
    told = repo_instructions(listed, reads.record, job.path, emit)
    deadline = clock() + remaining_ms() / 1000.0 - DEADLINE_MARGIN_S
    return _run_agent(
        at,
        spec,
        source,
        model_client,
        guard,
        deadline=deadline,
        started=started,
        final_attempt=final_attempt,
        snapshot=snap,
        instructions=told,
    )


def job_snapshot(job: FileJob, emit: Callable[..., None]) -> snapshot.Snapshot | None:
    """The head's snapshot unpacked in this container (once per head, reused while warm), for the agent's tools;
    None when the deployment has no SnapshotBucket (the tools read through GitHub)."""
    cfg = settings()
    if not cfg.snapshot_bucket:
        return None
    return snapshot.open_snapshot(
        aws.client("s3"),
        cfg.snapshot_bucket,
        job.repo,
        job.head_sha,
        root=Path(cfg.snapshot_root),
        max_bytes=cfg.max_repo_bytes,
        max_entries=cfg.max_repo_entries,
        emit=emit,
    )


def repo_instructions(
    listed: headfiles.HeadFiles | None, record: Any, path: str, emit: Callable[..., None]
) -> list[Instruction]:
    """The repository's own review instructions for this file: the base's instruction files the planner stored
    with the head's list, then the .prfleet.toml `[[instructions]]` entries that apply to `path`, capped."""
    try:
        files = load_instructions(listed.instructions) if listed else []
    except ValueError as exc:  # a stored list is read back, not trusted: review without it, and say so
        emit("instructions_unreadable", path=path, error=str(exc)[:300])
        files = []
    cfg = parse_repo_config(record.repo_config) if record and record.repo_config else None
    return for_file(files, cfg, path)


def _run_agent(
    at: _Attempt,
    spec: Any,
    source: GitHubPrSource,
    model_client: Any,
    guard: LedgerGuard,
    *,
    deadline: float,
    started: float,
    final_attempt: bool,
    snapshot: snapshot.Snapshot | None = None,
    instructions: list[Instruction] | None = None,
) -> Ending:
    """The agent's run, and the ending its result or its refusal means."""
    job, model = at.job, spec.model
    view = view_for(
        source, snapshot
    )  # the tools' view, and where the findings' lines are read for fingerprints
    try:
        result = agents.run_agent(
            job,
            spec,
            source,
            model_client,
            deadline=deadline,
            guard=guard,
            emit=at.emit,
            snapshot=snapshot,
            view=view,
            instructions=instructions,
        )
    except (
        job_runs.RunInProgress
    ) as exc:  # marked stuck and re-queued, or taken over: the other worker owns it now
        return duplicate(job, str(exc))
    except RunCostCapReached as exc:
        return cost_cap_reached(
            job, model, str(exc), spent=guard.carried + guard.spent, attempt_cost=guard.spent
        )
    except CircuitOpen as exc:
        day = guard.ledger.day(at.clock())
        return circuit_deferral(job, model, str(exc), carried=guard.carried + guard.spent, day=day)
    except BudgetExceeded as exc:
        delay = settings().pressure_retry_s * (0.5 + random.random())
        day = guard.ledger.day(at.clock())
        return over_budget(job, exc, model, spent=guard.carried + guard.spent, day=day, retry_delay=delay)
    except Exception as exc:
        _give_back(at, exc, guard.carried + guard.spent)
        raise

    if guard.spend_limited:
        day = guard.ledger.day(at.clock())
        return circuit_deferral(job, model, guard.spend_limited, carried=guard.carried + guard.spent, day=day)
    duration_ms = int((at.clock() - started) * 1000)
    if result.status == "failed" and result.retry_after and not final_attempt:
        return rate_limited(job, result, model, spent=guard.carried + guard.spent, estimated=guard.estimated)
    findings = [_with_fingerprint(f, view) for f in result.findings]
    # A succeeded run's result is cached in the same request as its outcome (one TransactWriteItems), and only if
    # the outcome is written: refused (RunInProgress, another worker's outcome stands), nothing is cached.
    cache = (
        [
            result_cache.put_item(
                _cache_key(job, spec), {"findings": findings, "usage": result.usage, "model": model}
            )
        ]
        if result.status == "succeeded" and cacheable(job.path, findings)
        else None
    )
    no_tree = snapshot.reason if snapshot is not None and snapshot.root is None else None
    return completed(
        result, findings, model, guard, duration_ms=duration_ms, with_items=cache, snapshot_reason=no_tree
    )


# ---------------------------------------------------------------------------------------------------- the door


@dataclass(frozen=True)
class _Attempt:
    """One attempt at a job: the job, its run id, its event emitter, the GitHub client factory and the clock."""

    job: FileJob
    run_id: str
    emit: Callable[..., None]
    client_for: Callable[[int], Any]
    clock: Callable[[], float]


def _finish(at: _Attempt, end: Ending) -> Outcome:
    """The one door every ending goes through: the run's outcome, the event, fan-in, in that order."""
    if end.status == "duplicate":
        done = _already_done(at) if end.count_theirs else None
        if done:
            return done
        at.emit(end.event, **end.fields)
        return Outcome("duplicate", at.run_id, reason=end.reason)
    if end.deferral and not end.deferral.after_outcome:
        _defer(at, end)
    claim = {"owner": True, "now": at.clock()} if end.claimed else {}
    try:
        job_runs.finish_run(at.job, at.run_id, end.status, end.values, with_items=end.with_items, **claim)
    except job_runs.RunInProgress:
        if not end.count_theirs:
            raise
        return _already_done(at) or Outcome("duplicate", at.run_id, reason="finished elsewhere")
    if end.deferral and end.deferral.after_outcome:
        _defer(at, end)
    at.emit(end.event or end.status, **end.fields)
    if end.retry is not None:
        raise RetryLater(end.reason, end.retry.delay, end.retry.body)
    posted = fanin.finish_job(at.client_for, at.job, end.status)
    return Outcome(end.status, at.run_id, end.cost_micros, end.findings, posted, end.reason)


def _defer(at: _Attempt, end: Ending) -> None:
    d = end.deferral
    assert d is not None
    with tracing.subsegment("deferred") as span:
        span.metadata(reason=end.reason, day=d.day, until=d.until)
        deferrals.defer(d.job, day=d.day, reason=end.reason, now=at.clock(), until=d.until)


def _already_done(at: _Attempt) -> Outcome | None:
    """A redelivered message whose work is done: count its outcome (idempotent) so the review is owed once."""
    previous = job_runs.get_run(at.job)
    if not previous or previous.get("status") not in job_runs.FINAL:
        return None
    posted = fanin.finish_job(at.client_for, at.job, previous["status"])
    return Outcome(
        previous["status"], previous.get("run_id", at.run_id), posted=posted, reason="already done"
    )


def _give_back(at: _Attempt, exc: BaseException, spent: int) -> None:
    """Anything else went wrong (GitHub down, a malformed reply): give the claim back as `retrying` with what the
    attempt spent, so SQS's redelivery can claim the run instead of taking it for another worker's live run and
    dropping it; the caller re-raises, and the last delivery records the failure (`fail`)."""
    values = {"error": redact(f"{type(exc).__name__}: {exc}"), "cost_micros": spent}
    try:
        job_runs.finish_run(at.job, at.run_id, "retrying", values, owner=True, now=at.clock())
    except job_runs.RunInProgress:
        pass  # marked stuck and taken over meanwhile: that worker owns the run now
    except Exception as write_exc:  # noqa: BLE001 - the job's own error is the one to raise and record
        # The claim stays `running` until its heartbeat is stale (the sweeper's stuck check re-queues it);
        # say so, and let the handler see the job's error, not this one.
        at.emit(
            "error",
            error_type="RunNotReleased",
            message=redact(f"{type(write_exc).__name__}: {write_exc}")[:300],
        )


def run_guard(
    ledger: Ledger, job: FileJob, run_id: str, model: str, emit: Any, **options: Any
) -> LedgerGuard:
    """The LedgerGuard of one claimed run: its heartbeat keeps the run ours (job_runs.heartbeat raises RunInProgress
    once it is not, and nothing more is reserved), and every booking is written onto the run's item."""
    return LedgerGuard(
        ledger,
        job,
        run_id,
        model,
        emit,
        heartbeat=lambda now: job_runs.heartbeat(job, run_id, now=now),
        owner=job_runs.run_owner(job),
        **options,
    )


def _cache_key(job: FileJob, spec: Any) -> str:
    return result_cache.cache_key(job.blob_sha, spec.name, spec.model, spec.prompt_version)


def killed_reason(silence: str) -> str:
    """Why the sweeper fails a run whose last delivery died: no handler code ran to say it."""
    return (
        "the job's last delivery ended without an outcome (its invocation was killed: Lambda timeout or crash; "
        f"{silence}); its message is in the dead-letter queue"
    )


def fail(
    client_for: Callable[[int], Any], job: FileJob, emitter: Any, reason: str, error_type: str
) -> Outcome:
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
    return _finish(_Attempt(job, run_id, emit, client_for, config_now), unclaimed(job, "failed", reason))


# ---------------------------------------------------------------------------------------------------- reads


@dataclass
class _Reads:
    """What a job reads before it claims its run, from one BatchGetItem."""

    record: heads.HeadRecord | None
    current_head: str | None
    files_first: dict[str, Any] | None  # the head file list's first chunk, raw (prfleet.store.headfiles)
    cache_key: str | None  # the cache key read (the settings' spec of the job's agent), None if none was
    cached: dict[str, Any] | None


def _job_reads(job: FileJob) -> _Reads:
    """The head record, the PR's current head, the head file list's first chunk (StateTable, strongly consistent)
    and the cached result (ResultsTable, eventually consistent, as result_cache.get would read it) in ONE
    BatchGetItem, not four requests. The cache key comes from the agent's spec under the settings alone (model,
    prompt version): the repository's config, on the head record, can only disable an agent, so the key is right
    whenever the job runs; the caller checks it against the real spec's key anyway. On a superseded, skipped or
    cached job the file list's chunk is read for nothing (read units, up to 88 for a 350 KB chunk, not a request)."""

    cfg = settings()
    spec = agents.agent_specs(cfg, None).get(job.agent)
    key = _cache_key(job, spec) if spec else None
    want: dict[str, dict[str, Any]] = {
        cfg.state_table: {
            "Keys": [
                heads.head_record_key(job.repo, job.number, job.head_sha),
                heads.current_head_key(job.repo, job.number),
                headfiles.first_key(job.repo, job.number, job.head_sha),
            ],
            "ConsistentRead": True,
        }
    }
    if key and job.blob_sha:
        want[cfg.results_table] = {"Keys": [result_cache.item_key(key)]}
    else:
        key = None
    got = dynamo.batch_get(want)
    by_sk = {i["sk"]["S"]: i for i in got.get(cfg.state_table, [])}
    record_key, head_key, files_key = want[cfg.state_table]["Keys"]
    cached = next(iter(got.get(cfg.results_table, [])), None)
    return _Reads(
        heads.head_record_of(by_sk.get(record_key["sk"]["S"])),
        heads.current_head_of(by_sk.get(head_key["sk"]["S"])),
        by_sk.get(files_key["sk"]["S"]),
        key,
        result_cache.from_item(cached),
    )


def _read_cache(key: str) -> dict[str, Any] | None:
    """The cached result under `key` alone (BatchGetItem of one key: the agent's role reads ResultsTable only so)."""
    table = settings().results_table
    got = dynamo.batch_get({table: {"Keys": [result_cache.item_key(key)]}})
    return result_cache.from_item(next(iter(got.get(table, [])), None))


def _with_fingerprint(finding: Any, view: RepoView) -> dict[str, Any]:
    data = finding.to_dict() if hasattr(finding, "to_dict") else dict(finding)
    if not data.get("fingerprint"):
        text = view.read(data["path"]) or ""
        lines = text.splitlines()
        line = lines[data["line"] - 1] if 0 < int(data.get("line") or 0) <= len(lines) else ""
        data["fingerprint"] = finding.fingerprint(line) if hasattr(finding, "fingerprint") else ""
    return data
