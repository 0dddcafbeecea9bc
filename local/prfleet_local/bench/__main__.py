"""`make bench`: speed and cost measured as ratios against a baseline run in the same process.

1. Prompt caching: cost of reviewing a 500-line file over 5 iterations with caching / the same loop without
   (thinking on, real cache minimums), and a whole 10-file PR with cross-job caching / per-job / none.
2. Ledger protocol: reserve + settle (one transaction each over small items) per job / a plain PutItem, on the
   serialized moto server, single-threaded and with 8 threads.
2b. Ledger at 10, 1,000 and 10,000 PRs a day: write units (item sizes) and latency of reserve + settle / a plain
   PutItem (bench/ledger.py).
3. Cold starts: each function's import time in a fresh interpreter / `import boto3` alone (bench_imports).
4. GitHub requests per job and per PR head for 10, 100 and 300 files / what each job requested before
   (bench_github, counted by the strict fake GitHub).
5. Job cost (bench/jobcost.py): AWS requests by service and operation, GitHub and model requests per job on the
   happy path through the whole local stack, and wall time per job / one PutItem round trip.
6. The repository snapshot and tools (bench/repository.py, issue 23): GitHub and S3 requests per head and per job
   for 10, 100 and 300 files / the same jobs without a snapshot; unpack and grep of a 10,000-file tree / tar xzf
   and git grep (`--large` adds 50,000 files).
7. Time to review (bench/review_time.py, issue 24): webhook to posted review for PRs of 3, 10 and 30 files at a
   realistic model pace, and the levers. Only when named (`make bench BENCH=review_time`): it takes tens of
   minutes.

`python -m prfleet_local.bench [PART ...]` runs only the parts named.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from typing import Any

from prfleet.config import DEFAULT_MODELS


def bench_caching() -> dict[str, Any]:
    from prfleet_local.bench.agents import bench_caching as run

    results = {m: run(model=m) for m in (DEFAULT_MODELS["review"], "claude-sonnet-4-6")}
    return {
        m: {k: r[k] for k in ("ratio", "input_ratio", "meets_target", "target")}
        | {"cached_micros": r["cached"]["cost_micros"], "uncached_micros": r["uncached"]["cost_micros"]}
        for m, r in results.items()
    }


def bench_pr_caching() -> dict[str, Any]:
    from prfleet_local.bench.agents import bench_pr

    r = bench_pr(model=DEFAULT_MODELS["review"])
    return {k: v for k, v in r.items() if k.endswith(("_vs_uncached", "_vs_per_job"))} | {
        arm: r[arm]["cost_micros"] for arm in ("cross_job", "per_job", "uncached")
    }


def bench_ledger(jobs: int = 200, threads: int = 8) -> dict[str, Any]:
    import boto3

    from prfleet.cost.ledger import Ledger
    from prfleet_local.stack.moto_proc import moto_server

    with moto_server() as endpoint:
        ddb = boto3.client(
            "dynamodb",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        for name, keys in (("ledger", [("scope", "HASH"), ("day", "RANGE")]), ("plain", [("id", "HASH")])):
            ddb.create_table(
                TableName=name,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
                KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in keys],
            )
        ledger = Ledger("ledger", daily_limit_micros=10**12, pr_limit_micros=10**12, client=ddb)
        now = time.time()

        def protocol(i: int) -> None:
            r = ledger.reserve(f"pr#bench/repo#{i % 7}", 5000, now=now)
            ledger.settle(r, 4000, now=now)

        def baseline(i: int) -> None:
            ddb.put_item(TableName="plain", Item={"id": {"S": str(i)}, "v": {"N": "1"}})

        def timed(fn: Any, n_threads: int) -> float:
            per = jobs // n_threads
            start = time.perf_counter()
            ts = [
                threading.Thread(target=lambda k=k: [fn(k * per + j) for j in range(per)])
                for k in range(n_threads)
            ]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return (time.perf_counter() - start) / (per * n_threads)

        out = {}
        for n in (1, threads):
            base = statistics.median(timed(baseline, n) for _ in range(3))
            proto = statistics.median(timed(protocol, n) for _ in range(3))
            out[f"threads_{n}"] = {
                "reserve_settle_ms": round(proto * 1000, 3),
                "put_item_ms": round(base * 1000, 3),
                "ratio": round(proto / base, 2),
            }
        return out


def bench_ledger_scale() -> dict[str, Any]:
    from prfleet_local.bench.ledger import bench_ledger_scale as run

    return run()


def bench_cold_starts() -> dict[str, Any]:
    try:
        from prfleet_local.bench.imports import measure_imports
    except ImportError:
        return {"skipped": "bench_imports not available"}
    return measure_imports()


def bench_github() -> dict[str, Any]:
    from prfleet_local.bench.github import bench_github as run

    return run()


def bench_jobcost() -> dict[str, Any]:
    from prfleet_local.bench.jobcost import bench_jobcost as run

    return run()


def bench_repository(*, large: bool = False) -> dict[str, Any]:
    from prfleet_local.bench.repository import bench_repository as run

    return run(large=large)


def bench_review_time() -> dict[str, Any]:
    from prfleet_local.bench.review_time import bench_review_time as run

    return run()


def main(argv: list[str] | None = None) -> int:
    """Every default part, or only the parts named (`make bench BENCH=review_time`); `--large` adds the
    50,000-file tree to `repository`."""
    args = sys.argv[1:] if argv is None else argv
    large = "--large" in args
    parts: dict[str, Any] = {
        "prompt_caching": bench_caching,
        "pr_caching": bench_pr_caching,
        "ledger": bench_ledger,
        "ledger_scale": bench_ledger_scale,
        "cold_starts": bench_cold_starts,
        "github_requests": bench_github,
        "job_cost": bench_jobcost,
        "repository": lambda: bench_repository(large=large),
    }
    # Not in the default run: tens of minutes at a real model's pace (bench/review_time.py).
    extra = {"review_time": bench_review_time}
    named = [a for a in args if not a.startswith("--")]
    unknown = [n for n in named if n not in parts and n not in extra]
    if unknown:
        print(f"bench: no part {unknown[0]!r}; one of {', '.join([*parts, *extra])}", file=sys.stderr)
        return 2
    chosen = {n: {**parts, **extra}[n] for n in named} if named else parts
    results = {"python": sys.version.split()[0], **{name: run() for name, run in chosen.items()}}
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
