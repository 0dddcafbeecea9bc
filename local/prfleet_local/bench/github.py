"""Benchmark: GitHub requests per job and per PR head, counted by the strict fake GitHub, for 10, 100 and 300 files.

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
import uuid
from pathlib import Path
from typing import Any

SIZES = (10, 100, 300)
REPO = "acme/bench"
TOKEN = "bench-token"


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
    from prfleet import aws, config

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
    from prfleet import fanin, github, headfiles, planner, state
    from prfleet.jobs import PrJob

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
    record = state.head_record(REPO, number, pr.head_sha)
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


def bench_github(sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    """Requests per job and per head for each size: new path (warm and cold) against the old one."""
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
        from prfleet import aws, config

        config.settings.cache_clear()
        aws.client.cache_clear()
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(bench_github(), indent=2))
