"""Benchmark for issue 23, the repository snapshot and the tools over it (`make bench`, the `repository` entry).

1. Requests (`bench_requests`): GitHub and S3 requests per head and per job for PRs of 10, 100 and 300 changed
   Python files, through the real code paths on the strict fake GitHub and a moto server with a snapshot bucket:
   `planner.plan_pr` (which stores the head's snapshot), then per job what the runner and the agent loop do before
   and around the model (the head file list, `runner.job_snapshot`, the file and its diff, `where_to_look`), plus a
   typical set of tool calls (grep for a name, glob, read an unchanged file), and fan-in's posting once per head.
   Baseline in the same process on the same fake: the same jobs with no SnapshotBucket (the tools fall back to
   reading through GitHub). `warm`: one container runs every job; `cold`: caches and unpacked snapshots dropped
   before each job (each job in a fresh container, the worst case). GitHub API requests (what the rate limit and
   the issue's target count) are given apart from codeload downloads (the archive link, not the REST API). S3
   requests are counted per HTTP request (botocore's `before-send`, so retries would count).
2. Tree (`bench_tree`): a generated Python repository of 10,000 (and with `--large` 50,000) files, packed as
   GitHub packs a tarball (`git archive`-like: gzip, one top-level folder). Time to unpack it with
   `archive.safe_extract` / `tar xzf` on the same archive, and to grep it with `search.grep` over a
   `DirectoryView` / `git grep --no-index` on the same tree (default threads, and one thread), a few patterns and
   modes; medians of `repeat` runs, all in the same process. Every grep's count is checked against git grep's.
   Peak memory of one grep and of the view's index (tracemalloc, in separate untimed runs: tracing slows Python).

No timed assertion anywhere: tests/unit/test_bench_repository.py runs both at a tiny scale for their shape.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prfleet import config, github
from prfleet.agents.tools import PrTools
from prfleet.config import aws
from prfleet.jobs import PrJob
from prfleet.pipeline import fanin, planner, runner
from prfleet.repository import search, snapshot
from prfleet.repository.archive import safe_extract
from prfleet.repository.hints import where_to_look
from prfleet.repository.view import DirectoryView
from prfleet.store import headfiles, heads
from prfleet_local.bench.github import REPO, TOKEN, _env
from prfleet_local.github.server import GitHubServer, GitRepo
from prfleet_local.stack.moto_proc import moto_server

SIZES = (10, 100, 300)
TREE_SIZES = (10_000,)
LARGE_TREE = 50_000  # behind --large: generating, packing and unpacking it takes minutes on two shared cores
SEED = 23
# GitHub's primary rate limit of an app installation (at least 5,000 requests an hour):
# https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#primary-rate-limit-for-github-app-installations
HOURLY_LIMIT = 5_000
COLD_SAMPLE = 100  # cold jobs run per head at most (see _head)
BUCKET = "bench-snapshots"
UNCHANGED = 20  # unchanged modules of the base the tools may read (a PR rarely changes a whole repository)

# grep patterns: (name, pattern, ignore_case, output_mode, the same search with git grep's options)
PATTERNS: tuple[tuple[str, str, bool, str, list[str]], ...] = (
    ("literal", "max_retries", False, "files_with_matches", ["-l", "-F", "max_retries"]),
    ("call", r"\bresolve_config\(", False, "files_with_matches", ["-l", "-P", r"\bresolve_config\("]),
    ("call_content", r"\bresolve_config\(", False, "content", ["-n", "-P", r"\bresolve_config\("]),
    ("word_i", r"\bdeprecated\b", True, "files_with_matches", ["-l", "-i", "-P", r"\bdeprecated\b"]),
    ("word_i_count", r"\bdeprecated\b", True, "count", ["-c", "-i", "-P", r"\bdeprecated\b"]),
)


# ----------------------------------------------------------------------------------------------- 1. requests


def _pr(root: Path, n: int, arm: str) -> tuple[Any, int]:
    """A repository with UNCHANGED modules and a `pkg/util.py` every changed file calls, and a PR changing `n`
    Python files (half modified, half added), on the strict fake GitHub. `arm` goes into the README so each arm
    has heads of its own (the state table and the bucket are shared by the arms)."""
    repo = GitRepo(root / f"repo{n}")
    base: dict[str, str | bytes | None] = {
        "README.md": f"# bench {arm}\n",
        "pkg/__init__.py": "",
        "pkg/util.py": "def resolve_config(name: str) -> str:\n    return name.upper()\n",
    }
    base.update({f"pkg/keep{i:02d}.py": f"KEEP_{i} = {i}\n" for i in range(UNCHANGED)})
    base.update({f"pkg/m{i:04d}.py": f"VALUE_{i} = {i}\n" for i in range(n // 2)})
    repo.commit(base, "base")
    call = "from pkg.util import resolve_config\n\n"
    files: dict[str, str | bytes | None] = {
        f"pkg/m{i:04d}.py": f"{call}VALUE_{i} = resolve_config('{i}')\n" for i in range(n // 2)
    }
    files.update(
        {
            f"pkg/n{i:04d}.py": f"{call}def n{i}():\n    return resolve_config('{i}')\n"
            for i in range(n - n // 2)
        }
    )
    repo.import_commit(files, "change", branch="feature", parent=repo.sha("main"))
    server = GitHubServer(repo, REPO, tokens=[TOKEN])
    # The fake enforces an installation's 5,000 requests an hour; the baseline without a snapshot goes past it at
    # 100 files (its grep reads every changed file through GitHub in each job): lifted here so both arms run to
    # the end, and `over_hourly_limit` says which head would have been rate-limited.
    server.rate_limit_total = 10**9
    server.start()
    return server, server.open_pr(REPO, "main", "feature", f"{n} files", "")


class S3Counter:
    """S3 HTTP requests by operation, from botocore's `before-send` event (one per attempt, retries included)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, event_name: str = "", **_: Any) -> None:
        self.counts[event_name.rsplit(".", 1)[-1]] += 1

    def total(self) -> int:
        return sum(self.counts.values())


def _job(gh: Any, job: Any, *, cold: bool) -> None:
    """One agent job's GitHub and S3 reads: the runner's (head list, snapshot) and the loop's before the model
    (file, diff, hints), then the tool calls a review typically makes (agents.tools.PrTools, as the model calls
    them): grep for the helper the file calls, glob the package, read the helper (unchanged by the PR)."""
    if cold:
        github.clear_caches()
        snapshot.forget_snapshots()
    listed = headfiles.load(job.repo, job.number, job.head_sha)
    source = github.GitHubPrSource(gh, job.repo, job.number, job.head_sha, **listed.source_args())
    snap = runner.job_snapshot(job, lambda *a, **k: None)
    tools = PrTools(source, snapshot=snap)
    text = tools.view.read(job.path)  # as the loop reads it: through the tools' view (the snapshot, if any)
    if text is None:
        raise RuntimeError(f"{job.path} is missing at the head")
    diff = source.file_diff(job.path)
    where_to_look(tools.view, job.path, text, diff)
    for name, args in (
        ("grep", {"pattern": r"\bresolve_config\(", "output_mode": "files_with_matches"}),
        ("glob", {"pattern": "pkg/*.py"}),
        ("read_file", {"path": "pkg/util.py"}),
    ):
        result = tools.call(name, args)
        if result.is_error:
            raise RuntimeError(f"{name} failed in the bench: {result.content}")


def _head(server: Any, number: int, *, cold: bool, counter: S3Counter) -> dict[str, Any]:
    """Plan the head, run its jobs, publish once; requests counted per stage. Cold, at most COLD_SAMPLE jobs run
    (every k-th of the plan's list, the same ones in both arms) and the jobs' figures are scaled to all of them:
    a cold job shares nothing with the others, so its requests do not depend on which ran before (the baseline's
    cold jobs at 300 files would otherwise make ~135,000 requests to the fake)."""
    github.clear_caches()
    snapshot.forget_snapshots()
    gh = github.GitHub(server.api_url, github.TokenAuth(TOKEN))
    pr = server.prs[number]
    counter.counts.clear()
    api0, dl0 = len(server.requests), len(server.downloads)
    sent: list[Any] = []
    plan = planner.plan_pr(
        PrJob(REPO, number, pr.head_sha, pr.base_sha, None, uuid.uuid4().hex, "opened"), gh, send=sent.extend
    )
    planned_api, planned_dl = len(server.requests) - api0, len(server.downloads) - dl0
    planned_s3 = dict(counter.counts)
    counter.counts.clear()
    jobs_api0 = len(server.requests)
    step = max(1, -(-len(plan.jobs) // COLD_SAMPLE)) if cold else 1
    ran = plan.jobs[::step]
    for job in ran:
        _job(gh, job, cold=cold)
    scale = len(plan.jobs) / max(len(ran), 1)
    jobs_api = round((len(server.requests) - jobs_api0) * scale)
    jobs_s3 = {op: round(n * scale) for op, n in counter.counts.items()}
    fanin_api0 = len(server.requests)
    record = heads.head_record(REPO, number, pr.head_sha)
    fanin._publish(gh, record, "final")  # as bench/github.py: fan-in's posting, not its DynamoDB bookkeeping
    fanin_api = len(server.requests) - fanin_api0
    total = planned_api + jobs_api + fanin_api
    n_jobs = max(len(plan.jobs), 1)
    return {
        "jobs": len(plan.jobs),
        "jobs_run": len(ran),
        "planner_github": planned_api,
        "planner_downloads": planned_dl,
        "planner_s3": planned_s3,
        "jobs_github": jobs_api,
        "jobs_s3": jobs_s3,
        "fanin_github": fanin_api,
        "github_per_head": total,
        "github_per_job": round(total / n_jobs, 3),
        "s3_per_job": round(sum(jobs_s3.values()) / n_jobs, 3),
        "meets_target": total <= len(plan.jobs),  # issue 23: <= 1 GitHub request per job, amortised
        "over_hourly_limit": total > HOURLY_LIMIT,
    }


def _replan(server: Any, number: int, counter: S3Counter) -> dict[str, Any]:
    """A second planning of the same head (a redelivered PR job): the snapshot is not downloaded again."""
    gh = github.GitHub(server.api_url, github.TokenAuth(TOKEN))
    pr = server.prs[number]
    counter.counts.clear()
    api0, dl0 = len(server.requests), len(server.downloads)
    job = PrJob(REPO, number, pr.head_sha, pr.base_sha, None, uuid.uuid4().hex, "opened")
    planner.store_head_snapshot(gh, job, config.settings())
    return {
        "github": len(server.requests) - api0,
        "downloads": len(server.downloads) - dl0,
        "s3": dict(counter.counts),
    }


def _use_bucket(bucket: str, root: Path) -> None:
    """Point the settings at `bucket` ("" = no SnapshotBucket: the fallback) and `root` for unpacked trees."""
    from prfleet import config

    os.environ["SNAPSHOT_BUCKET"] = bucket
    os.environ["SNAPSHOT_ROOT"] = str(root)
    config.settings.cache_clear()


def bench_requests(sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    """Per size: with the snapshot (warm and cold) and without it (the fallback, warm and cold), per head and per
    job; and what a second planning of the head costs."""
    out: dict[str, Any] = {}
    saved = dict(os.environ)
    counter = S3Counter()
    try:
        with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="bench-repository-") as tmp:
            _env(endpoint)
            s3 = aws.client("s3")
            s3.create_bucket(Bucket=BUCKET)
            s3.meta.events.register("before-send.s3", counter)
            for n in sizes:
                row: dict[str, Any] = {}
                for arm, bucket in (("snapshot", BUCKET), ("no_snapshot", "")):
                    for mode in ("warm", "cold"):
                        _use_bucket(bucket, Path(tmp) / "unpacked")
                        server, number = _pr(Path(tmp) / f"{arm}-{mode}", n, f"{arm}-{mode}")
                        try:
                            row[f"{arm}_{mode}"] = _head(server, number, cold=mode == "cold", counter=counter)
                            if arm == "snapshot" and mode == "warm":
                                row["replan"] = _replan(server, number, counter)
                        finally:
                            server.stop()
                for mode in ("warm", "cold"):
                    before = row[f"no_snapshot_{mode}"]["github_per_job"]
                    row[f"ratio_{mode}"] = round(row[f"snapshot_{mode}"]["github_per_job"] / before, 3)
                out[f"files_{n}"] = row
    finally:
        snapshot.forget_snapshots()
        os.environ.clear()
        os.environ.update(saved)
        config.settings.cache_clear()
        aws.client.cache_clear()
    return out


# ----------------------------------------------------------------------------------------------- 2. tree

_WORDS = (
    "account adapter batch buffer cache client codec config cursor digest event field handler index item job "
    "ledger loader manifest message node order parser payload queue record registry request result route "
    "schema session shard snapshot source state store stream task token tree user value worker"
).split()


def _name(rng: random.Random, parts: int = 2) -> str:
    return "_".join(rng.choice(_WORDS) for _ in range(parts))


def _function(rng: random.Random) -> str:
    """One function of a few to a few dozen lines; some call resolve_config, some say deprecated or use
    max_retries, at rates a real code base might have (each pattern of PATTERNS is in about one file in ten)."""
    name, arg = _name(rng), rng.choice(_WORDS)
    body = [f"def {name}({arg}: dict, *, limit: int = {rng.randint(1, 500)}) -> list:"]
    body.append(f'    """{arg.capitalize()} to {rng.choice(_WORDS)}s, at most `limit` of them."""')
    body.append("    out = []")
    for _ in range(rng.randint(1, 30)):
        roll = rng.random()
        if roll < 0.002:
            body.append(f"    out.append(resolve_config({arg}['{rng.choice(_WORDS)}']))")
        elif roll < 0.004:
            body.append(f"    # {rng.choice(('Deprecated', 'deprecated', 'DEPRECATED'))}: use {_name(rng)}")
        elif roll < 0.006:
            body.append(f"    max_retries = {rng.randint(1, 9)}")
        elif roll < 0.5:
            body.append(f"    if {arg}.get('{rng.choice(_WORDS)}') is not None and len(out) < limit:")
            body.append(f"        out.append({arg}['{rng.choice(_WORDS)}'] * {rng.randint(2, 99)})")
        else:
            body.append(f"    {_name(rng)} = {rng.choice(_WORDS)}_{rng.choice(_WORDS)}(out, limit)")
    body.append("    return out")
    return "\n".join(body) + "\n"


def _module(rng: random.Random) -> str:
    """A module of 1 to ~60 functions (log-normal: most files a few KB, a few tens of KB, as in real repos)."""
    count = max(1, min(60, int(rng.lognormvariate(1.0, 0.9))))
    head = [f'"""The {_name(rng)} module."""', "", "from __future__ import annotations", ""]
    head += [f"from pkg.{_name(rng, 1)} import {_name(rng)}" for _ in range(rng.randint(0, 5))]
    return "\n".join(head) + "\n\n\n" + "\n\n".join(_function(rng) for _ in range(count))


def make_tree(root: Path, files: int, *, seed: int = SEED) -> dict[str, int]:
    """`files` Python files in nested packages (depth 1-4, up to 25 modules a package, an __init__.py each) under
    `root`, deterministic for a seed. Returns files and bytes written."""
    rng = random.Random(seed)
    written = size = 0
    package: list[str] = []
    while written < files:
        depth = rng.randint(1, 4)
        package = package[: rng.randint(0, min(len(package), depth - 1))]
        while len(package) < depth:
            package.append(f"{_name(rng, 1)}{rng.randint(0, 99)}")
        folder = root.joinpath(*package)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(min(rng.randint(1, 25), files - written)):
            path = folder / ("__init__.py" if i == 0 else f"{_name(rng)}_{i}.py")
            text = '"""Package."""\n' if i == 0 else _module(rng)
            if path.exists():  # the same package drawn twice: keep its files, add new ones
                path = folder / f"{_name(rng)}_{written}.py"
            path.write_text(text)
            written += 1
            size += len(text)
    return {"files": written, "bytes": size}


def pack(tree: Path, archive: Path, top: str) -> int:
    """The tree as GitHub's tarball (gzip, everything under one top-level folder `top`); returns its size."""
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        tar.add(tree, arcname=top)
    return archive.stat().st_size


def _median_time(fn: Callable[[], Any], repeat: int, before: Callable[[], Any] | None = None) -> float:
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def _git_grep(tree: Path, args: list[str], *, threads: int | None = None) -> str:
    """git grep --no-index over the tree (no repository needed); its output (empty when nothing matched)."""
    opts = ["--threads", str(threads)] if threads else []
    done = subprocess.run(
        ["git", "grep", "--no-index", *opts, *args],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode not in (0, 1):  # 1 = no match
        raise RuntimeError(f"git grep {args} failed: {done.stderr.strip()[:300]}")
    return done.stdout


def _git_count(mode: str, output: str) -> int:
    """What git grep found, in the unit search.grep counts for `mode`: files for -l, matching lines otherwise."""
    lines = output.splitlines()
    if mode == "count":
        return sum(int(line.rsplit(":", 1)[1]) for line in lines)
    return len(lines)


def _unpack(archive: Path, work: Path, files: int, repeat: int) -> dict[str, Any]:
    """safe_extract / tar xzf of the same archive into a fresh folder each time (deleted between runs, untimed)."""
    dest = work / "out"

    def clear() -> None:
        shutil.rmtree(dest, ignore_errors=True)
        gc.collect()

    def ours() -> None:
        with archive.open("rb") as f:
            safe_extract(f, dest, max_bytes=4 * 1024**3, max_entries=files * 2 + 10_000)

    def tar() -> None:
        dest.mkdir()
        subprocess.run(
            ["tar", "xzf", str(archive), "-C", str(dest), "--strip-components=1"], check=True, timeout=600
        )

    ours_s = _median_time(ours, repeat, clear)
    tar_s = _median_time(tar, repeat, clear)
    clear()
    return {
        "safe_extract_s": round(ours_s, 3),
        "tar_xzf_s": round(tar_s, 3),
        "ratio": round(ours_s / tar_s, 2),
    }


def _grep(tree: Path, repeat: int) -> dict[str, Any]:
    """Each pattern: search.grep over a DirectoryView already walked (as the tools' view is after the first
    call) / git grep --no-index on the same tree, page cache warm for both (one untimed run each first)."""
    view = DirectoryView(tree)
    start = time.perf_counter()
    view.searchable()
    walk_s = time.perf_counter() - start
    gc.collect()
    tracemalloc.start()
    DirectoryView(tree).searchable()  # a second walk, traced (untimed): what the view's index holds
    index_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out: dict[str, Any] = {
        "view_walk_s": round(walk_s, 3),
        "view_index_peak_mib": round(index_peak / 2**20, 1),
    }
    for name, pattern, icase, mode, git_args in PATTERNS:

        def ours(pattern: str = pattern, icase: bool = icase, mode: str = mode) -> Any:
            return search.grep(view, pattern, ignore_case=icase, output_mode=mode)

        found = ours()
        expected = _git_count(mode, _git_grep(tree, git_args))
        if found.matches != expected:  # a timing of a wrong search is no figure
            raise RuntimeError(f"grep {pattern!r} ({mode}) found {found.matches}, git grep {expected}")
        ours_s = _median_time(ours, repeat)
        git_s = _median_time(lambda a=git_args: _git_grep(tree, a), repeat)
        git1_s = _median_time(lambda a=git_args: _git_grep(tree, a, threads=1), repeat)
        gc.collect()
        tracemalloc.start()
        ours()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out[name] = {
            "pattern": pattern,
            "mode": mode,
            "ignore_case": icase,
            "files_matched": found.files,
            "matches": found.matches,
            "git_grep_matches": expected,  # the same unit: files (files_with_matches) or lines
            "stopped": found.truncated if found.truncated and "stopped" in found.truncated else None,
            "grep_s": round(ours_s, 3),
            "git_grep_s": round(git_s, 3),
            "git_grep_1_thread_s": round(git1_s, 3),
            "ratio": round(ours_s / git_s, 1),
            "ratio_1_thread": round(ours_s / git1_s, 1),
            "peak_mib": round(peak / 2**20, 1),
        }
    return out


def bench_tree(sizes: tuple[int, ...] = TREE_SIZES, *, repeat: int = 3) -> dict[str, Any]:
    """Unpack and grep times of generated trees of each size, as ratios to tar xzf and git grep."""
    out: dict[str, Any] = {}
    for files in sizes:
        with _scratch("bench-tree-") as work:
            tree = work / "tree"
            made = make_tree(tree, files)
            archive = work / "head.tar.gz"
            archive_bytes = pack(tree, archive, f"acme-bench-{'0' * 7}")
            row: dict[str, Any] = made | {"archive_bytes": archive_bytes}
            row["unpack"] = _unpack(archive, work, files, repeat)
            row["grep"] = _grep(tree, repeat)
            out[f"files_{files}"] = row
    return out


def bench_repository(*, large: bool = False) -> dict[str, Any]:
    """Both parts at `make bench` scale; `large` adds the 50,000-file tree."""
    sizes = (*TREE_SIZES, LARGE_TREE) if large else TREE_SIZES
    return {"requests": bench_requests(), "tree": bench_tree(sizes)}


if __name__ == "__main__":
    import json
    import sys

    # `python -m prfleet_local.bench.repository [--large]`: --large adds the 50,000-file tree (minutes).
    print(json.dumps(bench_repository(large="--large" in sys.argv[1:]), indent=2))
