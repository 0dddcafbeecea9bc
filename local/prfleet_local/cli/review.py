"""`prfleet review PATH`: your own branch reviewed by the whole local stack, as a pull request would be.

The repository is never changed: the local GitHub serves a `git clone --shared` of it (objects borrowed read-only
through git's alternates, so even a large repository clones in a moment), with two branches at the chosen base
and head commits. The default head is HEAD, the default base the default branch (origin's HEAD, else
init.defaultBranch, else main or master); as on GitHub the diff runs from their merge base to the head, and the
base branch's .prfleet.toml applies.
Uncommitted changes are not part of a commit and so are not reviewed; the command says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prfleet.agents.specs import VERIFY_AGENT
from prfleet.agents.verdicts import fingerprint_in, judge
from prfleet.pipeline import verification
from prfleet_local.cli.errors import CliError, Terminated

if TYPE_CHECKING:
    from prfleet_local.demo.run import Sandbox
    from prfleet_local.github.server import GitRepo

BASE_BRANCH, HEAD_BRANCH = "prfleet-review-base", "prfleet-review-head"


def _git(repo: Path, *args: str) -> str | None:
    """stdout of a git command, or None when it fails."""
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _commit(repo: Path, ref: str, option: str) -> str:
    sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if not sha:
        raise CliError(f"{option} {ref}: no such commit in {repo}")
    return sha


def default_branch(repo: Path) -> str:
    """origin's default branch, else init.defaultBranch, else main or master: the branch a PR would target."""
    origin = _git(repo, "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD")
    candidates = [origin] if origin else []
    configured = _git(repo, "config", "--get", "init.defaultBranch")
    candidates += [c for c in (configured, "main", "master") if c]
    for name in candidates:
        if _git(repo, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"):
            return name
    raise CliError(
        f"cannot tell the default branch of {repo} (no origin/HEAD, main or master): give --base REF"
    )


def resolve_range(repo: Path, base: str | None, head: str) -> tuple[str, str, str]:
    """(base sha, head sha, a description of the range). As on GitHub, the base is the tip of the base branch
    (its .prfleet.toml applies) and the diff runs from the merge base of the two to the head."""
    if _git(repo, "rev-parse", "--git-dir") is None:
        raise CliError(f"{repo} is not a git repository")
    head_sha = _commit(repo, head, "--head")
    if base:
        base_sha, what = _commit(repo, base, "--base"), f"{base}..{head}"
    else:
        branch = default_branch(repo)
        base_sha, what = _commit(repo, branch, "--base"), f"{head} against its merge base with {branch}"
    merge_base = _git(repo, "merge-base", base_sha, head_sha)
    if not merge_base:
        raise CliError(f"{head} and {base or 'the default branch'} share no history: give --base REF")
    if merge_base == head_sha:
        raise CliError(f"nothing to review: {head} has no commits beyond its base ({what})")
    return base_sha, head_sha, what


@dataclass
class Reviewed:
    """One range reviewed on the local stack: the PR, every run of its head, and the time from the webhook's
    delivery to the posted review (None if no review was posted)."""

    repository: str
    number: int
    base_sha: str
    head_sha: str
    what: str
    runs: list[dict[str, Any]]
    seconds: float | None
    reviews: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cost_micros(self) -> int:
        return sum(int(r.get("cost_micros") or 0) for r in self.runs)

    def _verdicts(self) -> dict[str, Any]:
        """What the head's verify runs (its final posting's, else its partial's) made of the findings, by
        fingerprint: kept (verified, with the final severity), dropped or merged (left out of the review)."""
        by_claim: dict[str, list[Any]] = {}
        for r in self.runs:
            if r.get("agent") == VERIFY_AGENT:
                claim = str(r.get("path") or "").removeprefix(verification.VERIFY_PATH_PREFIX).split("/")[0]
                by_claim.setdefault(claim, []).append(verification.stored_verdicts(r))
        parts = by_claim.get("final") or by_claim.get("partial") or []  # each verify run of the posting
        if all(v is None for v in parts):
            return {}
        stored = [v for vs in parts if vs is not None for v in vs]
        found = [f for r in self.runs for f in json.loads(r.get("findings") or "[]")]
        judged = judge(found, stored)
        out: dict[str, Any] = {fingerprint_in(f): f for f in judged.kept}
        out.update({fingerprint_in(f): None for f, _ in judged.dropped})
        out.update({fingerprint_in(f): None for f, _ in judged.merged})
        return out

    def findings(self) -> list[dict[str, Any]]:
        """Every finding of the head's runs the review shows, once each, with its run's agent and model;
        `relation` "changed" when the run did not record one; `verified` True when the verify pass kept it (with
        its final severity), False when no verify pass checked it; what the verify pass dropped or merged into
        another finding is left out, as it is of the posted review."""
        out = []
        checked = self._verdicts()
        for run in self.runs:
            for found in json.loads(run.get("findings") or "[]"):
                fp = fingerprint_in(found)
                if fp in checked and checked[fp] is None:
                    continue  # dropped or merged by the verify pass
                f = checked.get(fp) or found
                item = {
                    "path": f["path"],
                    "line": int(f["line"]),
                    "severity": f.get("severity"),
                    "category": f.get("category"),
                    "title": f.get("title"),
                    "body": f.get("body"),
                    "relation": f.get("relation") or "changed",
                    "agent": f.get("agent") or run.get("agent"),
                    "model": run.get("model"),
                    "verified": bool(f.get("verified", False)),
                }
                if f.get("end_line") is not None:
                    item["end_line"] = int(f["end_line"])
                out.append(item)
        return out

    def to_json(self, model: str) -> dict[str, Any]:
        """What `prfleet review --json` prints: one object, for scripts and for `prfleet eval`."""
        return {
            "repository": self.repository,
            "pr": self.number,
            "range": self.what,
            "base": self.base_sha,
            "head": self.head_sha,
            "model": model,
            "reviewed": self.seconds is not None,
            "time_to_review_s": None if self.seconds is None else round(self.seconds, 3),
            "cost_usd": self.cost_micros / 1e6,
            "findings": self.findings(),
            "runs": [
                {
                    "path": r.get("path"),
                    "agent": r.get("agent"),
                    "model": r.get("model"),
                    "status": r.get("status"),
                    "cost_usd": int(r.get("cost_micros") or 0) / 1e6,
                    "findings": len(json.loads(r.get("findings") or "[]")),
                }
                for r in self.runs
            ],
            "checks": [{"name": c.get("name"), "conclusion": c.get("conclusion")} for c in self.checks],
        }


def review_range(
    box: Sandbox,
    *,
    base_sha: str,
    head_sha: str,
    what: str,
    subject: str,
    timeout: float,
    say: Callable[[str], None],
) -> Reviewed | None:
    """Open the PR of base..head on the sandbox's GitHub, deliver `opened` as GitHub would, wait for the review.
    None when the review did not complete within `timeout` (the reasons are said). Shared by `prfleet review` and
    `prfleet eval`, so both measure exactly the same path."""
    from prfleet_local.demo.run import pr_runs

    name = box.repo_name
    number = box.github.open_pr(name, BASE_BRANCH, HEAD_BRANCH, subject, f"Local review of {what}.")
    payload = box.github.webhook_payload("opened", number)
    posted = _PostedWatch(box, head_sha)
    status, reply = box.deliver("pull_request", payload)
    if status != 202:
        posted.stop()
        say(f"the webhook did not accept the delivery: {status} {reply}")
        return None
    say(f"waiting for the review (at most {timeout:.0f} s):")
    try:
        done = box.wait_for_review(number, head_sha=head_sha, timeout=timeout, progress=say)
    finally:
        posted.stop()
    if not done:
        for line in box.timeout_report(number, head_sha):
            say(line)
        return None
    return Reviewed(
        name,
        number,
        base_sha,
        head_sha,
        what,
        pr_runs(box, number, head_sha),
        posted.seconds,
        [r for r in box.github.reviews if r.get("number", number) == number],
        box.github.check_runs_for(head_sha),
    )


class _PostedWatch:
    """Time from the webhook's delivery to the review posted at the head, watched on the local GitHub every
    50 ms from a thread (the fan-in posts it before it completes the check run)."""

    def __init__(self, box: Sandbox, head_sha: str) -> None:
        self.seconds: float | None = None
        self._done = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._watch, args=(box, head_sha), daemon=True)
        self._thread.start()

    def _watch(self, box: Sandbox, head_sha: str) -> None:
        while not self._done.is_set():
            if any(r.get("commit_id") == head_sha for r in list(box.github.reviews)):
                self.seconds = time.monotonic() - self._started
                return
            self._done.wait(0.05)

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)


def review(args: argparse.Namespace, *, workdir: Path | None) -> int:
    """Review the range on the local stack; print findings, every run's cost and the review page (or, with --json,
    one JSON object on stdout and the progress on stderr). 0 when reviewed, 1 when the review did not complete in
    time."""
    from prfleet_local.demo.model_choice import choose_model
    from prfleet_local.demo.run import print_review, sandbox
    from prfleet_local.model.providers import local_parameters

    as_json = bool(getattr(args, "json", False))
    if as_json and args.stay:
        raise CliError("--json prints the review and exits: it does not take --stay")
    out = sys.stderr if as_json else sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    source = Path(args.path).expanduser().resolve()
    if not source.exists():
        raise CliError(f"{args.path}: no such directory")
    base_sha, head_sha, what = resolve_range(source, args.base, args.head)
    model = choose_model(real=args.real, model_url=args.model_url, pace=args.pace)
    provider = getattr(args, "provider", "anthropic")
    if model.kind == "real":
        say(
            "prfleet review: --real: the agents call the Claude API; this spends money on your ANTHROPIC_API_KEY"
        )
    if _git(source, "status", "--porcelain", "--untracked-files=no"):
        say("prfleet review: note: uncommitted changes are not reviewed (commit them to include them)")
    name = f"local/{source.name or 'repo'}"
    subject = _git(source, "log", "-1", "--format=%s", head_sha) or "local review"
    say(f"prfleet review: {source} ({what}: {base_sha[:12]}..{head_sha[:12]})")
    try:
        with sandbox(
            workdir,
            model=model,
            repo=_clone(source, workdir, base_sha, head_sha),
            repo_name=name,
            parameters=local_parameters(provider),
        ) as box:
            described = model.describe(box.model.url if box.model else None)
            say(f"prfleet review: model: {described}")
            done = review_range(
                box,
                base_sha=base_sha,
                head_sha=head_sha,
                what=what,
                subject=subject,
                timeout=args.timeout,
                say=say,
            )
            if done is None:
                return 1
            if as_json:
                print(json.dumps(done.to_json(described), indent=2))
                return 0
            print_review(box, done.number, head_sha)
            if done.seconds is not None:
                print(f"Time to review (webhook to posted review): {done.seconds:.1f} s")
            page = box.review_page(done.number)
            if args.stay:
                print(f"\nreview page: {page}  (Ctrl-C to stop)", flush=True)
                while True:
                    time.sleep(1)
            print(f"\nreview page: {page} (closes on exit; --stay keeps it up)")
            return 0
    except (KeyboardInterrupt, Terminated):
        if args.stay:
            print("prfleet review: stopped")
            return 0
        raise


def _clone(source: Path, workdir: Path | None, base_sha: str, head_sha: str) -> GitRepo:
    """A shared clone with the two review branches; in workdir, or in a temporary directory removed at exit."""
    import atexit
    import shutil
    import tempfile

    from prfleet_local.github.server import GitRepo

    if workdir is None:
        root = Path(tempfile.mkdtemp(prefix="prfleet-review-"))
        atexit.register(shutil.rmtree, root, True)
    else:
        root = workdir
    dest = root / "repo"
    if dest.exists():
        shutil.rmtree(dest)
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["git", "clone", "--quiet", "--shared", "--no-checkout", str(source), str(dest)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise CliError(f"cannot clone {source}: {' '.join(proc.stderr.split())[:200]}")
    for branch, sha in ((BASE_BRANCH, base_sha), (HEAD_BRANCH, head_sha)):
        _git(dest, "branch", "--force", "--no-track", branch, sha)
    return GitRepo(dest)
