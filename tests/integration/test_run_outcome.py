"""A succeeded run's outcome and its cached result go in one TransactWriteItems (docs/performance.md, job cost):
written together or not at all, and a refusal still means another worker's outcome stands (RunInProgress), with
nothing cached. Against the moto server (tables from test_budget_billing's env)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from prfleet import config
from prfleet.config import aws
from prfleet.jobs import AskJob, FileJob
from prfleet.pipeline import answering, runner
from prfleet.pipeline.attempt import Attempt, claim_run
from prfleet.store import job_runs, result_cache
from tests.integration.test_budget_billing import endpoint, env, job  # noqa: F401 - fixtures


@pytest.fixture
def results(env, monkeypatch, request):  # noqa: F811 - the fixture imported above
    name = "results-" + request.node.name[-40:]
    env.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "cache_key", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "cache_key", "KeyType": "HASH"}],
    )
    monkeypatch.setenv("RESULTS_TABLE", name)
    config.settings.cache_clear()
    return env


def _succeed(j, run_id, key, *, now):
    """A succeeded run's outcome with its cached result, in one request (as the runner writes it, runner._finish)."""
    job_runs.finish_run(
        j,
        run_id,
        "succeeded",
        {"findings": "[]", "error": None},
        owner=True,
        now=now,
        with_items=[result_cache.put_item(key, {"findings": []}, now=now)],
    )


def _cached(ddb, key):
    return result_cache.from_item(
        ddb.get_item(TableName=config.settings().results_table, Key=result_cache.item_key(key)).get("Item")
    )


def test_the_outcome_and_the_cached_result_are_one_request(results, monkeypatch):
    j = job(path="one.py")
    job_runs.start_run(j, "run-a", "m", now=1000)
    calls = []
    real = aws.client("dynamodb")
    monkeypatch.setattr(
        job_runs, "client", lambda _s: type("C", (), {"__getattr__": lambda _, n: _count(calls, real, n)})()
    )
    _succeed(j, "run-a", "k1", now=1001)
    assert calls == ["transact_write_items"]
    monkeypatch.undo()
    assert job_runs.get_run(j)["status"] == "succeeded"
    assert _cached(results, "k1") == {"findings": []}


def _count(calls, real, name):
    calls.append(name)
    return getattr(real, name)


def test_a_refused_outcome_caches_nothing(results):
    """Another worker took the run over (its run id on the item): our outcome is refused, RunInProgress, and the
    result is not cached; a run finished by someone else (not ours, not owner) likewise."""
    j = job(path="two.py")
    job_runs.start_run(j, "run-b", "m", now=1000)
    job_runs.start_run(j, "run-c", "m", now=2000)  # stale heartbeat: taken over by run-c
    with pytest.raises(job_runs.RunInProgress):
        _succeed(j, "run-b", "k2", now=2001)
    assert job_runs.get_run(j)["run_id"] == "run-c" and job_runs.get_run(j)["status"] == "running"
    assert _cached(results, "k2") is None
    job_runs.finish_run(j, "run-c", "failed", {"error": "x"}, owner=True, now=2002)
    with pytest.raises(job_runs.RunInProgress):  # not the owner: only an unfinished run may be written
        job_runs.finish_run(
            j, "run-d", "succeeded", {}, now=2003, with_items=[result_cache.put_item("k3", {}, now=2003)]
        )
    assert _cached(results, "k3") is None and job_runs.get_run(j)["status"] == "failed"


class _Conflicting:
    """The real client, whose first transactions are cancelled by a conflict on the cache item."""

    def __init__(self, real, conflicts):
        self.real, self.conflicts, self.sent = real, conflicts, 0

    def transact_write_items(self, **kwargs):
        self.sent += 1
        if self.conflicts:
            self.conflicts -= 1
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                    "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
                },
                "TransactWriteItems",
            )
        return self.real.transact_write_items(**kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_conflict_is_sent_again_and_the_condition_decides_again(results, monkeypatch):
    j = job(path="three.py")
    job_runs.start_run(j, "run-e", "m", now=1000)
    fake = _Conflicting(aws.client("dynamodb"), conflicts=2)
    monkeypatch.setattr(job_runs, "client", lambda _s: fake)
    monkeypatch.setattr("time.sleep", lambda _s: None)
    job_runs.finish_run(
        j, "run-e", "succeeded", {}, owner=True, now=1001, with_items=[result_cache.put_item("k4", {"ok": 1})]
    )
    assert fake.sent == 3
    assert _cached(results, "k4") == {"ok": 1}
    # conflicts that do not end: the error is raised (SQS redelivers the job), nothing half-written
    j2 = job(path="four.py")
    job_runs.start_run(j2, "run-f", "m", now=1000)
    fake = _Conflicting(aws.client("dynamodb"), conflicts=100)
    monkeypatch.setattr(job_runs, "client", lambda _s: fake)
    with pytest.raises(ClientError):
        job_runs.finish_run(
            j2, "run-f", "succeeded", {}, owner=True, now=1001, with_items=[result_cache.put_item("k5", {})]
        )
    assert fake.sent == job_runs.TRANSACT_ATTEMPTS
    assert _cached(results, "k5") is None and job_runs.get_run(j2)["status"] == "running"


def _faults(url, plan):
    import json
    import urllib.request

    req = urllib.request.Request(
        url + "/_prfleet/faults", data=json.dumps(plan.to_dict()).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=10):  # noqa: S310 - loopback
        pass


def test_a_claim_whose_response_was_lost_is_still_ours(env, endpoint):  # noqa: F811 - fixtures imported above
    """DynamoDB applies the claim and answers 500; botocore's retry then fails the condition against the run it
    has just written. That is our claim, not another worker's: refusing it dropped the job as a duplicate and left
    its run `running` until the sweeper's stuck check (23 runs in the default-scale soak)."""
    from prfleet_local.stack.moto_proc import FaultPlan, FaultRule

    j = job(path="lost.py")
    job_runs.start_run(j, "run-earlier", "m", now=1000)
    job_runs.finish_run(
        j, "run-earlier", "retrying", {"error": "rate limited", "cost_micros": 1234}, now=1001
    )
    _faults(endpoint, FaultPlan([FaultRule("lost_response", operations=["UpdateItem"], requests=[1])]))
    try:
        carried = job_runs.start_run(j, "run-b", "m", now=2000)
    finally:
        _faults(endpoint, FaultPlan())
    assert carried == 1234  # what the earlier attempt spent, as the unlost reply would have said
    run = job_runs.get_run(j)
    assert (run["status"], run["run_id"]) == ("running", "run-b")
    with pytest.raises(job_runs.RunInProgress):  # another worker's live run is still refused
        job_runs.start_run(j, "run-c", "m", now=2001)


def test_a_throttled_outcome_transaction_is_sent_again(results):
    """DynamoDB cancels a throttled transaction with a ThrottlingError reason, which botocore does not retry; the
    outcome is sent again like a conflict, not failed (the soak lost 51 finished jobs' outcomes that way)."""
    from prfleet_local.stack.moto_proc import FaultPlan, FaultRule

    url = results.meta.endpoint_url
    j = job(path="throttled.py")
    job_runs.start_run(j, "run-t", "m", now=1000)
    _faults(url, FaultPlan([FaultRule("throttle", operations=["TransactWriteItems"], requests=[1, 2])]))
    try:
        _succeed(j, "run-t", "k-throttled", now=1001)
    finally:
        _faults(url, FaultPlan())
    assert job_runs.get_run(j)["status"] == "succeeded"
    assert _cached(results, "k-throttled") == {"findings": []}


class _Emitter:
    """The runner's event emitter, reduced to a list of (event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def bind(self, **_fields):
        return self

    def emit(self, event, **fields):
        self.events.append((event, fields))


def _deliver(j, *, final_attempt):
    return runner.process(
        j,
        remaining_ms=lambda: 300_000,
        client_for=lambda _installation: None,  # never reached: the claim is refused first
        model_client=None,
        emitter=_Emitter(),
        final_attempt=final_attempt,
    )


def test_a_duplicate_delivery_meeting_a_live_run_is_handed_back_to_sqs_not_dropped(results):
    """Deleted, the copy left nothing to retry the job if the live worker then failed and gave its run back as
    `retrying` (the job was lost; found with a core busy). It goes back to SQS instead, until its last receive."""
    j = job(31)
    job_runs.start_run(j, "run-live", "claude-haiku-5-5", now=time.time())  # another worker, heartbeat fresh
    with pytest.raises(runner.RunBusy):
        _deliver(j, final_attempt=False)
    assert _deliver(j, final_attempt=True).status == "duplicate"  # the last receive: that worker owns the job
    assert job_runs.get_run(j)["run_id"] == "run-live"  # untouched either way

    # That worker fails and gives its run back: the copy SQS shows again claims it and retries the job.
    job_runs.finish_run(j, "run-live", "retrying", {"error": "GitHubError: 502"}, owner=True, now=time.time())
    job_runs.start_run(j, "run-copy", "claude-haiku-5-5", now=time.time())
    assert job_runs.get_run(j)["run_id"] == "run-copy"


def test_a_verify_jobs_duplicate_meeting_its_live_run_goes_back_to_sqs_too(results):
    """The verify job claims its run through the same door as a file job (attempt.claim_run): a copy that meets
    the live run goes back to SQS, not to the bin, or a failing verify run left its posting waiting for nothing."""
    j = FileJob("o/r", 32, "h" * 40, "b" * 40, "/verify/final", "", "verify", None, "d-v")
    job_runs.start_run(j, "run-live", "claude-sonnet-5-5", now=time.time())
    at = Attempt(j, "run-copy", _Emitter().emit, lambda _installation: None, time.time)
    spec = SimpleNamespace(model="claude-sonnet-5-5")
    with pytest.raises(runner.RunBusy):
        claim_run(at, spec, None, lambda: 300_000, final_attempt=False)
    ending = claim_run(
        at, spec, None, lambda: 300_000, final_attempt=True
    )  # its last receive: left to that run
    assert ending.status == "duplicate" and job_runs.get_run(j)["run_id"] == "run-live"


def test_a_questions_duplicate_meeting_its_live_run_goes_back_to_sqs(results):
    """The same for an ask job (pipeline.answering): the copy is what asks again if the live answer fails."""
    j = AskJob("o/r", 33, "h" * 40, "b" * 40, 901, "review", 900, "app.py", "wendy", 3, "d-a")
    job_runs.start_run(j, "run-live", "claude-sonnet-5-5", now=time.time())

    def deliver(final_attempt: bool) -> str:
        return answering.answer(
            j,
            remaining_ms=lambda: 300_000,
            client_for=lambda _installation: None,  # never reached: the claim is refused first
            model_client=None,
            emitter=_Emitter(),
            final_attempt=final_attempt,
        )

    with pytest.raises(runner.RunBusy):
        deliver(False)
    assert deliver(True) == "duplicate" and job_runs.get_run(j)["run_id"] == "run-live"
