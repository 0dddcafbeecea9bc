"""Exact model prices: the cost of a call in integer micro-dollars, from the SDK's usage.

Prices are data (prices.json, copied from https://platform.claude.com/docs/en/about-claude/pricing; the
file records the date it was checked). A price of P USD per million tokens is exactly P micro-dollars per
token, so cost = sum(tokens x price) is computed in Decimal and rounded once: no float drift. An unknown
model raises UnknownModel: a model we cannot price must never be treated as free.

Providers (prices.json "providers"): Claude Platform on AWS uses the Claude API's ids and prices; Amazon Bedrock
spells models as inference profiles ("global.anthropic.claude-sonnet-4-6") and charges a regional premium on
geographic profiles. `provider_model` says whether an id is valid for a provider; `rates` resolves any of them.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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
    endpoint_multiplier: Decimal = Decimal(1)  # the provider's premium for the id used (Bedrock geo profiles)

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
class ProviderModel:
    """A model id as one provider spells it: the Claude API model it is, and the provider's price multiplier."""

    provider: str
    model_id: str
    canonical: str
    multiplier: Decimal
    source: str


@dataclass(frozen=True)
class PriceTable:
    source: str
    checked: str
    batch_discount: Decimal
    rows: Mapping[str, tuple[Rates, ...]]  # canonical id -> rows sorted by effective date
    aliases: Mapping[str, str]  # alias or id -> canonical id
    # provider -> its model ids; "anthropic" is the aliases above (built by load_table)
    provider_ids: Mapping[str, Mapping[str, ProviderModel]] = field(default_factory=dict)

    def canonical(self, model: str) -> str:
        key = model.strip()
        if key in self.aliases:
            return self.aliases[key]
        for ids in self.provider_ids.values():
            if key in ids:
                return ids[key].canonical
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
        provider_ids=_provider_ids(data, aliases, data["source"]),
    )


def _provider_ids(
    data: Mapping[str, Any], aliases: Mapping[str, str], source: str
) -> dict[str, dict[str, ProviderModel]]:
    """Every model id each provider accepts. A row naming a model the table cannot price is an error here,
    not a zero price later."""
    one = Decimal(1)
    out: dict[str, dict[str, ProviderModel]] = {
        "anthropic": {a: ProviderModel("anthropic", a, m, one, source) for a, m in aliases.items()}
    }
    for provider, spec in data.get("providers", {}).items():
        ids: dict[str, ProviderModel] = {}
        regional = Decimal(str(spec.get("regional_multiplier", "1")))
        for row in spec.get("models", []):
            model = row["model"]
            if model not in aliases:
                raise ValueError(f"prices.json: provider {provider} lists {model!r}, which has no price row")
            if "bedrock_id" not in row:
                ids[model] = ProviderModel(provider, model, aliases[model], one, row["source"])
                continue
            for profile in row["profiles"]:
                mult = one if profile == "global" or not row.get("regional_premium") else regional
                mid = f"{profile}.{row['bedrock_id']}"
                ids[mid] = ProviderModel(provider, mid, aliases[model], mult, row["source"])
        out[provider] = ids
    return out


def provider_models(provider: str) -> list[str]:
    """The model ids `provider` accepts (for deploy-time checks and messages)."""
    return sorted(table().provider_ids.get(provider, {}))


def provider_model(provider: str, model: str) -> ProviderModel:
    """`model` as `provider` spells it; UnknownModel when that provider does not offer it under this id."""
    ids = table().provider_ids.get(provider)
    if ids is None:
        raise UnknownModel(f"unknown model provider {provider!r}")
    try:
        return ids[model.strip()]
    except KeyError:
        raise UnknownModel(f"{model} is not a model id of provider {provider}") from None


@lru_cache(maxsize=1)
def table() -> PriceTable:
    """The packaged price table, parsed once per process."""
    return load_table()


def rates(model: str, *, on: _dt.date | None = None) -> Rates:
    """The row in effect for `model` on `on` (default: today, UTC), in any provider's spelling (a Bedrock
    inference profile carries its regional premium). Raises UnknownModel."""
    t = table()
    rows = t.rows[t.canonical(model)]
    day = on or _dt.datetime.now(_dt.timezone.utc).date()
    applicable = [r for r in rows if r.effective <= day]
    if not applicable:
        raise UnknownModel(f"{model} has no price on {day.isoformat()}")
    key = model.strip()
    if key not in t.aliases:
        for ids in t.provider_ids.values():
            if key in ids and ids[key].multiplier != 1:
                return replace(applicable[-1], endpoint_multiplier=ids[key].multiplier)
    return applicable[-1]


def billed_model(requested: str, served: str) -> str:
    """The id a call is priced by: the id that was invoked when the response names that id's own model, else
    the model that was served.

    Amazon Bedrock answers a call to an inference profile ("us.anthropic.claude-haiku-4-5-20251001-v1:0") with
    the Anthropic model's id in the response's `model` ("claude-haiku-4-5-20251001",
    https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-anthropic-claude-messages-request-response.html)
    but charges the profile invoked, with the geographic profiles' premium (prices.json "providers"); pricing the
    served name alone would drop it. A response naming another model (a fallback, an alias resolved to a
    snapshot of another row) is priced as served; an unknown name still raises in `rates`."""
    t = table()
    try:
        if t.canonical(requested) == t.canonical(served):
            return requested
    except UnknownModel:
        pass
    return served


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
    return total * r.geo_multiplier(geo) * r.endpoint_multiplier


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
    total *= r.geo_multiplier(inference_geo) * r.endpoint_multiplier
    return int(total.to_integral_value(rounding=ROUND_CEILING))


def estimate_input_tokens(text: str) -> int:
    """Conservative token count for reservations: one token per 3 characters, rounded up (newer Claude
    tokenizers average well above 3 characters per token for code and prose)."""
    return math.ceil(len(text) / 3)


# The most characters one token has covered in real text, JSON-encoded as the agents measure their prefixes
# (escaped newlines and quotes included): 5.49 on the sparsest of ~800 files (Python, C, Markdown, JavaScript,
# Shell, YAML) with the only real Anthropic tokenizer available offline (anthropic 0.30.0's tokenizer.json; the
# agents' tools + system: 4.29), rounded up with a margin. The current models' tokenizer counts the same text as
# more tokens (~30 %, Haiku 5.5 model page), so it covers fewer characters per token. docs/performance.md has
# the method.
SPARSEST_CHARS_PER_TOKEN = 6


def tokens_at_least(text: str) -> int:
    """A count the real token count of `text` does not fall below (characters / SPARSEST_CHARS_PER_TOKEN, rounded
    down): for decisions that must not overshoot, such as whether a prefix reaches a model's minimum cacheable
    length (`estimate_input_tokens` is the other way round: a count not to undershoot, for budgets)."""
    return len(text) // SPARSEST_CHARS_PER_TOKEN


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
