"""`prfleet cost estimate` and `prfleet cost report`: what the fleet will cost, and what it did cost.

The main CLI calls `add_cost_parser(subparsers)`; each subcommand sets `func(args) -> int`.
Arithmetic is exact (Decimal micro-dollars); prices come from prfleet.pricing (the packaged table).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TextIO

from prfleet.cost import pricing
from prfleet.cost.booking import DAILY, day_of

MONTH_DAYS = 30
MICRO = Decimal(1_000_000)


# ------------------------------------------------------------------------------------------------ estimate


@dataclass(frozen=True)
class Estimate:
    model: str | None
    input_price: Decimal  # USD per MTok actually used (tier applied)
    output_price: Decimal
    cache_read_price: Decimal
    per_run_usd: Decimal
    runs_per_day: int
    per_day_usd: Decimal
    per_month_usd: Decimal

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Decimal):
                d[k] = float(v)
        d["per_run_micros"] = int((self.per_run_usd * MICRO).to_integral_value(ROUND_HALF_UP))
        d["month_days"] = MONTH_DAYS
        return d


def estimate(
    *,
    input_tokens: int,
    requests: int,
    output_tokens: int,
    agents: int,
    files: int,
    prs_per_day: int,
    model: str | None = None,
    input_price: Decimal | None = None,
    output_price: Decimal | None = None,
    cache_read_price: Decimal | None = None,
    cache_read_ratio: Decimal = Decimal(0),
    on: dt.date | None = None,
) -> Estimate:
    """Cost of one run (`requests` calls of `input_tokens` each, `output_tokens` in all), then per day
    (agents x files x PRs runs) and per 30-day month. A fraction `cache_read_ratio` of the input is read
    from the prompt cache. With `model`, prices come from the table (prompt-length tier included)."""
    if model:
        card = pricing.rates(model, on=on).card_for_prompt(input_tokens)
        inp, out, cread = card.input, card.output, card.cache_read
    else:
        if input_price is None or output_price is None:
            raise ValueError("give --model, or both --input-price and --output-price")
        inp, out = Decimal(input_price), Decimal(output_price)
        cread = Decimal(cache_read_price) if cache_read_price is not None else inp / 10
    ratio = Decimal(cache_read_ratio)
    if not 0 <= ratio <= 1:
        raise ValueError("--cache-read-ratio must be between 0 and 1")
    total_in = Decimal(input_tokens) * requests
    micros = total_in * (1 - ratio) * inp + total_in * ratio * cread + Decimal(output_tokens) * out
    per_run = micros / MICRO
    runs = agents * files * prs_per_day
    per_day = per_run * runs
    return Estimate(model, inp, out, cread, per_run, runs, per_day, per_day * MONTH_DAYS)


def _usd(v: Decimal, places: int = 4) -> str:
    q = Decimal(1).scaleb(-places)
    return f"${v.quantize(q, ROUND_HALF_UP):,}"


def run_estimate(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Handler of `prfleet cost estimate`."""
    out = out or sys.stdout
    try:
        e = estimate(
            input_tokens=args.input_tokens,
            requests=args.requests,
            output_tokens=args.output_tokens,
            agents=args.agents,
            files=args.files,
            prs_per_day=args.prs_per_day,
            model=args.model,
            input_price=args.input_price,
            output_price=args.output_price,
            cache_read_price=args.cache_read_price,
            cache_read_ratio=args.cache_read_ratio,
        )
    except pricing.UnknownModel as exc:
        what = str(exc.args[0]) if exc.args else str(args.model)
        if " has no price " not in what:
            what = f"unknown model {what!r}; known: {', '.join(pricing.table().models())}"
        print(f"prfleet cost estimate: {what}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"prfleet cost estimate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(e.to_json(), out, indent=2)
        out.write("\n")
        return 0
    who = e.model or "custom prices"
    out.write(
        f"model: {who}  (input ${e.input_price}/MTok, cache read ${e.cache_read_price}/MTok, "
        f"output ${e.output_price}/MTok)\n"
        f"per run:   {_usd(e.per_run_usd)}  ({args.requests} x {args.input_tokens:,} input tokens, "
        f"{args.output_tokens:,} output tokens)\n"
        f"runs/day:  {e.runs_per_day:,}  ({args.agents} agents x {args.files} files x "
        f"{args.prs_per_day} PRs)\n"
        f"per day:   {_usd(e.per_day_usd, 2)}\n"
        f"per month: {_usd(e.per_month_usd, 2)}  ({MONTH_DAYS} days)\n"
    )
    return 0


# -------------------------------------------------------------------------------------------------- report


def _deser(item: Mapping[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    d = TypeDeserializer()
    return {k: d.deserialize(v) for k, v in item.items()}


def _epoch(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, (int, float, Decimal)):
        return float(v)
    try:
        return dt.datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def fetch_ledger(client: Any, table: str, since_day: str) -> list[dict[str, Any]]:
    """The daily ledger items from `since_day` on (Query on scope = "daily")."""
    kwargs: dict[str, Any] = dict(
        TableName=table,
        KeyConditionExpression="#s = :s AND #d >= :since",
        ExpressionAttributeNames={"#s": "scope", "#d": "day"},
        ExpressionAttributeValues={":s": {"S": DAILY}, ":since": {"S": since_day}},
    )
    items: list[dict[str, Any]] = []
    while True:
        page = client.query(**kwargs)
        items += [_deser(i) for i in page.get("Items", [])]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def fetch_runs(client: Any, table: str) -> list[dict[str, Any]]:
    """Every run item of the StateTable (sk begins with RUN#)."""
    kwargs: dict[str, Any] = dict(
        TableName=table,
        FilterExpression="begins_with(sk, :run)",
        ExpressionAttributeValues={":run": {"S": "RUN#"}},
    )
    items: list[dict[str, Any]] = []
    while True:
        page = client.scan(**kwargs)
        items += [_deser(i) for i in page.get("Items", [])]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def summarize(
    ledger_items: Iterable[Mapping[str, Any]],
    runs: Iterable[Mapping[str, Any]],
    *,
    days: int,
    now: float,
    tz: str = "UTC",
) -> dict[str, Any]:
    """Pure: spend by day (ledger), by agent / model / repository (runs), cache savings and a month
    projection, over the last `days` budget days. Money in micro-dollars."""
    first = day_of(now - (days - 1) * 86400, tz)
    by_day = {}
    for it in ledger_items:
        day = str(it.get("day"))
        if it.get("scope", DAILY) != DAILY or day < first:
            continue
        by_day[day] = {
            "settled": int(it.get("settled", 0)),
            "reserved": int(it.get("reserved", 0)),
            "limit": int(it.get("limit", 0)),
        }
    agent: dict[str, int] = defaultdict(int)
    model: dict[str, int] = defaultdict(int)
    repo: dict[str, int] = defaultdict(int)
    run_day: dict[str, int] = defaultdict(int)
    paid: dict[str, list[int]] = defaultdict(list)
    cached_runs: dict[str, int] = defaultdict(int)
    prompt_saved = Decimal(0)
    cache_read_tokens = 0
    unpriced: set[str] = set()
    n_runs = 0
    for r in runs:
        ts = _epoch(r.get("created_at"))
        if ts is None:
            continue
        day = day_of(ts, tz)
        if day < first:
            continue
        n_runs += 1
        cost = int(r.get("cost_micros", 0) or 0)
        a, m = str(r.get("agent", "?")), str(r.get("model", "?"))
        agent[a] += cost
        model[m] += cost
        repo[str(r.get("repo", "?"))] += cost
        run_day[day] += cost
        if r.get("status") == "cached":
            cached_runs[a] += 1
            continue
        paid[a].append(cost)
        tokens = int(r.get("cache_read_input_tokens", 0) or 0)
        if tokens:
            try:
                rt = pricing.rates(m, on=dt.date.fromisoformat(day))
            except pricing.UnknownModel:
                unpriced.add(m)
                continue
            cache_read_tokens += tokens
            prompt_saved += tokens * (rt.input - rt.cache_read)
    result_saved = sum(
        Decimal(cached_runs[a]) * (Decimal(sum(paid[a])) / len(paid[a])) for a in cached_runs if paid[a]
    )
    daily_totals = {d: v["settled"] for d, v in by_day.items()} or dict(run_day)
    mean_day = Decimal(sum(daily_totals.values())) / days
    return {
        "days": days,
        "first_day": first,
        "tz": tz,
        "runs": n_runs,
        "by_day": dict(sorted(by_day.items())),
        "runs_by_day": dict(sorted(run_day.items())),
        "by_agent": dict(sorted(agent.items())),
        "by_model": dict(sorted(model.items())),
        "by_repo": dict(sorted(repo.items())),
        "cache": {
            "prompt_cache_read_tokens": cache_read_tokens,
            "prompt_cache_saved_micros": int(prompt_saved.to_integral_value(ROUND_HALF_UP)),
            "result_cache_hits": sum(cached_runs.values()),
            "result_cache_saved_micros": int(Decimal(result_saved).to_integral_value(ROUND_HALF_UP)),
            "unpriced_models": sorted(unpriced),
        },
        "projection": {
            "mean_per_day_micros": int(mean_day.to_integral_value(ROUND_HALF_UP)),
            "per_month_micros": int((mean_day * MONTH_DAYS).to_integral_value(ROUND_HALF_UP)),
            "month_days": MONTH_DAYS,
        },
    }


def _m(micros: int) -> str:
    return _usd(Decimal(micros) / MICRO, 4)


def render_report(s: Mapping[str, Any]) -> str:
    """Human-readable report of `summarize`'s result."""
    lines = [
        f"prfleet spend, last {s['days']} days from {s['first_day']} ({s['tz']}), {s['runs']} runs",
        "",
        "by day (ledger):",
    ]
    for day, v in s["by_day"].items():
        pct = f"{v['settled'] * 100 / v['limit']:.1f}%" if v["limit"] else "-"
        lines.append(
            f"  {day}  settled {_m(v['settled']):>14}  reserved {_m(v['reserved']):>12}  "
            f"limit {_m(v['limit']):>12}  {pct:>6}"
        )
    if not s["by_day"]:
        lines.append("  (no ledger items)")
    for title, key in (("by agent", "by_agent"), ("by model", "by_model"), ("by repository", "by_repo")):
        lines.append(f"{title} (runs):")
        for name, v in sorted(s[key].items(), key=lambda kv: -kv[1]):
            lines.append(f"  {name:<40} {_m(v):>14}")
        if not s[key]:
            lines.append("  (no runs)")
    c, p = s["cache"], s["projection"]
    lines += [
        "cache savings:",
        f"  prompt cache: {c['prompt_cache_read_tokens']:,} tokens read from cache, saved "
        f"{_m(c['prompt_cache_saved_micros'])}",
        f"  result cache: {c['result_cache_hits']:,} runs served from cache, saved about "
        f"{_m(c['result_cache_saved_micros'])} (mean paid run of the same agent)",
    ]
    if c["unpriced_models"]:
        lines.append(f"  not priced (unknown models): {', '.join(c['unpriced_models'])}")
    lines.append(
        f"projection: {_m(p['mean_per_day_micros'])}/day mean -> {_m(p['per_month_micros'])} "
        f"per {p['month_days']}-day month"
    )
    lines.append(
        f"  (how: the settled spend of the last {s['days']} budget days from the ledger, days without spend "
        f"counted as $0, divided by {s['days']} and multiplied by {p['month_days']}; the run records are used "
        "only when the ledger has no item)"
    )
    return "\n".join(lines) + "\n"


def run_report(
    args: argparse.Namespace,
    out: TextIO | None = None,
    client: Any = None,
    now: float | None = None,
    target: Any = None,
) -> int:
    """Handler of `prfleet cost report`: the stack's LedgerTable and StateTable (--stack NAME or --local)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from prfleet_local.cli.errors import aws_error
    from prfleet_local.cli.target import resolve

    out = out or sys.stdout
    target = target or resolve(args)
    tz = target.parameters.get("BudgetTimezone") or "UTC"
    if client is None:
        from prfleet.config.aws import client as aws_client

        client = aws_client("dynamodb")
    now = time.time() if now is None else now
    first = day_of(now - (args.days - 1) * 86400, tz)
    try:
        s = summarize(
            fetch_ledger(client, target.table("LedgerTable"), first),
            fetch_runs(client, target.table("StateTable")),
            days=args.days,
            now=now,
            tz=tz,
        )
    except (BotoCoreError, ClientError) as exc:
        raise aws_error(exc, f"read the cost tables of {target.where}") from None
    s["stack"] = target.where
    if args.json:
        json.dump(s, out, indent=2)
        out.write("\n")
    else:
        out.write(f"{target.where}\n" + render_report(s))
    return 0


# ------------------------------------------------------------------------------------------------ reconcile


def day_window(day: str, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """The UTC span of a budget day (its hours are what the Usage API buckets)."""
    from prfleet.cost.booking import day_end

    end = dt.datetime.fromtimestamp(day_end(day, tz), dt.timezone.utc)
    start_day = dt.date.fromisoformat(day)
    start = dt.datetime.fromtimestamp(
        day_end((start_day - dt.timedelta(days=1)).isoformat(), tz), dt.timezone.utc
    )
    return start, end


def reconcile_day(ledger: Any, get: Any, day: str, *, api_key_id: str = "") -> list[Any]:
    """The bill (Usage and Cost API through `get`) and the ledger side by side for one budget day, read-only."""
    from prfleet.cost import reconcile

    start, end = day_window(day, ledger.tz)
    return reconcile.compare(ledger, get, start=start, end=end, api_key_id=api_key_id)


def render_reconcile(day: str, rows: list[Any]) -> str:
    from prfleet.cost import reconcile

    lines = [
        f"Reconciliation of {day}: tokens on the bill (Usage and Cost API) against the ledger, per UTC hour and model",
        f"{'hour':<14} {'model':<22} {'bill':>10} {'ledger':>10} {'estimated':>16} {'drift':>9}",
    ]
    for r in rows:
        est = f"{r.est_calls} call(s) {r.est_tokens}" if r.est_calls else "-"
        lines.append(
            f"{r.hour:<14} {r.model:<22} {r.bill_total:>10} {sum(r.exact.values()):>10} {est:>16} {r.drift:>9}"
        )
    if not rows:
        lines.append("(no usage on the bill or in the ledger)")
    pct = reconcile.drift_percent(rows)
    lines.append(
        f"LedgerDriftPercent {pct:.2f} %: "
        + (
            "the bill holds tokens the ledger never booked (docs/runbook.md#drift)"
            if pct > 0
            else "every billed token is booked, exactly or within an estimate"
        )
    )
    return "\n".join(lines) + "\n"


def _admin_key(target: Any) -> str:
    """ANTHROPIC_ADMIN_KEY, else the stack's AdminKeySecret; a clear error when neither has one."""
    import os

    from prfleet_local.cli.errors import CliError

    key = os.environ.get("ANTHROPIC_ADMIN_KEY", "").strip()
    if key:
        return key
    from prfleet.config.aws import client as aws_client

    secret_id = target.physical("AdminKeySecret", "AWS::SecretsManager::Secret")
    raw = aws_client("secretsmanager").get_secret_value(SecretId=secret_id).get("SecretString") or "{}"
    try:
        value = json.loads(raw)
    except ValueError:
        value = {"value": raw}
    key = (value.get("admin_api_key") or value.get("value") or "") if isinstance(value, dict) else ""
    if not key:
        raise CliError(
            f'no Admin API key: fill the secret {secret_id} with {{"admin_api_key": "sk-ant-admin01-..."}} '
            "or set ANTHROPIC_ADMIN_KEY"
        )
    return str(key)


def run_reconcile(
    args: argparse.Namespace,
    out: TextIO | None = None,
    *,
    target: Any = None,
    ledger: Any = None,
    get: Any = None,
) -> int:
    """Handler of `prfleet cost reconcile --day D`: read-only; the ReconcileFunction applies adjustments."""
    import os

    from botocore.exceptions import BotoCoreError, ClientError

    from prfleet.cost import reconcile
    from prfleet.cost.ledger import Ledger
    from prfleet_local.cli.errors import CliError, aws_error
    from prfleet_local.cli.target import resolve

    out = out or sys.stdout
    if ledger is None or get is None:
        target = target or resolve(args)
        tz = target.parameters.get("BudgetTimezone") or "UTC"
        if ledger is None:
            from prfleet.config.aws import client as aws_client

            ledger = Ledger(
                target.table("LedgerTable"),
                daily_limit_micros=0,
                pr_limit_micros=0,
                tz=tz,
                client=aws_client("dynamodb"),
            )
        if get is None:
            url = args.api_url or os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
            try:
                get = reconcile.http_getter(url, _admin_key(target))
            except (BotoCoreError, ClientError) as exc:
                raise aws_error(exc, "read the AdminKeySecret") from None
        api_key_id = args.api_key_id or target.parameters.get("BillingApiKeyId", "")
    else:
        api_key_id = args.api_key_id or ""
    try:
        rows = reconcile_day(ledger, get, args.day, api_key_id=api_key_id)
    except RuntimeError as exc:  # the Usage API answered with an error (its message, never the key)
        raise CliError(str(exc)) from None
    except (BotoCoreError, ClientError) as exc:
        raise aws_error(exc, "read the LedgerTable") from None
    except OSError as exc:
        raise CliError(f"cannot reach the Usage and Cost API: {exc}") from None
    if args.json:
        json.dump(
            {
                "day": args.day,
                "drift_percent": reconcile.drift_percent(rows),
                "rows": [
                    {
                        "hour": r.hour,
                        "model": r.model,
                        "bill": r.bill,
                        "exact": r.exact,
                        "estimated_calls": r.est_calls,
                        "estimated_tokens": r.est_tokens,
                        "estimated_micros": r.est_micros,
                        "drift_tokens": r.drift,
                    }
                    for r in rows
                ],
            },
            out,
            indent=2,
        )
        out.write("\n")
    else:
        out.write(render_reconcile(args.day, rows))
    return 0


def _day(v: str) -> str:
    try:
        return dt.date.fromisoformat(v).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a day (YYYY-MM-DD)") from None


# -------------------------------------------------------------------------------------------------- parser


def _count(v: str, least: int) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a whole number") from None
    if n < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, got {n}")
    return n


def _positive(v: str) -> int:
    return _count(v, 1)


def _non_negative(v: str) -> int:
    return _count(v, 0)


def _price(v: str) -> Decimal:
    """USD per million tokens: a finite number, 0 or more."""
    try:
        d = Decimal(v)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a number") from None
    if not d.is_finite() or d < 0:
        raise argparse.ArgumentTypeError(f"must be a price of 0 or more, got {v}")
    return d


def _ratio(v: str) -> Decimal:
    d = _price(v)
    if d > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {v}")
    return d


def add_cost_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `cost estimate` and `cost report` on the main CLI's subparsers."""
    cost = subparsers.add_parser("cost", help="estimate and report model spend")
    sub = cost.add_subparsers(dest="cost_command", required=True)

    est = sub.add_parser("estimate", help="what a review fleet will cost per run, day and month")
    est.add_argument("--model", help="price from the table (e.g. claude-sonnet-5-5)")
    est.add_argument("--input-price", type=_price, help="USD per million input tokens")
    est.add_argument("--output-price", type=_price, help="USD per million output tokens")
    est.add_argument(
        "--cache-read-price",
        type=_price,
        help="USD per million cache-read tokens (default: 10%% of the input price)",
    )
    est.add_argument("--input-tokens", type=_non_negative, default=9_500, help="input tokens per request")
    est.add_argument("--requests", type=_positive, default=5, help="model requests per run")
    est.add_argument("--output-tokens", type=_non_negative, default=2_000, help="output tokens per run")
    est.add_argument("--agents", type=_positive, default=3)
    est.add_argument("--files", type=_positive, default=3, help="files per PR")
    est.add_argument("--prs-per-day", type=_positive, default=20)
    est.add_argument(
        "--cache-read-ratio",
        type=_ratio,
        default=Decimal(0),
        help="fraction of input tokens read from the prompt cache (0..1)",
    )
    est.add_argument("--json", action="store_true")
    est.set_defaults(func=run_estimate)

    rep = sub.add_parser("report", help="spend by day, agent, model and repository from DynamoDB")
    rep.add_argument("--days", type=_positive, default=7)
    rep.add_argument("--json", action="store_true")
    from prfleet_local.cli.target import add_target_options

    add_target_options(rep)
    rep.set_defaults(func=run_report)

    rec = sub.add_parser(
        "reconcile", help="the ledger against Anthropic's Usage and Cost API for one budget day"
    )
    rec.add_argument(
        "--day", type=_day, required=True, help="budget day, YYYY-MM-DD (in the stack's BudgetTimezone)"
    )
    rec.add_argument(
        "--api-url", help="Usage API base URL (default: ANTHROPIC_BASE_URL or https://api.anthropic.com)"
    )
    rec.add_argument(
        "--api-key-id", help="compare only this API key's usage (default: the stack's BillingApiKeyId)"
    )
    rec.add_argument("--json", action="store_true")
    add_target_options(rec)
    rec.set_defaults(func=run_reconcile)
    return cost
