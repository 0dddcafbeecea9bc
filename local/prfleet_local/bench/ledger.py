"""The ledger at 10, 1,000 and 10,000 PRs a day: write units and latency of reserve + settle, as ratios to a plain
PutItem of a small item in the same run (serialized moto server in its own process).

Write units are computed from the sizes of the items each call writes, with DynamoDB's rules: an item's size is
the sum of its attribute names' and values' lengths (a number takes about 1 byte per 2 significant digits + 1);
a standard write costs 1 WCU per KB of the larger of the item's old and new size, rounded up, and a write inside
TransactWriteItems costs twice that
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html,
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html#transaction-capacity-handling).
moto reports no consumed capacity, so units come from the items read back after the run, not from moto. Latency
on moto is NOT DynamoDB's: moto's TransactWriteItems deep-copies every table of its backend for rollback, so its
latency grows with the number of items stored (each N runs on a fresh server, but N PR items are in it); the
write units are the figure that carries over to DynamoDB.
The former single-item layout (every PR counter and open reservation in maps on the day item) is sized the same
way, from a day item built as it stored them, for comparison: its cost per write grows with the PRs of the day.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from typing import Any

from prfleet.cost.booking import DAILY, hour_of
from prfleet.cost.ledger import Ledger

PR_COUNTS = (10, 1_000, 10_000)
CYCLES = {10: 30, 1_000: 12, 10_000: 6}  # moto copies its whole backend on every transaction (see the doc)


def attr_size(value: dict[str, Any]) -> int:
    """DynamoDB's size of one attribute value (low-level form)."""
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        digits = len(v.lstrip("-").replace(".", "").strip("0")) or 1
        return math.ceil(digits / 2) + 1
    if kind == "BOOL":
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + attr_size(x) for k, x in v.items())
    if kind == "L":
        return 3 + sum(1 + attr_size(x) for x in v)
    raise ValueError(kind)


def item_size(item: dict[str, Any]) -> int:
    return sum(len(k.encode()) + attr_size(v) for k, v in item.items())


def wcu(size: int, *, transactional: bool) -> int:
    return math.ceil(max(size, 1) / 1024) * (2 if transactional else 1)


def old_day_item(prs: int, open_reservations: int = 10) -> dict[str, Any]:
    """The day item of the former layout with `prs` PR counters (committed and settled maps) and open reservations."""
    n = {"N": "123456"}
    prc = {f"pr#acme/repo-{i % 50}#{i}": n for i in range(prs)}
    res = {
        f"{i:032x}": {"M": {"a": n, "x": {"N": "1796000000"}, "p": {"S": "pr#acme/repo-1#1"}}}
        for i in range(open_reservations)
    }
    return {
        "scope": {"S": DAILY},
        "day": {"S": "2026-12-01"},
        "committed": n,
        "reserved": n,
        "settled": n,
        "limit": {"N": "10000000"},
        "prc": {"M": prc},
        "prs": {"M": dict(prc)},
        "res": {"M": res},
        "a80": {"M": {}},
        "expires_at": {"N": "1804809600"},
    }


def _prefill(ddb: Any, table: str, day: str, prs: int) -> list[str]:
    scopes = [f"pr#acme/repo-{i % 50}#{i}" for i in range(prs)]
    items = [
        {
            "scope": {"S": f"pr@{day}"},
            "day": {"S": s},
            "committed": {"N": "1000"},
            "settled": {"N": "1000"},
            "limit": {"N": str(10**12)},
            "expires_at": {"N": "1804809600"},
        }
        for s in scopes
    ]
    for i in range(0, len(items), 25):
        ddb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": it}} for it in items[i : i + 25]]})
    return scopes


class Counting:
    """The DynamoDB client, counting requests by operation (what one reserve + settle costs in requests)."""

    def __init__(self, real: Any) -> None:
        self.real, self.counts = real, {}

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.real, name)

        def call(**kw: Any) -> Any:
            self.counts[name] = self.counts.get(name, 0) + 1
            return fn(**kw)

        return call


def requests_per_call(ddb: Any, table: str, *, day_settled_share: float) -> dict[str, int]:
    """Requests of one reserve + settle (+ the circuit check a worker makes before a call, cached per container),
    with the day's bookings at `day_settled_share` of the PR limit (below 0.8 the PR total is not read)."""
    from prfleet.cost import circuit

    counting = Counting(ddb)
    limit = 10**9
    ledger = Ledger(table, daily_limit_micros=10**12, pr_limit_micros=limit, client=counting)
    now = time.time()
    pre = ledger.reserve("pr#bench/r#1", int(limit * day_settled_share), now=now)
    ledger.settle(pre, int(limit * day_settled_share), now=now)
    circuit.forget(table)
    counting.counts.clear()
    for _ in range(3):  # three model calls of one invocation
        circuit.read_cached(counting, table)
        r = ledger.reserve("pr#bench/r#2", 5000, now=now, model="claude-haiku-5-5", worst_tokens=(900, 100))
        ledger.settle(r, 4000, now=now, model="claude-haiku-5-5")
    return {k: v for k, v in sorted(counting.counts.items())}


def _measure(ddb: Any, prs: int, cycles: int, plain_item: dict[str, Any]) -> dict[str, Any]:
    table = f"ledger-{prs}"
    ddb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in ("scope", "day")],
        KeySchema=[
            {"AttributeName": "scope", "KeyType": "HASH"},
            {"AttributeName": "day", "KeyType": "RANGE"},
        ],
    )
    ledger = Ledger(table, daily_limit_micros=10**12, pr_limit_micros=10**12, client=ddb)
    now = time.time()
    day = ledger.day(now)
    scopes = _prefill(ddb, table, day, prs)
    rnd = random.Random(prs)

    def cycle() -> Any:
        r = ledger.reserve(
            rnd.choice(scopes), 5000, now=now, model="claude-haiku-5-5", worst_tokens=(900, 100)
        )
        ledger.settle(r, 4000, now=now, model="claude-haiku-5-5")
        return r

    def get(pk: str, sk: str) -> dict[str, Any]:
        return ddb.get_item(TableName=table, Key={"scope": {"S": pk}, "day": {"S": sk}})["Item"]

    last = cycle()  # warm
    per = max(1, cycles // 3)
    proto, base = [], []
    for rep in range(3):
        t = time.perf_counter()
        for _ in range(per):
            last = cycle()
        proto.append((time.perf_counter() - t) / per)
        t = time.perf_counter()
        for i in range(per):
            ddb.put_item(TableName="plain", Item={**plain_item, "id": {"S": f"{prs}-{rep}-{i:08d}"}})
        base.append((time.perf_counter() - t) / per)
    # What one reserve + settle writes: reserve = day total + PR total + reservation (one transaction); settle =
    # reservation (deleted) + closure + day total + PR total + usage item (one transaction).
    sizes = {
        "day_total": item_size(get(DAILY, day)),
        "pr_total": item_size(get(f"pr@{day}", last.pr_scope)),
        "closure": item_size(get(f"end@{day}", last.id)),
        "usage": item_size(get(f"use@{hour_of(now)}", "claude-haiku-5-5")),
    }
    sizes["reservation"] = sizes[
        "closure"
    ]  # the same attributes (amount, pr, model, bounds), within a few bytes
    reserve = sum(wcu(sizes[k], transactional=True) for k in ("day_total", "pr_total", "reservation"))
    settle = sum(
        wcu(sizes[k], transactional=True)
        for k in ("reservation", "closure", "day_total", "pr_total", "usage")
    )
    plain = wcu(item_size(plain_item), transactional=False)
    old = item_size(old_day_item(prs))
    for name in ("req-low", "req-high"):
        ddb.create_table(
            TableName=f"{table}-{name}",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in ("scope", "day")],
            KeySchema=[
                {"AttributeName": "scope", "KeyType": "HASH"},
                {"AttributeName": "day", "KeyType": "RANGE"},
            ],
        )
    return {
        # three model calls of one invocation: requests by operation
        "requests_3_calls_day_below_80pc_of_pr_limit": requests_per_call(
            ddb, f"{table}-req-low", day_settled_share=0.1
        ),
        "requests_3_calls_day_above_80pc_of_pr_limit": requests_per_call(
            ddb, f"{table}-req-high", day_settled_share=0.9
        ),
        "item_bytes": sizes,
        "reserve_settle_wcu": reserve + settle,
        "put_item_wcu": plain,
        "wcu_ratio": round((reserve + settle) / plain, 2),
        "reserve_settle_ms": round(statistics.median(proto) * 1000, 3),
        "put_item_ms": round(statistics.median(base) * 1000, 3),
        "latency_ratio": round(statistics.median(proto) / statistics.median(base), 2),
        "former_layout_day_item_kb": round(old / 1024, 1),
        "former_layout_wcu": 2 * wcu(old, transactional=False),  # reserve + settle, one UpdateItem each
        "former_layout_wcu_ratio": round(2 * wcu(old, transactional=False) / plain, 2),
    }


def bench_ledger_scale(cycles: dict[int, int] | None = None) -> dict[str, Any]:
    import boto3

    from prfleet_local.stack.moto_proc import moto_server

    out = {}
    for prs in PR_COUNTS:
        with (
            moto_server() as endpoint
        ):  # a fresh server per N: moto's transaction cost depends on what it stores
            ddb = boto3.client(
                "dynamodb",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="bench",
                aws_secret_access_key="bench",
            )
            ddb.create_table(
                TableName="plain",
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            )
            plain_item = {"id": {"S": "x" * 16}, "v": {"N": "1"}}
            out[f"prs_{prs}"] = _measure(ddb, prs, (cycles or CYCLES)[prs], plain_item)
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(bench_ledger_scale(), indent=2))
