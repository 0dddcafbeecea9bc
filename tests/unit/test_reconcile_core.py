"""prfleet.reconcile's pure rules: the reconciled (hour, model) rows add up to the bill, priced as the bill is."""

from __future__ import annotations

import datetime as dt

from prfleet.cost import pricing, reconcile

DAY = dt.date(2026, 12, 1)
HAIKU = "claude-haiku-5-5"  # tiered: 5x above 100k prompt tokens


def cost(model, **tokens):
    return pricing.cost_micros(model, pricing.Tokens(**tokens), on=DAY)


def row(hour, *, bill, exact, est_calls=0, est_tokens=0, est_micros=0, est_tiered=0, model=HAIKU):
    full = {b: 0 for b in pricing.BUCKETS}
    return reconcile.Row(
        hour,
        model,
        bill={**full, **bill},
        bill_geo={"not_available": sum(bill.values())},
        exact={**full, **exact},
        est_tokens=est_tokens,
        est_calls=est_calls,
        est_micros=est_micros,
        exact_micros=cost(model, **exact),
        est_tiered=est_tiered,
    )


def reconciled(rows):
    return sum(r.exact_micros + r.est_micros + r.adjustment(DAY) for r in rows)


def test_an_estimate_far_below_the_tier_is_reconciled_at_the_base_rates():
    r = row(
        "2026-12-01T11",
        bill={"input": 12_000, "output": 900},
        exact={"input": 9_000, "output": 400},
        est_calls=1,
        est_tokens=20_000,
        est_micros=9_000,
    )
    bill = cost(HAIKU, input=9_000, output=400) + cost(HAIKU, input=3_000, output=500)
    assert abs(reconciled([r]) - bill) <= r.rounding_slack
    r.est_tiered = 1
    assert reconciled([r]) > bill  # one estimate may have crossed 100k: the dearest tier, the safe side


def test_a_call_reserved_before_the_hour_ended_and_billed_after_it_is_carried_not_drift():
    """The ledger books a call in the hour it was reserved; the bill in the hour it arrived. Without the carry the
    next hour shows unbooked tokens (drift, priced in the dearest tier) and the hour before loses its estimate's."""
    h11 = row(
        "2026-12-01T11",
        bill={"input": 1_000, "output": 100},  # the estimated call only
        exact={"input": 5_000, "output": 300},  # the estimated call is not here; a 5,000-token call is
        est_calls=1,
        est_tokens=30_000,
        est_micros=9_000,
    )
    h12 = row(
        "2026-12-01T12", bill={"input": 5_000, "output": 300}, exact={}
    )  # that call, billed at 12:00:00.2
    assert h12.drift > 0  # what the alarm and the tier choice saw before
    reconcile.carry([h11, h12])
    assert h12.drift <= 0 and h11.drift <= 0
    assert reconcile.drift_percent([h11, h12]) == 0.0
    bill = cost(HAIKU, input=1_000, output=100) + cost(HAIKU, input=5_000, output=300)
    assert abs(reconciled([h11, h12]) - bill) <= h11.rounding_slack + 1


def test_carry_only_flows_into_the_very_next_hour():
    h11 = row("2026-12-01T11", bill={}, exact={"input": 5_000})
    h13 = row("2026-12-01T13", bill={"input": 5_000}, exact={})
    reconcile.carry([h11, h13])
    assert h13.carry_in == {} and h13.drift > 0  # two hours apart: a real gap on the bill side


def test_an_hour_with_estimates_and_nothing_billed_gives_the_estimates_back():
    r = row("2026-12-01T11", bill={}, exact={}, est_calls=2, est_tokens=8_000, est_micros=4_000)
    assert r.adjustment(DAY) == -4_000
