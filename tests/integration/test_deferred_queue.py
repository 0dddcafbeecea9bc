"""The deferred queue read by what is due (issue 26): a job waiting for the spend-limit circuit is re-queued in the
sweep that closes the circuit however many next-day deferrals wait, next-day deferrals only once their budget day
has ended, every entry once, and entries a running deployment wrote in the old layout are moved and re-queued too.

Against the fault-injecting moto server in its own process, with StateTable and LedgerTable created from
template.yaml's own definitions (key schema, GSI) and the jobs queue in moto's SQS; the sweep is the sweeper's own
`sweeper.sweep`, with a probe that gets through (the API let the call through).
"""

from __future__ import annotations

import json
import os
import urllib.request

import boto3
import pytest

from prfleet import config
from prfleet.config import aws
from prfleet.cost import circuit
from prfleet.cost.booking import day_end, day_of
from prfleet.cost.ledger import Ledger
from prfleet.jobs import FileJob, parse_message
from prfleet.pipeline import sweeper
from prfleet.store import deferrals, job_runs
from prfleet.store.dynamo import to_item
from prfleet_local.stack import template as tpl
from prfleet_local.stack.moto_proc import FaultPlan, FaultRule, moto_server

T0 = 1_773_154_800  # 2026-03-10 15:00 UTC: budget day 2026-03-10 ends 9 hours later
DAY = day_of(T0)
NEXT_DAY_STARTS = day_end(DAY)
NEXT_DAY = 1000


def _table_from_template(ddb, logical: str, name: str) -> None:
    """The table as template.yaml declares it (what LocalStack._provision creates)."""
    props = tpl.load()["Resources"][logical]["Properties"]
    args = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props["BillingMode"],
    }
    if props.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    ddb.create_table(**args)


@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture
def stack(endpoint, monkeypatch, request):
    """Fresh tables, queue and topic per test; prfleet's settings pointing at them."""
    for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    suffix = request.node.name[-40:].replace("[", "-").replace("]", "")
    ddb = boto3.client("dynamodb")
    _table_from_template(ddb, "StateTable", f"state-{suffix}")
    _table_from_template(ddb, "LedgerTable", f"ledger-{suffix}")
    queue = boto3.client("sqs").create_queue(QueueName=f"jobs-{suffix}")["QueueUrl"]
    topic = boto3.client("sns").create_topic(Name=f"alerts-{suffix}")["TopicArn"]
    for name in ("DELIVERIES_TABLE", "RESULTS_TABLE", "PR_QUEUE_URL"):
        monkeypatch.setenv(name, "unused")
    for name in ("WEBHOOK_SECRET_ID", "GITHUB_SECRET_ID", "ANTHROPIC_SECRET_ID"):
        monkeypatch.setenv(name, "unused")
    monkeypatch.setenv("STATE_TABLE", f"state-{suffix}")
    monkeypatch.setenv("LEDGER_TABLE", f"ledger-{suffix}")
    monkeypatch.setenv("JOBS_QUEUE_URL", queue)
    monkeypatch.setenv("ALERT_TOPIC_ARN", topic)
    monkeypatch.setenv("DAILY_BUDGET_USD", "10")
    monkeypatch.setenv("PR_BUDGET_USD", "10")
    config.settings.cache_clear()
    aws.client.cache_clear()
    circuit.forget(f"ledger-{suffix}")
    yield queue
    config.settings.cache_clear()
    aws.client.cache_clear()


class Emitter:
    """The sweep's events, recorded."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def bind(self, **_context):
        return self

    def emit(self, event: str, **fields) -> None:
        self.events.append((event, fields))


def _job(i: int, *, path: str = "app.py") -> FileJob:
    return FileJob("o/r", 1 + i // 100, "h" * 40, "b" * 40, f"src/{i}/{path}", "blob", "docs", 7, "d-1", 1)


def _deferred(job: FileJob, *, now: float, until: str = "day", day: str = DAY) -> None:
    """What the runner leaves for a deferred job: its run `deferred`, its entry in the queue."""
    job_runs.start_run(job, f"run-{job.job_id}", "m", now=now)
    job_runs.finish_run(job, f"run-{job.job_id}", "deferred", {"error": "budget daily reached"}, now=now)
    deferrals.defer(job, day=day, reason="budget daily reached", now=now, until=until)


def _queued(queue: str) -> list[str]:
    """Every message on the queue (received and deleted: each call sees only what was sent since)."""
    sqs, out = boto3.client("sqs"), []
    while True:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not got:
            return out
        for m in got:
            out.append(m["Body"])
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])


def _sweep(now: float, *, probe=lambda ledger: None, time_left=None) -> dict[str, int]:
    return sweeper.sweep(client_for=None, emitter=Emitter(), now=now, probe=probe, time_left=time_left)


def _job_ids(bodies: list[str]) -> list[str]:
    return [parse_message(b).job_id for b in bodies]


def _refused(ledger: Ledger) -> None:
    raise RuntimeError("spend limit still reached")


def test_a_circuit_waiter_behind_a_thousand_next_day_deferrals_goes_out_when_the_circuit_closes(stack):
    day_jobs = [_job(i) for i in range(NEXT_DAY)]
    for i, job in enumerate(day_jobs):  # all of them older than the waiter: ahead of it, oldest first
        deferrals.defer(job, day=DAY, reason="budget daily reached", now=T0 + i / 1000)
    waiter = _job(0, path="waits.py")
    _deferred(waiter, now=T0 + 2, until="circuit")
    ledger = Ledger.from_settings(config.settings())
    circuit.open_circuit(ledger, "spend limit reached", Emitter().emit, clock=lambda: T0 + 2)

    # Open: nobody goes out, the probe is not due yet, then due and refused.
    assert _sweep(T0 + 60, probe=_refused)["requeued"] == 0
    counts = _sweep(T0 + 2 + circuit.PROBE_EVERY_S, probe=_refused)
    assert (counts["probed"], counts["requeued"]) == (1, 0)
    assert _queued(stack) == []

    # The next probe gets through: the same sweep closes the circuit and re-queues the waiter, and only it.
    counts = _sweep(T0 + 2 + 2 * circuit.PROBE_EVERY_S)
    assert (counts["probed"], counts["requeued"]) == (1, 1)
    assert not circuit.read(ledger.ddb, ledger.table).open
    assert _job_ids(_queued(stack)) == [waiter.job_id]
    assert job_runs.get_run(waiter)["status"] == "requeued"
    waiting = deferrals.deferred_jobs()
    assert len(waiting) == NEXT_DAY and {e["pk"] for e in waiting} == {deferrals.DAY_PK}

    # The thousand wait for their day: not a second before it ends, all of them (ten pages) in the sweep after.
    assert _sweep(NEXT_DAY_STARTS - 1)["requeued"] == 0
    assert _sweep(NEXT_DAY_STARTS)["requeued"] == NEXT_DAY
    assert sorted(_job_ids(_queued(stack))) == sorted(j.job_id for j in day_jobs)
    assert deferrals.deferred_jobs() == []
    assert _sweep(NEXT_DAY_STARTS + 60)["requeued"] == 0 and _queued(stack) == []


def test_a_sweep_short_of_time_stops_and_the_next_one_goes_on_each_entry_once(stack):
    jobs = [_job(i) for i in range(250)]
    for i, job in enumerate(jobs):
        _deferred(job, now=T0 + i / 1000)
    budget = {"entries": 120}

    def time_left() -> float:  # plenty for 120 entries, then less than the margin
        budget["entries"] -= 1
        return 60.0 if budget["entries"] >= 0 else sweeper.REQUEUE_MARGIN_S - 1

    assert _sweep(NEXT_DAY_STARTS, time_left=time_left)["requeued"] == 120
    assert len(deferrals.deferred_jobs()) == 130
    assert _sweep(NEXT_DAY_STARTS + 60)["requeued"] == 130
    sent = _job_ids(_queued(stack))
    assert sorted(sent) == sorted(j.job_id for j in jobs)  # every one, none twice
    assert {job_runs.get_run(j)["status"] for j in jobs} == {"requeued"}


def _legacy(job: FileJob, *, now: float, day: str, until: str | None) -> None:
    """An entry as the deployment before issue 26 wrote it (its deferrals.defer, verbatim)."""
    item = {
        "pk": "DEFERRED",
        "sk": f"{now:017.6f}#{job.job_id}",
        "job": job.to_message(),
        "day": day,
        "reason": "budget daily reached",
        "repo": job.repo,
        "path": job.path,
        "agent": job.agent,
        "created_at": int(now),
    }
    if until is not None:  # written by a deployment before circuit waiters: no `until`
        item["until"] = until
    boto3.client("dynamodb").put_item(TableName=os.environ["STATE_TABLE"], Item=to_item(item))


def _faults(url: str, plan: FaultPlan | None = None) -> list[dict]:
    """Set the moto server's fault plan (POST), or read what the current one injected (GET)."""
    data = None if plan is None else json.dumps(plan.to_dict()).encode()
    req = urllib.request.Request(
        url + "/_prfleet/faults", data=data, method="GET" if plan is None else "POST"
    )
    with urllib.request.urlopen(req, timeout=10) as reply:  # noqa: S310 - loopback
        return json.loads(reply.read()).get("injected", [])


def test_entries_in_the_old_layout_are_moved_and_re_queued_when_due(stack, endpoint):
    state = os.environ["STATE_TABLE"]
    yesterday = day_of(T0 - 86400)
    today = [_job(i) for i in range(150)]  # more than one page of the old partition
    for i, job in enumerate(today):
        job_runs.start_run(job, f"run-{job.job_id}", "m", now=T0)
        job_runs.finish_run(job, f"run-{job.job_id}", "deferred", {"error": "budget"}, now=T0)
        _legacy(job, now=T0 + i / 1000, day=DAY, until="day")
    due = {"yesterday": _job(900), "no until": _job(901), "circuit": _job(902)}
    for n, (kind, job) in enumerate(due.items()):
        job_runs.start_run(job, f"run-{job.job_id}", "m", now=T0)
        job_runs.finish_run(job, f"run-{job.job_id}", "deferred", {"error": "budget"}, now=T0)
        until = {"yesterday": "day", "no until": None, "circuit": "circuit"}[kind]
        _legacy(job, now=T0 + 1 + n, day=yesterday if kind != "circuit" else DAY, until=until)

    # The first move's response is lost after DynamoDB applied it: botocore's retry gets the first success back.
    lost = FaultRule("lost_response", operations=["TransactWriteItems"], tables=[state], requests=[1])
    _faults(endpoint, FaultPlan([lost]))
    try:
        counts = _sweep(T0 + 60)
        assert [(i["operation"], i["count"]) for i in _faults(endpoint)] == [("TransactWriteItems", 1)]
    finally:
        _faults(endpoint, FaultPlan())
    assert counts["moved"] == 153
    # The circuit is closed and yesterday has ended: those three go out in the same sweep, today's do not.
    assert counts["requeued"] == 3
    assert sorted(_job_ids(_queued(stack))) == sorted(j.job_id for j in due.values())
    waiting = deferrals.deferred_jobs()
    assert {e["pk"] for e in waiting} == {deferrals.DAY_PK} and len(waiting) == 150
    assert {e["due"] for e in waiting} == {NEXT_DAY_STARTS}
    assert sorted(parse_message(e["job"]).job_id for e in waiting) == sorted(j.job_id for j in today)

    counts = _sweep(NEXT_DAY_STARTS)
    assert (counts["moved"], counts["requeued"]) == (0, 150)
    assert sorted(_job_ids(_queued(stack))) == sorted(j.job_id for j in today)
    assert deferrals.deferred_jobs() == []
