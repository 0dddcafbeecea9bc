"""The ledger's rules, pure (no DynamoDB): what a reservation may take, what closing one books, and the keys.

- Sizing: `input_bound`, the reservation's bound of a prompt's tokens (one per UTF-8 byte).
- Limits: `fits` / `ceiling_for` (the conditional write's bound) / `refusal_cause` ("spent" or "reserved"); the
  status figures `percent` and `reaches_80`.
- Keys: the budget day (`day_of`, `day_end`, in the configured time zone) and the usage hour (`hour_of`, UTC, as
  the Usage and Cost API buckets it).
- Closure: `close` turns (reservation, prior closure, how it closes) into a `Move` of the totals, or None for a
  repeat: a settle applied twice books once, an exact settle replaces an estimate, a stranded reservation is booked
  at its worst case (`expired`), never given back.
- Usage and attribution: the counters a closure adds to its hour's usage item (`usage_changes`) and the update that
  writes what a booking cost onto its run (`attribution`).

prfleet.cost.ledger applies these over DynamoDB.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from prfleet.cost import pricing

DAILY = "daily"  # the day total's scope; a PR's scope is its own name
ALERT_PERCENT = 80
HOUR_FORMAT = "%Y-%m-%dT%H"  # a usage hour, as the Usage and Cost API buckets it ("2026-11-30T14")

# Reservation sizing for text never sent before (the first call of a run, or what a later call appends): one token
# per UTF-8 byte. That is a hard bound, not an average: a byte-level BPE token covers at least one byte, whatever
# the text (minified code, regex tables, base64, non-Latin scripts). Measured (docs/architecture.md, "Reservation
# size"; local/prfleet_local/bench/chars_per_token.py) with the only real Anthropic tokenizer available offline, the
# Claude 2-era `tokenizer.json` of anthropic 0.30.0, on 2,072 files of 9 languages: 1.74 characters per token for
# the densest file (regex-heavy JavaScript), 2.1-2.2 for the densest Shell, Markdown and C; the current models'
# tokenizer counts the same text as ~30 % more tokens (Haiku 5.5 model page), ~1.34 for that file. The previous
# bound, 2 ASCII characters per token, was below those (that file: 15 % more tokens than it allowed).
CHARS_PER_TOKEN_BOUND = 1  # UTF-8 bytes per token


def input_bound(text: str) -> int:
    """Upper bound of the tokens of `text` for a reservation: its UTF-8 bytes (see CHARS_PER_TOKEN_BOUND)."""
    return len(text.encode("utf-8", "surrogatepass"))


# ----------------------------------------------------------------------------------------------------- limits


def fits(committed: int, amount: int, limit: int) -> bool:
    """May `amount` be reserved on a scope that has `committed` of `limit`?"""
    return amount >= 0 and committed + amount <= limit


def ceiling_for(limit: int, amount: int) -> int:
    """The largest committed value that still admits `amount` (the conditional write's bound)."""
    return limit - amount


def refusal_cause(settled: int, committed: int, amount: int, limit: int) -> str | None:
    """None if it fits; "spent" if settled spend alone leaves no room; "reserved" if open reservations do."""
    if fits(committed, amount, limit):
        return None
    return "spent" if not fits(settled, amount, limit) else "reserved"


def percent(settled: int, limit: int) -> float:
    """Settled spend as a percentage of the limit (what the DailySpendPercent metric and alarm use)."""
    return 100.0 if limit <= 0 else round(settled * 100 / limit, 4)


def reaches_80(settled: int, limit: int) -> bool:
    """Integer test of settled >= 80 % of limit."""
    return limit > 0 and settled * 100 >= ALERT_PERCENT * limit


# ------------------------------------------------------------------------------------------------------- keys


def day_of(now: float, tz: str = "UTC") -> str:
    """The budget day of an epoch time in the configured IANA time zone."""
    return _dt.datetime.fromtimestamp(now, ZoneInfo(tz)).date().isoformat()


def hour_of(now: float) -> str:
    """The UTC hour bucket of an epoch time, as the Usage and Cost API buckets it ("2026-11-30T14")."""
    return _dt.datetime.fromtimestamp(now, _dt.timezone.utc).strftime(HOUR_FORMAT)


def day_end(day: str, tz: str = "UTC") -> int:
    """Epoch seconds at which `day` ends in `tz` (DST-aware)."""
    d = _dt.date.fromisoformat(day) + _dt.timedelta(days=1)
    return int(_dt.datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(tz)).timestamp())


# ---------------------------------------------------------------------------------------------------- closure


@dataclass
class Total:
    """One scope's total for a day (the day's, or one PR's): committed = settled + reserved."""

    committed: int = 0
    reserved: int = 0
    settled: int = 0
    estimated: int = 0
    a80: bool = False  # the 80 % notice was sent for this scope and day


@dataclass(frozen=True)
class Closed:
    how: str  # settled | estimated | released | expired
    cost: int  # what this closure booked (0 when released)


@dataclass(frozen=True)
class Move:
    """What closing a reservation does to the totals (applied to the day and PR items together)."""

    closure: Closed
    committed: int
    reserved: int
    settled: int
    estimated: int
    exact_call: bool  # count the usage as exact tokens (and drop a previous estimate from the usage item)
    replaces: Closed | None = None  # the closure this one replaces (conditional on it)


def close(amount: int, prior: Closed | None, is_open: bool, how: str, cost: int) -> Move | None:
    """The pure settlement rule. `how` is settled, estimated, released or expired. None: nothing to book (a repeat).

    open      -> settled/estimated books `cost` and frees `amount`; released frees it; expired books `amount`.
    released  -> a late settle/estimate books `cost` (the reservation was already given back).
    estimated/expired -> an exact settle replaces the estimate; anything else is a repeat.
    settled   -> always a repeat.
    """
    est = how in ("estimated", "expired")
    if is_open:
        if how == "released":
            return Move(Closed("released", 0), -amount, -amount, 0, 0, False)
        booked = amount if how == "expired" else cost
        return Move(
            Closed(how, booked), booked - amount, -amount, booked, booked if est else 0, how == "settled"
        )
    if how in ("released", "expired"):
        return None
    if prior is None or prior.how == "released":
        return Move(Closed(how, cost), cost, 0, cost, cost if est else 0, how == "settled", prior)
    if prior.how in ("estimated", "expired") and how == "settled":
        d = cost - prior.cost
        return Move(Closed("settled", cost), d, 0, d, -prior.cost, True, prior)
    return None


# ------------------------------------------------------------------------------------------------------ usage


def may_be_tiered(model: str | None, input_bound: int) -> bool:
    """Can a call of `model` whose prompt is at most `input_bound` tokens be priced above the base tier?
    (Unknown model or bound: yes, the safe answer.) Reconciliation prices an estimated call's billed tokens in the
    base tier only when none of the hour's estimated calls could have crossed a prompt-length threshold."""
    if not model or input_bound <= 0:
        return True
    try:
        tiers = pricing.rates(model).tiers
    except Exception:  # an unknown model: it may be anything
        return True
    return any(input_bound > t.above_prompt_tokens for t in tiers)


def usage_deltas(
    tokens: Any,
    *,
    cost: int,
    estimated: bool,
    worst: tuple[int, int] = (0, 0),
    model: str | None = None,
) -> dict[str, int]:
    """The usage item's counters for one call: exact token buckets, or (estimated) the worst case it was booked at
    (`est_tiered` counts the estimated calls that may lie above the model's base prompt-length tier)."""
    if estimated:
        return {
            "est_calls": 1,
            "est_micros": cost,
            "est_input": worst[0],
            "est_output": worst[1],
            "est_tiered": int(may_be_tiered(model, worst[0])),
        }
    out = {b: int(getattr(tokens, b, 0) or 0) for b in pricing.BUCKETS} if tokens is not None else {}
    return {**out, "calls": 1, "exact_micros": cost}


def usage_changes(
    move: Move,
    tokens: Any,
    worst: tuple[int, int],
    model: str | None,
    replaced_model: str | None,
    replaced_worst: tuple[int, int],
) -> list[tuple[str, dict[str, int]]]:
    """(model, counters) for the usage items of the call's hour when `move` is booked. An exact settle replacing an
    estimate also takes back every counter the estimate added, under the model and worst case the estimate was
    booked with (the estimate names the requested model, the settle the served one), or reconciliation would still
    count the call as estimated."""
    if move.closure.how == "released":
        return []
    out: dict[str, dict[str, int]] = {}
    if model:
        out[model] = usage_deltas(
            tokens, cost=move.closure.cost, estimated=not move.exact_call, worst=worst, model=model
        )
    if move.replaces is not None and move.replaces.how in ("estimated", "expired") and replaced_model:
        undo = usage_deltas(
            None, cost=move.replaces.cost, estimated=True, worst=replaced_worst, model=replaced_model
        )
        row = out.setdefault(replaced_model, {})
        for k, v in undo.items():
            row[k] = row.get(k, 0) - v
    return [(m, d) for m, d in out.items() if d]


# ------------------------------------------------------------------------------------------------ attribution

BOOKED_PREFIX = "b_"  # on a run item: b_<reservation id> = micro-dollars that reservation booked


def attribution(owner: tuple[str, str, str], rid: str, cost: int) -> dict[str, Any]:
    """The transaction item that writes one booking onto its run (`b_<reservation id>`: a repeat or a replacing
    exact settle overwrites it, so the run holds exactly what the ledger booked for it)."""
    table, pk, sk = owner
    return {
        "Update": {
            "TableName": table,
            "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
            "UpdateExpression": "SET #b = :b",
            "ExpressionAttributeNames": {"#b": BOOKED_PREFIX + rid},
            "ExpressionAttributeValues": {":b": {"N": str(int(cost))}},
        }
    }
