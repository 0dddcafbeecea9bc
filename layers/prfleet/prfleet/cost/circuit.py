"""The spend-limit circuit: after the API says a spend limit is reached, no worker calls it until a probe succeeds.

Either documented spend-limit shape (prfleet.cost.billing.spend_limit) opens it. Retrying would fail every job (and
turn its check red) until the limit is raised or the month turns, so while it is open waiting jobs are deferred
(`until="circuit"`), their checks are neutral with the reason, and exactly one notice goes to the alert topic
(the conditional write that opens the circuit decides who sends it). The sweeper probes the API with one minimal,
budgeted call at most every PROBE_EVERY_S; a probe that gets through closes the circuit and the sweeper re-queues
the deferred jobs. State: one item (scope="circuit", day="anthropic") in the LedgerTable.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from prfleet.config import now as config_now
from prfleet.config import settings
from prfleet.config.aws import client as aws_client
from prfleet.cost import billing, pricing
from prfleet.cost.ledger import Ledger

KEY = {"scope": {"S": "circuit"}, "day": {"S": "anthropic"}}
PROBE_EVERY_S = 300
# Workers read the circuit at most every CACHE_S per Lambda container (read_cached), not before every model call.
# Safe for the budget: the circuit only gates NEW calls and the ledger's reservation is the hard limit; a worker
# that has not seen an opening yet makes its call, gets the spend-limit error (not billed: released) and opens or
# defers itself; one that has not seen a closing defers a job for at most CACHE_S more.
CACHE_S = 15.0
_cache: dict[str, tuple[float, State]] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class State:
    open: bool
    reason: str = ""
    opened_at: int = 0
    probed_at: int = 0

    def probe_due(self, now: float) -> bool:
        return self.open and now - max(self.opened_at, self.probed_at) >= PROBE_EVERY_S


def _code(exc: Exception) -> str | None:
    return getattr(exc, "response", {}).get("Error", {}).get("Code")


def read(ddb: Any, table: str) -> State:
    item = ddb.get_item(TableName=table, Key=KEY, ConsistentRead=True).get("Item") or {}
    if item.get("state", {}).get("S") != "open":
        return State(False)
    return State(
        True,
        item.get("reason", {}).get("S", ""),
        int(item.get("opened_at", {}).get("N", 0)),
        int(item.get("probed_at", {}).get("N", 0)),
    )


def read_cached(ddb: Any, table: str, *, max_age: float = CACHE_S, clock: Any = time.monotonic) -> State:
    """read() at most every `max_age` seconds per process (see CACHE_S for why that is safe)."""
    with _cache_lock:
        hit = _cache.get(table)
    if hit is not None and clock() - hit[0] < max_age:
        return hit[1]
    state = read(ddb, table)
    with _cache_lock:
        _cache[table] = (clock(), state)
    return state


def forget(table: str) -> None:
    """Drop the cached state (this process opened or closed the circuit: its next read is fresh)."""
    with _cache_lock:
        _cache.pop(table, None)


def reset() -> None:
    """Forget every cached state, as a new execution environment starts with none (the local stack, starting)."""
    with _cache_lock:
        _cache.clear()


def open_reason(ledger: Ledger) -> str | None:
    """The circuit's reason while it is open, else None (read at most every CACHE_S per container)."""
    st = read_cached(ledger.ddb, ledger.table)
    return st.reason or "spend limit reached" if st.open else None


def open_circuit(ledger: Ledger, reason: str, emit: Any, *, clock: Any = config_now) -> None:
    """Open it after a spend-limit error; the worker whose conditional write opened it sends the one notice."""
    if _write_open(ledger.ddb, ledger.table, reason, now=clock()):
        emit(
            "error",
            error_type="SpendLimit",
            message=reason,
            circuit="open",
            notice="spend-limit-circuit-open",
        )
        notice(settings().alert_topic_arn, reason, sns=aws_client("sns"))


def _write_open(ddb: Any, table: str, reason: str, *, now: float) -> bool:
    """The open state, written once: True only for the caller that opened it."""
    forget(table)
    return _update_if(
        ddb,
        table,
        "SET #st = :open, reason = :r, opened_at = :t, probed_at = :t",
        "attribute_not_exists(#st) OR #st <> :open",
        {":open": {"S": "open"}, ":r": {"S": reason[:500]}, ":t": {"N": str(int(now))}},
    )


def claim_probe(ddb: Any, table: str, state: State, *, now: float) -> bool:
    """One sweeper probes per interval (conditional on the probe time it saw)."""
    return _update_if(
        ddb,
        table,
        "SET probed_at = :t",
        "#st = :open AND probed_at = :seen",
        {":open": {"S": "open"}, ":t": {"N": str(int(now))}, ":seen": {"N": str(state.probed_at)}},
    )


def close_circuit(ddb: Any, table: str, *, now: float) -> bool:
    """Closed once, by the probe that got through: True only for the caller that closed it."""
    forget(table)
    return _update_if(
        ddb,
        table,
        "SET #st = :closed, closed_at = :t",
        "#st = :open",
        {":open": {"S": "open"}, ":closed": {"S": "closed"}, ":t": {"N": str(int(now))}},
    )


def _update_if(ddb: Any, table: str, update: str, condition: str, values: dict[str, Any]) -> bool:
    """One conditional write of the circuit item: True when it was ours, False when the condition failed."""
    try:
        ddb.update_item(
            TableName=table,
            Key=KEY,
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames={"#st": "state"},
            ExpressionAttributeValues=values,
        )
        return True
    except Exception as exc:
        if _code(exc) == "ConditionalCheckFailedException":
            return False
        raise


def notice(topic_arn: str, reason: str, *, sns: Any) -> None:
    """The one alert-topic notice when the circuit opens."""
    sns.publish(
        TopicArn=topic_arn,
        Subject="prfleet: Anthropic spend limit reached, model calls paused",
        Message=json.dumps({"notice": "spend-limit-circuit-open", "reason": reason}),
    )


PROBE_MAX_TOKENS = 16
PROBE_INPUT_BOUND = 64


def probe_call(model_client: Any, ledger: Ledger, model: str, *, clock: Any = config_now) -> None:
    """The sweeper's probe: one minimal call, reserved and settled like any other (raises if it fails)."""

    params = {
        "model": model,
        "max_tokens": PROBE_MAX_TOKENS,
        "messages": [{"role": "user", "content": "ping"}],
    }
    worst = (PROBE_INPUT_BOUND, PROBE_MAX_TOKENS)
    amount = pricing.worst_case_micros(model, *worst, inference_geo="us")
    r = ledger.reserve(None, amount, now=clock(), ttl=120, model=model, worst_tokens=worst)
    try:
        message = model_client.messages.create(**params)
    except BaseException as exc:
        if billing.classify(exc).billed:
            ledger.settle(r, amount, now=clock(), estimated=True, model=model, worst_tokens=worst)
        else:
            ledger.release(r, now=clock())
        raise
    served = pricing.billed_model(
        model, getattr(message, "model", None) or model
    )  # Bedrock: the profile's price
    geo = getattr(message.usage, "inference_geo", None) or "us"
    cost = pricing.cost_micros(served, message.usage, inference_geo=geo)
    ledger.settle(r, cost, now=clock(), model=served, tokens=pricing.split_usage(message.usage))
