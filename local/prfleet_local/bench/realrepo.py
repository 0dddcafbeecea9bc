"""`python -m prfleet_local.bench.realrepo PATH --base REF`: `prfleet review` of a real checkout, measured.

docs/quality.md reports what the reviewer says about repositories no one here wrote. This runs the same review as
`prfleet review` (the local stack, the offline model unless --model-url) and prints, as JSON, what a person would
otherwise count by hand: the findings per agent; each "No test for `X`" with the test files at the head that
name X (a plain `git grep -w`, independent of the reviewer's own tools, so a wrong claim shows); the findings in
a file other than the job's (broken callers), in the PR's files or outside the diff; per job the model requests
and the tool calls the model asked for (report_findings aside); the GitHub requests by route and the S3
requests. With the offline model the figures measure the pipeline and its tools, not Claude.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prfleet_local.bench.jobcost import _shape
from prfleet_local.cli.review import BASE_BRANCH, HEAD_BRANCH, _clone, resolve_range
from prfleet_local.demo.model_choice import choose_model
from prfleet_local.demo.run import pr_runs, sandbox

NO_TEST = re.compile(r"^No test for `([^`]+)`$")
TEST_PATHSPECS = ("*test*.py", "tests/**", "test/**", "*.test.*", "*.spec.*", "__tests__/**")


def tests_naming(repo: Path, commit: str, symbol: str) -> list[str]:
    """Test files at `commit` that name `symbol` as a whole word (git grep; the reviewer's tools not involved)."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "grep", "-l", "-w", "-F", symbol, commit, "--", *TEST_PATHSPECS],
        capture_output=True,
        text=True,
        check=False,
    )
    return sorted({line.split(":", 1)[1] for line in proc.stdout.splitlines() if ":" in line})


def changed_paths(repo: Path, base: str, head: str) -> set[str]:
    """The PR's files: those changed from the merge base to the head."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "diff", "--name-only", f"{base}...{head}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(proc.stdout.split())


def measure(
    source: Path,
    base: str | None,
    head: str,
    *,
    timeout: float,
    model_url: str | None,
    workdir: Path | None,
    model_log: Path | None = None,
) -> dict[str, Any]:
    """Review base..head of `source` on the local stack and return the figures (see the module docstring)."""
    base_sha, head_sha, what = resolve_range(source, base, head)
    changed = changed_paths(source, base_sha, head_sha)
    model = choose_model(real=False, model_url=model_url)
    name = f"local/{source.name or 'repo'}"
    with sandbox(
        workdir, model=model, repo=_clone(source, workdir, base_sha, head_sha), repo_name=name
    ) as box:
        number = box.github.open_pr(name, BASE_BRANCH, HEAD_BRANCH, "review", f"Review of {what}.")
        payload = box.github.webhook_payload("opened", number)
        box.stack.moto.reset_counts()
        gh_before = len(box.github.requests)
        start = time.perf_counter()
        status, reply = box.deliver("pull_request", payload)
        if status != 202:
            raise RuntimeError(f"the webhook refused the delivery: {status} {reply}")
        if not box.wait_for_review(number, head_sha=head_sha, timeout=timeout):
            raise RuntimeError(f"no review within {timeout:.0f} s")
        wall = time.perf_counter() - start
        runs = pr_runs(box, number, head_sha)
        gh = Counter(f"{m} {_shape(p)}" for m, p in box.github.requests[gh_before:])
        aws = box.stack.moto.counts()
        log = box.model.model_log() if box.model else []
    if (
        model_log is not None
    ):  # every request's tool calls and the evidence behind each finding, to explain one
        model_log.write_text(json.dumps(log, indent=1))
    per_job: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in log:
        job = per_job.setdefault((entry["path"], entry["agent"]), {"model_requests": 0, "tools": Counter()})
        job["model_requests"] += 1
        job["tools"].update(a["name"] for a in entry["asked"])
    jobs, no_test, outside = [], [], []
    for run in runs:
        findings = json.loads(run.get("findings") or "[]")
        stats = per_job.get((run["path"], run["agent"]), {"model_requests": 0, "tools": Counter()})
        jobs.append(
            {
                "path": run["path"],
                "agent": run["agent"],
                "status": run["status"],
                "findings": len(findings),
                "model_requests": stats["model_requests"],
                "tool_calls": dict(sorted(stats["tools"].items())),
            }
        )
        for f in findings:
            m = NO_TEST.match(f["title"])
            if m:
                named = tests_naming(source, head_sha, m.group(1).split(".")[-1])
                no_test.append({"path": f["path"], "symbol": m.group(1), "tests_naming_it": named})
            if f["path"] != run["path"]:
                where = "changed by the PR" if f["path"] in changed else "outside the diff"
                outside.append(
                    {
                        "path": f["path"],
                        "line": f["line"],
                        "title": f["title"],
                        "by": run["path"],
                        "file": where,
                    }
                )
    by_agent = Counter()
    for job in jobs:
        by_agent[job["agent"]] += job["findings"]
    return {
        "repository": str(source),
        "range": f"{base_sha}..{head_sha}",
        "changed_files": sorted(changed),
        "wall_seconds": round(wall, 2),
        "findings_by_agent": dict(sorted(by_agent.items())),
        "no_test_findings": no_test,
        "no_test_but_named_by_a_test": [n for n in no_test if n["tests_naming_it"]],
        "findings_in_other_files": outside,
        "jobs": jobs,
        "github_requests_by_route": dict(sorted(gh.items())),
        "aws_requests_by_operation": {f"{s}.{o}": n for (s, o), n in sorted(aws.items()) if s == "s3"},
        "model": "offline (measures the pipeline and its tools, not Claude)" if not model_url else model_url,
    }


def main(argv: list[str] | None = None) -> int:
    """Print the figures as JSON; 0 when the review completed."""
    parser = argparse.ArgumentParser(prog="python -m prfleet_local.bench.realrepo", description=__doc__)
    parser.add_argument("path", help="a git repository (its working tree is not changed)")
    parser.add_argument("--base", help="base REF (default: the merge base with the default branch)")
    parser.add_argument("--head", default="HEAD", help="head REF (default HEAD)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the review (900)")
    parser.add_argument("--model-url", help="a Messages-API server instead of the offline model")
    parser.add_argument("--workdir", type=Path, help="keep the clone, logs and stack files here")
    parser.add_argument("--model-log", type=Path, help="write the offline model's request log (JSON) here")
    args = parser.parse_args(argv)
    figures = measure(
        Path(args.path).expanduser().resolve(),
        args.base,
        args.head,
        timeout=args.timeout,
        model_url=args.model_url,
        workdir=args.workdir,
        model_log=args.model_log,
    )
    json.dump(figures, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
