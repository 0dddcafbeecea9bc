"""The offline server's own bill, and the Usage API report over it.

Every call the server answered with generated output is billed, as Anthropic bills it: also when the client
timed out or the connection was reset after the request was read, and when the 200 body it received was cut.
Error replies (400, 401, 429, 5xx with an error body) are not billed.

`usage_report()` serves that bill exactly as GET /v1/organizations/usage_report/messages does
(https://platform.claude.com/docs/en/api/admin/usage_report/retrieve_messages and the Usage and Cost API page,
https://platform.claude.com/docs/en/manage-claude/usage-cost-api): `starting_at` (RFC 3339, required, snapped to
the bucket start in UTC), `ending_at` (buckets that end before it), `bucket_width` 1d (default) / 1h / 1m,
`limit` (1d: default 7, max 31; 1h: default 24, max 168; 1m: default 60, max 1440), `page` (the previous
response's `next_page`), `group_by[]` (any subset of the documented dimensions; `speed` only with the
`fast-mode-2026-02-01` beta header), filters `models[]`, `api_key_ids[]`, `workspace_ids[]`, `service_tiers[]`,
`context_window[]`, `inference_geos[]`. Each bucket is `{starting_at, ending_at, results: [...]}`; a result
carries the token buckets and every dimension, null when not grouped by it. Every bucket of the range is
returned, with `results: []` when nothing was used in it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

WORKSPACE_ID = "wrkspc_offline_default"
GROUP_BY = (
    "account_id",
    "api_key_id",
    "context_window",
    "inference_geo",
    "model",
    "service_account_id",
    "service_tier",
    "speed",
    "workspace_id",
)
FILTERS = {  # query parameter -> record field
    "models": "model",
    "api_key_ids": "api_key_id",
    "workspace_ids": "workspace_id",
    "service_tiers": "service_tier",
    "context_window": "context_window",
    "inference_geos": "inference_geo",
    "account_ids": "account_id",
    "service_account_ids": "service_account_id",
    "speeds": "speed",
}
WIDTHS = {"1d": (86400, 7, 31), "1h": (3600, 24, 168), "1m": (60, 60, 1440)}  # seconds, default, max
SPEED_BETA = "fast-mode-2026-02-01"


class ReportError(ValueError):
    """A usage-report query the real endpoint would answer with 400 invalid_request_error."""


def api_key_id(key: str) -> str:
    """A stable id per API key, in the shape of the real ones (`apikey_...`); never the key itself."""
    return "apikey_offline_" + hashlib.sha256(key.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class BillRecord:
    """One billed call: what the Usage API would count for it, and how it ended for the client."""

    request_id: str
    time: float  # epoch seconds when the server billed it
    model: str
    api_key_id: str
    uncached_input_tokens: int
    cache_creation_5m_input_tokens: int
    cache_creation_1h_input_tokens: int
    cache_read_input_tokens: int
    output_tokens: int
    thinking_tokens: int
    outcome: str  # "ok" or the fault that hid the reply: timeout_after_billing, reset_after_read, ...
    streamed: bool
    workspace_id: str = WORKSPACE_ID
    service_tier: str = "standard"
    inference_geo: str = "not_available"
    context_window: str = "0-200k"
    speed: str = "standard"
    account_id: str | None = None
    service_account_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Bill:
    """Thread-safe list of billed calls."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._records: list[BillRecord] = []
        self._lock = threading.Lock()

    def add(self, record: BillRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[BillRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def usage_report(self, query: Mapping[str, Sequence[str]], headers: Mapping[str, str]) -> dict[str, Any]:
        """The report for a parsed query string (parameter -> values; `x[]` and `x` are the same)."""
        return usage_report(self.records(), query, headers, now=self.clock())


def _param(query: Mapping[str, Sequence[str]], name: str) -> list[str]:
    return [v for key in (name, name + "[]") for v in query.get(key, [])]


def _one(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = _param(query, name)
    if len(values) > 1:
        raise ReportError(f"{name}: expected a single value")
    return values[0] if values else None


def _parse_time(value: str, name: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ReportError(f"{name}: not an RFC 3339 timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        raise ReportError(f"{name}: an RFC 3339 timestamp needs a time zone offset: {value!r}")
    return parsed.astimezone(dt.timezone.utc)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def page_token(start: float) -> str:
    return "page_" + base64.b64encode(_iso(start).encode()).decode()


def _from_token(token: str) -> float:
    try:
        if not token.startswith("page_"):
            raise ValueError(token)
        return _parse_time(base64.b64decode(token[5:], validate=True).decode(), "page").timestamp()
    except (ValueError, ReportError) as exc:
        raise ReportError(f"page: invalid page token {token!r}") from exc


def usage_report(
    records: Sequence[BillRecord],
    query: Mapping[str, Sequence[str]],
    headers: Mapping[str, str],
    *,
    now: float,
) -> dict[str, Any]:
    """Pure core of GET /v1/organizations/usage_report/messages over `records`."""
    width_name = _one(query, "bucket_width") or "1d"
    if width_name not in WIDTHS:
        raise ReportError(f"bucket_width: must be one of 1d, 1h, 1m, got {width_name!r}")
    width, default_limit, max_limit = WIDTHS[width_name]
    raw_limit = _one(query, "limit")
    try:
        limit = default_limit if raw_limit is None else int(raw_limit)
    except ValueError as exc:
        raise ReportError(f"limit: must be an integer, got {raw_limit!r}") from exc
    if not 1 <= limit <= max_limit:
        raise ReportError(f"limit: must be between 1 and {max_limit} for bucket_width {width_name}")
    group_by = _param(query, "group_by")
    for g in group_by:
        if g not in GROUP_BY:
            raise ReportError(f"group_by: unknown value {g!r}; one of {', '.join(GROUP_BY)}")
    if "speed" in group_by and SPEED_BETA not in headers.get("anthropic-beta", ""):
        raise ReportError(f"group_by: grouping by speed requires the {SPEED_BETA} beta header")
    starting = _one(query, "starting_at")
    if starting is None:
        raise ReportError("starting_at: field required")
    start = _parse_time(starting, "starting_at").timestamp()
    token = _one(query, "page")
    if token:
        start = _from_token(token)
    start = start - (start % width)  # snapped to the start of the minute / hour / day in UTC
    ending = _one(query, "ending_at")
    end = _parse_time(ending, "ending_at").timestamp() if ending else now - (now % width) + width
    filters = {field: set(_param(query, p)) for p, field in FILTERS.items() if _param(query, p)}
    chosen = [r for r in records if all(getattr(r, f) in allowed for f, allowed in filters.items())]
    data = []
    cursor = start
    while cursor + width <= end and len(data) < limit:
        groups: dict[tuple, dict[str, Any]] = {}
        for r in chosen:
            if not cursor <= r.time < cursor + width:
                continue
            key = tuple(getattr(r, g) for g in group_by)
            row = groups.setdefault(
                key,
                {
                    "uncached_input_tokens": 0,
                    "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
                    "cache_read_input_tokens": 0,
                    "output_tokens": 0,
                    "server_tool_use": {"web_search_requests": 0},
                    **{d: (getattr(r, d) if d in group_by else None) for d in GROUP_BY},
                },
            )
            row["uncached_input_tokens"] += r.uncached_input_tokens
            row["cache_creation"]["ephemeral_1h_input_tokens"] += r.cache_creation_1h_input_tokens
            row["cache_creation"]["ephemeral_5m_input_tokens"] += r.cache_creation_5m_input_tokens
            row["cache_read_input_tokens"] += r.cache_read_input_tokens
            row["output_tokens"] += r.output_tokens
        data.append(
            {
                "starting_at": _iso(cursor),
                "ending_at": _iso(cursor + width),
                "results": [groups[k] for k in sorted(groups, key=lambda k: [str(x) for x in k])],
            }
        )
        cursor += width
    has_more = cursor + width <= end
    return {"data": data, "has_more": has_more, "next_page": page_token(cursor) if has_more else None}
