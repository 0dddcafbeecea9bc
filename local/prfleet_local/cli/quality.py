"""`prfleet quality report`: what the team thinks of prfleet's findings, per agent, model and category.

Read from the stack's StateTable (prfleet.store.reactions: one item per posted inline finding, in a partition per
UTC day it was posted, with the 👍 / 👎 counts prfleet last read from GitHub); `--days N` reads the N partitions of
the last N days, today included (at most QUALITY_TTL's 90 days: older items have expired). Only inline findings are
counted: a finding folded into a review's body has no comment of its own to react to.

Acceptance is 👍 / (👍 + 👎) of the reactions, in %, "-" without any; a finding is "reacted" when it has at least one
👍 or 👎. The counts are those of the latest read (at each new head of a PR, and 1, 3 and 7 days after its latest
head), so a reaction given since then is not in them yet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from prfleet.store.reactions import QUALITY_TTL, day_of, quality_pk
from prfleet_local.cli.errors import CliError

MAX_DAYS = QUALITY_TTL // 86400
GROUPS = (("agent",), ("model",), ("category",), ("agent", "model", "category"))


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of days, got {value!r}") from None
    if not 1 <= days <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_DAYS} (findings are kept {MAX_DAYS} days)")
    return days


def window(days: int, now: float) -> list[str]:
    """The UTC days the report covers, oldest first: the last `days` days, today included."""
    return [day_of(now - back * 86400) for back in range(days - 1, -1, -1)]


def fetch_findings(client: Any, table: str, days: Iterable[str]) -> list[dict[str, Any]]:
    """Every finding item of these days' partitions (one paginated Query per day)."""
    from boto3.dynamodb.types import TypeDeserializer  # lazily, like every CLI command's AWS modules

    des = TypeDeserializer()
    items: list[dict[str, Any]] = []
    for day in days:
        kwargs: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": quality_pk(day)}},
        }
        while True:
            page = client.query(**kwargs)
            items += [{k: des.deserialize(v) for k, v in raw.items()} for raw in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return items


def acceptance(up: int, down: int) -> float | None:
    """👍 as a % of the 👍 and 👎, None without any."""
    return round(100.0 * up / (up + down), 1) if up + down else None


def _row(items: list[Mapping[str, Any]]) -> dict[str, Any]:
    up = sum(int(i.get("up", 0) or 0) for i in items)
    down = sum(int(i.get("down", 0) or 0) for i in items)
    reacted = sum(1 for i in items if int(i.get("up", 0) or 0) + int(i.get("down", 0) or 0) > 0)
    return {
        "posted": len(items),
        "reacted": reacted,
        "up": up,
        "down": down,
        "acceptance": acceptance(up, down),
    }


def summarize(items: Iterable[Mapping[str, Any]], *, days: int, now: float) -> dict[str, Any]:
    """Pure: the findings of the window (`fetch_findings` of `window(days, now)`) grouped by agent, by model, by category and by all three; each row with
    findings posted, reacted, 👍, 👎 and acceptance %. Rows with the lowest acceptance come first, then the rows
    nobody reacted to (most findings first)."""
    span = window(days, now)
    rows = list(items)
    out: dict[str, Any] = {"days": days, "first_day": span[0], "last_day": span[-1], "total": _row(rows)}
    for keys in GROUPS:
        groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = defaultdict(list)
        for i in rows:
            groups[tuple(str(i.get(k) or "unknown") for k in keys)].append(i)
        table = [{**dict(zip(keys, name, strict=True)), **_row(g)} for name, g in groups.items()]
        table.sort(
            key=lambda r: (
                r["acceptance"] is None,
                r["acceptance"] if r["acceptance"] is not None else 0.0,
                -r["posted"],
                tuple(r[k] for k in keys),
            )
        )
        out["by_" + "_".join(keys)] = table
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def render(s: Mapping[str, Any]) -> str:
    """The report as text: the totals, then one table per grouping."""
    t = s["total"]
    lines = [
        f"prfleet findings posted from {s['first_day']} to {s['last_day']} (UTC, {s['days']} day(s)): "
        f"{t['posted']} inline, {t['reacted']} reacted, {t['up']} 👍, {t['down']} 👎, "
        f"acceptance {_pct(t['acceptance'])}",
    ]
    for keys in GROUPS:
        title = "by " + ", ".join(keys)
        rows = s["by_" + "_".join(keys)]
        lines += ["", f"{title}:"]
        if not rows:
            lines.append("  (no findings)")
            continue
        names = [" / ".join(str(r[k]) for k in keys) for r in rows]
        width = max(len(title), *(len(n) for n in names))
        lines.append(
            f"  {'':<{width}}  {'posted':>6}  {'reacted':>7}  {'👍':>4}  {'👎':>4}  {'acceptance':>10}"
        )
        for name, r in zip(names, rows, strict=True):
            lines.append(
                f"  {name:<{width}}  {r['posted']:>6}  {r['reacted']:>7}  {r['up']:>4}  {r['down']:>4}  "
                f"{_pct(r['acceptance']):>10}"
            )
    lines += [
        "",
        "Inline findings only (a finding in a review's body has no comment to react to); acceptance = 👍 / (👍 + 👎) "
        "of the reactions, as last read from GitHub (at each new head, and 1, 3 and 7 days after a PR's last head).",
    ]
    return "\n".join(lines) + "\n"


def run_report(
    args: argparse.Namespace,
    out: TextIO | None = None,
    client: Any = None,
    now: float | None = None,
    target: Any = None,
) -> int:
    """Handler of `prfleet quality report` (--stack NAME or --local)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from prfleet_local.cli.errors import aws_error
    from prfleet_local.cli.target import resolve

    out = out or sys.stdout
    days = int(args.days)
    if not 1 <= days <= MAX_DAYS:
        raise CliError(f"--days must be from 1 to {MAX_DAYS}")
    target = target or resolve(args)
    if client is None:
        from prfleet.config.aws import client as aws_client

        client = aws_client("dynamodb")
    now = time.time() if now is None else now
    try:
        items = fetch_findings(client, target.table("StateTable"), window(days, now))
    except (BotoCoreError, ClientError) as exc:
        raise aws_error(exc, f"read the findings of {target.where}") from None
    s = summarize(items, days=days, now=now)
    s["stack"] = target.where
    s["generated_at"] = dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="seconds")
    if args.json:
        json.dump(s, out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        out.write(f"{target.where}\n" + render(s))
    return 0


def add_quality_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `quality report` on the main CLI's subparsers."""
    from prfleet_local.cli.target import add_target_options

    quality = subparsers.add_parser("quality", help="what the team thinks of the findings (👍 / 👎)")
    sub = quality.add_subparsers(dest="quality_command", required=True)
    rep = sub.add_parser(
        "report",
        help="findings posted, reacted, 👍, 👎 and acceptance per agent, model and category",
        description="Read from the stack's StateTable: every inline finding prfleet posted in the last N days "
        "(UTC) with the thumbs-up / thumbs-down counts last read from GitHub. Acceptance = up / (up + down).",
    )
    rep.add_argument(
        "--days", type=_days, default=7, help=f"the last N days, today included (7; 1 to {MAX_DAYS})"
    )
    rep.add_argument("--json", action="store_true", help="print one JSON object")
    add_target_options(rep)
    rep.set_defaults(func=run_report)
    return quality
