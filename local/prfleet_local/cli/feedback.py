"""`prfleet feedback list | forget ID`: what teams told prfleet not to report (issue 25), on one stack.

A suppression is recorded when a trusted person answers a finding with `/prfleet ignore [reason]` or resolves its
thread without changing its line; later reviews of that repository count matching findings as "suppressed by the
team" instead of posting them. `list` shows every rule with its id, `forget ID` deletes one (later reviews report
such findings again). The rules live in the stack's StateTable (prfleet.store.feedback).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from dataclasses import asdict
from typing import Any, TextIO

from prfleet_local.cli.errors import CliError, aws_error

_ID = re.compile(r"^[0-9a-f]{12}$")


def _when(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ts else "-"


def render(rules: list[Any], out: TextIO) -> None:
    """One block per rule: id, repository, what it matches, who taught it, when and why."""
    if not rules:
        out.write("no suppressions: every finding is reported\n")
        return
    for r in rules:
        out.write(
            f'{r.id}  {r.repo}  {r.agent} / {r.category} / "{r.title}" in {r.path_glob}\n'
            f"              by {r.who or '?'} on {_when(r.when)} ({r.source}, PR #{r.pr})"
            + (f": {r.why}" if r.why else "")
            + "\n"
        )
    out.write(f"\n{len(rules)} suppression(s); `prfleet feedback forget ID` removes one\n")


def _table(args: argparse.Namespace, target: Any) -> tuple[Any, str]:
    from prfleet_local.cli.target import resolve

    target = target or resolve(args)
    return target, target.table("StateTable")


def feedback_list(args: argparse.Namespace, *, out: TextIO | None = None, target: Any = None) -> int:
    """Handler of `prfleet feedback list`."""
    from botocore.exceptions import BotoCoreError, ClientError

    from prfleet.store import feedback

    out = out or sys.stdout
    target, table = _table(args, target)
    try:
        rules = feedback.all_rules(table=table)
    except (BotoCoreError, ClientError) as exc:
        raise aws_error(exc, f"read the suppressions of {target.where}") from None
    if args.repo:
        rules = [r for r in rules if r.repo == args.repo]
    if args.json:
        json.dump([asdict(r) for r in rules], out, indent=2)
        out.write("\n")
    else:
        out.write(f"{target.where}\n")
        render(rules, out)
    return 0


def feedback_forget(args: argparse.Namespace, *, out: TextIO | None = None, target: Any = None) -> int:
    """Handler of `prfleet feedback forget ID`: a rule that is not there is an error (exit 2), not a no-op, so a
    mistyped id is noticed."""
    from botocore.exceptions import BotoCoreError, ClientError

    from prfleet.store import feedback

    out = out or sys.stdout
    rid = str(args.id).strip().lower()
    if not _ID.match(rid):
        raise CliError(
            f"{args.id!r} is not a suppression id (12 hex digits, as `prfleet feedback list` shows)"
        )
    target, table = _table(args, target)
    try:
        gone = feedback.forget(rid, table=table)
    except (BotoCoreError, ClientError) as exc:
        raise aws_error(exc, f"delete suppression {rid} on {target.where}") from None
    if gone is None:
        raise CliError(f"no suppression {rid} on {target.where} (`prfleet feedback list` shows them)")
    out.write(
        f'forgot {rid}: {gone.repo} reports {gone.agent} / {gone.category} / "{gone.title}" in '
        f"{gone.path_glob} again\n"
    )
    return 0


def add_feedback_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `feedback list` and `feedback forget` on the main CLI's subparsers."""
    from prfleet_local.cli.target import add_target_options

    parser = subparsers.add_parser("feedback", help="the findings teams told prfleet to stop reporting")
    sub = parser.add_subparsers(dest="feedback_command", required=True)
    listing = sub.add_parser("list", help="every suppression: id, repository, rule, who, when, why")
    listing.add_argument("--repo", metavar="OWNER/NAME", help="only this repository's")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    add_target_options(listing)
    listing.set_defaults(func=feedback_list)
    forget = sub.add_parser("forget", help="remove one suppression: such findings are reported again")
    forget.add_argument("id", metavar="ID", help="the suppression's id (prfleet feedback list)")
    add_target_options(forget)
    forget.set_defaults(func=feedback_forget)
    return parser
