"""A pull request fetched read-only through the GitHub REST API into a local git repository, to be reviewed like a
corpus case: two commits, `base` (the tree the PR's diff starts from) and `head` (the PR's head tree).

Only GET requests, through prfleet's own GitHub client (retries, rate-limit waits, errors that say what to fix):
- `GET /repos/{o}/{r}/pulls/{n}`: `base.sha` and `head.sha`
  (https://docs.github.com/en/rest/pulls/pulls#get-a-pull-request);
- `GET /repos/{o}/{r}/compare/{base}...{head}`: `merge_base_commit`, where a PR's diff starts (GitHub shows a
  PR as the three-dot diff from the merge base; https://docs.github.com/en/rest/commits/commits#compare-two-commits);
- `GET /repos/{o}/{r}/tarball/{sha}` for each of the two commits: a 302 to a short-lived codeload link,
  downloaded without our Authorization header (prfleet.github.client.GitHub.archive;
  https://docs.github.com/en/rest/repos/contents#download-a-repository-archive-tar).
Each archive is untrusted: judged whole and unpacked by prfleet.repository.archive.safe_extract (sizes, entries,
links), then committed as it is (`git add --all --force`: ignored files too, the tree is the commit's). The local
commits' SHAs are not GitHub's (no history is fetched); their trees are.

The token (`GITHUB_TOKEN`) needs read access to the repository's contents and pull requests only (a fine-grained
token with Contents: read and Pull requests: read; no scope for a public repository). It is registered with the
log redaction and never printed: errors name the request, never the credential.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from prfleet.github.auth import TokenAuth
from prfleet.github.client import GitHub
from prfleet.github.transport import ArchiveTooLarge, GitHubError
from prfleet.observability.redaction import register_secret
from prfleet.repository.archive import ArchiveRefused, safe_extract
from prfleet_local.cli.errors import CliError
from prfleet_local.eval.corpus import Case
from prfleet_local.eval.martian import MartianPr

TOKEN_ENV = "GITHUB_TOKEN"
# A large monorepo's tarball (Sentry's is a few hundred MB unpacked) must fit; the local stack applies its own
# MaxRepoBytes to the snapshot it reviews from (above it the agents work from the changed files).
MAX_ARCHIVE_BYTES = 1 << 30  # the download
MAX_UNPACKED_BYTES = 4 << 30  # its files unpacked
MAX_ENTRIES = 1_000_000
_GIT_ID = [
    "-c",
    "user.name=prfleet eval",
    "-c",
    "user.email=eval@prfleet.invalid",
    "-c",
    "core.autocrlf=false",
]


class FetchError(Exception):
    """One PR could not be fetched (not found, no archive, refused archive): its case is not reviewed."""


def github_client(api_url: str) -> GitHub:
    """The read-only client of `prfleet eval` for the Martian format: GITHUB_TOKEN, required, never shown."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise CliError(
            f"the Martian format's pull requests are fetched from {api_url} and need {TOKEN_ENV} (a token that "
            "can read the repositories' contents and pull requests); set it and run again"
        )
    register_secret(token)
    return GitHub(api_url, TokenAuth(token), timeout=60)


def _git(repo: Path, *args: str, work_tree: Path | None = None) -> str:
    where = ["--git-dir", str(repo / ".git")] + (["--work-tree", str(work_tree)] if work_tree else [])
    proc = subprocess.run(
        ["git", *_GIT_ID, *where, *args], capture_output=True, text=True, check=False, cwd=work_tree or repo
    )
    if proc.returncode != 0:
        raise FetchError(f"git {args[0]} failed: {' '.join(proc.stderr.split())[:200]}")
    return proc.stdout.strip()


def _unpack(gh: GitHub, repo: str, sha: str, dest: Path) -> None:
    """The commit's tarball, downloaded into a temporary file and unpacked into `dest` (a new folder)."""
    with tempfile.TemporaryFile() as tmp:
        try:
            gh.archive(repo, sha, tmp, max_bytes=MAX_ARCHIVE_BYTES)
        except ArchiveTooLarge:
            raise FetchError(
                f"the archive of {repo}@{sha[:12]} is over {MAX_ARCHIVE_BYTES:,} bytes"
            ) from None
        tmp.seek(0)
        try:
            safe_extract(tmp, dest, max_bytes=MAX_UNPACKED_BYTES, max_entries=MAX_ENTRIES)
        except ArchiveRefused as exc:
            raise FetchError(f"the archive of {repo}@{sha[:12]} was refused: {exc.reason}") from None


def fetch_pr(pr: MartianPr, gh: GitHub, dest: Path) -> Case:
    """The PR as a Case whose repository (under `dest`, a new folder) has tags `base` and `head`. GitHubError
    (401, rate limits, ...) is raised as it is; what concerns this PR alone is a FetchError."""
    try:
        data = gh.pr(pr.repo, pr.number)
    except GitHubError as exc:
        if exc.status == 404:
            raise FetchError(
                f"{pr.url}: no such pull request at {gh.api_url} (or the token cannot read it)"
            ) from None
        raise
    base_sha = str((data.get("base") or {}).get("sha") or "")
    head_sha = str((data.get("head") or {}).get("sha") or "")
    if not base_sha or not head_sha:
        raise FetchError(f"{pr.url}: GitHub's answer names no base or head commit")
    try:
        compared = gh.request("GET", f"/repos/{pr.repo}/compare/{base_sha}...{head_sha}").json() or {}
    except GitHubError as exc:
        if exc.status == 404:
            raise FetchError(f"{pr.url}: GitHub cannot compare {base_sha[:12]}...{head_sha[:12]}") from None
        raise
    merge_base = str((compared.get("merge_base_commit") or {}).get("sha") or "")
    if not merge_base:
        raise FetchError(f"{pr.url}: GitHub's comparison names no merge base")
    dest.mkdir(parents=True)
    repo = dest / "repo"
    proc = subprocess.run(
        ["git", "init", "-q", "-b", "main", str(repo)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise FetchError(f"git init failed: {' '.join(proc.stderr.split())[:200]}")
    try:
        for label, sha in (("base", merge_base), ("head", head_sha)):
            tree = dest / f"tree-{label}"
            try:
                _unpack(gh, pr.repo, sha, tree)
            except GitHubError as exc:
                if exc.status == 404:
                    raise FetchError(f"{pr.url}: GitHub has no archive of {sha[:12]}") from None
                raise
            _git(repo, "add", "--all", "--force", ".", work_tree=tree)
            message = f"{label}: {pr.repo}@{sha} ({pr.url})"
            _git(repo, "commit", "-q", "--allow-empty", "--no-verify", "-m", message, work_tree=tree)
            _git(repo, "tag", label)
            shutil.rmtree(tree)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return Case(pr.name, dest, repo, "base", "head", list(pr.golden), title=pr.title, url=pr.url)
