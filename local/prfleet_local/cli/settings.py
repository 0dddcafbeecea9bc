"""Settings a user can find: `prfleet config check FILE` (a .prfleet.toml, checked exactly as the planner reads it)
and `prfleet github-app manifest` (the GitHub App prfleet needs, for GitHub's manifest flow)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

from prfleet_local.cli.errors import CliError

# GitHub App manifest, https://docs.github.com/en/apps/sharing-github-apps/registering-a-github-app-from-a-manifest:
# keys name, url (required), hook_attributes {url, active}, redirect_url, description, public, default_events,
# default_permissions ({permission: "read" | "write"}). Exactly what prfleet's code calls (docs/deploy.md explains
# each); `metadata: read` is granted to every App and listed so the manifest shows it.
PERMISSIONS = {
    "pull_requests": "write",  # the PR and its files, the review and its inline comments, replies in threads, the
    # reactions on them (the `reactions` roll-up of the review comment list: no permission or event of their own)
    "checks": "write",  # the check run (only GitHub Apps can write checks); check_run/check_suite events
    "contents": "read",  # file contents, blobs and trees at the PR head; .prfleet.toml from the base branch
    "issues": "read",  # `/prfleet review` comments arrive as issue_comment events (needs Issues access)
    "metadata": "read",  # mandatory; also the collaborator-permission check of a comment's author
}
# What prfleet.webhook acts on: PRs opened/pushed, `/prfleet review` comments, Re-run on the check (rerequested),
# and the conversation (issue 25): questions and `/prfleet ignore` in review threads, resolved threads.
EVENTS = [
    "pull_request",
    "issue_comment",
    "check_run",
    "check_suite",
    "pull_request_review_comment",
    "pull_request_review_thread",
]


def manifest(
    *, webhook_url: str, name: str, url: str, public: bool, redirect_url: str | None
) -> dict[str, Any]:
    """The manifest JSON GitHub's "register from a manifest" form takes (POST field `manifest`)."""
    parts = urllib.parse.urlsplit(webhook_url)
    if parts.scheme != "https" or not parts.netloc:
        raise CliError(
            f"--webhook-url must be an https URL (the stack's WebhookUrl output), got {webhook_url!r}"
        )
    data: dict[str, Any] = {
        "name": name,
        "url": url,
        "description": "prfleet: Claude agents that review pull requests (one review and check run per head).",
        "hook_attributes": {"url": webhook_url, "active": True},
        "public": public,
        "default_permissions": dict(PERMISSIONS),
        "default_events": list(EVENTS),
    }
    if redirect_url:
        data["redirect_url"] = redirect_url
    return data


def github_app_manifest(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    data = manifest(
        webhook_url=args.webhook_url,
        name=args.name,
        url=args.url,
        public=args.public,
        redirect_url=getattr(args, "redirect_url", None),
    )
    json.dump(data, out, indent=2)
    out.write("\n")
    return 0


def config_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Parse FILE as the planner would and print what it does to each agent; 0 valid, 1 valid with warnings."""
    from prfleet import agents
    from prfleet.config import DEFAULT_MODELS
    from prfleet.config.repo_config import RepoConfigError, parse_repo_config

    out = out or sys.stdout
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{path} is a directory; give the .prfleet.toml file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read it ({type(exc).__name__})") from None
    try:
        cfg = parse_repo_config(text)
    except RepoConfigError as exc:
        raise CliError(f"{path}: {exc}") from None
    settings = SimpleNamespace(agents=agents.AGENT_NAMES, models=dict(DEFAULT_MODELS))
    specs = agents.agent_specs(settings, cfg)
    out.write(f"{path}: valid\n")
    out.write(f"  fail_on: {cfg.fail_on or 'the stack FailOn parameter (default never)'}\n")
    if cfg.max_inline_comments is not None:
        out.write(
            f"  max_inline_comments: {cfg.max_inline_comments} (at most the stack's MaxInlineComments)\n"
        )
    shown = "posted" if cfg.report_preexisting else "counted, not posted (default)"
    out.write(f"  report_preexisting: {str(cfg.report_preexisting).lower()}: pre-existing findings {shown}\n")
    if cfg.require_verification:
        out.write(
            "  require_verification: true: findings the verify run could not check are held, never unverified\n"
        )
    for name in agents.AGENT_NAMES:
        spec = specs.get(name)
        if spec is None:
            out.write(f"  {name}: disabled\n")
            continue
        defaults = agents.DEFAULT_LIMITS[name]
        limits = ", ".join(
            f"{k} {getattr(spec, k)}"
            + (f" (lowered from {defaults[k]})" if getattr(spec, k) < defaults[k] else "")
            for k in defaults
        )
        extra = tuple(cfg.ignore) + tuple(cfg.agent_ignore.get(name, ()))
        out.write(f"  {name}: enabled; {limits}" + (f"; ignores {', '.join(extra)}" if extra else "") + "\n")
    for entry in cfg.instructions:
        scope = ", ".join(entry.paths) or "every file"
        cut = " (cut)" if entry.truncated else ""
        out.write(f"  instructions #{entry.number} ({scope}): {len(entry.text)} characters{cut}\n")
    for warning in cfg.warnings:
        out.write(f"  warning: {warning}\n")
    return 1 if cfg.warnings else 0
