"""The verification pass of a PR head (issue 24), as pure decisions: which findings are its candidates, the verify
job of a posting, its cache key, and what a posting does with the verify run's outcome (post the kept findings,
post everything labelled unverified, or hold it).

The flow around it: prfleet.pipeline.fanin sends the verify job once per head and posting claim and posts when it
has ended; prfleet.pipeline.verify_run runs it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prfleet.agents.specs import VERIFY_AGENT
from prfleet.agents.verdicts import MAX_CANDIDATES, Judged, StoredVerdict, fingerprint_in, judge
from prfleet.cost import pricing
from prfleet.jobs import FileJob
from prfleet.pipeline import noise
from prfleet.store.heads import HeadRecord

# The verify job's path: absolute, so it can never be a file of the repository (repository.untrusted.path_problem
# refuses such paths), and per posting claim, so the partial and the final posting each have their own job id.
VERIFY_PATH_PREFIX = "/verify/"
CLAIMS = ("partial", "final")
VERIFIED_STATUSES = frozenset({"succeeded", "cached"})


def verify_job(record: HeadRecord, claim: str, delivery_id: str, part: int = 0, parts: int = 1) -> FileJob:
    """The verify job of one posting of a head (or of its `part` of `parts`, when its candidates are split over
    several runs: `split`): stable across redeliveries (its job id is the head, the path sentinel and the
    agent), carrying the delivery that completed the head as its correlation id."""
    if claim not in CLAIMS:
        raise ValueError(f"no verify job for claim {claim!r}")
    if not 0 <= part < parts:
        raise ValueError(f"no verify part {part} of {parts}")
    return FileJob(
        repo=record.repo,
        number=record.number,
        head_sha=record.head_sha,
        base_sha="",
        path=VERIFY_PATH_PREFIX + part_key(claim, part, parts),
        blob_sha="",
        agent=VERIFY_AGENT,
        installation_id=record.installation_id,
        delivery_id=delivery_id or "-",
    )


def verify_jobs(record: HeadRecord, claim: str, delivery_id: str) -> list[FileJob]:
    """Every verify job of one posting of a head: as many as the parts it was sent in (heads.mark_verify_sent)."""
    parts = record.verify_parts.get(claim, 1)
    return [verify_job(record, claim, delivery_id, i, parts) for i in range(parts)]


def part_key(claim: str, part: int, parts: int) -> str:
    """What the head record counts for one verify job ('final', or 'final/2of3' when split): its path's tail."""
    return claim if parts == 1 else f"{claim}/{part + 1}of{parts}"


def is_verify_job(job: FileJob) -> bool:
    """Whether `job` is a head's verify job (not a file job)."""
    return job.agent == VERIFY_AGENT and job.path.startswith(VERIFY_PATH_PREFIX)


def part_of(job: FileJob) -> tuple[str, int, int]:
    """The posting claim a verify job verifies ('partial' or 'final'), its part and the number of parts;
    ValueError for any other job."""
    tail = job.path.removeprefix(VERIFY_PATH_PREFIX)
    claim, _, part = tail.partition("/")
    if not is_verify_job(job) or claim not in CLAIMS:
        raise ValueError(f"{job.path!r} is not a verify job's path")
    if not part:
        return claim, 0, 1
    number, sep, parts = part.partition("of")
    if not (sep and number.isdigit() and parts.isdigit() and 1 <= int(number) <= int(parts)):
        raise ValueError(f"{job.path!r} is not a verify job's path")
    return claim, int(number) - 1, int(parts)


def claim_of(job: FileJob) -> str:
    """The posting claim a verify job verifies ('partial' or 'final'); ValueError for any other job."""
    return part_of(job)[0]


# The input tokens of a verify run's largest call (its candidates, their code and what it read so far), to size
# the parts by what the PR's budget can hold reserved at once: an estimate; the ledger reserves each call at its
# own bound.
VERIFY_INPUT_TOKENS = 40_000


def parts_for(found: Sequence[Mapping[str, Any]], per_run: int, at_once: int | None = None) -> int:
    """How many verify runs weigh `found` at `per_run` candidates each (VerifyCandidatesPerRun): at least one, no
    more than the files they are on (a file's candidates stay in one part: `split`), and no more than `at_once`,
    the verify calls the PR's budget can hold reserved together (`calls_at_once`): every call is reserved at its
    worst case until it settles, and a part whose call does not fit waits BudgetRetrySeconds, longer than a
    bigger part takes (measured: docs/performance.md)."""
    files = len({str(f.get("path") or "") for f in found})
    parts = max(1, min(-(-len(found) // max(1, per_run)), files))
    return parts if at_once is None else max(1, min(parts, at_once))


def calls_at_once(room_micros: int, model: str, max_tokens: int, inference_geo: str = "") -> int | None:
    """How many verify calls of `model` fit `room_micros` (what the PR's budget has left) reserved at once, each at
    its worst case (VERIFY_INPUT_TOKENS in, max_tokens out, the dearest geo when none is fixed); None when the
    price table does not know the model (the ledger will refuse its calls anyway: no cap here)."""
    try:
        worst = pricing.worst_case_micros(
            model, VERIFY_INPUT_TOKENS, max_tokens, inference_geo=inference_geo or "us"
        )
    except pricing.UnknownModel:
        return None
    return max(0, room_micros) // max(1, worst)


def split(found: Sequence[Mapping[str, Any]], parts: int) -> list[list[Mapping[str, Any]]]:
    """The candidates of each verify run when one posting's are split over `parts` runs in parallel (pure and
    deterministic: every part's job computes the same split from the same candidates).

    A file's candidates stay in one part, so duplicates on a file (the usual kind: two agents on the same lines)
    are still merged; the files go, largest first, to the part with the fewest candidates so far. A run sees
    only its part, so a duplicate across files in different parts is not merged (both are judged on their own).
    Each part keeps the candidates' rank order."""
    if parts <= 1:
        return [list(found)]
    by_path: dict[str, list[int]] = {}
    for i, f in enumerate(found):
        by_path.setdefault(str(f.get("path") or ""), []).append(i)
    buckets: list[list[int]] = [[] for _ in range(parts)]
    for indexes in sorted(by_path.values(), key=lambda ix: (-len(ix), ix[0])):
        min(buckets, key=len).extend(indexes)
    return [[found[i] for i in sorted(b)] for b in buckets]


def candidates(findings: Iterable[Mapping[str, Any]], already_posted: Iterable[str]) -> list[dict[str, Any]]:
    """The head's candidates for the verify run: the findings to post, less those already posted on the PR (they
    are not posted again, so not worth verifying), one per fingerprint, most important first (noise.rank_key)."""
    seen = {fp.lower() for fp in already_posted}
    out = []
    for f in sorted(findings, key=noise.rank_key):
        fp = fingerprint_in(f)
        if fp in seen:
            continue
        seen.add(fp)
        out.append(dict(f))
    return out


def to_verify(found: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The candidates one verify run weighs: the first MAX_CANDIDATES (the rest post unverified)."""
    return list(found[:MAX_CANDIDATES])


def cache_key(
    found: Iterable[Mapping[str, Any]],
    model: str,
    prompt_version: str,
    rejections: Iterable[Mapping[str, Any]] = (),
) -> str:
    """The verify run's result cache key: the sorted candidates' fingerprints, the model, the prompt version (the
    verdicts are stored by fingerprint, so the same candidates in any order reuse them) and the team's rejections
    the run is shown (a new 👎 may change a verdict)."""
    fps = sorted(fingerprint_in(f) for f in found)
    shown = sorted(json.dumps(dict(r), sort_keys=True, default=str) for r in rejections)
    raw = "\x1f".join(["verify", model, prompt_version, *fps, *(["rejections", *shown] if shown else [])])
    return "verify:" + hashlib.sha256(raw.encode()).hexdigest()


def lacks_verdicts(run: Mapping[str, Any] | None) -> bool:
    """Whether a verify job's run leaves its candidates unverified: no verdicts, and not skipped (a part with no
    candidate, or a posting already made: nothing of it waits for verdicts)."""
    return stored_verdicts(run) is None and (run or {}).get("status") != "skipped"


def stored_verdicts(run: Mapping[str, Any] | None) -> list[StoredVerdict] | None:
    """The verdicts a verify run stored, None when it has none (not run, failed, deferred, or no report)."""
    if not run or run.get("status") not in VERIFIED_STATUSES or run.get("verdicts") is None:
        return None
    raw = run["verdicts"]
    items = json.loads(raw) if isinstance(raw, str) else raw
    return [StoredVerdict.from_dict(v) for v in items]


def why_unverified(run: Mapping[str, Any] | None) -> str:
    """Why a posting's candidates were not verified, in one line for the review, the check and the runbook."""
    if not run:
        return "the verify job has no run"
    status, error = str(run.get("status") or "?"), str(run.get("error") or "").strip()
    if status == "deferred":
        return f"verification deferred ({error or 'budget'})"
    if status == "partial":
        return f"the verifier gave no verdicts ({error or 'stopped at its limit'})"
    if status == "failed":
        return f"verification failed ({error or 'no reason recorded'})"
    return f"verification {status}" + (f" ({error})" if error else "")


@dataclass
class Verification:
    """What the verification pass means for one posting.

    state: "off" (Verification off, or nothing to verify: posted as before), "verified" (the verify runs'
        verdicts applied), "unverified" (it could not run: every candidate posted, labelled), "held" (it could not
        run and the repository requires verification: nothing posted yet);
    reason: why unverified or held (verified: why a part's run gave no verdicts, if one did not); candidates: how
        many there were; judged: the verdicts' effect (verified)."""

    state: str
    candidates: int = 0
    reason: str = ""
    judged: Judged = field(default_factory=Judged)
    posted: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> str:
        """'12 candidates: 5 kept, 6 dropped, 1 merged' (and how many were left unverified, if any)."""
        j = self.judged
        text = f"{self.candidates} candidate(s): {len(j.kept)} kept, {len(j.dropped)} dropped, {len(j.merged)} merged"
        return text + (f", {len(j.unjudged)} not verified" if j.unjudged else "")


def decide(
    found: Sequence[Mapping[str, Any]],
    runs: Sequence[Mapping[str, Any] | None],
    *,
    enabled: bool,
    require: bool,
) -> Verification:
    """The posting decision (pure): `found` are the posting's candidates (`candidates`), `runs` the run records of
    its verify jobs (one per part; none when no verify job ran), `enabled` the deployment's Verification,
    `require` the repository's require_verification. Verified (at least one run has verdicts): the kept
    findings, plus (labelled unverified) any candidate no verdict covers, a part that could not run included;
    unverified: every candidate labelled; held: nothing."""
    if not enabled or not found:
        return Verification("off", len(found), posted=[dict(f) for f in found])
    stored = [stored_verdicts(r) for r in runs]
    missing = [why_unverified(r) for r in runs if lacks_verdicts(r)]
    if any(v is not None for v in stored):
        judged = judge(found, [v for vs in stored if vs is not None for v in vs])
        unjudged = [dict(f, verified=False) for f in judged.unjudged]
        reason = f"{len(missing)} of {len(runs)} verify runs: {missing[0]}" if missing else ""
        return Verification(
            "verified", len(found), reason=reason, judged=judged, posted=judged.kept + unjudged
        )
    reason = (missing or [why_unverified(runs[0] if runs else None)])[0]
    if require:
        return Verification("held", len(found), reason=reason)
    unverified = [dict(f, verified=False) for f in found]
    return Verification(
        "unverified", len(found), reason=reason, judged=Judged(unjudged=unverified), posted=unverified
    )
