"""Benchmark: GitHub requests per job and per PR head, counted by the strict fake GitHub, for 10, 100 and 300 files;
and a 300-file PR through the whole local stack (`bench_stack`, the `stack_300` entry), too slow for `make test`.

For each size a PR changes N Python files (half modified, half added), so each file has three jobs (review, tests,
docs). The real code runs against the fake and a moto server: `planner.plan_pr` (PR, config, file pages, tree,
check run, head file list), then per job what the runner does with GitHub before the model (the head file list,
the file's content and diff), then fan-in's posting once for the head. No model call: the offline model's own
reads of other files vary by file and are left out (they are blob reads by sha, shared by the cache).

Baseline, in the same process on the same fake: what each job did before issue 13 (read the PR, list every file
page, read its file through the contents API by path and ref) plus fan-in's own listing. Two figures for the new
path: `warm` (one container runs every job; the process-wide blob cache is shared) and `cold` (caches cleared
before each job, as if each ran in a fresh container: the worst case).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

SIZES = (10, 100, 300)
REPO = "acme/bench"
TOKEN = "bench-token"
PER_PAGE = 100  # the client lists PR files 100 a page (GitHub's maximum)


def _env(endpoint: str) -> None:
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "STATE_TABLE": "state",
            **{
                k: "unused"
                for k in (
                    "DELIVERIES_TABLE",
                    "RESULTS_TABLE",
                    "LEDGER_TABLE",
                    "PR_QUEUE_URL",
                    "JOBS_QUEUE_URL",
                    "ALERT_TOPIC_ARN",
                    "WEBHOOK_SECRET_ID",
                    "GITHUB_SECRET_ID",
                    "ANTHROPIC_SECRET_ID",
                )
            },
        }
    )
    from prfleet import config
    from prfleet.config import aws

    config.settings.cache_clear()
    aws.client.cache_clear()
    aws.client("dynamodb").create_table(
        TableName="state",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in ("pk", "sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )


def _scenario(root: Path, n: int) -> tuple[Any, Any, int]:
    from prfleet_local.github.server import GitHubServer, GitRepo

    repo = GitRepo(root / f"repo{n}")
    repo.commit({f"pkg/m{i:04d}.py": f"VALUE_{i} = {i}\n" for i in range(n // 2)}, "base")
    files: dict[str, str | bytes | None] = {
        f"pkg/m{i:04d}.py": f"VALUE_{i} = {i} + 1\n" for i in range(n // 2)
    }
    files.update({f"pkg/n{i:04d}.py": f"def n{i}():\n    return {i}\n" for i in range(n - n // 2)})
    repo.import_commit(files, "change", branch="feature", parent=repo.sha("main"))
    server = GitHubServer(repo, REPO, tokens=[TOKEN])
    server.start()
    return server, repo, server.open_pr(REPO, "main", "feature", f"{n} files", "")


def _new_path(server: Any, number: int, *, cold: bool) -> dict[str, Any]:
    from prfleet import github
    from prfleet.jobs import PrJob
    from prfleet.pipeline import fanin, planner
    from prfleet.store import headfiles, heads

    github.clear_caches()
    gh = github.GitHub(server.api_url, github.TokenAuth(TOKEN))
    pr = server.prs[number]
    jobs: list[Any] = []
    start = len(server.requests)
    plan = planner.plan_pr(
        PrJob(REPO, number, pr.head_sha, pr.base_sha, None, uuid.uuid4().hex, "opened"), gh, send=jobs.extend
    )
    planned = len(server.requests) - start
    for job in plan.jobs:
        if cold:
            github.clear_caches()
        listed = headfiles.load(job.repo, job.number, job.head_sha)
        source = github.GitHubPrSource(gh, job.repo, job.number, job.head_sha, **listed.source_args())
        source.read_file(job.path)
        source.file_diff(job.path)
    # Fan-in's posting for the head (review, summary comment, check run), as the last job runs it; the runs'
    # own DynamoDB bookkeeping is left out (it makes no GitHub request and is slow on moto for 900 runs).
    record = heads.head_record(REPO, number, pr.head_sha)
    fanin._publish(gh, record, "final")
    total = len(server.requests) - start
    return {
        "jobs": len(jobs),
        "planner_requests": planned,
        "job_and_fanin_requests": total - planned,
        "per_head": total,
        "per_job": round(total / max(len(jobs), 1), 3),
    }


def _old_path(server: Any, number: int, jobs: int, paths: list[str]) -> dict[str, Any]:
    """Before: every job read the PR, listed every file page and read its file by path and ref."""
    from prfleet import github

    github.clear_caches()
    gh = github.GitHub(server.api_url, github.TokenAuth(TOKEN))
    pr = server.prs[number]
    start = len(server.requests)
    per_file = jobs // max(len(paths), 1)
    for path in paths:
        for _agent in range(per_file):
            github.clear_caches()  # before issue 13 nothing was cached across jobs
            gh.pr(REPO, number)
            gh.pr_files(REPO, number, max_files=3000)
            gh.content(REPO, path, pr.head_sha)
    gh.pr_files(REPO, number, max_files=3000)  # fan-in listed the files once more
    total = len(server.requests) - start
    return {"per_head_jobs_only": total, "per_job": round(total / max(jobs, 1), 3)}


# --- the whole local stack: webhook, planner, agents with the offline model, fan-in, the strict fake GitHub ---

STACK_BASE = {f"mod/m{i:03d}.txt": f"value {i}\n" for i in range(100)}  # the base files a PR modifies
STACK_PARAMETERS = {"MaxFileBytes": 4_000_000, "DailyBudgetUsd": 1000, "PrBudgetUsd": 1000}  # 300 reviews


def stack_requests(
    box: Any, *, modified: int, added: int, ignored: int = 0, branch: str, timeout: float
) -> dict[str, Any]:
    """One PR of plain-text files through the whole local stack, every GitHub request it causes counted by route.

    `modified` of the base's `mod/` files change (their jobs read the blob by sha), `added` new files under `new/`
    (their patch is their content: no request), `ignored` new files under `bulk/`, which the base's
    `.prfleet.toml` must ignore (listed by the planner, never a job). Plain text: one agent (review) applies, so
    each reviewed file is one job. `box` is a prfleet_local.demo.run.Sandbox whose main branch has STACK_BASE.
    """
    from collections import Counter

    from prfleet.store import headfiles, job_runs

    repo = box.repo_name
    files: dict[str, str | bytes | None] = {
        f"new/n{i:03d}.txt": f"note {i}\nsecond line\n" for i in range(added)
    }
    files.update({f"mod/m{i:03d}.txt": f"value {i} changed\n" for i in range(modified)})
    files.update({f"bulk/b{i:04d}.txt": f"bulk {i}\n" for i in range(ignored)})
    box.repo.import_commit(files, f"{len(files)} files", branch=branch, parent=box.repo.sha("main"))
    number = box.github.open_pr(repo, "main", branch, f"{len(files)} files", "")
    head = box.github.prs[number].head_sha
    start = len(box.github.requests)
    began = time.monotonic()
    status, reply = box.deliver("pull_request", box.github.webhook_payload("opened", number))
    if status != 202:
        raise RuntimeError(f"the webhook answered {status}: {reply}")
    reviewed = box.wait_for_review(number, head_sha=head, timeout=timeout)
    wall = time.monotonic() - began
    calls = box.github.requests[start:]
    runs = job_runs.runs_of_head(repo, number, head)

    def route(path: str) -> str:
        path = path.replace(f"/repos/{repo}", "")
        return path.split("/git/blobs/")[0] + "/git/blobs" if "/git/blobs/" in path else path

    per_route = Counter(f"{m} {route(p)}" for m, p in calls)
    listed = headfiles.load(repo, number, head)
    by_name = {f["filename"]: f for f in (listed.files if listed else [])}
    blob_reads = Counter(p.rsplit("/", 1)[1] for m, p in calls if "/git/blobs/" in p)
    reviews = [r for r in box.github.reviews if r["number"] == number and r["commit_id"] == head]
    checks = box.github.check_runs_for(head)
    return {
        "files": len(files),
        "jobs": len(runs),
        "reviewed": reviewed,
        "wall_s": round(wall, 1),
        "requests": len(calls),
        "per_job": round(len(calls) / max(len(runs), 1), 3),
        "per_route": dict(sorted(per_route.items())),
        "statuses": dict(Counter(r["status"] for r in runs)),
        "plannings": per_route[f"GET /pulls/{number}"],
        "file_pages": per_route[f"GET /pulls/{number}/files"],
        "trees": per_route[f"GET /git/trees/{head}"],
        "contents_reads": [p for m, p in calls if "/contents/" in p and ".prfleet.toml" not in p],
        "blob_reads_max": max(blob_reads.values(), default=0),
        "blobs_read_not_modified": sorted(
            set(blob_reads) - {by_name[p]["sha"] for p in by_name if p.startswith("mod/")}
        ),
        "listed": len(by_name),
        "reviews": len(reviews),
        "checks": [c.get("conclusion") for c in checks],
    }


def stack_problems(r: dict[str, Any], *, jobs: int) -> list[str]:
    """What is wrong with a stack_requests result: the issue-13 invariants, one line each (empty when all hold)."""
    out = []
    if not r["reviewed"]:
        out.append(f"the PR was not reviewed in time ({r['wall_s']} s)")
    if r["jobs"] != jobs:
        out.append(f"{r['jobs']} jobs, expected {jobs}")
    if not set(r["statuses"]) <= {"succeeded", "partial"}:
        out.append(f"job outcomes {r['statuses']}")
    if r["requests"] > r["jobs"]:
        out.append(
            f"{r['requests']} GitHub requests for {r['jobs']} jobs (more than one per job): {r['per_route']}"
        )
    pages = -(-r["listed"] // PER_PAGE)
    # The planner lists the head once per planning (SQS may deliver the PR job twice): one PR read, the file
    # pages and one tree; no job lists again or reads the PR.
    if (
        not 1 <= r["plannings"] <= 2
        or r["file_pages"] != pages * r["plannings"]
        or r["trees"] != r["plannings"]
    ):
        out.append(
            f"{r['plannings']} PR reads, {r['file_pages']} file pages, {r['trees']} trees: the head is listed "
            f"more than once per planning ({pages} pages each)"
        )
    if r["contents_reads"]:
        out.append(f"contents read by path and ref: {r['contents_reads'][:3]}")
    if r["blobs_read_not_modified"] or r["blob_reads_max"] > 1:
        out.append(
            f"blob reads beyond one per modified file: max {r['blob_reads_max']}, others "
            f"{r['blobs_read_not_modified'][:3]}"
        )
    if r["reviews"] != 1 or r["checks"] != ["success"]:
        out.append(f"{r['reviews']} reviews and check runs {r['checks']}: expected one review, one success")
    return out


def bench_stack(files: int = 300, timeout: float = 1800.0) -> dict[str, Any]:
    """`files` plain-text files (a third modified, the rest added), one job each, through the whole local stack.

    Too slow for `make test` at 300 on two shared cores (about 9 minutes: 900 model calls, each with its ledger
    transactions, on one moto server), so `make bench` runs it; tests/e2e/test_github_scale.py runs the same count
    with most files ignored by `.prfleet.toml` (300 listed, 30 jobs). Raises if an invariant fails.
    """
    from prfleet_local.demo.run import sandbox

    with (
        tempfile.TemporaryDirectory(prefix="bench-github-stack-") as tmp,
        sandbox(Path(tmp), parameters=STACK_PARAMETERS, sweep_interval=None, visibility_timeout=60) as box,
    ):
        box.repo.commit(STACK_BASE, "Base", branch="main")
        modified = min(files // 3, len(STACK_BASE))
        result = stack_requests(
            box, modified=modified, added=files - modified, branch="many", timeout=timeout
        )
    problems = stack_problems(result, jobs=files)
    if problems:
        raise RuntimeError("whole-stack GitHub request count: " + "; ".join(problems))
    return {k: v for k, v in result.items() if k not in ("contents_reads", "blobs_read_not_modified")}


def bench_github(sizes: tuple[int, ...] = SIZES, *, stack: bool = True) -> dict[str, Any]:
    """Requests per job and per head for each size: new path (warm and cold) against the old one; with `stack`,
    also the 300-file PR through the whole local stack (bench_stack)."""
    from prfleet_local.stack.moto_proc import moto_server

    out: dict[str, Any] = {}
    saved = dict(os.environ)
    try:
        with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="bench-github-") as tmp:
            _env(endpoint)
            for n in sizes:
                row: dict[str, Any] = {}
                for mode in ("warm", "cold"):
                    server, repo, number = _scenario(Path(tmp) / mode, n)
                    try:
                        row[mode] = _new_path(server, number, cold=mode == "cold")
                        if mode == "warm":
                            paths = [f["filename"] for f in server.files_of(server.prs[number])]
                            row["before"] = _old_path(server, number, row["warm"]["jobs"], paths)
                    finally:
                        server.stop()
                row["ratio_warm"] = round(row["warm"]["per_job"] / row["before"]["per_job"], 4)
                row["ratio_cold"] = round(row["cold"]["per_job"] / row["before"]["per_job"], 4)
                out[f"files_{n}"] = row
    finally:
        os.environ.clear()
        os.environ.update(saved)
        from prfleet import config
        from prfleet.config import aws

        config.settings.cache_clear()
        aws.client.cache_clear()
    if stack:
        out["stack_300"] = bench_stack(300)  # the whole pipeline with the model, every request counted
    return out


if __name__ == "__main__":
    import json
    import sys

    # `python -m prfleet_local.bench.github [--no-stack]`: --no-stack leaves out the ~9-minute whole-stack run.
    print(json.dumps(bench_github(stack="--no-stack" not in sys.argv[1:]), indent=2))
