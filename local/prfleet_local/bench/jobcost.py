"""The cost of one job besides the model: AWS, GitHub and model requests per job on the happy path, and wall time.

One PR of `files` Python files x the three agents through the whole local stack (real HTTP webhook, moto in its
own process, the pollers at the template's concurrency, the fake GitHub on a real git repository, the offline
model with no latency and no faults). AWS requests are counted where they arrive, at the moto proxy
(prfleet_local.stack.moto_proc), so botocore's retries would count too; they are split into the functions' own
requests (what the target is about), the event source mapping's (ReceiveMessage, DeleteMessageBatch: the
pollers, idle polls included) and the harness's (GetQueueAttributes while waiting).

Targets (issue 16): functions' AWS requests <= 2 per model call + 6 per job; GitHub requests <= 1 per job,
amortised over the PR. Wall time is also given per job as a ratio to one DynamoDB PutItem round trip on the same
moto server in the same process, so the figure does not depend on the machine.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ESM = {"ReceiveMessage", "DeleteMessageBatch"}
HARNESS = {"GetQueueAttributes"}
# The local stack's alarm evaluator (prfleet_local.stack.alarms: SetAlarmState) and its alarm actions (SNS Publish
# to the alert topic), e.g. JobsQueueAgeAlarm while slow model calls keep jobs waiting. The functions never call
# CloudWatch (metrics are EMF log lines) and publish to SNS only when the spend-limit circuit opens, which the
# fault-free model here never makes happen.
ALARMS = {("monitoring", "SetAlarmState"), ("sns", "Publish")}


def _put_item_ms(stack: Any, n: int = 50) -> float:
    ddb = stack.client("dynamodb")
    table = stack.table("DeliveriesTable")
    times = []
    for i in range(n):
        start = time.perf_counter()
        ddb.put_item(TableName=table, Item={"delivery_id": {"S": f"bench-{uuid.uuid4()}-{i}"}})
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def bench_jobcost(files: int = 10, timeout: float = 300.0, model_latency_s: float = 0.0) -> dict[str, Any]:
    """`model_latency_s`: every model call answers after this long (the offline model's "slow" fault), so the
    requests that are bounded per container and per minute rather than per call (the circuit's read, the spend
    status after a settle) show what they cost at a real model's pace; 0 (the default, `make bench`) is the
    zero-latency figure."""
    from prfleet_local.demo.run import sandbox
    from prfleet_local.model.faults import FaultPlan, FaultRule

    faults = (
        FaultPlan(rules=[FaultRule("slow", probability=1.0, delay=model_latency_s)])
        if model_latency_s
        else None
    )
    with (
        tempfile.TemporaryDirectory(prefix="prfleet-jobcost-") as tmp,
        # visibility longer than a job here (AWS: 1800 s); the 3 s default redelivers jobs still running, and
        # each duplicate delivery's reads would be counted against the job
        sandbox(
            Path(tmp),
            sweep_interval=None,
            visibility_timeout=max(60, int(20 * model_latency_s)),
            faults=faults,
        ) as box,
    ):
        base = {"README.md": "# bench\n", "core/__init__.py": '"""Core."""\n'}
        box.repo.commit(base, "Initial", branch="main")
        head_files = {
            f"pkg/mod_{i}.py": f'"""Module {i}."""\n\n\ndef step_{i}(values: list[int]) -> int:\n'
            f'    """Sum times {i}."""\n    return sum(v * {i + 1} for v in values)\n'
            for i in range(files)
        }
        box.repo.commit(head_files, "Add modules", branch="feature/bench")
        number = box.github.open_pr("acme/shop", "main", "feature/bench", "Bench PR", "Job cost benchmark.")
        payload = box.github.webhook_payload("opened", number)
        head = payload["pull_request"]["head"]["sha"]
        put_ms = _put_item_ms(box.stack)
        box.stack.moto.reset_counts()
        gh_before, model_before = len(box.github.requests), len(box.model.requests)
        start = time.perf_counter()
        status, _ = box.deliver("pull_request", payload)
        if status != 202 or not box.wait_for_review(number, head_sha=head, timeout=timeout):
            raise RuntimeError(f"the bench PR was not reviewed (webhook {status})")
        wall = time.perf_counter() - start
        counts = box.stack.moto.counts()
        from prfleet.store import job_runs

        runs = job_runs.runs_of_head("acme/shop", number, head)
        jobs = len(runs)
        gh_requests = Counter(f"{m} {_shape(p)}" for m, p in box.github.requests[gh_before:])
        model_calls = len(box.model.requests) - model_before
    own = {f"{s}.{o}": n for (s, o), n in counts.items() if o not in ESM | HARNESS and (s, o) not in ALARMS}
    esm = {f"{s}.{o}": n for (s, o), n in counts.items() if o in ESM}
    alarms = {f"{s}.{o}": n for (s, o), n in counts.items() if (s, o) in ALARMS}
    own_total = sum(own.values())
    aws_target = 2 * model_calls + 6 * jobs
    gh_total = sum(gh_requests.values())
    return {
        "files": files,
        "model_latency_s": model_latency_s,
        "jobs": jobs,
        "statuses": dict(Counter(r["status"] for r in runs)),
        "model_calls": model_calls,
        "model_calls_per_job": round(model_calls / jobs, 2),
        "aws_requests_by_operation": dict(sorted(own.items())),
        "aws_requests_per_job": round(own_total / jobs, 2),
        "aws_target_per_job": round(aws_target / jobs, 2),
        "aws_meets_target": own_total <= aws_target,
        "esm_requests": dict(sorted(esm.items())),
        "local_alarm_requests": dict(sorted(alarms.items())),
        "github_requests_by_route": dict(sorted(gh_requests.items())),
        "github_requests_per_job": round(gh_total / jobs, 2),
        "github_meets_target": gh_total <= jobs,
        "wall_s": round(wall, 2),
        "jobs_per_s": round(jobs / wall, 2),
        "wall_per_job_vs_put_item": round((wall / jobs * 1000) / put_ms, 1),
        "put_item_ms": round(put_ms, 2),
    }


def _shape(path: str) -> str:
    """A GitHub path with numbers and shas folded, so requests group by route."""
    import re

    path = re.sub(r"/[0-9a-f]{40}", "/{sha}", path)
    path = re.sub(r"/\d+", "/{n}", path)
    return re.sub(r"/contents/.*", "/contents/{path}", path)
