"""50+ threads reserving and settling against a moto server in a separate process."""

from __future__ import annotations

import random
import threading

import boto3
import pytest
from botocore.config import Config

from prfleet.cost.booking import DAILY
from prfleet.cost.ledger import BudgetExceeded, Ledger
from prfleet_local.stack.moto_proc import moto_server

THREADS = 56
ROUNDS = 9
DAILY_LIMIT = 400_000  # micro-dollars: a few dozen calls fill it
PR_LIMIT = 90_000
PRS = [f"pr#acme/app#{n}" for n in range(6)]
T0 = 1_795_000_000  # 2026-11-18 in UTC
DAYS = [T0, T0 + 86400, T0 + 2 * 86400]  # three budget days: the limit is reached on each


@pytest.fixture(scope="module")
def ddb():
    with moto_server() as url:
        client = boto3.client(
            "dynamodb",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(max_pool_connections=THREADS + 8, retries={"mode": "standard", "max_attempts": 10}),
        )
        client.create_table(
            TableName="ledger",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "scope", "AttributeType": "S"},
                {"AttributeName": "day", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "scope", "KeyType": "HASH"},
                {"AttributeName": "day", "KeyType": "RANGE"},
            ],
        )
        client.update_time_to_live(
            TableName="ledger", TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )
        yield client


def _item(ddb, day, pr=None):
    key = (
        {"scope": {"S": DAILY}, "day": {"S": day}}
        if pr is None
        else {"scope": {"S": f"pr@{day}"}, "day": {"S": pr}}
    )
    return ddb.get_item(TableName="ledger", Key=key, ConsistentRead=True).get("Item", {})


def _query(ddb, pk):
    return ddb.query(
        TableName="ledger",
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "scope"},
        ExpressionAttributeValues={":s": {"S": pk}},
        ConsistentRead=True,
    )["Items"]


def test_committed_never_exceeds_limit_and_settled_equals_sum_of_costs(ddb):
    ledger = Ledger("ledger", daily_limit_micros=DAILY_LIMIT, pr_limit_micros=PR_LIMIT, client=ddb)
    lock = threading.Lock()
    spent: dict[str, int] = {}
    spent_pr: dict[tuple[str, str], int] = {}
    refused = {"daily": 0, "pr": 0}
    errors: list[BaseException] = []
    over: list[tuple[str, int]] = []
    stop = threading.Event()
    start = threading.Barrier(THREADS)

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            start.wait()
            for i in range(ROUNDS):
                now = DAYS[min(i * len(DAYS) // ROUNDS, len(DAYS) - 1)] + rnd.randint(0, 3600)
                pr = rnd.choice(PRS)
                amount = rnd.randint(5_000, 30_000)
                try:
                    r = ledger.reserve(pr, amount, now=now, ttl=600)
                except BudgetExceeded as exc:
                    with lock:
                        refused["daily" if exc.scope == DAILY else "pr"] += 1
                    continue
                if rnd.random() < 0.15:
                    ledger.release(r, now=now)  # the call failed before it was sent
                    continue
                actual = rnd.randint(0, amount)
                ledger.settle(r, actual, now=now + 5)
                if rnd.random() < 0.2:
                    ledger.settle(r, actual, now=now + 6)  # a redelivered settle books nothing
                with lock:
                    spent[r.day] = spent.get(r.day, 0) + actual
                    spent_pr[(r.day, pr)] = spent_pr.get((r.day, pr), 0) + actual
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def monitor() -> None:
        while not stop.is_set():
            for t in DAYS:
                item = _item(ddb, ledger.day(t))
                committed = int(item.get("committed", {}).get("N", 0))
                if committed > DAILY_LIMIT:
                    over.append((ledger.day(t), committed))
                for pr_item in _query(ddb, f"pr@{ledger.day(t)}"):
                    if int(pr_item["committed"]["N"]) > PR_LIMIT:
                        over.append((pr_item["day"]["S"], int(pr_item["committed"]["N"])))
            stop.wait(0.05)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(THREADS)]
    mon = threading.Thread(target=monitor)
    mon.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    mon.join()

    assert not errors, errors[:3]
    assert not over, over[:5]
    assert refused["daily"] + refused["pr"] >= 50, refused  # the limits were reached many times
    assert refused["daily"] > 0 and refused["pr"] > 0
    for t in DAYS:
        day = ledger.day(t)
        item = _item(ddb, day)
        settled = int(item["settled"]["N"])
        assert settled == spent.get(day, 0)
        assert int(item["reserved"]["N"]) == 0
        assert int(item["committed"]["N"]) == settled <= DAILY_LIMIT
        assert _query(ddb, f"res@{day}") == []  # no open reservation left
        for pr in PRS:
            pr_item = _item(ddb, day, pr)
            assert int(pr_item.get("settled", {"N": "0"})["N"]) == spent_pr.get((day, pr), 0) <= PR_LIMIT
            assert int(pr_item.get("committed", {"N": "0"})["N"]) == spent_pr.get((day, pr), 0)
        status = ledger.status(now=t)
        assert (status.settled, status.reserved, status.limit) == (settled, 0, DAILY_LIMIT)


def test_stranded_reservation_is_booked_at_worst_case_by_sweeper_and_a_late_settle_replaces_it(ddb):
    ledger = Ledger(
        "ledger", daily_limit_micros=100_000, pr_limit_micros=60_000, tz="Europe/Paris", client=ddb
    )
    now = 1_798_000_000
    r = ledger.reserve("pr#o/r#1", 50_000, now=now, ttl=300)
    with pytest.raises(BudgetExceeded) as exc:
        ledger.reserve("pr#o/r#1", 20_000, now=now)
    assert exc.value.scope == "pr#o/r#1" and exc.value.available == 10_000
    assert ledger.release_expired(now=now + 299) == 0
    assert ledger.release_expired(now=now + 301) == 1
    assert ledger.release_expired(now=now + 302) == 0
    st = ledger.status(now=now)
    # Never given back: the worker may have made a billed call before it died or failed to write its settle.
    assert (st.reserved, st.settled, st.estimated) == (0, 50_000, 50_000)
    # The Lambda was only slow: its exact settle replaces the worst case, once.
    st = ledger.settle(r, 30_000, now=now + 400)
    assert (st.settled, st.reserved, st.estimated) == (30_000, 0, 0)
    # The PR total is corrected too (settle reads it back only when the PR may have reached 80 % of its limit).
    assert ledger.status("pr#o/r#1", now=now).settled == 30_000
    assert not ledger.settle(r, 30_000, now=now + 401).booked


def test_crossed_80_once_per_scope_per_day(ddb):
    ledger = Ledger("ledger", daily_limit_micros=100_000, pr_limit_micros=100_000, client=ddb)
    now = 1_799_000_000
    flags = []
    for _ in range(4):
        r = ledger.reserve("pr#o/r#2", 25_000, now=now)
        flags.append(ledger.settle(r, 25_000, now=now).crossed_80)
    assert flags == [False, False, False, True]  # 25, 50, 75 %, then 100 %: one notice
    nxt = ledger.reserve(None, 85_000, now=now + 86400)
    assert ledger.settle(nxt, 85_000, now=now + 86400).crossed_80 is True  # a new day, a new notice


class _Counting:
    """A DynamoDB client that counts the status reads (GetItem) it makes: one Lambda container's client."""

    def __init__(self, client):
        self._client = client
        self.gets: list[str] = []

    def get_item(self, **kwargs):
        self.gets.append(kwargs["Key"]["scope"]["S"])
        return self._client.get_item(**kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _container(ddb, daily=100_000, pr=1_000_000):
    client, clock = _Counting(ddb), _Clock()
    ledger = Ledger("ledger", daily_limit_micros=daily, pr_limit_micros=pr, client=client, monotonic=clock)
    return ledger, client, clock


def _spend(ledger, amount, now, pr="pr#o/r#9"):
    return ledger.settle(ledger.reserve(pr, amount, now=now), amount, now=now)


def test_the_day_status_is_read_at_most_once_per_interval_per_container(ddb):
    from prfleet.cost.spend_status import STATUS_EVERY_S

    ledger, client, clock = _container(ddb)
    now = 1_799_500_000
    statuses = [_spend(ledger, 1_000, now) for _ in range(5)]
    assert client.gets.count(DAILY) == 1  # the first settle reads; the next four publish the projection
    assert [s.settled for s in statuses] == [1_000, 2_000, 3_000, 4_000, 5_000]  # alone: exact
    assert all(s.booked for s in statuses)
    clock.t += STATUS_EVERY_S - 1
    _spend(ledger, 1_000, now)
    assert client.gets.count(DAILY) == 1
    clock.t += 1
    assert _spend(ledger, 1_000, now).settled == 7_000
    assert client.gets.count(DAILY) == 2  # STATUS_EVERY_S after the last read: read again
    # a repeated settle books nothing and projects nothing
    r = ledger.reserve("pr#o/r#9", 1_000, now=now)
    assert ledger.settle(r, 1_000, now=now).settled == 8_000
    repeat = ledger.settle(r, 1_000, now=now)
    assert repeat.booked is False and repeat.settled == 8_000


def test_between_reads_the_metric_is_a_lower_bound_and_a_crossing_is_noticed_once(ddb):
    """Two containers on one day: A publishes its last read plus its own bookings (never more than the table
    holds), reads at once when that projection reaches 80 %, and the crossing is noticed exactly once."""
    from prfleet.cost.spend_status import STATUS_EVERY_S

    now = 1_799_600_000
    a, a_client, a_clock = _container(ddb)
    c, c_client, c_clock = _container(ddb)

    def stored() -> int:
        return int(
            _item(ddb, Ledger("ledger", daily_limit_micros=1, pr_limit_micros=1, client=ddb).day(now))[
                "settled"
            ]["N"]
        )

    assert _spend(a, 10_000, now).settled == 10_000  # A reads: 10 %
    assert _spend(c, 20_000, now).settled == 30_000  # C reads: 30 %
    s = _spend(a, 40_000, now)  # A's projection: 50 % (the table: 70 %), no read
    assert a_client.gets.count(DAILY) == 1
    assert (s.settled, s.crossed_80) == (50_000, False) and s.settled <= stored() == 70_000
    s = _spend(a, 10_000, now)  # projection 60 %, no read
    assert (s.settled, s.crossed_80, a_client.gets.count(DAILY)) == (60_000, False, 1)
    s = _spend(a, 20_000, now)  # projection 80 %: read at once, 100 % stored, A marks the crossing
    assert a_client.gets.count(DAILY) == 2
    assert (s.settled, s.crossed_80) == (100_000, True)
    flags = [s.crossed_80]
    c_clock.t += STATUS_EVERY_S  # C reads again: already marked
    r = c.reserve(None, 0, now=now)
    flags.append(c.settle(r, 0, now=now).crossed_80)
    assert c_client.gets.count(DAILY) == 2
    r = a.reserve(None, 0, now=now)
    flags.append(a.settle(r, 0, now=now).crossed_80)  # marked: A publishes its projection, no read
    assert a_client.gets.count(DAILY) == 2
    assert flags == [True, False, False]
