"""The verify job of a PR head, start to end (issue 24): a job like any other, through the same door.

Its story, in `process` and `_claim_and_verify` (read them top to bottom):
  1. the head record and the PR's current head (strongly consistent reads);
  2. before the claim: is Verification off, the head superseded, the job out of attempts (endings.before_claim),
     its posting already made or replaced by the final one, are there no candidates (in its part, when the
     posting's candidates were split over several verify runs: verification.split), are its verdicts cached
     (the sorted candidates' fingerprints, the verify model, the prompt version and the team's recent
     rejections it is shown: `team_rejections`)?
  3. the claim of the run (a duplicate delivery stops here), then the spend-limit circuit and the run's cost cap;
  4. the verify run (agents.verify.run_verify) under the LedgerGuard: every call reserved and settled on the
     ledger, its refusals (cost cap, circuit, budget) end it as any job's do;
  5. the ending: the verdicts by fingerprint on the run (and in the result cache), or none; attempt.finish records
     it and fan-in (fanin.finish_verify) posts the posting it verified.
A failing verify job ends like a file job: retried by SQS, then failed on its last delivery (runner.fail) or in
the DLQ; a deferred one comes back with the sweeper; stuck runs are swept. Its run lives beside the file jobs'
(RUN#<sha>#<job id>, agent "verify"), so the head's cost and the ledger include it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prfleet import agents
from prfleet.agents.verdicts import by_fingerprint, fingerprint_in
from prfleet.agents.verify import numbered_candidates, run_verify
from prfleet.config import now as config_now
from prfleet.config import repo_config, settings
from prfleet.github import GitHubPrSource
from prfleet.jobs import FileJob
from prfleet.pipeline import fanin, verification
from prfleet.pipeline.attempt import (
    Attempt,
    Outcome,
    after_run,
    claim_run,
    finish,
    guarded_run,
    job_snapshot,
    read_cache,
)
from prfleet.pipeline.endings import (
    Ending,
    before_claim,
    unclaimed,
    verified,
    verify_from_cache,
)
from prfleet.pipeline.reactions import recent_rejections
from prfleet.repository.view import view_for
from prfleet.store import headfiles, heads, result_cache

REJECTION_EXAMPLES = 20  # the team's most recent rejections the verify run is shown (issue 25)


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
    """Run one head's verify job (runner.process sends it here, inside the GitHub deadline)."""
    run_id = uuid.uuid4().hex[:16]
    cfg = settings()
    spec = agents.verify_spec(cfg)
    emit = emitter.bind(run_id=run_id, agent=job.agent, model=getattr(spec, "model", None)).emit
    at = Attempt(job, run_id, emit, client_for, clock)
    record = heads.head_record(job.repo, job.number, job.head_sha)
    ending = before_claim(job, spec, heads.current_head(job.repo, job.number), cfg.max_job_attempts)
    if ending is None:
        ending = not_needed(job, record)
    if ending is not None:
        return finish(at, ending)
    assert record is not None and spec is not None  # not_needed and before_claim said so
    _claim, part, parts = verification.part_of(job)
    found = verification.split(verification.to_verify(fanin.head_candidates(record)), parts)[part]
    if not found:
        return finish(at, unclaimed(job, "skipped", "no candidate findings to verify"))
    shown = team_rejections(job.repo, record.repo_config)
    key = verification.cache_key(found, spec.model, spec.prompt_version, shown)
    ending = verify_from_cache(job, spec.model, key, read_cache(key), len(found))
    if ending is not None:
        return finish(at, ending)
    return finish(
        at,
        _claim_and_verify(
            at,
            spec,
            found,
            key,
            remaining_ms,
            rejections=shown,
            model_client=model_client,
            final_attempt=final_attempt,
        ),
    )


def team_rejections(repo: str, repo_config_text: str | None) -> list[dict[str, Any]]:
    """The repository's most recent findings its team turned down (issue 25), as the verify run is shown them;
    none when its .prfleet.toml turned learning off. Only what a verdict may weigh: no PR numbers, no times."""
    if not repo_config.learns(repo_config_text):
        return []
    return [
        {
            "title": r.title,
            "category": r.category,
            "agent": r.agent,
            "path": r.path,
            "up": r.up,
            "down": r.down,
        }
        for r in recent_rejections(repo, REJECTION_EXAMPLES)
    ]


def not_needed(job: FileJob, record: heads.HeadRecord | None) -> Ending | None:
    """The verify job ends before its claim when there is nothing to verify for: the head has no record, its
    posting was already made (a deferred verify job back after the candidates were posted unverified), or the
    head's final posting is verified instead of this partial one. None: it goes on."""
    if record is None:
        return unclaimed(job, "skipped", "the head has no record (never planned)")
    claim = verification.claim_of(job)
    if record.posted in (claim, "final"):
        return unclaimed(job, "skipped", f"the {record.posted} posting of this head was already made")
    if claim == "partial" and record.final and "final" in record.verify_sent:
        return unclaimed(job, "skipped", "the head's final posting is verified instead")
    return None


def _claim_and_verify(
    at: Attempt,
    spec: Any,
    found: Sequence[Mapping[str, Any]],
    key: str,
    remaining_ms: Callable[[], int],
    *,
    rejections: Sequence[Mapping[str, Any]],
    model_client: Any,
    final_attempt: bool,
) -> Ending:
    """Claim the run, check the circuit and the cost cap (attempt.claim_run, as a file job does), run the
    verifier under the ledger's guard."""
    job = at.job
    listed = headfiles.load(job.repo, job.number, job.head_sha)
    source = GitHubPrSource(
        at.client_for(job.installation_id),
        job.repo,
        job.number,
        job.head_sha,
        **(listed.source_args() if listed else {}),
    )
    claimed = claim_run(
        at, spec, model_client, remaining_ms, final_attempt=final_attempt, candidates=len(found)
    )
    if isinstance(claimed, Ending):
        return claimed
    return _verify(
        at,
        spec,
        source,
        model_client,
        claimed.guard,
        found,
        key,
        rejections=rejections,
        deadline=claimed.deadline,
        started=claimed.started,
        final_attempt=final_attempt,
    )


def _verify(
    at: Attempt,
    spec: Any,
    source: GitHubPrSource,
    model_client: Any,
    guard: Any,
    found: Sequence[Mapping[str, Any]],
    key: str,
    *,
    rejections: Sequence[Mapping[str, Any]],
    deadline: float,
    started: float,
    final_attempt: bool,
) -> Ending:
    """The verify run under `guard`, and the ending its verdicts (or its refusal) mean."""
    job, emit = at.job, at.emit
    # the tools' view; the candidates' code is read through it
    snap = job_snapshot(job, emit)
    view = view_for(source, snap)
    numbered = numbered_candidates(found)
    result = guarded_run(
        at,
        guard,
        spec.model,
        lambda: run_verify(
            job,
            spec,
            source,
            model_client,
            numbered,
            deadline=deadline,
            guard=guard,
            emit=emit,
            view=view,
            rejections=rejections,
        ),
    )
    if isinstance(result, Ending):
        return result
    ended = after_run(at, guard, spec.model, result, final_attempt=final_attempt)
    if ended:
        return ended
    fps = {cid: fingerprint_in(f) for cid, f in numbered}
    stored = [v.to_dict() for v in by_fingerprint(result.verdicts, fps)]
    # Cached with the outcome (one TransactWriteItems), only when the run succeeded and its outcome is written.
    cache = (
        [result_cache.put_item(key, {"verdicts": stored, "usage": result.usage, "model": spec.model})]
        if result.status == "succeeded"
        else None
    )
    return verified(
        result,
        stored,
        spec.model,
        guard,
        candidates=len(found),
        duration_ms=int((at.clock() - started) * 1000),
        with_items=cache,
        snapshot_reason=snap.reason if snap is not None and snap.root is None else None,
    )
