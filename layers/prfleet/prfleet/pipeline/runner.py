"""One file job, start to end: read, decide, claim, run the agent, and end through one door.

The job's story, in `_process`, `_claim_and_run` and `_run_agent` (read them top to bottom):
  1. one batched read: the head record, the PR's current head, the head's file list, the cached result;
  2. before the claim: is the agent disabled, the head superseded, the job out of attempts, its result cached?
  3. the claim of the run (a duplicate delivery stops here), then the spend-limit circuit and the run's cost cap;
  4. the agent's run under the LedgerGuard (prfleet.cost.guard); its refusals (cost cap, circuit, budget) end it;
  5. the run's ending.
The decisions are pure functions that return an `Ending` (prfleet.pipeline.endings); every Ending goes through
one door, `attempt.finish`, which records the run's outcome, emits the event and counts the outcome for fan-in (which
posts the review once the head's set is complete). The only other way out is an exception that SQS retries and, after maxReceiveCount, moves to the
dead-letter queue with the job intact: RetryLater (re-sent with a delay), or an error (the claim given back first).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prfleet import agents, github
from prfleet.agents.specs import VERIFY_AGENT
from prfleet.config import now as config_now
from prfleet.config import settings
from prfleet.config.repo_config import parse_repo_config
from prfleet.cost.guard import LedgerGuard
from prfleet.github import GitHubPrSource
from prfleet.jobs import FileJob, sqs
from prfleet.pipeline import verify_run
from prfleet.pipeline.attempt import (  # re-exported: the handler, the sweeper and the tests use these names
    DEADLINE_MARGIN_S,
    Outcome,
    RetryLater,
    RunBusy,
    after_run,
    claim_run,
    fail,
    guarded_run,
    job_snapshot,
    killed_reason,
    read_cache,
    run_cost_cap,
    run_guard,
)
from prfleet.pipeline.attempt import Attempt as _Attempt
from prfleet.pipeline.attempt import already_done as _already_done
from prfleet.pipeline.attempt import finish as _finish
from prfleet.pipeline.endings import (
    Ending,
    before_claim,
    cacheable,
    completed,
    from_cache,
)
from prfleet.repository import snapshot
from prfleet.repository.instructions import Instruction, for_file, load_instructions
from prfleet.repository.view import RepoView, view_for
from prfleet.store import dynamo, headfiles, heads, result_cache

__all__ = [
    "DEADLINE_MARGIN_S",
    "Outcome",
    "RetryLater",
    "RunBusy",
    "_already_done",
    "_finish",
    "fail",
    "job_snapshot",
    "killed_reason",
    "process",
    "run_cost_cap",
    "run_guard",
]


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
            if job.agent == VERIFY_AGENT:  # the head's verify job (prfleet.pipeline.verify_run)
                return verify_run.process(
                    job,
                    remaining_ms=remaining_ms,
                    client_for=client_for,
                    model_client=model_client,
                    emitter=emitter,
                    final_attempt=final_attempt,
                    clock=clock,
                )
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
    hit = (reads.cached if key == reads.cache_key else read_cache(key)) if job.blob_sha else None
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
    """Claim the run, check the circuit and the cost cap (attempt.claim_run), run the agent under the ledger's
    guard."""
    job, emit = at.job, at.emit
    # The planner listed the head once (prfleet.store.headfiles); the head record said it is still the head.
    listed = headfiles.from_first(job.repo, job.number, job.head_sha, reads.files_first)
    source = GitHubPrSource(
        at.client_for(job.installation_id),
        job.repo,
        job.number,
        job.head_sha,
        **(listed.source_args() if listed else {}),
    )
    claimed = claim_run(
        at, spec, model_client, remaining_ms, final_attempt=final_attempt, blob_sha=job.blob_sha
    )
    if isinstance(claimed, Ending):
        return claimed
    snap = job_snapshot(job, at.emit)
    told = repo_instructions(listed, reads.record, job.path, emit)
    return _run_agent(
        at,
        spec,
        source,
        model_client,
        claimed.guard,
        deadline=claimed.deadline,
        started=claimed.started,
        final_attempt=final_attempt,
        snapshot=snap,
        instructions=told,
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
    result = guarded_run(
        at,
        guard,
        model,
        lambda: agents.run_agent(
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
        ),
    )
    if isinstance(result, Ending):
        return result
    ended = after_run(at, guard, model, result, final_attempt=final_attempt)
    if ended:
        return ended
    duration_ms = int((at.clock() - started) * 1000)
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


def _cache_key(job: FileJob, spec: Any) -> str:
    return result_cache.cache_key(job.blob_sha, spec.name, spec.model, spec.prompt_version)


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


def _with_fingerprint(finding: Any, view: RepoView) -> dict[str, Any]:
    data = finding.to_dict() if hasattr(finding, "to_dict") else dict(finding)
    if not data.get("fingerprint"):
        text = view.read(data["path"]) or ""
        lines = text.splitlines()
        line = lines[data["line"] - 1] if 0 < int(data.get("line") or 0) <= len(lines) else ""
        data["fingerprint"] = finding.fingerprint(line) if hasattr(finding, "fingerprint") else ""
    return data
