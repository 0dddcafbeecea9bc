"""Time to review: from the webhook's delivery to the review posted on GitHub, for PRs of 3, 10 and 30 files, with
the offline model at a realistic pace (prfleet_local.model.pace), and what each review cost.

Each review goes the way `prfleet review` sends it (`cli.review.review_range`): a PR opened on the fake GitHub, its
`opened` delivery signed and POSTed to the local webhook, the planner, the agent jobs on JobsQueue, fan-in, the
review posted; the clock runs from the delivery to the review's appearance on the fake GitHub. The stack runs the
template's own settings (AgentMaxConcurrency, PlannerMaxConcurrency, batch sizes, function timeouts, the queues'
visibility timeouts: 1800 s and 360 s, not the local stack's 3 s default, which would hand a running job to a
second poller), except DailyBudgetUsd, raised so that the runs of one bench, which share a budget day, are not
deferred by each other's spend (PrBudgetUsd stays at its default: a PR's own limit is part of what is measured).

A PR changes `files` generated Python modules (half modified, half added; a real bug in about one in three: a
mutable default argument or a bare `except`), each reviewed by the three agents (review on Sonnet, tests and docs
on Haiku). Every run has its own content, so nothing comes from the result cache. Runs of one variant share one
stack (warm, as a fleet in use is), so the first run of each pays the local stack's cold start.

Variants (VARIANTS) are the levers: the template's defaults, a higher AgentMaxConcurrency, the review jobs sent
first, the verify pass. A variant is template parameters, or a bench-only change that models a pipeline change
without making it (`review_first`: the planner's jobs re-ordered before they are sent). A variant whose parameter
the template does not have yet is reported as skipped, with the reason.

The figures measure the pipeline at a modelled pace, not Claude.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prfleet.agents.specs import VERIFY_AGENT
from prfleet.jobs import sqs
from prfleet_local.cli.review import BASE_BRANCH, HEAD_BRANCH, review_range
from prfleet_local.demo.model_choice import ModelChoice
from prfleet_local.demo.run import sandbox
from prfleet_local.model.pace import Pace
from prfleet_local.stack import template as tpl

SIZES = (3, 10, 30)
RUNS = 3
LEVER_SIZE = 10  # the levers are measured on the target's PR size
TARGET_S = 180.0  # a 10-file PR reviewed within 3 minutes at the median (issue 24)
DAILY_BUDGET_USD = (
    "100000"  # the bench's runs share a budget day; PrBudgetUsd stays at the template's default
)
TEMPLATE_VISIBILITY_S = (
    1800  # JobsQueue's (6 x AgentFunction's Timeout); PrQueue's 360 s is below it and kept
)


@dataclass(frozen=True)
class Variant:
    """One way to run the stack: template `parameters`, and `review_first` (bench-only, see the module doc)."""

    name: str
    what: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    review_first: bool = False
    sizes: tuple[int, ...] = ()  # PR sizes it runs at; () = LEVER_SIZE (the default variant: every size)


# The levers, in the order they are run. PrBudgetUsd is one because every model call is reserved at its worst case
# (a review call's max_tokens of output: $0.45) until it settles: a PR's open reservations plus its spend must stay
# under the PR's limit, so more review calls at once, or a big PR near its limit, are re-queued for
# BudgetRetrySeconds. The verify pass (issue 24 item 2) is the last lines: `default` runs with it (Verification on),
# `verify_off` without it, `verify_low` and `verify_haiku` with a lower VerifyEffort or a faster VerifyModel,
# `verify_one_run` with every candidate in one verify run (as before VerifyCandidatesPerRun).
VARIANTS = (
    Variant("default", "the template's defaults", sizes=SIZES),
    Variant("pr_budget_10", "PrBudgetUsd 10 (default 2)", {"PrBudgetUsd": "10"}, sizes=(10, 30)),
    Variant("concurrency_15", "AgentMaxConcurrency 15 (default 5)", {"AgentMaxConcurrency": "15"}),
    Variant(
        "concurrency_15_budget_10",
        "AgentMaxConcurrency 15 and PrBudgetUsd 10",
        {"AgentMaxConcurrency": "15", "PrBudgetUsd": "10"},
    ),
    Variant(
        "review_first", "review jobs sent before tests and docs (bench-only re-order)", review_first=True
    ),
    Variant(
        "review_first_budget_10",
        "review jobs first and PrBudgetUsd 10",
        {"PrBudgetUsd": "10"},
        review_first=True,
    ),
    Variant("verify_off", "the verify pass off", {"Verification": "off"}),
    Variant("verify_low", "the verify run at VerifyEffort low (default medium)", {"VerifyEffort": "low"}),
    Variant(
        "verify_haiku",
        "the verify run on the Haiku tier (VerifyModel claude-haiku-5-5; default: ReviewModel's Sonnet)",
        {"VerifyModel": "claude-haiku-5-5"},
    ),
    Variant(
        "verify_one_run",
        "one verify run per head (VerifyCandidatesPerRun 100; default 10: the candidates split over runs)",
        {"VerifyCandidatesPerRun": "100"},
    ),
)


# ------------------------------------------------------------------------------------------------ the PR


_WORDS = (
    "account batch buffer cache client config cursor event field handler index item ledger loader message "
    "order parser payload queue record request result route schema session source state store task token user"
).split()


def _name(rng: random.Random) -> str:
    return f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}"


def _function(rng: random.Random, bug: str | None) -> str:
    """A documented function of a dozen lines; `bug` plants one the reviewers should report."""
    name, arg = _name(rng), rng.choice(_WORDS)
    default = "[]" if bug == "mutable_default" else "None"
    lines = [
        f"def {name}({arg}: dict, seen: list | None = {default}, *, limit: int = {rng.randint(5, 500)}) -> list:",
        f'    """{arg.capitalize()} to {rng.choice(_WORDS)}s, at most `limit` of them."""',
        "    out = list(seen or [])",
    ]
    for _ in range(rng.randint(3, 8)):
        key = rng.choice(_WORDS)
        lines.append(f"    if {arg}.get('{key}') is not None and len(out) < limit:")
        lines.append(f"        out.append({arg}['{key}'] * {rng.randint(2, 99)})")
    if bug == "bare_except":
        lines += [
            "    try:",
            f"        out.sort(key=lambda v: v['{rng.choice(_WORDS)}'])",
            "    except:",
            "        pass",
        ]
    lines.append("    return out")
    return "\n".join(lines) + "\n"


def _module(rng: random.Random, functions: int, bug: str | None) -> str:
    bugged = rng.randrange(functions) if bug else -1
    head = f'"""The {_name(rng)} module."""\n\nfrom __future__ import annotations\n\n\n'
    return head + "\n\n".join(_function(rng, bug if i == bugged else None) for i in range(functions))


def make_pr(files: int, seed: int) -> tuple[dict[str, str], dict[str, str], list[tuple[str, str]]]:
    """(base files, head files, planted bugs as (path, kind)) of one PR of `files` modules: the first half exist
    in the base and the PR adds functions to them, the rest are new; every third module carries a bug."""
    rng = random.Random(seed)
    base: dict[str, str] = {}
    head: dict[str, str] = {}
    bugs: list[tuple[str, str]] = []
    for i in range(files):
        path = f"svc{seed}/mod_{i}.py"
        bug = ("mutable_default", "bare_except")[i // 3 % 2] if i % 3 == 0 else None
        old = _module(rng, rng.randint(2, 5), None)
        new = _module(rng, rng.randint(3, 7), bug)
        if i < files // 2:
            base[path] = old
            head[path] = old + "\n\n" + new.split("\n\n\n", 1)[1]
        else:
            head[path] = new
        if bug:
            bugs.append((path, bug))
    base[f"svc{seed}/__init__.py"] = '"""Service."""\n'
    return base, head, bugs


# ------------------------------------------------------------------------------------------------ one review


def review_once(box: Any, files: int, seed: int, *, timeout: float) -> dict[str, Any]:
    """One PR of `files` modules reviewed through the stack, as `prfleet review` does it: seconds from the webhook's
    delivery to the posted review, its cost and its jobs' outcomes."""
    base_files, head_files, bugs = make_pr(files, seed)
    main = box.repo.sha(box.repo.default_branch)
    box.repo.checkout(BASE_BRANCH, create_from=main)
    base_sha = box.repo.commit(base_files, f"base of run {seed}")
    box.repo.checkout(HEAD_BRANCH, create_from=base_sha)
    head_sha = box.repo.commit(head_files, f"run {seed}: {files} modules")
    box.repo.checkout(box.repo.default_branch)
    billed_before = len(box.model.bill())
    notes: list[str] = []
    done = review_range(
        box,
        base_sha=base_sha,
        head_sha=head_sha,
        what=f"{files} files",
        subject=f"bench run {seed}",
        timeout=timeout,
        say=notes.append,
    )
    if done is None or done.seconds is None:
        raise RuntimeError(
            f"run {seed} ({files} files) was not reviewed within {timeout:.0f} s: {notes[-3:]}"
        )
    statuses = Counter(str(r.get("status")) for r in done.runs)
    found = {(f["path"], f.get("category")) for f in done.findings()}
    agents = sorted({str(r.get("agent")) for r in done.runs})
    # The modelled model time of the PR's calls (each call's pace at its output tokens): what the jobs' own time
    # is made of besides the pipeline (tools, ledger, state, the local AWS on a shared machine).
    pace = Pace("realistic")
    model_s = sum(pace.seconds(r.model, r.output_tokens) for r in box.model.bill()[billed_before:])
    job_s = sum(_job_seconds(r) for r in done.runs)
    return {
        "files": files,
        "seconds": round(done.seconds, 1),
        "cost_usd": round(done.cost_micros / 1e6, 4),
        "jobs": len(done.runs),
        "statuses": dict(statuses),
        "complete": set(statuses) == {"succeeded"},  # else the review posted says what was not reviewed
        "not_succeeded": [
            {k: r.get(k) for k in ("path", "agent", "status", "error", "reason") if r.get(k)}
            for r in done.runs
            if r.get("status") != "succeeded"
        ],
        "model_calls": sum(int(r.get("iterations") or 0) for r in done.runs),
        # how long one job of each agent ran (its model calls at the pace, tools, ledger), median over the PR
        "job_s_by_agent": {
            a: round(statistics.median(_job_seconds(r) for r in done.runs if r.get("agent") == a), 1)
            for a in agents
        },
        "output_tokens": sum(int(r.get("output_tokens") or 0) for r in done.runs),
        "model_s_per_job": round(model_s / max(1, len(done.runs)), 1),
        "job_s_mean": round(job_s / max(1, len(done.runs)), 1),
        "planted_bugs": len(bugs),
        "planted_bug_files_with_findings": sum(1 for path, _ in bugs if any(p == path for p, _ in found)),
        # jobs re-queued at least once (budget pressure, rate limit, stuck), by agent: time spent waiting
        "requeued": dict(Counter(str(r.get("agent")) for r in done.runs if _attempt(r) > 0)),
        **_verify_phase(done.runs),
    }


def _attempt(run: Mapping[str, Any]) -> int:
    """The attempt the run's job ended on (0: its first delivery did it)."""
    try:
        return int(json.loads(str(run.get("job") or "{}")).get("attempt") or 0)
    except ValueError:
        return 0


def _verify_phase(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The verify pass's share: its runs' candidates and seconds (one per part), and the seconds from the last
    file job's end to the last verify run's end (what the pass adds to the review's time, to the second)."""
    verify = [r for r in runs if r.get("agent") == VERIFY_AGENT]
    if not verify:
        return {}
    files_end = max(
        (int(r.get("updated_at") or 0) for r in runs if r.get("agent") != VERIFY_AGENT), default=0
    )
    return {
        "verify_candidates": [int(r.get("candidates") or 0) for r in verify],
        "verify_s": [round(_job_seconds(r), 1) for r in verify],
        "verify_phase_s": max(int(r.get("updated_at") or 0) for r in verify) - files_end,
    }


def _job_seconds(run: Mapping[str, Any]) -> float:
    return int(run.get("duration_ms") or 0) / 1000


# ------------------------------------------------------------------------------------------------ variants


def template_parameters() -> set[str]:
    return set(tpl.load().get("Parameters", {}))


def template_settings() -> dict[str, Any]:
    """What the default run runs at: the template's defaults that set the pace of a PR (concurrency, batch sizes,
    function timeouts, the verify pass when the template has it)."""
    template = tpl.load()
    params = template.get("Parameters", {})
    out: dict[str, Any] = {
        name: params[name].get("Default")
        for name in ("AgentMaxConcurrency", "PlannerMaxConcurrency", "Verification")
        if name in params
    }
    for logical, res in tpl.resources(template, "AWS::Serverless::Function").items():
        props = res["Properties"]
        for ev in props.get("Events", {}).values():
            if ev["Type"] == "SQS":
                out[f"{logical}.BatchSize"] = ev["Properties"].get("BatchSize", 10)
                out[f"{logical}.Timeout"] = props.get("Timeout")
    return out


@contextlib.contextmanager
def review_jobs_first(on: bool) -> Iterator[None]:
    """While on, the planner's file jobs are sent review first (a stable sort), as a planner change would; the
    planner's default sender is looked up when it is called, so the stack's planner uses this one."""
    if not on:
        yield
        return
    original = sqs.send_file_jobs

    def ordered(jobs: Sequence[Any], **kw: Any) -> None:
        original(sorted(jobs, key=lambda j: j.agent != "review"), **kw)

    sqs.send_file_jobs = ordered
    try:
        yield
    finally:
        sqs.send_file_jobs = original


def run_variant(
    variant: Variant, sizes: Sequence[int], runs: int, *, timeout: float, seed: int = 1
) -> dict[str, Any]:
    """Every size `runs` times on one stack with the variant's settings; per size the runs, median and p90."""
    missing = sorted(set(variant.parameters) - template_parameters())
    if missing:
        return {"what": variant.what, "skipped": f"template.yaml has no parameter {', '.join(missing)} yet"}
    parameters = {"DailyBudgetUsd": DAILY_BUDGET_USD, **variant.parameters}
    out: dict[str, Any] = {"what": variant.what, "parameters": dict(variant.parameters), "sizes": {}}
    with (
        tempfile.TemporaryDirectory(prefix=f"prfleet-review-time-{variant.name}-") as tmp,
        sandbox(
            Path(tmp),
            model=ModelChoice(pace="realistic"),
            parameters=parameters,
            visibility_timeout=TEMPLATE_VISIBILITY_S,
            alarm_interval=None,  # the local CloudWatch's evaluation is not part of the pipeline's time
        ) as box,
        review_jobs_first(variant.review_first),
    ):
        box.repo.commit({"README.md": "# bench\n"}, "initial", branch=box.repo.default_branch)
        for size in sizes:
            results = []
            for k in range(runs):
                results.append(review_once(box, size, seed * 1000 + size * 10 + k, timeout=timeout))
                print(
                    f"  {variant.name} {size} files run {k + 1}: {json.dumps(results[-1])}", file=sys.stderr
                )
            out["sizes"][str(size)] = summarize(results)
    return out


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and p90 of the seconds, median cost, and every run."""
    seconds = [r["seconds"] for r in results]
    costs = [r["cost_usd"] for r in results]
    return {
        "runs": len(results),
        "median_s": round(statistics.median(seconds), 1),
        "p90_s": round(p90(seconds), 1),
        "median_cost_usd": round(statistics.median(costs), 4),
        "complete_runs": sum(1 for r in results if r.get("complete")),
        "each": results,
    }


def p90(values: Sequence[float]) -> float:
    """The 90th percentile, linearly interpolated between the sorted values (inclusive: with few runs it lies
    between the two largest)."""
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def bench_review_time(
    *,
    sizes: Sequence[int] = SIZES,
    runs: int = RUNS,
    variants: Sequence[Variant] = VARIANTS,
    lever_size: int = LEVER_SIZE,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    """Each variant at its sizes (a lever without any: `lever_size`) that are among `sizes`; whether the target
    holds."""
    out: dict[str, Any] = {
        "pace": "realistic",
        "runs_per_size": runs,
        "template_defaults": template_settings(),
        "variants": {},
    }
    for variant in variants:
        at = [n for n in (variant.sizes or (lever_size,)) if n in sizes]
        out["variants"][variant.name] = (
            run_variant(variant, at, runs, timeout=timeout)
            if at
            else {"what": variant.what, "skipped": f"none of its sizes is among {list(sizes)}"}
        )
    default = out["variants"].get("default", {}).get("sizes", {}).get(str(lever_size))
    if default:
        out["target"] = {
            "files": lever_size,
            "median_s_at_most": TARGET_S,
            "median_s": default["median_s"],
            "met": default["median_s"] <= TARGET_S,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """python -m prfleet_local.bench.review_time [--sizes 3,10,30] [--runs 3] [--variants default,...]"""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="PR sizes in files (3,10,30)")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs per size ({RUNS})")
    parser.add_argument(
        "--variants",
        default=",".join(v.name for v in VARIANTS),
        help=f"which of {', '.join(v.name for v in VARIANTS)}",
    )
    parser.add_argument("--lever-size", type=int, default=LEVER_SIZE, help="PR size the levers run at (10)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for one review (1800)")
    args = parser.parse_args(argv)
    known = {v.name: v for v in VARIANTS}
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or args.runs < 1:
        parser.error(f"unknown variant {unknown[0]!r}" if unknown else "--runs must be at least 1")
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes takes numbers separated by commas, got {args.sizes!r}")
    result = bench_review_time(
        sizes=sizes,
        runs=args.runs,
        variants=[known[n] for n in names],
        lever_size=args.lever_size,
        timeout=args.timeout,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
