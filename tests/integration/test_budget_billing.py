"""The budget against the bill: the real SDK, the agents' loop and LedgerGuard against the offline model server, the
ledger and the run records in a moto server. For each failure class the daily limit holds and the ledger covers
what the offline server answered (its bill): every call it answered is booked, exactly or at its worst case."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import anthropic
import boto3
import httpx2
import pytest

from prfleet import config
from prfleet.agents import RetryPolicy, agent_specs, run_agent
from prfleet.agents.tools import ChangedFile
from prfleet.config import DEFAULT_MODELS, aws, settings
from prfleet.cost import pricing
from prfleet.cost.booking import hour_of
from prfleet.cost.guard import CircuitOpen, token_counter
from prfleet.cost.ledger import Ledger
from prfleet.jobs import FileJob
from prfleet.pipeline import runner
from prfleet.store import job_runs
from prfleet_local.model.server import FaultPlan, FaultRule, ModelServer
from prfleet_local.soak import invariants
from prfleet_local.stack.moto_proc import moto_server

CODE = '''"""Helpers."""
import subprocess


def run(cmd):
    """Run a command."""
    return subprocess.run(cmd, shell=True)


def calc(expr):
    return eval(expr)
'''
FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, min_call_seconds=0.1, max_attempts=3)
SPECS = agent_specs(type("S", (), {"agents": ("review", "tests", "docs"), "models": dict(DEFAULT_MODELS)})())
DAILY_LIMIT = 2_000_000
PR_LIMIT = 2_000_000


class Source:
    title, body = "Add helpers", "Small helpers."

    def __init__(self, files):
        self.files = files

    def read_file(self, path):
        return self.files.get(path)

    def file_diff(self, path):
        lines = self.files[path].splitlines()
        return f"@@ -0,0 +1,{len(lines)} @@\n" + "\n".join("+" + x for x in lines)

    def changed_files(self):
        return [
            ChangedFile(p, "added", "sha-" + p, len(t.splitlines()), 0, "") for p, t in self.files.items()
        ]


class Events(list):
    def __call__(self, event, **fields):
        self.append((event, fields))


def _table(ddb, name, keys):
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
        KeySchema=[
            {"AttributeName": keys[0], "KeyType": "HASH"},
            {"AttributeName": keys[1], "KeyType": "RANGE"},
        ],
    )


@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture
def env(endpoint, monkeypatch, request):
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    suffix = request.node.name[-40:].replace("[", "-").replace("]", "")
    ledger_table, state_table = f"ledger-{suffix}", f"state-{suffix}"
    _table(ddb, ledger_table, ("scope", "day"))
    _table(ddb, state_table, ("pk", "sk"))
    sns = boto3.client("sns", endpoint_url=endpoint, region_name="us-east-1")
    topic = sns.create_topic(Name=f"alerts-{suffix}")["TopicArn"]
    for name in ("DELIVERIES_TABLE", "RESULTS_TABLE", "PR_QUEUE_URL", "JOBS_QUEUE_URL"):
        monkeypatch.setenv(name, "unused")
    for name in ("WEBHOOK_SECRET_ID", "GITHUB_SECRET_ID", "ANTHROPIC_SECRET_ID"):
        monkeypatch.setenv(name, "unused")
    monkeypatch.setenv("LEDGER_TABLE", ledger_table)
    monkeypatch.setenv("STATE_TABLE", state_table)
    monkeypatch.setenv("ALERT_TOPIC_ARN", topic)
    monkeypatch.setenv("DAILY_BUDGET_USD", str(DAILY_LIMIT / 1e6))
    monkeypatch.setenv("PR_BUDGET_USD", str(PR_LIMIT / 1e6))
    config.settings.cache_clear()
    aws.client.cache_clear()
    yield ddb
    config.settings.cache_clear()
    aws.client.cache_clear()


@pytest.fixture(scope="module")
def server():
    with ModelServer() as srv:
        yield srv


def bill(server, since):
    """The offline server's own bill since record `since` (every call it billed, also those whose reply the
    client never read): tokens and cost per call."""
    out = []
    for rec in server.bill()[since:]:
        tokens = pricing.Tokens(
            rec.uncached_input_tokens,
            rec.cache_creation_5m_input_tokens,
            rec.cache_creation_1h_input_tokens,
            rec.cache_read_input_tokens,
            rec.output_tokens,
        )
        out.append((tokens, pricing.cost_micros(rec.model, tokens, inference_geo=rec.inference_geo)))
    return out


def job(n=1, path="app.py"):
    return FileJob("o/r", n, "h" * 40, "b" * 40, path, "blob1", "review", None, "d-1")


def run_review(server, *, faults=None, timeout=60.0, spec=None, ledger=None, clock=time.time):
    server.set_faults(faults or FaultPlan())
    since = len(server.bill())
    spec = spec or SPECS["review"]
    j = job()
    run_id = "run-" + str(time.monotonic_ns())
    job_runs.start_run(j, run_id, spec.model, now=clock())
    ledger = ledger or Ledger.from_settings(settings())
    events = Events()
    guard = runner.run_guard(
        ledger, j, run_id, spec.model, events, clock=clock, cap_micros=runner.run_cost_cap(spec)
    )
    client = anthropic.Anthropic(base_url=server.url, api_key="offline-test", max_retries=0, timeout=timeout)
    result = run_agent(
        j,
        replace(spec, call_timeout=timeout),
        Source({"app.py": CODE}),
        client,
        deadline=time.time() + 60,
        guard=guard,
        emit=events,
        sleep=lambda s: None,
        retry=FAST,
    )
    return result, guard, ledger, bill(server, since), events


def test_a_timeout_after_the_request_was_sent_is_booked_at_its_worst_case(env, server):
    # The second call is billed, then its reply is held past the client's timeout.
    faults = FaultPlan(rules=[FaultRule("timeout_after_billing", requests=[2], delay=2.5)])
    result, guard, ledger, billed, _ = run_review(server, faults=faults, timeout=1.0)
    assert result.status == "succeeded", result.error
    st = ledger.status(now=time.time())
    assert guard.estimated > 0 and st.estimated == guard.estimated
    assert st.settled >= sum(c for _, c in billed)  # the ledger covers the bill
    assert st.reserved == 0 and st.committed <= DAILY_LIMIT
    # one call was billed but its usage never reached us: the exact part of the ledger is short of the bill by
    # at most that call, which the estimate covers
    exact = st.settled - st.estimated
    assert exact < sum(c for _, c in billed) <= exact + guard.estimated


def test_a_truncated_200_is_booked_not_released(env, server):
    faults = FaultPlan(rules=[FaultRule("truncated", requests=[2])])
    result, guard, ledger, billed, _ = run_review(server, faults=faults)
    assert result.status == "succeeded", result.error
    st = ledger.status(now=time.time())
    assert guard.estimated > 0
    assert st.settled >= sum(c for _, c in billed) and st.reserved == 0


def test_a_connection_reset_after_send_is_booked(env, server):
    faults = FaultPlan(rules=[FaultRule("reset_after_read", requests=[1, 2, 3])])
    result, guard, ledger, billed, _ = run_review(server, faults=faults)
    assert (
        result.status == "failed"
    )  # every attempt lost its connection after the server read (and billed) it
    assert [r.outcome for r in server.bill()[-3:]] == ["reset_after_read"] * 3 and len(billed) == 3
    st = ledger.status(now=time.time())
    assert guard.estimated == st.estimated == st.settled >= sum(c for _, c in billed)
    assert st.reserved == 0


def test_an_error_event_inside_the_stream_is_booked_with_its_exact_input(env, server):
    faults = FaultPlan(rules=[FaultRule("stream_error", requests=[2])])
    result, guard, ledger, billed, _ = run_review(server, faults=faults)
    assert result.status == "succeeded", result.error
    st = ledger.status(now=time.time())
    assert 0 < guard.estimated and st.settled >= sum(c for _, c in billed)
    # message_start gave the exact input: the estimate is that input plus the whole output allowance, less than
    # the reservation's input bound would have booked
    (streamed,) = [t for t, _ in billed[1:2]]
    spec = SPECS["review"]
    exact_input = pricing.cost_micros(
        spec.model,
        pricing.Tokens(
            streamed.input,
            streamed.cache_write_5m,
            streamed.cache_write_1h,
            streamed.cache_read,
            spec.max_tokens,
        ),
    )
    assert guard.estimated == exact_input


def test_an_error_body_is_released_not_booked(env, server):
    faults = FaultPlan(rules=[FaultRule("529", requests=[1]), FaultRule("500", requests=[2])])
    result, guard, ledger, billed, _ = run_review(server, faults=faults)
    assert result.status == "succeeded"
    st = ledger.status(now=time.time())
    assert guard.estimated == 0 and st.estimated == 0
    assert st.settled == sum(c for _, c in billed)  # exact: the ledger equals the bill


class FailingSettles:
    """The ledger's DynamoDB client with the first `n` settle transactions failing (a throttled or lost write)."""

    def __init__(self, real, n):
        self.real, self.n = real, n

    def __getattr__(self, name):
        return getattr(self.real, name)

    def transact_write_items(self, **kw):
        closing = any("Delete" in i for i in kw["TransactItems"])
        if closing and self.n > 0:
            self.n -= 1
            raise RuntimeError("settle write failed")
        return self.real.transact_write_items(**kw)


def test_a_settle_that_cannot_be_written_is_booked_by_the_sweeper_never_released(env, server):
    cfg = config.settings()
    ledger = Ledger(
        cfg.ledger_table,
        daily_limit_micros=DAILY_LIMIT,
        pr_limit_micros=PR_LIMIT,
        client=FailingSettles(boto3.client("dynamodb"), 1),
    )
    with pytest.raises(RuntimeError, match="settle write failed"):
        run_review(server, ledger=ledger)
    billed = bill(server, len(server.bill()) - 1)
    now = time.time()
    assert ledger.status(now=now).reserved > 0  # stranded
    assert ledger.release_expired(now=now + 901) == 1
    st = ledger.status(now=now)
    assert st.reserved == 0 and st.estimated == st.settled >= sum(c for _, c in billed)


def test_a_repeated_settle_books_once(env, server):
    result, guard, ledger, billed, _ = run_review(server)
    st = ledger.status(now=time.time())
    assert st.settled == sum(c for _, c in billed)
    # A settle retried after a lost response: find the reservation closure and settle it again.
    ddb = boto3.client("dynamodb")
    day = ledger.day(time.time())
    ends = ddb.query(
        TableName=config.settings().ledger_table,
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "scope"},
        ExpressionAttributeValues={":s": {"S": f"end@{day}"}},
    )["Items"]
    from prfleet.cost.ledger import Reservation

    for e in ends:
        r = Reservation(e["day"]["S"], int(e["amount"]["N"]), (("daily", day), ("pr#o/r#1", day)), 0)
        assert not ledger.settle(r, int(e["cost"]["N"]), now=time.time()).booked
    assert ledger.status(now=time.time()).settled == st.settled


def test_the_ledger_usage_matches_the_bill_tokens(env, server):
    result, guard, ledger, billed, _ = run_review(server)
    usage = ledger.usage(hour_of(time.time()))[SPECS["review"].model]
    for bucket in ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output"):
        assert usage[bucket] == sum(getattr(t, bucket) for t, _ in billed)
    assert usage["calls"] == len(billed) == result.iterations


def test_the_tier_is_the_higher_one_whenever_the_bound_can_cross_it(env):
    j = job(3)
    job_runs.start_run(j, "run-tier", "claude-haiku-5-5", now=time.time())
    guard = runner.run_guard(Ledger.from_settings(settings()), j, "run-tier", "claude-haiku-5-5", Events())
    text = "x" * 201_000  # ~100.5k tokens by the bound: the tier applies to every token
    params = {
        "model": "claude-haiku-5-5",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": text}],
    }
    token = guard.before_call("claude-haiku-5-5", params)
    rates = pricing.rates("claude-haiku-5-5")
    tier = rates.tiers[0].card
    assert token.input_bound > 100_000
    assert token.reservation.amount >= int(token.input_bound * tier.cache_write_1h + 4096 * tier.output)
    # A real prompt of 100.2k tokens (over the threshold) costs less than what was reserved.
    usage = {"input_tokens": 100_200, "output_tokens": 4096}
    assert pricing.cost_micros("claude-haiku-5-5", usage, inference_geo="us") <= token.reservation.amount
    guard.after_call(token, usage, model="claude-haiku-5-5")
    # After the first call the input side is exact: previous prompt + a bound of only what was appended.
    params2 = {
        **params,
        "messages": [
            *params["messages"],
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "more"},
        ],
    }
    token2 = guard.before_call("claude-haiku-5-5", params2)
    assert 100_200 < token2.input_bound < 100_200 + 100


def test_the_worst_case_includes_the_geo_unless_the_request_fixes_it(env):
    j = job(4)
    job_runs.start_run(j, "run-geo", "claude-sonnet-5-5", now=time.time())
    ledger = Ledger.from_settings(settings())
    guard = runner.run_guard(ledger, j, "run-geo", "claude-sonnet-5-5", Events())
    params = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 8192,
        "messages": [{"role": "user", "content": "y" * 30_000}],
    }
    unfixed = guard.before_call("claude-sonnet-5-5", params)
    ledger.release(unfixed.reservation, now=time.time())
    fixed = guard.before_call("claude-sonnet-5-5", {**params, "inference_geo": "global"})
    assert unfixed.reservation.amount == pytest.approx(fixed.reservation.amount * 1.1, abs=2)
    # A workspace whose default geo is us bills 1.1x on every bucket: the unfixed reservation still covers it.
    usage = {"input_tokens": 15_000, "output_tokens": 8192, "inference_geo": "us"}
    assert pricing.cost_micros("claude-sonnet-5-5", usage) <= unfixed.reservation.amount
    assert guard.after_call(fixed, usage, model="claude-sonnet-5-5") == pricing.cost_micros(
        "claude-sonnet-5-5", usage
    )


def _status_error(status, body):
    response = httpx2.Response(
        status, request=httpx2.Request("POST", "http://x/v1/messages"), content=json.dumps(body).encode()
    )
    return anthropic.Anthropic(api_key="k")._make_status_error(json.dumps(body), body=body, response=response)


def test_a_spend_limit_opens_the_circuit_once_and_the_probe_closes_it(env, server):
    from prfleet.cost import circuit

    ledger = Ledger.from_settings(settings())
    j = job(5)
    job_runs.start_run(j, "run-circuit", "claude-haiku-5-5", now=time.time())
    events = Events()
    guard = runner.run_guard(
        ledger,
        j,
        "run-circuit",
        "claude-haiku-5-5",
        events,
        circuit_check=lambda: circuit.open_reason(ledger),
        on_spend_limit=lambda reason: circuit.open_circuit(ledger, reason, events),
    )
    params = {"model": "claude-haiku-5-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    token = guard.before_call("claude-haiku-5-5", params)
    tier_cap = _status_error(
        429,
        {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": "monthly spend cap reached",
                "details": {"error_code": "enforced_spend_limit_reached"},
            },
        },
    )
    assert guard.on_error(token, tier_cap) == 0  # an error body: not billed, released
    assert guard.spend_limited and ledger.status(now=time.time()).committed == 0
    assert [f["circuit"] for e, f in events if e == "error"] == ["open"]
    with pytest.raises(CircuitOpen):
        guard.before_call("claude-haiku-5-5", params)  # no worker calls the API while it is open
    # A second worker hitting the same limit opens nothing and sends no second notice.
    circuit.open_circuit(ledger, "again", events)
    assert len([e for e, f in events if e == "error"]) == 1
    # The sweeper's probe: one budgeted call that gets through closes it.
    st = circuit.read(ledger.ddb, ledger.table)
    later = st.opened_at + circuit.PROBE_EVERY_S
    assert st.probe_due(later) and circuit.claim_probe(ledger.ddb, ledger.table, st, now=later)
    server.set_faults(FaultPlan())
    client = anthropic.Anthropic(base_url=server.url, api_key="offline-test", max_retries=0)
    circuit.probe_call(client, ledger, "claude-haiku-5-5")
    assert circuit.close_circuit(ledger.ddb, ledger.table, now=later)
    assert circuit.open_reason(ledger) is None
    assert ledger.status(now=time.time()).settled > 0  # the probe's cost is on the ledger too


def test_a_finished_run_keeps_the_cost_of_earlier_attempts(env):
    j = job(6)
    job_runs.start_run(j, "run-a", "m", now=time.time())
    job_runs.finish_run(j, "run-a", "retrying", {"cost_micros": 1234, "error": "rate limited"}, owner=True)
    job_runs.finish_run(j, "run-b", "superseded", {"error": "PR head moved"})  # not the owner: no cost given
    run = job_runs.get_run(j)
    assert run["status"] == "superseded" and run["cost_micros"] == 1234
    with pytest.raises(job_runs.RunInProgress):
        job_runs.start_run(j, "run-c", "m", now=time.time())


def test_reservation_pressure_is_told_apart_from_spent_budget(env):
    from prfleet.cost.ledger import BudgetExceeded

    ledger = Ledger(config.settings().ledger_table, daily_limit_micros=1000, pr_limit_micros=1000)
    now = time.time() + 10 * 86400  # a day of its own
    held = [ledger.reserve(None, 300, now=now) for _ in range(3)]
    with pytest.raises(BudgetExceeded) as exc:
        ledger.reserve(None, 200, now=now)
    assert exc.value.cause == "reserved"
    for r in held:
        ledger.settle(r, 300, now=now)
    with pytest.raises(BudgetExceeded) as exc:
        ledger.reserve(None, 200, now=now)
    assert exc.value.cause == "spent"


@pytest.mark.parametrize("kind", ["spend_limit", "spend_limit_org", "spend_limit_workspace"])
def test_a_spend_limit_from_the_api_opens_the_circuit_and_nothing_is_booked(env, server, kind):
    from prfleet.cost import circuit

    ledger = Ledger.from_settings(settings())
    circuit.close_circuit(ledger.ddb, ledger.table, now=time.time())
    faults = FaultPlan(rules=[FaultRule(kind, requests=[1, 2, 3, 4])])
    server.set_faults(faults)
    j = job(7)
    run_id = "run-" + kind
    job_runs.start_run(j, run_id, SPECS["review"].model, now=time.time())
    events = Events()
    guard = runner.run_guard(
        ledger,
        j,
        run_id,
        SPECS["review"].model,
        events,
        circuit_check=lambda: circuit.open_reason(ledger),
        on_spend_limit=lambda reason: circuit.open_circuit(ledger, reason, events),
    )
    client = anthropic.Anthropic(base_url=server.url, api_key="offline-test", max_retries=0, timeout=10)
    before = len(server.requests)
    result = run_agent(
        j,
        SPECS["review"],
        Source({"app.py": CODE}),
        client,
        deadline=time.time() + 30,
        guard=guard,
        emit=events,
        sleep=lambda s: None,
        retry=FAST,
    )
    assert result.status == "failed" and len(server.requests) - before == 1  # not retried
    assert guard.spend_limited and circuit.open_reason(ledger)
    assert ledger.status(now=time.time()).committed == 0  # an error body: released
    assert [f.get("notice") for e, f in events if e == "error" and f.get("circuit")] == [
        "spend-limit-circuit-open"
    ]
    circuit.close_circuit(ledger.ddb, ledger.table, now=time.time())


def test_reconciliation_with_the_servers_usage_report(env, server):
    """The report the offline server serves from its bill, through prfleet.reconcile: a billed-but-failed call
    shows as no drift (its estimate covers it); a call released although billed would show as drift; the
    adjustment moves the ledger onto the bill once."""
    from prfleet.cost import reconcile

    server.bill()  # the server keeps every billed call; this test reads only its own hour and model
    spec = replace(SPECS["review"], model="claude-sonnet-4-6")  # a model no other test here uses
    faults = FaultPlan(rules=[FaultRule("timeout_after_billing", requests=[2], delay=2.5)])
    result, guard, ledger, billed, _ = run_review(server, faults=faults, timeout=1.0, spec=spec)
    assert guard.estimated > 0
    get = reconcile.http_getter(server.url, "sk-ant-admin01-offline")
    now = time.time()
    start = reconcile._dt.datetime.fromtimestamp(now, reconcile._dt.timezone.utc).replace(
        minute=0, second=0, microsecond=0
    )
    end = start + reconcile._dt.timedelta(hours=1)
    rows = [r for r in reconcile.compare(ledger, get, start=start, end=end) if r.model == spec.model]
    (row,) = rows
    assert row.bill_total == sum(sum(vars(t).values()) for t, _ in billed)
    assert row.drift <= 0 and row.est_calls == 1  # covered by the estimate: no drift
    assert reconcile.drift_percent(rows) == 0.0
    before = ledger.status(now=now)
    applied = reconcile.apply(ledger, rows, now=now)
    assert applied < 0  # the estimate was a worst case: the bill is lower
    assert reconcile.apply(ledger, rows, now=now) == 0  # once
    after = ledger.status(now=now)
    assert after.settled == before.settled + applied
    assert after.settled >= sum(c for _, c in billed) - 1  # on the bill (the tier/geo choice rounds up)

    # What the old behaviour (release a timed-out call) would have shown: the bill has tokens the ledger lacks.
    released = reconcile.Row(row.hour, row.model, bill=dict(row.bill), exact=dict(row.exact))
    assert released.drift > 0 and reconcile.drift_percent([released]) > 1.0


def test_cost_reconcile_prints_the_days_comparison(env, server, capsys):
    import argparse
    import io

    from prfleet.cost import reconcile
    from prfleet_local.cli.cost import run_reconcile

    spec = replace(SPECS["review"], model="claude-opus-5-5")  # a model of its own in this hour
    faults = FaultPlan(rules=[FaultRule("reset_after_read", requests=[2])])
    result, guard, ledger, billed, _ = run_review(server, faults=faults, spec=spec)
    assert result.status == "succeeded" and guard.estimated > 0
    out = io.StringIO()
    args = argparse.Namespace(day=ledger.day(time.time()), api_key_id=None, json=True, api_url=None)
    get = reconcile.http_getter(server.url, "sk-ant-admin01-offline")
    assert run_reconcile(args, out, ledger=ledger, get=get) == 0
    report = json.loads(out.getvalue())
    (row,) = [r for r in report["rows"] if r["model"] == spec.model]
    assert sum(row["bill"].values()) == sum(sum(vars(t).values()) for t, _ in billed)
    assert row["estimated_calls"] == 1 and row["drift_tokens"] <= 0
    text = io.StringIO()
    run_reconcile(argparse.Namespace(**{**vars(args), "json": False}), text, ledger=ledger, get=get)
    assert spec.model in text.getvalue() and "LedgerDriftPercent" in text.getvalue()
    # A key that is not an Admin API key: one clear error from the API, never the key itself.
    from prfleet_local.cli.errors import CliError

    with pytest.raises(CliError, match="HTTP 401") as exc:
        run_reconcile(
            args, io.StringIO(), ledger=ledger, get=reconcile.http_getter(server.url, "sk-ant-api03-user")
        )
    assert "sk-ant-api03-user" not in str(exc.value)


def _reconcile_hour(ledger, server, model, now):
    from prfleet.cost import reconcile

    get = reconcile.http_getter(server.url, "sk-ant-admin01-offline")
    start = reconcile._dt.datetime.fromtimestamp(now, reconcile._dt.timezone.utc).replace(
        minute=0, second=0, microsecond=0
    )
    end = start + reconcile._dt.timedelta(hours=1)
    return [r for r in reconcile.compare(ledger, get, start=start, end=end) if r.model == model]


def test_reconciling_an_estimated_call_of_a_tiered_model_lands_on_the_bill(env):
    """Haiku 5.5 has a prompt-length tier (5x above 100k prompt tokens); an estimated call whose worst-case
    prompt is far below it is reconciled at the base rates, so the day total ends on the bill, not above it."""
    from prfleet.cost import reconcile

    spec = replace(SPECS["tests"], model="claude-haiku-5-5")
    assert pricing.rates(spec.model).tiers  # the case under test: a tiered model
    ledger = Ledger(
        "ledger-tiered-" + str(time.monotonic_ns()),
        daily_limit_micros=DAILY_LIMIT,
        pr_limit_micros=PR_LIMIT,
    )
    _table(env, ledger.table, ("scope", "day"))
    faults = FaultPlan(rules=[FaultRule("timeout_after_billing", requests=[2], delay=2.5)])
    with ModelServer() as server:  # its own bill: the hour's row holds only this test's calls
        result, guard, ledger, billed, _ = run_review(
            server, faults=faults, timeout=1.0, spec=spec, ledger=ledger
        )
        assert guard.estimated > 0
        now = time.time()
        (row,) = _reconcile_hour(ledger, server, spec.model, now)
    assert row.est_calls == 1 and row.est_tiered == 0
    reconcile.apply(ledger, [row], now=now)
    settled = ledger.status(now=now).settled
    assert abs(settled - sum(c for _, c in billed)) <= row.rounding_slack


def test_an_estimate_booked_later_by_the_sweeper_is_reconciled_in_its_calls_hour(env):
    """A stranded reservation booked `expired` by the sweeper an hour later counts in the hour the call was
    made (the bill's hour), on the day it was reserved, and reconciliation takes the whole estimate back."""
    from prfleet.cost import reconcile

    cfg = config.settings()
    ledger = Ledger(
        cfg.ledger_table,
        daily_limit_micros=DAILY_LIMIT,
        pr_limit_micros=PR_LIMIT,
        client=FailingSettles(boto3.client("dynamodb"), 1),
    )
    spec = SPECS["review"]
    with ModelServer() as server:  # its own bill: the hour's row holds only this test's calls
        with pytest.raises(RuntimeError, match="settle write failed"):
            run_review(server, ledger=ledger, spec=spec)
        now = time.time()
        assert ledger.release_expired(now=now + 3700) == 1  # the sweep runs in a later hour
        # The sweeper's booking is on the job's run too, in the same transaction (the invocation that held the
        # reservation could not write it).
        assert invariants.booked_of(job_runs.get_run(job())) == ledger.status(now=now).settled > 0
        assert ledger.usage(hour_of(now + 3700)).get(spec.model, {}).get("est_calls", 0) == 0
        assert ledger.usage(hour_of(now))[spec.model]["est_calls"] == 1
        (row,) = _reconcile_hour(ledger, server, spec.model, now)
        reconcile.apply(ledger, [row], now=now)
        hour_bill = sum(c for _, c in bill(server, 0))
    assert abs(ledger.status(now=now).settled - hour_bill) <= row.rounding_slack


def test_a_replan_keeps_the_runs_cost_and_the_run_holds_every_booking(env, server):
    """`/prfleet review` re-plans a head: its finished runs open again (claimable), never deleted, so the cost
    they carry still adds up to the ledger; every call the run booked is on the run item as it is booked."""
    faults = FaultPlan(rules=[FaultRule("timeout_after_billing", requests=[2], delay=2.5)])
    result, guard, ledger, billed, _ = run_review(server, faults=faults, timeout=1.0)
    j = job()
    job_runs.finish_run(j, guard.run_id, "succeeded", {"cost_micros": guard.spent}, owner=True)
    run = job_runs.get_run(j)
    assert invariants.booked_of(run) == guard.spent == ledger.status(now=time.time()).settled
    assert guard.estimated > 0  # the estimated booking is on the run too
    assert job_runs.forget_runs("o/r", 1, "h" * 40) == 1
    again = job_runs.get_run(j)
    assert again["status"] == "requeued" and invariants.booked_of(again) == guard.spent
    assert job_runs.start_run(j, "run-after-replan", "m") == guard.spent  # claimable, carrying the cost


class ReserveSpy:
    """The ledger, recording the worst case (input, output tokens) of each reservation."""

    def __init__(self, ledger):
        self.ledger, self.worst = ledger, []

    def __getattr__(self, name):
        return getattr(self.ledger, name)

    def reserve(self, *args, **kw):
        self.worst.append(kw.get("worst_tokens"))
        return self.ledger.reserve(*args, **kw)


def test_exact_input_tokens_sizes_the_first_reservation_with_the_counted_figure(env, server):
    """ExactInputTokens=true: the first call of a run is sized with POST /v1/messages/count_tokens through the
    real SDK; the reservation uses the counted figure (the prompt the call then bills), the count is free (not on
    the bill) and logged; later calls are sized from the previous call's usage, without counting again."""
    server.set_faults(FaultPlan())
    since, counted_before = len(server.bill()), len(server.token_counts)
    spec = SPECS["review"]
    j = job(7)
    run_id = "run-count-" + str(time.monotonic_ns())
    job_runs.start_run(j, run_id, spec.model)
    client = anthropic.Anthropic(base_url=server.url, api_key="offline-test", max_retries=0, timeout=30)
    ledger = ReserveSpy(Ledger.from_settings(settings()))
    events = Events()
    guard = runner.run_guard(ledger, j, run_id, spec.model, events, counter=token_counter(client))
    run_agent(
        j,
        spec,
        Source({"app.py": CODE}),
        client,
        deadline=time.time() + 60,
        guard=guard,
        emit=events,
        sleep=lambda s: None,
        retry=FAST,
    )
    (count,) = server.token_counts[counted_before:]
    first = server.bill()[since]
    billed_prompt = (
        first.uncached_input_tokens
        + first.cache_creation_5m_input_tokens
        + first.cache_creation_1h_input_tokens
        + first.cache_read_input_tokens
    )
    assert ledger.worst[0][0] == count["input_tokens"] == billed_prompt
    assert len(ledger.worst) == len(server.bill()) - since > 1  # one count, then every call from usage
    logged = [f for e, f in events if e == "heartbeat" and f.get("count_tokens_calls")]
    assert logged == [{"count_tokens_calls": 1, "counted_input_tokens": count["input_tokens"]}]


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"extra_body": {"max_tokens": 100}}, "max_tokens: Extra inputs are not permitted"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "server tool"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}],
                    }
                ]
            },
            "send it as base64",
        ),
    ],
)
def test_count_tokens_refuses_what_the_real_endpoint_refuses(server, extra, message):
    client = anthropic.Anthropic(base_url=server.url, api_key="offline-test", max_retries=0)
    params = {"model": "claude-haiku-5-5", "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(anthropic.BadRequestError, match=message):
        client.messages.count_tokens(**params)


def test_count_tokens_answers_the_prompt_size_and_bills_nothing(server):
    client = anthropic.Anthropic(base_url=server.url, api_key="offline-test", max_retries=0)
    billed = len(server.bill())
    body = {
        "model": "claude-haiku-5-5",
        "system": "You review code.",
        "messages": [{"role": "user", "content": CODE}],
    }
    counted = client.messages.count_tokens(**body).input_tokens
    from prfleet_local.model.cache import prompt_tokens

    assert counted == prompt_tokens(body) > len(CODE) // 4
    assert len(server.bill()) == billed
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="claude-nonexistent-9", messages=body["messages"])
