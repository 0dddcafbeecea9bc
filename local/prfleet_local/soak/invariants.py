"""The soak's invariants, each read from the stores after the run (DynamoDB, SQS, fake GitHub, model bill, alarms).

Each check returns a `Result`: its name, whether it held, a one-line figure and up to a few concrete violations,
so a failure says where to look.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from prfleet import jobs
from prfleet.cost import pricing

_DESER = TypeDeserializer()


@dataclass
class Result:
    name: str
    ok: bool
    figure: str
    violations: list[str] = field(default_factory=list)


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _DESER.deserialize(v) for k, v in item.items()}


def scan(stack: Any, logical: str) -> list[dict[str, Any]]:
    ddb = stack.client("dynamodb")
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": stack.table(logical)}
    while True:
        page = ddb.scan(**kwargs)
        items.extend(_plain(i) for i in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@dataclass
class Observed:
    """Everything the checks read, gathered once after the run."""

    heads: dict[tuple[str, int, str], dict[str, Any]]  # (repo, number, sha) -> SHA# item
    runs: dict[tuple[str, int, str], list[dict[str, Any]]]  # same key -> RUN# items
    ledger: list[dict[str, Any]]
    current_heads: dict[tuple[str, int], str]  # GitHub's PR heads
    reviews: dict[tuple[str, int], list[dict[str, Any]]]
    issue_comments: dict[tuple[str, int], list[dict[str, Any]]]
    check_runs: dict[str, list[dict[str, Any]]]  # head sha -> runs
    dlq: dict[str, list[str]]  # queue -> bodies
    queue_depths: dict[str, int]
    bill_micros: int
    bill_calls: int
    alarm_states: dict[str, str]
    alarmed: set[str]  # alarms that went to ALARM at some point
    log_lines: list[str]
    notices: list[dict[str, Any]] = field(default_factory=list)  # what reached the AlertTopic besides alarms


def observe(
    stack: Any, github: dict[str, Any], model: Any, alarmed: set[str], dlq: dict[str, list[str]]
) -> Observed:
    heads: dict[tuple[str, int, str], dict[str, Any]] = {}
    runs: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for item in scan(stack, "StateTable"):
        pk, sk = str(item.get("pk", "")), str(item.get("sk", ""))
        if not pk.startswith("PR#"):
            continue
        repo, number = pk[3:].rsplit("#", 1)
        if sk.startswith("SHA#"):
            heads[(repo, int(number), sk[4:])] = item
        elif sk.startswith("RUN#"):
            sha, _, job_id = sk[4:].partition("#")
            runs[(repo, int(number), sha)].append(dict(item, job_id=job_id))
    current, reviews, comments, checks = {}, defaultdict(list), defaultdict(list), defaultdict(list)
    for name, srv in github.items():
        for number, pr in srv.prs.items():
            current[(name, number)] = pr.head_sha
        for r in srv.reviews:
            reviews[(name, int(r["number"]))].append(r)
        for c in srv.issue_comments:
            comments[(name, int(c["issue_number"]))].append(c)
        for run in srv.check_runs.values():
            checks[run["head_sha"]].append(run)
    bill = sum(pricing.cost_micros(m["model"], m["usage"]) for m in list(model.responses))
    return Observed(
        heads=heads,
        runs=dict(runs),
        ledger=scan(stack, "LedgerTable"),
        current_heads=current,
        reviews=dict(reviews),
        issue_comments=dict(comments),
        check_runs=dict(checks),
        dlq=dlq,
        queue_depths={q: stack.queue_depth(q) for q in ("PrQueue", "JobsQueue")},
        bill_micros=bill,
        bill_calls=len(model.responses),
        alarm_states=stack.evaluate_alarms(),
        alarmed=alarmed,
        log_lines=list(stack.log_lines),
    )


FINAL = {"succeeded", "partial", "failed", "cached", "superseded", "skipped"}


def job_ids(head: dict[str, Any], name: str = "done_ids") -> set[str]:
    """A head record's fan-in set (done_ids or deferred_ids), without the "-" placeholder a DynamoDB set needs."""
    return set(head.get(name, set())) - {"-"}


def every_planned_job_in_one_end_state(o: Observed) -> Result:
    bad = []
    planned = 0
    for key, head in o.heads.items():
        n = int(head.get("planned", 0))
        planned += n
        done = job_ids(head)
        # the head's verify runs (issue 24: one per posting) are not planned jobs: each ended, or waits deferred
        # (its posting made unverified, or held)
        head_runs = [r for r in o.runs.get(key, []) if r.get("agent") != "verify"]
        verify = [r for r in o.runs.get(key, []) if r.get("agent") == "verify"]
        statuses = Counter(str(r.get("status")) for r in head_runs)
        open_runs = {s: c for s, c in statuses.items() if s not in FINAL}
        open_runs.update(
            {f"verify {r.get('status')}": 1 for r in verify if r.get("status") not in FINAL | {"deferred"}}
        )
        if len(done) != n or len(head_runs) != n or open_runs:
            bad.append(
                f"{key[0]}#{key[1]}@{key[2][:8]}: planned {n}, counted {len(done)}, runs {dict(statuses)}"
            )
    return Result(
        "every planned job in exactly one end state", not bad, f"{planned} jobs on {len(o.heads)} heads", bad
    )


def nothing_lost(o: Observed, accepted_prs: set[tuple[str, int]]) -> Result:
    bad = [f"{q} still holds {d} messages" for q, d in o.queue_depths.items() if d]
    for repo, number in sorted(accepted_prs):
        head = o.current_heads.get((repo, number))
        record = o.heads.get((repo, number, head or ""))
        if record is None:
            bad.append(
                f"{repo}#{number}: an accepted delivery, but its current head {str(head)[:8]} was never planned"
            )
        elif len(job_ids(record)) < int(record.get("planned", 0)):
            bad.append(f"{repo}#{number}@{str(head)[:8]}: not every job finished")
    return Result(
        "nothing lost (queues drained, every accepted PR's current head planned and finished)",
        not bad,
        f"{len(accepted_prs)} PRs accepted",
        bad,
    )


def dlq_messages_have_reasons(o: Observed) -> Result:
    bad = []
    failed_runs = {str(r["job_id"]): r for rs in o.runs.values() for r in rs if r.get("status") == "failed"}
    # The reason must be this message's own: the failed run's error, or the ERROR line the agent writes for this
    # job (`job_failed`: its id). Any line under the delivery id is not enough for a file job, since a PR's jobs
    # all carry the PR's delivery id (an unrelated retry warning of a sibling would have counted).
    errors = [line for line in o.log_lines if '"level":"ERROR"' in line]
    total = 0
    for queue, bodies in o.dlq.items():
        for body in bodies:
            total += 1
            try:
                job = jobs.parse_message(body)
            except jobs.BadMessage:
                bad.append(f"{queue}: unparseable body {body[:60]!r}")
                continue
            if isinstance(job, jobs.FileJob):
                run = failed_runs.get(job.job_id)
                own = f'"job_failed":"{job.job_id}"'
                if not (run and run.get("error")) and not any(own in line for line in errors):
                    bad.append(
                        f"{queue}: {job.repo}#{job.number} {job.path}/{job.agent} has no recorded reason"
                    )
            elif not _logged(errors, job.delivery_id):
                bad.append(
                    f"{queue}: PR job {job.repo}#{job.number} delivery {job.delivery_id} has no logged reason"
                )
    return Result("every DLQ message has a reason", not bad, f"{total} messages in the DLQs", bad)


def _logged(lines: list[str], delivery_id: str) -> bool:
    key = f'"correlation_id":"{delivery_id}"'
    return any(key in line for line in lines)


_MARKER_RE = re.compile(r"<!-- prfleet:review head=(\w+) claim=(\w+) plan=(\S+) -->")


def reviews_once_per_head(
    o: Observed,
    replans: Counter[tuple[str, int, str]],
    superseded_at: dict[tuple[str, int, str], float] | None = None,
) -> Result:
    """At most one review per head, review cycle and claim (a partial one first when jobs waited on the budget,
    then the final one; a `/prfleet review` or a Re-run starts a new cycle with its own check run); exactly: at
    least one for every finished current head. A review on a head that is no longer current is a violation when
    it was posted after the head moved (GitHub stamps whole seconds: one second of tolerance); one posted before
    the push was right.

    Each review carries its hidden marker (render.review_marker: head, claim, the cycle's check run), so the
    count is exact per cycle and claim; it is not read from the head record, whose deferred set a new cycle
    resets (run 5 of the busy-machine CI: a cycle with a partial and a final review, then two re-plans)."""
    import datetime as dt

    moved = superseded_at or {}
    bad = []
    per_head: Counter[tuple[str, int, str]] = Counter()
    claims: dict[tuple[str, int, str], Counter[tuple[str, str]]] = {}
    unmarked: Counter[tuple[str, int, str]] = Counter()
    for (repo, number), rs in o.reviews.items():
        for r in rs:
            key = (repo, number, r["commit_id"])
            per_head[key] += 1
            marker = _MARKER_RE.search(r.get("body") or "")
            if marker and marker[3] != "-":  # "-": no check run, so no cycle to tell apart
                claims.setdefault(key, Counter())[(marker[3], marker[2])] += 1
            else:
                unmarked[key] += 1
    for key in per_head:
        cycles = 1 + replans.get(key, 0)
        where = f"{key[0]}#{key[1]}@{key[2][:8]}"
        posted = claims.get(key, Counter())
        bad += [
            f"{where}: the {claim} review of plan {plan} posted {k} times"
            for (plan, claim), k in posted.items()
            if k > 1
        ]
        plans = {plan for plan, _claim in posted}
        if len(plans) > cycles:
            bad.append(f"{where}: reviews for {len(plans)} plans, {cycles} review cycle(s)")
        head = o.heads.get(key, {})
        allowed = cycles * (2 if job_ids(head, "deferred_ids") else 1)
        if unmarked[key] > allowed:
            bad.append(f"{where}: {unmarked[key]} reviews without a marker, at most {allowed} allowed")
    for (repo, number), rs in o.reviews.items():
        for r in rs:
            key = (repo, number, r["commit_id"])
            if o.current_heads.get(key[:2]) == key[2]:
                continue
            at = moved.get(key)
            posted = dt.datetime.strptime(
                r.get("submitted_at") or "1970-01-01T00:00:00Z", "%Y-%m-%dT%H:%M:%SZ"
            )
            posted_ts = posted.replace(tzinfo=dt.timezone.utc).timestamp()
            if at is None or posted_ts > at + 1:
                bad.append(f"{repo}#{number}@{key[2][:8]}: a review posted after the head was superseded")
    finished = 0
    for (repo, number), sha in o.current_heads.items():
        head = o.heads.get((repo, number, sha))
        if head is None or len(job_ids(head)) < int(head.get("planned", 0)):
            continue
        finished += 1
        if per_head.get((repo, number, sha), 0) < 1:
            bad.append(f"{repo}#{number}@{sha[:8]}: finished current head without a review")
        checks = o.check_runs.get(sha, [])
        if not any(c.get("status") == "completed" for c in checks):
            bad.append(f"{repo}#{number}@{sha[:8]}: finished current head without a completed check run")
    return Result(
        "at most one review per head, one for every finished current head",
        not bad,
        f"{sum(per_head.values())} reviews, {finished} finished current heads",
        bad,
    )


def no_duplicate_comment(o: Observed) -> Result:
    bad = []
    inline = 0
    for (repo, number), rs in o.reviews.items():
        seen: Counter[tuple[str, int, str]] = Counter()
        for r in rs:
            for c in r.get("comments", []):
                seen[(c["path"], int(c.get("line") or 0), c.get("body", ""))] += 1
        inline += sum(seen.values())
        bad += [f"{repo}#{number} {p}:{line} posted {n} times" for (p, line, _b), n in seen.items() if n > 1]
    for (repo, number), cs in o.issue_comments.items():
        if len(cs) > 1:
            bad.append(f"{repo}#{number}: {len(cs)} summary comments (edited in place: one expected)")
    return Result("no duplicate comment", not bad, f"{inline} inline comments", bad)


def within_limits(o: Observed, daily_limit: int, pr_limit: int) -> Result:
    """prfleet.cost.ledger's layout: `daily/<day>` holds the day total, `pr@<day>/<pr>` each PR's total."""
    bad = []
    days = 0
    for item in o.ledger:
        scope, key = str(item.get("scope", "")), item.get("day")
        if scope == "daily":
            days += 1
            limit = int(item.get("limit") or daily_limit)
            for name in ("settled", "committed"):
                value = int(item.get(name, 0))
                if value > limit:
                    bad.append(f"{key}: {name} {value} µ$ > daily limit {limit} (+{value - limit})")
        elif scope.startswith("pr@"):
            value = int(item.get("committed", 0))
            if value > pr_limit:
                bad.append(f"{scope} {key}: committed {value} µ$ > PR limit {pr_limit}")
    return Result("0 micro-dollars over any limit", not bad, f"{days} days in the ledger", bad)


def booked_of(run: dict[str, Any]) -> int:
    """Everything a job's model calls booked on the ledger, over all its attempts: the run item's
    `b_<reservation>` attributes (prfleet.cost.ledger writes each booking onto the run)."""
    return sum(int(v) for k, v in run.items() if k.startswith("b_"))


def ledger_runs_bill_agree(o: Observed) -> Result:
    """Money and attribution, as docs/architecture.md (Budget, "Runs and the reconciled ledger") defines them:

    1. the reconciled ledger IS the bill: the day totals' settled spend equals the offline server's bill, to the
       rounding slack of reconciliation (half a micro-dollar per estimated call per hour and model, plus one half:
       per-call rounding against one rounding of the row; prfleet.reconcile.Row.rounding_slack);
    2. the ledger adds up: before reconciliation's adjustments it is the sum of its closures (end@ items);
    3. runs = the ledger's bookings for jobs: every closure of a reservation that named its run (settled,
       estimated, or booked `expired` by the sweeper, at what it booked, before reconciliation) is on that run,
       written in the same transaction; the rest is listed: budgeted probes (no run).
    Runs are not rewritten by reconciliation: the Usage API reports hours and models, not requests."""
    daily = [i for i in o.ledger if i.get("scope") == "daily"]
    settled = sum(int(i.get("settled", 0)) for i in daily)
    reconciled = sum(int(i.get("reconciled", 0)) for i in daily)
    estimated = sum(int(i.get("estimated", 0)) for i in daily)
    ends = [i for i in o.ledger if str(i.get("scope", "")).startswith("end@") and i.get("how") != "released"]
    closures = sum(int(i.get("cost", 0)) for i in ends)
    # Closures written with their owner run (prfleet.budget: the booking and the run's b_<reservation> in one
    # transaction); older closures without the flag count when a worker booked them for a PR.
    owned = [
        i for i in ends if i.get("owned") or ("owned" not in i and i.get("pr") and i.get("how") != "expired")
    ]
    by_workers = sum(int(i.get("cost", 0)) for i in owned)
    swept = sum(int(i.get("cost", 0)) for i in ends if i.get("how") == "expired")
    probes = sum(int(i.get("cost", 0)) for i in ends if not i.get("pr"))
    slack = 0.0
    for i in o.ledger:
        if str(i.get("scope", "")).startswith("use@") and int(i.get("est_calls", 0)) > 0:
            slack += 0.5 * int(i["est_calls"]) + 0.5
    runs = sum(booked_of(r) for rs in o.runs.values() for r in rs)
    bad = []
    if abs(settled - o.bill_micros) > slack:
        bad.append(
            f"reconciled ledger {settled} µ$ != the bill {o.bill_micros} µ$ "
            f"(diff {settled - o.bill_micros}, rounding slack {slack:g})"
        )
    if settled - reconciled != closures:
        bad.append(f"ledger before reconciliation {settled - reconciled} µ$ != its closures {closures} µ$")
    if runs != by_workers:
        bad.append(f"runs {runs} µ$ != the jobs' bookings {by_workers} µ$ (diff {runs - by_workers})")
    figure = (
        f"ledger {settled} µ$ after reconciliation ({reconciled:+d} µ$), bill {o.bill_micros} µ$ over "
        f"{o.bill_calls} billed calls (slack {slack:g}); before: {settled - reconciled} µ$ of which estimated "
        f"{estimated}; runs {runs} µ$ = the jobs' bookings {by_workers} (of which swept {swept}), + probes {probes}"
    )
    return Result("reconciled ledger = bill; runs = the jobs' bookings", not bad, figure, bad)


def alarms_as_expected(o: Observed, expected: set[str]) -> Result:
    unexpected = sorted(o.alarmed - expected)
    missing = sorted(expected - o.alarmed)
    bad = [f"{a} went to ALARM without a cause" for a in unexpected] + [
        f"{a} should have fired" for a in missing
    ]
    return Result(
        "every alarm that should fire did, and no other",
        not bad,
        f"fired: {sorted(o.alarmed) or 'none'}",
        bad,
    )


def spend_limit_paused_and_resumed(o: Observed) -> Result:
    """The API's spend limit opens the circuit: one notice on the AlertTopic for each opening (the conditional write
    decides who sends it), none without one, and the circuit closed again by the end (the sweeper's probe got
    through and the deferred jobs were re-queued)."""
    openings = sum('"notice":"spend-limit-circuit-open"' in line for line in o.log_lines)
    notices = sum(1 for n in o.notices if n.get("notice") == "spend-limit-circuit-open")
    still_open = [i for i in o.ledger if i.get("scope") == "circuit" and i.get("state") == "open"]
    bad = []
    if openings < 1:
        bad.append("the spend limit the model answered never opened the circuit")
    if notices != openings:
        bad.append(f"{notices} spend-limit notices on the topic for {openings} openings of the circuit")
    if still_open:
        bad.append(f"the circuit is still open at the end: {still_open[0].get('reason')}")
    return Result(
        "a spend limit pauses model calls with one notice, and they resume",
        not bad,
        f"{openings} openings, {notices} notices",
        bad,
    )


def reruns_honoured(rerun_replies: list[tuple[str, int, int]]) -> Result:
    bad = [
        f"{repo}#{n}: check_run rerequested answered {status}, not accepted"
        for repo, n, status in rerun_replies
        if status != 202
    ]
    return Result("every Re-run accepted and re-reviewed", not bad, f"{len(rerun_replies)} Re-runs", bad)


def summary_json(results: list[Result]) -> str:
    return json.dumps([r.__dict__ for r in results], indent=2)
