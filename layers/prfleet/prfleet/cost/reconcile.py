"""Reconciliation with the bill: Anthropic's Usage and Cost API against the ledger, per UTC hour and model.

The report is GET /v1/organizations/usage_report/messages with an Admin API key (`x-api-key: sk-ant-admin01-...`,
`anthropic-version: 2023-06-01`), `bucket_width=1h` (at most 168 buckets a page), `group_by[]=model`,
`group_by[]=api_key_id`, `group_by[]=inference_geo`, optionally `api_key_ids[]` for the deployment's key, pages
followed through `has_more` / `next_page` -> `page`. Each result row carries `uncached_input_tokens`,
`cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens`, `cache_read_input_tokens` and
`output_tokens` (https://platform.claude.com/docs/en/api/admin/usage_report/retrieve_messages,
https://platform.claude.com/docs/en/manage-claude/usage-cost-api).

Per (hour, model): bill tokens B, ledger exact tokens E, and the worst-case tokens W of the calls booked
`estimated`/`expired`. drift = B - E - W tokens; LedgerDriftPercent = 100 x the sum of positive drifts / the sum of B:
above 0 the bill holds tokens the ledger never booked (a released-but-billed call), the budget is not holding.
A negative drift is the safety margin of estimates. The adjustment moves the day total onto the bill: the cost of
B - E (the estimated calls as billed, at the geo the bill reports) minus what the estimates booked; it is applied
once per (hour, model), idempotently. B - E is priced in the base prompt-length tier when no estimated call of the
row could have crossed a tier threshold (its worst-case prompt, `est_tiered` = 0) and nothing is unbooked, else in
the dearest tier (the report has no per-call prompt lengths: the safe side). It is rounded half-up once, as each
call is: the reconciled row differs from the sum of per-call rounded costs by at most half a micro-dollar per
estimated call plus one half (the only inexactness left, `rounding_slack`).
Rows are keyed by the hour the call was reserved in (prfleet.cost.ledger), so an estimate the sweeper books hours
later is reconciled against its call's hour; a call reserved in an hour's last moments and billed in the next is
carried into the next hour (`carry`), so it is neither drift nor an estimate's tokens there. A complete hour the bill has no tokens for removes its estimates:
those calls were not billed.
"""

from __future__ import annotations

import datetime as _dt
import json
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from prfleet.config import secret_store, settings
from prfleet.cost import pricing
from prfleet.cost.booking import HOUR_FORMAT
from prfleet.cost.ledger import Ledger

REPORT_PATH = "/v1/organizations/usage_report/messages"
ANTHROPIC_VERSION = "2023-06-01"


@dataclass
class Row:
    hour: str
    model: str
    bill: dict[str, int] = field(default_factory=dict)  # token bucket -> tokens
    bill_geo: dict[str, int] = field(default_factory=dict)  # geo -> tokens (for pricing the difference)
    exact: dict[str, int] = field(default_factory=dict)
    est_tokens: int = 0
    est_calls: int = 0
    est_micros: int = 0
    exact_micros: int = 0
    est_tiered: int = 0  # estimated calls whose worst-case prompt may lie above the base tier
    # <= 0: tokens the ledger booked in the hour before beyond that hour's bill (see carry)
    carry_in: dict[str, int] = field(default_factory=dict)
    carry_est: int = (
        0  # the hour before's estimated tokens its bill did not show (they may be billed in this one)
    )

    @property
    def rounding_slack(self) -> float:
        """How far (µ$) the reconciled row may sit from the sum of the bill's per-call rounded costs."""
        return 0.0 if self.est_calls <= 0 else 0.5 * self.est_calls + 0.5

    @property
    def bill_total(self) -> int:
        return sum(self.bill.values())

    @property
    def ledger_total(self) -> int:
        return sum(self.exact.values()) + self.est_tokens

    @property
    def residual(self) -> dict[str, int]:
        """Per bucket: billed tokens the ledger has not booked exactly in this hour (negative: the ledger booked
        more than the bill shows, i.e. calls reserved just before the hour ended and billed in the next one)."""
        return {
            b: self.bill.get(b, 0) - self.exact.get(b, 0) + self.carry_in.get(b, 0) for b in pricing.BUCKETS
        }

    @property
    def diff(self) -> dict[str, int]:
        """The tokens of the estimated (or unbooked) calls as billed."""
        return {b: max(0, v) for b, v in self.residual.items()}

    @property
    def drift(self) -> int:
        """Tokens on the bill the ledger never booked, not even as an estimate (> 0 breaks the budget)."""
        return sum(self.diff.values()) - self.est_tokens - self.carry_est

    def adjustment(self, on: _dt.date) -> int:
        """Micro-dollars that move the ledger onto the bill for this hour and model."""
        diff = self.diff
        if not any(diff.values()):
            return -self.est_micros
        r = pricing.rates(self.model, on=on)
        card = r.card
        if self.est_tiered > 0 or self.drift > 0:
            card = max((t.card for t in r.tiers), key=lambda c: c.output, default=r.card)
        geo = max(self.bill_geo, key=lambda g: self.bill_geo[g], default=None)
        cost = sum(Decimal(diff[b]) * getattr(card, b) for b in pricing.BUCKETS) * r.geo_multiplier(geo)
        return int(cost.to_integral_value(rounding=ROUND_HALF_UP)) - self.est_micros


def _hour(ts: str) -> str:
    return (
        _dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        .astimezone(_dt.timezone.utc)
        .strftime(HOUR_FORMAT)
    )


def parse_report(pages: Iterable[dict[str, Any]], *, api_key_id: str = "") -> dict[tuple[str, str], Row]:
    """Pure: the report's hourly rows by (hour, model); rows of other API keys are left out when one is given."""
    rows: dict[tuple[str, str], Row] = {}
    for page in pages:
        for bucket in page.get("data", []):
            hour = _hour(bucket["starting_at"])
            for res in bucket.get("results", []):
                if api_key_id and res.get("api_key_id") not in (api_key_id, None):
                    continue
                model = str(res.get("model") or "unknown")
                row = rows.setdefault((hour, model), Row(hour, model))
                cc = res.get("cache_creation") or {}
                tokens = {
                    "input": int(res.get("uncached_input_tokens") or 0),
                    "cache_write_5m": int(cc.get("ephemeral_5m_input_tokens") or 0),
                    "cache_write_1h": int(cc.get("ephemeral_1h_input_tokens") or 0),
                    "cache_read": int(res.get("cache_read_input_tokens") or 0),
                    "output": int(res.get("output_tokens") or 0),
                }
                for b, n in tokens.items():
                    row.bill[b] = row.bill.get(b, 0) + n
                geo = str(res.get("inference_geo") or "global")
                row.bill_geo[geo] = row.bill_geo.get(geo, 0) + sum(tokens.values())
    return rows


def merge_ledger(rows: dict[tuple[str, str], Row], hour: str, usage: dict[str, dict[str, int]]) -> None:
    """Pure: add the ledger's usage items of one hour (Ledger.usage) to the rows."""
    for model, u in usage.items():
        row = rows.setdefault((hour, model), Row(hour, model))
        row.exact = {b: u.get(b, 0) for b in pricing.BUCKETS}
        row.est_tokens = u.get("est_input", 0) + u.get("est_output", 0)
        row.est_calls = u.get("est_calls", 0)
        row.est_micros = u.get("est_micros", 0)
        # Usage items written before `est_tiered` existed: their estimates may be tiered (the safe side).
        row.est_tiered = u.get("est_tiered", row.est_calls)
        row.exact_micros = u.get("exact_micros", 0)


def carry(rows: Iterable[Row]) -> None:
    """Pure: a call is reserved (and booked in that hour) just before it reaches the API; one reserved in the last
    moments of an hour is billed in the next. Per model and bucket, what an hour booked beyond its bill is carried
    into the following hour, where the bill holds it, instead of being counted as an estimate's tokens there (and
    as unbooked drift, priced in the dearest tier); the hour's estimated tokens its bill did not show count as
    booked for the next hour's drift (the estimated call may be the one billed there). Only into the very next
    hour; past that it is dropped (the ledger then stays above the bill: the safe side). Pricing is linear per
    bucket, so moving tokens between adjacent hours of one model changes the total only through the tier choice."""
    by_model: dict[str, list[Row]] = {}
    for r in rows:
        by_model.setdefault(r.model, []).append(r)
    for model_rows in by_model.values():
        model_rows.sort(key=lambda r: r.hour)
        for prev, row in zip(model_rows, model_rows[1:], strict=False):
            nxt = _dt.datetime.strptime(prev.hour, HOUR_FORMAT) + _dt.timedelta(hours=1)
            if nxt.strftime(HOUR_FORMAT) == row.hour:
                row.carry_in = {b: min(0, v) for b, v in prev.residual.items()}
                row.carry_est = max(0, prev.est_tokens - sum(prev.diff.values()))


def drift_percent(rows: Iterable[Row]) -> float:
    rows = list(rows)
    billed = sum(r.bill_total for r in rows)
    missing = sum(max(0, r.drift) for r in rows)
    return 0.0 if billed == 0 else round(100.0 * missing / billed, 4)


def hours(start: _dt.datetime, end: _dt.datetime) -> list[str]:
    out, t = [], start.replace(minute=0, second=0, microsecond=0)
    while t < end:
        out.append(t.strftime(HOUR_FORMAT))
        t += _dt.timedelta(hours=1)
    return out


def _rfc3339(t: _dt.datetime) -> str:
    return t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fetch_report(
    get: Callable[[str], dict[str, Any]], *, start: _dt.datetime, end: _dt.datetime, api_key_id: str = ""
) -> list[dict[str, Any]]:
    """Every page of the hourly report from `start` to `end` (`get(path_and_query) -> JSON`)."""
    params: list[tuple[str, str]] = [
        ("starting_at", _rfc3339(start)),
        ("ending_at", _rfc3339(end)),
        ("bucket_width", "1h"),
        ("limit", "168"),
        ("group_by[]", "model"),
        ("group_by[]", "api_key_id"),
        ("group_by[]", "inference_geo"),
    ]
    if api_key_id:
        params.append(("api_key_ids[]", api_key_id))
    pages, page = [], None
    for _ in range(1000):
        query = params + ([("page", page)] if page else [])
        data = get(REPORT_PATH + "?" + urllib.parse.urlencode(query))
        pages.append(data)
        if not data.get("has_more") or not data.get("next_page"):
            return pages
        page = str(data["next_page"])
    raise RuntimeError("usage report: more than 1000 pages")


def http_getter(base_url: str, admin_key: str, *, timeout: float = 30.0) -> Callable[[str], dict[str, Any]]:
    """GET with the Admin API key; an error status raises with the API's message (never the key)."""

    def get(path: str) -> dict[str, Any]:
        req = urllib.request.Request(  # noqa: S310 - https (or the local offline server's loopback URL)
            base_url.rstrip("/") + path,
            headers={
                "x-api-key": admin_key,
                "anthropic-version": ANTHROPIC_VERSION,
                "accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()[:300].decode(errors="replace")
            raise RuntimeError(f"usage report: HTTP {exc.code}: {body}") from None

    return get


def compare(
    ledger: Ledger,
    get: Callable[[str], dict[str, Any]],
    *,
    start: _dt.datetime,
    end: _dt.datetime,
    api_key_id: str = "",
) -> list[Row]:
    """The bill and the ledger side by side, one row per (hour, model) that either side has."""
    rows = parse_report(fetch_report(get, start=start, end=end, api_key_id=api_key_id), api_key_id=api_key_id)
    for hour in hours(start, end):
        merge_ledger(rows, hour, ledger.usage(hour))
    out = sorted(rows.values(), key=lambda r: (r.hour, r.model))
    carry(out)
    return out


def apply(ledger: Ledger, rows: Iterable[Row], *, now: float) -> int:
    """Move each (hour, model) of the ledger onto the bill, once: returns the micro-dollars applied now."""
    total = 0
    for row in rows:
        if not row.bill_total and not row.est_micros:
            continue  # nothing billed and nothing estimated: nothing to move
        start = _dt.datetime.strptime(row.hour, HOUR_FORMAT).replace(tzinfo=_dt.timezone.utc)
        day = ledger.day(start.timestamp())
        want = row.adjustment(_dt.date.fromisoformat(day))
        total += ledger.adjust(day, row.hour, row.model, want, now=now)
    return total


WINDOW_HOURS = 48  # each run re-reads the last two days: late bill rows and late settles are picked up
LAG_S = 3600  # the report lags the calls; the current hour is left for the next run


@dataclass(frozen=True)
class Result:
    rows: list[Row]
    drift_percent: float
    applied_micros: int


def run(
    ledger: Ledger,
    get: Callable[[str], dict[str, Any]],
    *,
    now: float,
    api_key_id: str = "",
    apply_adjustments: bool = True,
) -> Result:
    """One reconciliation pass over the complete hours of the last WINDOW_HOURS."""
    end = _dt.datetime.fromtimestamp(now - LAG_S, _dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = end - _dt.timedelta(hours=WINDOW_HOURS)
    # One hour more is read for what it carries into the window's first hour (carry); it is not applied again:
    # its own carry-in is outside what is read now, and its marker was set when it was inside the window.
    before = (start - _dt.timedelta(hours=1)).strftime(HOUR_FORMAT)
    rows = compare(ledger, get, start=start - _dt.timedelta(hours=1), end=end, api_key_id=api_key_id)
    rows = [r for r in rows if r.hour != before]
    applied = apply(ledger, rows, now=now) if apply_adjustments else 0
    return Result(rows, drift_percent(rows), applied)


def admin_getter() -> Callable[[str], dict[str, Any]] | None:
    """The Usage API getter with the Admin API key from its secret, or None when no key is configured."""

    cfg = settings()
    if not cfg.admin_secret_id:
        return None
    try:
        value = secret_store.get_json(cfg.admin_secret_id, '{"admin_api_key": "sk-ant-admin01-..."}')
    except secret_store.SecretMissing:
        return None
    key = value.get("admin_api_key") or value.get("api_key") or value.get("value")
    if not key:
        return None
    return http_getter(cfg.anthropic_base_url or "https://api.anthropic.com", str(key))
