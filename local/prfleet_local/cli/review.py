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
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from prfleet_local.cli.errors import CliError, Terminated

if TYPE_CHECKING:
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


def review(args: argparse.Namespace, *, workdir: Path | None) -> int:
    """Review the range on the local stack; print findings, every run's cost and the review page. 0 when
    reviewed, 1 when the review did not complete in time."""
    from prfleet_local.demo.model_choice import choose_model
    from prfleet_local.demo.run import print_review, sandbox

    source = Path(args.path).expanduser().resolve()
    if not source.exists():
        raise CliError(f"{args.path}: no such directory")
    base_sha, head_sha, what = resolve_range(source, args.base, args.head)
    model = choose_model(real=args.real, model_url=args.model_url)
    if model.kind == "real":
        print(
            "prfleet review: --real: the agents call the Claude API; this spends money on your ANTHROPIC_API_KEY"
        )
    if _git(source, "status", "--porcelain", "--untracked-files=no"):
        print("prfleet review: note: uncommitted changes are not reviewed (commit them to include them)")
    name = f"local/{source.name or 'repo'}"
    subject = _git(source, "log", "-1", "--format=%s", head_sha) or "local review"
    print(f"prfleet review: {source} ({what}: {base_sha[:12]}..{head_sha[:12]})", flush=True)
    try:
        with sandbox(
            workdir, model=model, repo=_clone(source, workdir, base_sha, head_sha), repo_name=name
        ) as box:
            offline = box.model.url if box.model else None
            print(f"prfleet review: model: {model.describe(offline)}", flush=True)
            number = box.github.open_pr(name, BASE_BRANCH, HEAD_BRANCH, subject, f"Local review of {what}.")
            payload = box.github.webhook_payload("opened", number)
            status, reply = box.deliver("pull_request", payload)
            if status != 202:
                print(f"prfleet review: the webhook did not accept the delivery: {status} {reply}")
                return 1
            print(f"waiting for the review (at most {args.timeout:.0f} s):", flush=True)
            if not box.wait_for_review(number, head_sha=head_sha, timeout=args.timeout, progress=_say):
                for line in box.timeout_report(number, head_sha):
                    print(line)
                return 1
            print_review(box, number, head_sha)
            page = box.review_page(number)
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


def _say(text: str) -> None:
    print(text, flush=True)
