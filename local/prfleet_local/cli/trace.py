"""`prfleet trace PR --local`: one PR head's path through the local stack as a text timeline, from the X-Ray
segments the stack recorded (prfleet_local.stack.timeline). A deployed stack's traces are in X-Ray itself:
search them with the annotations `repository`, `pr` and `head_sha` (docs/architecture.md, "Tracing")."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from prfleet_local.cli.errors import CliError


def parse_pr(value: str) -> tuple[str | None, int]:
    """`OWNER/REPO#N`, `OWNER/REPO/pull/N` or `N`."""
    m = re.fullmatch(r"(?:([\w.-]+/[\w.-]+)(?:#|/pull/))?(\d+)", value.strip())
    if not m:
        raise CliError(f"not a pull request: {value!r} (OWNER/REPO#N or N)")
    return m.group(1), int(m.group(2))


def _latest_head(store: Any, repo: str | None, pr: int) -> tuple[str, str]:
    """The repository and head of the PR's most recent traced job (the head a push last made)."""
    best: tuple[float, str, str] | None = None
    for docs in store.traces().values():
        for d in docs:
            ann = d.get("annotations") or {}
            if ann.get("pr") == pr and "head_sha" in ann and (repo is None or ann.get("repository") == repo):
                key = (d["start_time"], ann["repository"], ann["head_sha"])
                best = max(best, key) if best else key
    if best is None:
        raise CliError(f"no traced segments for pull request {repo + '#' if repo else '#'}{pr}")
    return best[1], best[2]


def add_trace_parser(sub: Any) -> None:
    from prfleet_local.cli.target import add_target_options

    p = sub.add_parser(
        "trace", help="one PR head's path (planner, agent jobs, model calls, fan-in) as a timeline"
    )
    p.add_argument("pr", help="OWNER/REPO#N or N")
    p.add_argument("--head", help="the head commit (default: the most recent one traced)")
    add_target_options(p)
    p.set_defaults(func=show_trace)


def show_trace(args: argparse.Namespace, *, out: TextIO | None = None, store: Any = None) -> int:
    """Print the timeline; `store` (an XRayDaemon) skips finding the running local stack."""
    from prfleet_local.stack import timeline
    from prfleet_local.stack.xray import XRayDaemon

    out = out or sys.stdout
    if store is None:
        if not getattr(args, "local", False):
            raise CliError("traces of a deployed stack are in X-Ray: use --local for the local stack's")
        from prfleet_local.cli.target import from_local

        recorded = (from_local().local or {}).get("xray_segments")
        if not recorded or not Path(recorded).exists():
            raise CliError("the local stack has recorded no traces yet")
        store = XRayDaemon.load(Path(recorded))
    repo, pr = parse_pr(args.pr)
    repo, head = (repo, args.head) if (repo and args.head) else _latest_head(store, repo, pr)
    head = args.head or head
    out.write(f"{repo}#{pr} at {head[:12]}\n")
    out.write(timeline.text(timeline.timeline(store, repo, pr, head)))
    return 0
