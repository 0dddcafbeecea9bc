"""Prices against the official table (https://platform.claude.com/docs/en/about-claude/pricing, checked
2026-11-28), typed in here independently of prices.json: expected = tokens x published USD/MTok."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import pytest

from prfleet.cost import pricing

D = dt.date(2026, 11, 28)
N = 1_234_567  # tokens per bucket: odd enough to expose rounding or float drift

# model: (input, 5m cache write, 1h cache write, cache hit, output) in USD per million tokens
OFFICIAL = {
    "claude-fable-5-2": ("8", "10", "16", "0.20", "40"),
    "claude-fable-5-1": ("10", "12.50", "20", "0.25", "50"),
    "claude-mythos-5-1": ("10", "12.50", "20", "0.25", "50"),
    "claude-fable-5": ("10", "12.50", "20", "1", "50"),
    "claude-mythos-5": ("10", "12.50", "20", "1", "50"),
    "claude-opus-5-5": ("4", "5", "8", "0.20", "20"),
    "claude-opus-5": ("5", "6.25", "10", "0.50", "25"),
    "claude-opus-4-8": ("5", "6.25", "10", "0.50", "25"),
    "claude-opus-4-7": ("5", "6.25", "10", "0.50", "25"),
    "claude-opus-4-6": ("5", "6.25", "10", "0.50", "25"),
    "claude-opus-4-5": ("5", "6.25", "10", "0.50", "25"),
    "claude-opus-4-1": ("15", "18.75", "30", "1.50", "75"),
    "claude-opus-4-0": ("15", "18.75", "30", "1.50", "75"),
    "claude-sonnet-5-5": ("2", "2.50", "4", "0.10", "10"),
    "claude-sonnet-5": ("2", "2.50", "4", "0.20", "10"),
    "claude-sonnet-4-6": ("3", "3.75", "6", "0.30", "15"),
    "claude-sonnet-4-5": ("3", "3.75", "6", "0.30", "15"),
    "claude-sonnet-4-0": ("3", "3.75", "6", "0.30", "15"),
    "claude-haiku-5-5": ("0.10", "0.125", "0.20", "0.01", "0.50"),
    "claude-haiku-4-5": ("1", "1.25", "2", "0.10", "5"),
}
BUCKET_USAGE = {
    "input": lambda n: {"input_tokens": n},
    "cache_write_5m": lambda n: {
        "cache_creation_input_tokens": n,
        "cache_creation": {"ephemeral_5m_input_tokens": n, "ephemeral_1h_input_tokens": 0},
    },
    "cache_write_1h": lambda n: {
        "cache_creation_input_tokens": n,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": n},
    },
    "cache_read": lambda n: {"cache_read_input_tokens": n},
    "output": lambda n: {"output_tokens": n},
}


def micros(tokens: int, usd_per_mtok: str, factor: str = "1") -> int:
    return int((tokens * Decimal(usd_per_mtok) * Decimal(factor)).to_integral_value(ROUND_HALF_UP))


@pytest.mark.parametrize("bucket_index,bucket", list(enumerate(BUCKET_USAGE)))
@pytest.mark.parametrize("model", sorted(OFFICIAL))
def test_each_model_and_bucket_matches_the_official_price(model, bucket_index, bucket):
    tiered = model in ("claude-haiku-5-5", "claude-sonnet-4-5", "claude-sonnet-4-0")
    n = 90_001 if tiered and bucket != "output" else N  # stay below the prompt-length tiers
    usage = BUCKET_USAGE[bucket](n)
    assert pricing.cost_micros(model, usage, on=D) == micros(n, OFFICIAL[model][bucket_index])


def test_one_million_sonnet_5_5_input_tokens_cost_two_dollars():
    assert pricing.cost_micros("claude-sonnet-5-5", {"input_tokens": 1_000_000}, on=D) == 2_000_000


def test_sonnet_5_5_cache_read_cut_on_2026_10_07():
    usage = {"cache_read_input_tokens": N}
    assert pricing.cost_micros("claude-sonnet-5-5", usage, on=dt.date(2026, 10, 6)) == micros(N, "0.20")
    assert pricing.cost_micros("claude-sonnet-5-5", usage, on=dt.date(2026, 10, 7)) == micros(N, "0.10")


def test_haiku_5_5_long_prompt_pays_the_high_tier_on_every_token_output_included():
    short = {"input_tokens": 60_000, "cache_read_input_tokens": 40_000, "output_tokens": 1_000}
    assert pricing.cost_micros("claude-haiku-5-5", short, on=D) == (
        micros(60_000, "0.10") + micros(40_000, "0.01") + micros(1_000, "0.50")
    )
    long = {"input_tokens": 60_001, "cache_read_input_tokens": 40_000, "output_tokens": 1_000}
    assert pricing.cost_micros("claude-haiku-5-5", long, on=D) == (
        micros(60_001, "0.50") + micros(40_000, "0.05") + micros(1_000, "2.50")
    )


def test_sonnet_4_5_long_context_over_200k_input_tokens():
    usage = {"input_tokens": 150_000, "cache_read_input_tokens": 60_000, "output_tokens": 2_000}
    assert pricing.cost_micros("claude-sonnet-4-5", usage, on=D) == (
        micros(150_000, "6") + micros(60_000, "0.60") + micros(2_000, "22.50")
    )


def test_batch_halves_every_bucket_and_us_geo_adds_ten_percent():
    usage = {"input_tokens": 10_000, "output_tokens": 3_000, "cache_read_input_tokens": 7_000}
    base = Decimal(10_000) * 4 + Decimal(3_000) * 20 + Decimal(7_000) * Decimal("0.20")
    assert pricing.cost_micros("claude-opus-5-5", usage, batch=True, on=D) == int(base / 2)
    us = int(base * Decimal("1.1"))
    assert pricing.cost_micros("claude-opus-5-5", usage, inference_geo="us", on=D) == us
    assert pricing.cost_micros("claude-opus-5-5", {**usage, "inference_geo": "us"}, on=D) == int(
        base * Decimal("1.1")
    )
    assert pricing.cost_micros("claude-opus-5-5", usage, inference_geo="global", on=D) == int(base)


def test_sdk_usage_object_is_accepted():
    from anthropic.types import CacheCreation, Usage

    u = Usage(
        input_tokens=1_000,
        output_tokens=500,
        cache_creation_input_tokens=300,
        cache_read_input_tokens=200,
        cache_creation=CacheCreation(ephemeral_5m_input_tokens=100, ephemeral_1h_input_tokens=200),
    )
    expected = (
        micros(1_000, "1") + micros(500, "5") + micros(100, "1.25") + micros(200, "2") + micros(200, "0.10")
    )
    assert pricing.cost_micros("claude-haiku-4-5-20251001", u, on=D) == expected


def test_cache_writes_without_ttl_split_are_priced_as_5_minute_writes():
    usage = {"cache_creation_input_tokens": N}
    assert pricing.cost_micros("claude-sonnet-4-6", usage, on=D) == micros(N, "3.75")


def test_no_float_drift_over_many_small_calls():
    one = {"input_tokens": 3, "output_tokens": 7}  # 3 x 0.10 + 7 x 0.50 = 3.8 micro-USD
    exact = sum(pricing.exact_cost("claude-haiku-5-5", one, on=D) for _ in range(100_000))
    assert exact == Decimal(380_000)


def test_unknown_model_is_an_error_never_free():
    with pytest.raises(pricing.UnknownModel):
        pricing.cost_micros("claude-unknown-9", {"input_tokens": 1})
    with pytest.raises(pricing.UnknownModel):
        pricing.rates("claude-haiku-5-5", on=dt.date(2026, 10, 6))  # before its release
    with pytest.raises(pricing.UnknownModel):
        pricing.worst_case_micros("gpt-6", 10, 10)


def test_worst_case_covers_any_actual_usage_of_the_same_size():
    wc = pricing.worst_case_micros("claude-sonnet-5-5", 10_000, 4_096, on=D)
    assert wc == 10_000 * 4 + 4_096 * 10  # every input token as a 1h cache write
    for usage in (
        {"input_tokens": 10_000, "output_tokens": 4_096},
        {
            "cache_creation_input_tokens": 10_000,
            "output_tokens": 4_096,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 10_000},
        },
    ):
        assert pricing.cost_micros("claude-sonnet-5-5", usage, on=D) <= wc
    assert pricing.worst_case_micros("claude-sonnet-5-5", 10_000, 4_096, cache_write=None, on=D) == 60_960
    assert pricing.worst_case_micros("claude-haiku-5-5", 150_000, 1_000, cache_write=None, on=D) == micros(
        150_000, "0.50"
    ) + micros(1_000, "2.50")


def test_estimate_input_tokens_rounds_up():
    assert pricing.estimate_input_tokens("") == 0
    assert pricing.estimate_input_tokens("abcd") == 2
    assert pricing.estimate_input_tokens("x" * 300) == 100


def test_table_records_source_and_check_date():
    t = pricing.table()
    assert t.source == "https://platform.claude.com/docs/en/about-claude/pricing"
    assert dt.date.fromisoformat(t.checked) >= dt.date(2026, 11, 1)
    assert t.batch_discount == Decimal("0.5")
    assert set(OFFICIAL) <= set(t.models())


def test_a_bedrock_call_is_priced_on_the_profile_invoked_when_the_response_names_its_model():
    """Bedrock's response names the Anthropic model ("claude-haiku-4-5-20251001"), the bill is the profile's: the
    geographic profile's 1.1x premium must not be lost."""
    usage = {"input_tokens": 1000, "output_tokens": 100}
    us = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
    assert pricing.billed_model(us, "claude-haiku-4-5-20251001") == us
    assert pricing.cost_micros(pricing.billed_model(us, "claude-haiku-4-5-20251001"), usage) == round(
        pricing.exact_cost("claude-haiku-4-5", usage) * Decimal("1.1")
    )
    glob = "global.anthropic.claude-opus-4-6-v1"
    assert pricing.billed_model(glob, "claude-opus-4-6") == glob  # global: no premium
    # Another model served (a fallback, a resolved alias of another row) is priced as served.
    assert pricing.billed_model("claude-sonnet-5-5", "claude-opus-5-5") == "claude-opus-5-5"
    assert pricing.billed_model("claude-opus-4", "claude-opus-4-20250514") == "claude-opus-4"
    # An unknown name is passed on, and pricing it still raises: never free.
    assert pricing.billed_model(us, "claude-unknown-9") == "claude-unknown-9"
    with pytest.raises(pricing.UnknownModel):
        pricing.cost_micros("claude-unknown-9", usage)
