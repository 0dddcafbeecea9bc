"""Exact model prices: the cost of a call in integer micro-dollars, from the SDK's usage.

Prices are data (prices.json, copied from https://platform.claude.com/docs/en/about-claude/pricing; the
file records the date it was checked). A price of P USD per million tokens is exactly P micro-dollars per
token, so cost = sum(tokens x price) is computed in Decimal and rounded once: no float drift. An unknown
model raises UnknownModel: a model we cannot price must never be treated as free.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

PRICES_PATH = Path(__file__).with_name("prices.json")
BUCKETS = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")


class UnknownModel(KeyError):
    """The model (or its price on the requested date) is not in the price table."""


@dataclass(frozen=True)
class Card:
    """USD per million tokens for each usage bucket (one price tier)."""

    input: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    output: Decimal

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Card:
        return cls(**{b: Decimal(str(row[b])) for b in BUCKETS})


@dataclass(frozen=True)
class Tier:
    """Rates that apply to every token of a request whose prompt is longer than `above_prompt_tokens`."""

    above_prompt_tokens: int
    card: Card


@dataclass(frozen=True)
class Rates:
    """The price row of one model in effect on a date."""

    model: str
    effective: _dt.date
    card: Card
    tiers: tuple[Tier, ...] = ()
    geo_multipliers: Mapping[str, Decimal] | None = None
    status: str = "active"

    # Convenience accessors for the base (shortest-prompt) tier.
    @property
    def input(self) -> Decimal:
        return self.card.input

    @property
    def cache_write_5m(self) -> Decimal:
        return self.card.cache_write_5m

    @property
    def cache_write_1h(self) -> Decimal:
        return self.card.cache_write_1h

    @property
    def cache_read(self) -> Decimal:
        return self.card.cache_read

    @property
    def output(self) -> Decimal:
        return self.card.output

    def card_for_prompt(self, prompt_tokens: int) -> Card:
        """The rate card for a request with this many prompt tokens (input + cache writes + cache reads)."""
        chosen = self.card
        for tier in sorted(self.tiers, key=lambda t: t.above_prompt_tokens):
            if prompt_tokens > tier.above_prompt_tokens:
                chosen = tier.card
        return chosen

    def geo_multiplier(self, inference_geo: str | None) -> Decimal:
        """1.1 for US-only inference on models that support it; 1 otherwise (older models reject the
        parameter, so such a call is never billed at a premium)."""
        if not inference_geo or not self.geo_multipliers:
            return Decimal(1)
        return self.geo_multipliers.get(inference_geo, Decimal(1))


@dataclass(frozen=True)
class PriceTable:
    source: str
    checked: str
    batch_discount: Decimal
    rows: Mapping[str, tuple[Rates, ...]]  # canonical id -> rows sorted by effective date
    aliases: Mapping[str, str]  # alias or id -> canonical id

    def canonical(self, model: str) -> str:
        key = model.strip()
        if key in self.aliases:
            return self.aliases[key]
        raise UnknownModel(model)

    def models(self) -> list[str]:
        return sorted(self.rows)


def load_table(path: Path | str = PRICES_PATH) -> PriceTable:
    """Parse prices.json (strings or numbers, read as exact decimals)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"), parse_float=Decimal)
    geo = {k: Decimal(str(v)) for k, v in data.get("inference_geo_multipliers", {}).items()}
    rows: dict[str, list[Rates]] = {}
    aliases: dict[str, str] = {}
    for row in data["models"]:
        model = row["model"]
        tiers = tuple(Tier(int(t["above_prompt_tokens"]), Card.from_row(t)) for t in row.get("tiers", []))
        rates = Rates(
            model=model,
            effective=_dt.date.fromisoformat(row["effective"]),
            card=Card.from_row(row),
            tiers=tiers,
            geo_multipliers=geo if row.get("geo") else None,
            status=row.get("status", "active"),
        )
        rows.setdefault(model, []).append(rates)
        for name in [model, *row.get("aliases", [])]:
            if aliases.setdefault(name, model) != model:
                raise ValueError(f"prices.json: alias {name!r} points at two models")
    return PriceTable(
        source=data["source"],
        checked=data["checked"],
        batch_discount=Decimal(str(data["batch_discount"])),
        rows={m: tuple(sorted(r, key=lambda x: x.effective)) for m, r in rows.items()},
        aliases=aliases,
    )


@lru_cache(maxsize=1)
def table() -> PriceTable:
    """The packaged price table, parsed once per process."""
    return load_table()


def rates(model: str, *, on: _dt.date | None = None) -> Rates:
    """The row in effect for `model` on `on` (default: today, UTC). Raises UnknownModel."""
    t = table()
    rows = t.rows[t.canonical(model)]
    day = on or _dt.datetime.now(_dt.timezone.utc).date()
    applicable = [r for r in rows if r.effective <= day]
    if not applicable:
        raise UnknownModel(f"{model} has no price on {day.isoformat()}")
    return applicable[-1]


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


@dataclass(frozen=True)
class Tokens:
    """Usage split into the five billed buckets (5m and 1h cache writes separated)."""

    input: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    output: int = 0

    @property
    def prompt(self) -> int:
        return self.input + self.cache_write_5m + self.cache_write_1h + self.cache_read


def split_usage(usage: Any) -> Tokens:
    """Read an anthropic Usage (or a dict of the same shape). Cache writes without the per-TTL split are
    priced as 5-minute writes, the API's default TTL."""

    def n(v: Any) -> int:
        return int(v or 0)

    total_write = n(_get(usage, "cache_creation_input_tokens"))
    cc = _get(usage, "cache_creation")
    w5 = n(_get(cc, "ephemeral_5m_input_tokens"))
    w1 = n(_get(cc, "ephemeral_1h_input_tokens"))
    if cc is None or (w5 + w1 == 0 and total_write):
        w5, w1 = total_write, 0
    return Tokens(
        input=n(_get(usage, "input_tokens")),
        cache_write_5m=w5,
        cache_write_1h=w1,
        cache_read=n(_get(usage, "cache_read_input_tokens")),
        output=n(_get(usage, "output_tokens")),
    )


def exact_cost(
    model: str,
    usage: Any,
    *,
    batch: bool = False,
    inference_geo: str | None = None,
    on: _dt.date | None = None,
) -> Decimal:
    """Cost in micro-dollars as an exact Decimal (before rounding)."""
    r = rates(model, on=on)
    if _get(usage, "speed") == "fast":
        raise UnknownModel(f"{model}: fast mode is not in the price table")
    tok = usage if isinstance(usage, Tokens) else split_usage(usage)
    card = r.card_for_prompt(tok.prompt)
    total = sum((Decimal(getattr(tok, b)) * getattr(card, b) for b in BUCKETS), Decimal(0))
    if batch or _get(usage, "service_tier") == "batch":
        total *= table().batch_discount
    geo = inference_geo if inference_geo is not None else _get(usage, "inference_geo")
    return total * r.geo_multiplier(geo)


def cost_micros(
    model: str,
    usage: Any,
    *,
    batch: bool = False,
    inference_geo: str | None = None,
    on: _dt.date | None = None,
) -> int:
    """Cost of one call in integer micro-dollars (half-up rounding, once). `inference_geo` defaults to
    the value reported in `usage`; `batch` also follows usage.service_tier == "batch"."""
    return int(
        exact_cost(model, usage, batch=batch, inference_geo=inference_geo, on=on).to_integral_value(
            rounding=ROUND_HALF_UP
        )
    )


def worst_case_micros(
    model: str,
    input_tokens: int,
    max_tokens: int,
    *,
    cache_write: str | None = "1h",
    inference_geo: str | None = None,
    on: _dt.date | None = None,
) -> int:
    """Upper bound of a call's cost, for the budget reservation: every input token at the dearest input
    bucket the call may use (uncached, or a cache write of the given TTL; "1h" is the dearest), plus
    max_tokens at the output rate, in the prompt-length tier the input falls in, rounded up."""
    r = rates(model, on=on)
    card = r.card_for_prompt(input_tokens)
    per_input = card.input
    if cache_write == "5m":
        per_input = max(per_input, card.cache_write_5m)
    elif cache_write == "1h":
        per_input = max(per_input, card.cache_write_1h, card.cache_write_5m)
    total = Decimal(input_tokens) * per_input + Decimal(max_tokens) * card.output
    total *= r.geo_multiplier(inference_geo)
    return int(total.to_integral_value(rounding=ROUND_CEILING))


def estimate_input_tokens(text: str) -> int:
    """Conservative token count for reservations: one token per 3 characters, rounded up (newer Claude
    tokenizers average well above 3 characters per token for code and prose)."""
    return math.ceil(len(text) / 3)


def micros_to_usd(micros: int) -> Decimal:
    """Micro-dollars as an exact Decimal USD amount (for display)."""
    return Decimal(micros) / Decimal(1_000_000)


def cache_minimum_tokens(model: str) -> int:
    """The model's minimum cacheable prompt length (prices.json "cache_minimum_tokens", with its source): a
    breakpoint whose prefix is shorter caches nothing. Unknown models get the strictest documented value."""
    data = _cache_minimums()
    models: Mapping[str, int] = data.get("models", {})
    try:
        name = table().canonical(model)
    except UnknownModel:
        name = model.strip()
    return int(models.get(name, data.get("default", 4096)))


@lru_cache(maxsize=1)
def _cache_minimums() -> dict[str, Any]:
    return dict(json.loads(PRICES_PATH.read_text(encoding="utf-8")).get("cache_minimum_tokens", {}))
