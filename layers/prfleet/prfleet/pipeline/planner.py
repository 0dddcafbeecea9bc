"""Planning: turn one PR job into one file job per (changed file, agent), and say why every other file is skipped."""

from __future__ import annotations

import posixpath
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from prfleet import agents
from prfleet.config import aws, settings
from prfleet.config.repo_config import RepoConfigError, parse_repo_config, path_matches
from prfleet.github import GitHubError, GitHubRateLimited
from prfleet.github.files import SYMLINK_MODE
from prfleet.jobs import FileJob, PrJob, sqs
from prfleet.pipeline import fanin, reactions, render
from prfleet.repository import snapshot
from prfleet.repository.instructions import Instruction, dump_instructions, read_instructions
from prfleet.store import headfiles, heads, job_runs

# Files no agent should spend tokens on, whatever the repository says.
DEFAULT_IGNORES = (
    "*.lock",
    "package-lock.json",
    "pnpm-lock.yaml",
    "poetry.lock",
    "*.min.js",
    "*.min.css",
    "*.map",
    "vendor/*",
    "node_modules/*",
    "dist/*",
    "*.pb.go",
    "*_pb2.py",
)
BINARY_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .gif .webp .ico .pdf .zip .gz .tgz .bz2 .xz .7z .jar .war .whl .so .dll .dylib .exe .bin "
    ".woff .woff2 .ttf .otf .eot .mp3 .mp4 .mov .avi .wav .ogg .class .pyc .o .a .sqlite .db .parquet".split()
)
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
RERUN_ACTIONS = frozenset({"comment", "rerequested"})  # `/prfleet review`; Re-run on the check run or suite


@dataclass(frozen=True)
class Skip:
    path: str
    reason: str


class AgentLike(Protocol):
    name: str

    def applies(self, path: str) -> bool: ...


def plan_files(
    job: PrJob,
    files: Iterable[Mapping[str, Any]],
    agents: Mapping[str, AgentLike],
    *,
    ignore: Iterable[str] = (),
    sizes: Mapping[str, int] | None = None,
    symlinks: Iterable[str] = (),
    max_file_bytes: int,
) -> tuple[list[FileJob], list[Skip]]:
    """Pure core of the planner: GitHub's PR file entries in, file jobs and reasoned skips out.

    A file whose diff GitHub left out as too large (changed lines, no `patch`) is still reviewed when it is within
    `max_file_bytes`: from its content (read by blob sha), with its findings in the review body.
    """
    ignore = tuple(DEFAULT_IGNORES) + tuple(ignore)
    sizes = sizes or {}
    links = set(symlinks)
    jobs: list[FileJob] = []
    skips: list[Skip] = []
    for entry in files:
        path = str(entry["filename"])
        status = entry.get("status")
        ext = posixpath.splitext(path)[1].lower()
        if status == "removed":
            skips.append(Skip(path, "removed"))
        elif path in links:
            skips.append(Skip(path, "symlink"))
        elif path_matches(path, ignore):
            skips.append(Skip(path, "ignored by pattern"))
        elif ext in BINARY_EXTENSIONS:
            skips.append(Skip(path, "binary"))
        elif sizes.get(path, 0) > max_file_bytes:
            skips.append(Skip(path, f"oversized ({sizes[path]} bytes > {max_file_bytes})"))
        elif "patch" not in entry and not entry.get("changes"):
            skips.append(Skip(path, missing_patch_reason(entry, sizes.get(path))))
        else:
            wanted = [a for a in agents.values() if a.applies(path)]
            if not wanted:
                skips.append(Skip(path, "no agent applies to this file type"))
            for agent in wanted:
                jobs.append(
                    FileJob(
                        repo=job.repo,
                        number=job.number,
                        head_sha=job.head_sha,
                        base_sha=job.base_sha,
                        path=path,
                        blob_sha=str(entry.get("sha") or ""),
                        agent=agent.name,
                        installation_id=job.installation_id,
                        delivery_id=job.delivery_id,
                    )
                )
    return jobs, skips


def missing_patch_reason(entry: Mapping[str, Any], size: int | None) -> str:
    """Why GitHub listed a file without a `patch`, as far as the listing and the tree tell.

    GitHub leaves `patch` out for binary files, for diffs too large to show, and when there is no textual change
    (a pure rename, a mode change, an empty file): https://docs.github.com/en/rest/pulls/pulls#list-pull-requests-files
    """
    changes = int(entry.get("changes") or 0)
    status = entry.get("status")
    if changes:
        return f"diff too large for GitHub to show ({changes} changed lines)"
    if status == "renamed":
        return f"renamed from {entry.get('previous_filename')} without changes"
    if size == 0:
        return "empty file"
    if status == "changed":
        return "file mode or type changed, content unchanged"
    return "binary (GitHub shows no textual diff)"


def tree_info(
    gh: Any, repo: str, head: str, paths: Iterable[str]
) -> tuple[dict[str, Any], set[str], Skip | None]:
    """Tree entries (mode, size) of the changed paths and the head's symlinks.

    GitHub cuts a recursive tree at 100,000 entries or 7 MB and says `truncated: true`
    (https://docs.github.com/en/rest/git/trees#get-a-tree): then the directories on the changed paths are read one
    non-recursive tree at a time, and the returned note says so (symlinks elsewhere are caught when read).
    """
    obj = gh.tree_obj(repo, head)
    entries = list(obj.get("tree") or [])
    if not obj.get("truncated"):
        return (
            {e["path"]: e for e in entries},
            {e["path"] for e in entries if e.get("mode") == SYMLINK_MODE},
            None,
        )
    wanted: set[str] = set()
    for path in paths:
        parts = path.split("/")[:-1]
        wanted.update("/".join(parts[:i]) for i in range(len(parts) + 1))
    by_path: dict[str, Any] = {}
    shas = {"": str(obj.get("sha") or head)}  # the root tree's own sha, as the truncated answer gives it
    reads = 0
    for directory in sorted(wanted, key=lambda d: (d.count("/") if d else -1, d)):
        sha = shas.get(directory)
        if sha is None:  # not a directory at the head (only removed files were under it)
            continue
        reads += 1
        for e in gh.tree_obj(repo, sha, recursive=False).get("tree") or []:
            full = f"{directory}/{e['path']}" if directory else e["path"]
            by_path[full] = {**e, "path": full}
            if e.get("type") == "tree" and full in wanted:
                shas[full] = e["sha"]
    links = {p for p, e in by_path.items() if e.get("mode") == SYMLINK_MODE}
    note = Skip(
        "(repository tree)",
        f"GitHub truncated the recursive tree ({len(entries)} entries listed); modes and sizes of the changed "
        f"files were read from {reads} directory tree(s), symlinks elsewhere are refused when read",
    )
    return by_path, links, note


@dataclass
class Plan:
    job: PrJob
    jobs: list[FileJob]
    skips: list[Skip]
    status: str  # planned / superseded / ignored
    reason: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "jobs": len(self.jobs),
            "skipped": [asdict(s) for s in self.skips],
        }


@dataclass(frozen=True)
class PrHead:
    """What GitHub says about a PR at its head, read once per head: the planning reads nothing else."""

    job: PrJob  # the PR job at the PR's current head and base
    title: str
    body: str
    config_text: str | None  # the base branch's .prfleet.toml, if any
    files: list[dict[str, Any]]  # GitHub's PR file entries, at most max_files
    more: int  # changed files over max_files, not listed
    tree: dict[str, Any]  # path -> tree entry (mode, size) of the changed paths
    symlinks: set[str]
    tree_note: Skip | None  # set when GitHub truncated the recursive tree
    instructions: list[Instruction] = field(default_factory=list)  # the BASE commit's own review instructions


@dataclass(frozen=True)
class HeadPlan:
    """The pure plan of one head: the file jobs, every skip with its reason, the repository config applied."""

    jobs: list[FileJob]
    skips: list[Skip]
    config_text: str | None  # None when there is none or it did not parse


def plan_pr(job: PrJob, gh: Any, *, now: float | None = None, send: Any = None) -> Plan:
    """The planner's whole step for one PR job: read the PR from GitHub, plan it (`plan_head`), write the plan.

    `send` enqueues the file jobs (default: JobsQueue). A redelivered PR job for a head already planned reuses
    that head's check run and record and enqueues the same jobs again (they are idempotent); `/prfleet review`
    from a writer, or Re-run on the check run or check suite, re-plans the current head from scratch: fresh
    check run, fresh fan-in, runs forgotten so every job runs again (unchanged files come from the result cache
    at no cost, failed ones are retried).

    GitHub is read once per head: the PR, its config, its file pages, its tree and its archive (the snapshot the
    agents unpack, stored in S3). What the jobs need of them is stored with prfleet.headfiles, so a job makes no
    listing request of its own.
    """
    now = time.time() if now is None else now
    cfg = settings()
    rerun = job.action in RERUN_ACTIONS
    if rerun:
        permission = gh.collaborator_permission(job.repo, job.requested_by or "")
        if permission not in WRITE_PERMISSIONS:
            return Plan(job, [], [], "ignored", f"{job.requested_by} has {permission!r} access, not write")
    pr = gh.pr(job.repo, job.number)
    refused = refusal(job, pr, rerun=rerun)
    if refused is not None:
        return refused
    job = replace(job, head_sha=pr["head"]["sha"], base_sha=pr["base"]["sha"])  # the PR as it is now
    # The PR's head is recorded before the reads: the jobs of older heads stop from now on.
    heads.set_head(job.repo, job.number, job.head_sha, now=now)
    again = not rerun and heads.head_record(job.repo, job.number, job.head_sha) is not None
    head = read_head(gh, job, pr, max_files=cfg.max_files)
    store_head_snapshot(gh, job, cfg)
    planned = plan_head(head, cfg)
    write_plan(gh, head, planned, again=again, rerun=rerun, now=now, send=send or sqs.send_file_jobs)
    if not again:  # a new head: what the team thought of the findings so far (never fails the planning)
        reactions.after_new_head(gh, job, now=now)
    if again:
        return Plan(job, planned.jobs, planned.skips, "planned", "head already planned; jobs re-sent")
    how = "re-run on the check" if job.action == "rerequested" else "re-run requested"
    return Plan(job, planned.jobs, planned.skips, "planned", f"{how} by {job.requested_by}" if rerun else "")


def refusal(job: PrJob, pr: Mapping[str, Any], *, rerun: bool) -> Plan | None:
    """Why the PR is not planned at all (the delivery is for an older head, the PR is closed), or None."""
    head = pr["head"]["sha"]
    if not rerun and job.head_sha != head:
        return Plan(
            job,
            [],
            [],
            "superseded",
            f"PR head is now {head[:12]}, this delivery was for {job.head_sha[:12]}",
        )
    if pr.get("state") == "closed":
        return Plan(job, [], [], "ignored", "pull request is closed")
    return None


def read_head(gh: Any, job: PrJob, pr: Mapping[str, Any], *, max_files: int) -> PrHead:
    """GitHub's reads for one head, in this order: the base's .prfleet.toml, the file pages, the tree, the base's
    review instructions (REVIEW.md and the like: 1 request when there are none, cached per base commit)."""
    config_raw = gh.file_at(job.repo, ".prfleet.toml", job.base_sha)
    changed = pr.get("changed_files")
    files, more = gh.pr_files(
        job.repo, job.number, max_files=max_files, changed_files=int(changed) if changed else None
    )
    tree, links, tree_note = tree_info(gh, job.repo, job.head_sha, [str(f["filename"]) for f in files])
    return PrHead(
        job=job,
        title=str(pr.get("title") or ""),
        body=str(pr.get("body") or ""),
        config_text=config_raw.decode("utf-8", "replace") if config_raw else None,
        files=list(files),
        more=more,
        tree=tree,
        symlinks=links,
        tree_note=tree_note,
        instructions=read_instructions(gh, job.repo, job.base_sha),
    )


def store_head_snapshot(gh: Any, job: PrJob, cfg: Any) -> snapshot.Manifest | None:
    """The head's snapshot for the agents (prfleet.repository.snapshot): one GitHub request the first time a
    head is planned, none after (its manifest is in S3); None when the deployment has no SnapshotBucket."""
    if not cfg.snapshot_bucket:
        return None
    return snapshot.store_snapshot(
        gh, aws.client("s3"), cfg.snapshot_bucket, job.repo, job.head_sha, max_bytes=cfg.max_repo_bytes
    )


def plan_head(head: PrHead, cfg: Any) -> HeadPlan:
    """The pure plan of one head: which agents review which files (`plan_files`) under the repository's config,
    and a reason for everything not reviewed. `cfg` is the Settings (agents, models, max_files, max_file_bytes)."""
    config_text = head.config_text
    notes = []
    try:
        repo_config = parse_repo_config(config_text) if config_text else None
    except RepoConfigError as exc:  # a broken config must not block reviews: defaults, and say so
        repo_config, config_text = None, None
        notes.append(Skip(".prfleet.toml", f"not applied: {exc}"))
    if head.tree_note is not None:
        notes.append(head.tree_note)
    jobs, skips = plan_files(
        head.job,
        head.files,
        agents.agent_specs(cfg, repo_config),
        ignore=getattr(repo_config, "ignore", ()) or (),
        sizes={p: int(e.get("size") or 0) for p, e in head.tree.items() if e.get("type") == "blob"},
        symlinks=head.symlinks,
        max_file_bytes=cfg.max_file_bytes,
    )
    skips.extend(notes)
    if head.more:
        listed = len(head.files) + head.more
        skips.insert(
            0,
            Skip(
                f"({head.more} more files)",
                f"not listed: over the limit of {cfg.max_files} files per pull request"
                + (" (GitHub lists at most 3000)" if listed > 3000 else ""),
            ),
        )
    return HeadPlan(jobs, skips, config_text)


def write_plan(
    gh: Any, head: PrHead, planned: HeadPlan, *, again: bool, rerun: bool, now: float, send: Any
) -> None:
    """Store what the jobs need of the head, start the check and record the plan (unless the head was planned
    `again`: its check run and fan-in stay), enqueue the jobs; with none, the fan-in posts the review now."""
    job = head.job
    headfiles.save(
        job.repo,
        job.number,
        job.head_sha,
        headfiles.HeadFiles(
            title=head.title,
            body=head.body,
            files=[headfiles.entry(f, head.tree.get(f["filename"])) for f in head.files],
            symlinks=sorted(head.symlinks),
            tree_complete=head.tree_note is None,
            instructions=dump_instructions(head.instructions),
        ),
        now=now,
    )
    if not again:
        _start_check_and_record(gh, job, planned, rerun=rerun, now=now)
    send(planned.jobs)
    if not planned.jobs:
        fanin.post_if_ready(gh, job.repo, job.number, job.head_sha)


def _start_check_and_record(gh: Any, job: PrJob, planned: HeadPlan, *, rerun: bool, now: float) -> None:
    """A new planning of the head: its check run and its plan record (a Re-run forgets the head's runs first)."""
    if rerun:
        job_runs.forget_runs(job.repo, job.number, job.head_sha)
    check_id = start_or_resume_check(gh, job, planned=len(planned.jobs), rerun=rerun, now=now)
    heads.record_plan(
        job.repo,
        job.number,
        job.head_sha,
        planned=len(planned.jobs),
        skipped_files=[asdict(s) for s in planned.skips],
        repo_config=planned.config_text,
        check_run_id=check_id,
        installation_id=job.installation_id,
        reset=rerun,
        now=now,
    )
    if rerun:
        return
    record = heads.head_record(job.repo, job.number, job.head_sha)
    if record is not None and record.check_run_id not in (None, check_id) and check_id is not None:
        # Another planner planned this head at the same moment and its check run is the one fanned in to.
        gh.update_check_run(
            job.repo,
            check_id,
            status="completed",
            conclusion="skipped",
            output={"title": "Duplicate", "summary": f"Check run {record.check_run_id} reviews this head."},
        )


def start_or_resume_check(gh: Any, job: PrJob, *, planned: int, rerun: bool, now: float) -> int | None:
    """The head's check run: the one an earlier, cut-off attempt of this planning created, else a new one.

    A planning that created the check run and stopped before recording the plan (a GitHub rate limit re-queued the
    PR job, the Lambda timed out) would leave that run queued or in_progress forever, and its retry would create a
    second one. headfiles.begin_planning (written before the check run is created) says whether the head was being
    planned before; only then is GitHub asked (one listing) for an unfinished prfleet check run of this PR on the
    head: of this delivery for a Re-run (which wants a fresh check run, not the previous one), of any delivery
    otherwise (no plan is recorded for the head, so no finished planning owns it). One check run per head.
    """

    earlier = headfiles.begin_planning(job.repo, job.number, job.head_sha, job.delivery_id, now=now)
    if earlier is not None and (not rerun or earlier == job.delivery_id):
        wanted = render.check_external_id(job.number, job.delivery_id)
        try:
            runs = gh.list_check_runs(job.repo, job.head_sha, name=render.CHECK_NAME)
        except GitHubRateLimited:
            raise
        except GitHubError as exc:
            if exc.status not in (403, 404):  # no checks permission: start_check says so and goes on without
                raise
            runs = []
        for run in runs:
            ext = run.get("external_id")
            ours = ext == wanted if rerun else render.pr_from_external_id(ext) == job.number
            if ours and run.get("status") != "completed":
                return fanin.mark_in_progress(gh, job.repo, int(run["id"]), planned)
    return fanin.start_check(gh, job, planned=planned)
