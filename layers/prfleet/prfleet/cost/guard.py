"""The agents' budget hook (their CallGuard): every model call reserved on the ledger at its worst case before it is
sent and settled to what it cost after, within the run's cost cap, with the spend-limit circuit read on the way.

It knows the run it guards only through two callables the job passes in (`heartbeat`, `owner`): cost sits below
the store and the agents, so it imports neither (agents.CallGuard is met by duck typing).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prfleet.config import now as config_now
from prfleet.cost import billing, pricing
from prfleet.cost.booking import input_bound
from prfleet.cost.ledger import Ledger, Reservation
from prfleet.jobs import FileJob
from prfleet.observability import events

# A run's heartbeat and the circuit are read at most this often during a run (not on every model call): the sweeper
# takes a run for stuck, and another worker may take it over, only after state's 300 s of silence (5x this), and
# a circuit opened meanwhile is met by the call itself (the spend-limit error is not billed and defers the job).
HEARTBEAT_EVERY_S = 60.0
CIRCUIT_RECHECK_S = 60.0


class RunCostCapReached(Exception):
    """The job has spent its agent's per-run cost cap (across all its attempts): it ends failed."""


class CircuitOpen(Exception):
    """The spend-limit circuit is open: no model call until the sweeper's probe succeeds."""


@dataclass
class _Call:
    """One model call's reservation and what is known about it (the CallGuard token)."""

    reservation: Reservation
    model: str
    input_bound: int
    max_tokens: int
    geo: str
    messages: list[Any]
    head: str
    started: bool = False
    input_usage: Any = None


def _strip_cache(value: Any) -> Any:
    """A request part without cache_control markers (they move between turns; the text does not)."""
    if isinstance(value, dict):
        return {k: _strip_cache(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache(v) for v in value]
    return value


def _text(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


def token_counter(model_client: Any) -> Callable[..., Any]:
    """messages.count_tokens for the first call of a run (ExactInputTokens); its calls are logged by the guard."""
    return lambda **params: model_client.messages.count_tokens(**params)


class LedgerGuard:
    """The agents' CallGuard: reserve the worst case before each model call, settle to what it cost after it.

    Reservation = input bound x the dearest input rate of the tier the bound falls in (so the higher tier whenever
    the bound can cross the threshold) + max_tokens (thinking included) x the output rate, x the inference-geo
    multiplier unless the request fixes the geo. After the first call the input side is exact: the previous call's
    prompt tokens (from its usage) plus a bound of only what was appended. A failed call is booked `estimated` or
    released as prfleet.cost.billing decides; a spend-limit error opens the circuit.

    `heartbeat(now)` keeps the run ours (it raises when the run is no longer ours, and nothing is reserved);
    `owner` is the run item every booking is written onto, in the ledger's own transaction."""

    def __init__(
        self,
        ledger: Ledger,
        job: FileJob,
        run_id: str,
        model: str,
        emit: Any,
        *,
        heartbeat: Callable[[float], None] | None = None,
        owner: tuple[str, str, str] | None = None,
        clock: Any = config_now,
        carried: int = 0,
        cap_micros: int | None = None,
        counter: Any = None,
        circuit_check: Any = None,
        on_spend_limit: Any = None,
        claimed_at: float | None = None,
        circuit_read_at: float | None = None,
    ) -> None:
        self.ledger = ledger
        self.model = model
        self.job = job
        self.run_id = run_id
        self.spent = 0  # micro-dollars booked by this attempt (exact + estimated)
        self.estimated = 0  # the part booked at a worst case (may have been billed)
        self.carried = carried  # what earlier attempts cost
        self.cap = cap_micros
        self.emit = emit
        self.clock = clock
        self.pr_scope = f"pr#{job.repo}#{job.number}"
        self.heartbeat = heartbeat
        self.owner = owner
        self.counter = counter  # messages.count_tokens for the first call (ExactInputTokens), or None
        self.circuit_check = circuit_check  # () -> reason or None
        self.on_spend_limit = on_spend_limit  # (reason) -> None
        self.spend_limited: str | None = None
        # When the run last proved itself alive (the claim counts) and the circuit was last read; None: never, so
        # the first call refreshes the heartbeat and reads the circuit.
        self.beat_at = float("-inf") if claimed_at is None else claimed_at
        self.circuit_at = float("-inf") if circuit_read_at is None else circuit_read_at
        self.estimates: list[str] = []  # why each estimated booking was made (logged with the run's outcome)
        self._prev: tuple[str, list[Any], int] | None = None  # (system+tools, messages, prompt tokens)

    def _input_bound(self, params: dict[str, Any]) -> int:
        head = _text(_strip_cache({k: params.get(k) for k in ("system", "tools")}))
        messages = _strip_cache(list(params.get("messages") or []))
        prev = self._prev
        if prev and prev[0] == head and messages[: len(prev[1])] == prev[1]:
            return prev[2] + input_bound(_text(messages[len(prev[1]) :]))
        if self.counter is not None:
            try:
                counted = self.counter(
                    **{
                        k: params[k]
                        for k in ("model", "system", "tools", "messages")
                        if params.get(k) is not None
                    }
                )
                self.emit("heartbeat", count_tokens_calls=1, counted_input_tokens=int(counted.input_tokens))
                return int(counted.input_tokens)
            except Exception as exc:  # the bound below is safe; say why the exact count was not used
                self.emit("error", error_type="count_tokens", message=f"{type(exc).__name__}: {exc}"[:300])
        return input_bound(head + _text(messages))

    def _heartbeat(self) -> None:
        """Refresh the run's heartbeat once HEARTBEAT_EVERY_S has passed (raises if it is no longer ours)."""
        now = self.clock()
        if self.heartbeat is not None and now - self.beat_at >= HEARTBEAT_EVERY_S:
            self.heartbeat(now)
            self.beat_at = now

    def before_call(self, model: str, params: dict[str, Any]) -> _Call:
        self._heartbeat()  # first: a run no longer ours reserves nothing
        if self.circuit_check and self.clock() - self.circuit_at >= CIRCUIT_RECHECK_S:
            self.circuit_at = self.clock()
            reason = self.circuit_check()
            if reason:
                raise CircuitOpen(reason)
        bound = self._input_bound(params)
        geo = str(params.get("inference_geo") or "us")  # not fixed by the request: the dearest geo
        max_tokens = int(params["max_tokens"])
        amount = pricing.worst_case_micros(model, bound, max_tokens, inference_geo=geo)
        if self.cap is not None and self.carried + self.spent + amount > self.cap:
            raise RunCostCapReached(
                f"per-run cost cap ${self.cap / 1e6:.4f} reached: spent ${(self.carried + self.spent) / 1e6:.4f}, "
                f"the next call may cost ${amount / 1e6:.4f}"
            )
        r = self.ledger.reserve(
            self.pr_scope,
            amount,
            now=self.clock(),
            model=model,
            worst_tokens=(bound, max_tokens),
            owner=self.owner,  # every booking of this call goes onto the run, in the ledger's own transaction
        )
        head = _text(_strip_cache({k: params.get(k) for k in ("system", "tools")}))
        return _Call(r, model, bound, max_tokens, geo, _strip_cache(list(params.get("messages") or [])), head)

    def on_start(self, token: _Call, usage: Any) -> None:
        """message_start: the exact input usage of this call (a failure from here on is billed)."""
        token.started = True
        token.input_usage = usage

    def _geo(self, token: _Call, usage: Any) -> str:
        reported = getattr(usage, "inference_geo", None) or (
            usage.get("inference_geo") if isinstance(usage, dict) else None
        )
        return str(reported or token.geo)

    def after_call(self, token: _Call, usage: Any, *, model: str) -> int:
        cost = pricing.cost_micros(model, usage, inference_geo=self._geo(token, usage))
        tokens = pricing.split_usage(usage)
        status = self.ledger.settle(token.reservation, cost, now=self.clock(), model=model, tokens=tokens)
        if status.booked:
            self.spent += cost
        self._prev = (token.head, token.messages, tokens.prompt)
        _spend_signal(status, self.emit)
        self._heartbeat()
        return cost if status.booked else 0

    def on_error(self, token: _Call, exc: BaseException) -> int:
        limit = billing.spend_limit(exc)
        if limit:
            self.spend_limited = limit
            self.circuit_at = float("-inf")  # the next call reads the circuit this error opened
            if self.on_spend_limit:
                self.on_spend_limit(limit)
        verdict = billing.classify(exc, started=token.started)
        if not verdict.billed:
            self.ledger.release(token.reservation, now=self.clock())
            return 0
        cost = self._failed_call_cost(token)
        status = self.ledger.settle(
            token.reservation,
            cost,
            now=self.clock(),
            estimated=True,
            model=token.model,
            worst_tokens=(token.input_bound, token.max_tokens),
        )
        if not status.booked:
            return 0
        self.spent += cost
        self.estimated += cost
        self.estimates.append(verdict.reason)
        _spend_signal(status, self.emit)
        return cost

    def _failed_call_cost(self, token: _Call) -> int:
        """A billed failure's estimate: the exact input from message_start and the whole output allowance, or,
        before message_start, the reservation's worst case."""
        if token.input_usage is None:
            return token.reservation.amount
        usage = pricing.split_usage(token.input_usage)
        return pricing.cost_micros(
            token.model,
            pricing.Tokens(
                usage.input,
                usage.cache_write_5m,
                usage.cache_write_1h,
                usage.cache_read,
                token.max_tokens,
            ),
            inference_geo=self._geo(token, token.input_usage),
        )


def _spend_signal(status: Any, emit: Any) -> None:
    """Spend metrics after each settlement, and one `spend` notice event per scope and day when it first reaches 80 %.

    The notice is a log event (Logs Insights, the serve console), not a page: the one page for a daily crossing is
    SpendAlarm on DailySpendPercent, which only the daily scope publishes (one page per crossing, not two), and a
    PR reaching 80 % of its own budget is worth a line, not waking anybody (docs/runbook.md#spendalarm)."""

    events.spend(status)
    for scope in (status, *getattr(status, "others", ())):
        if getattr(scope, "crossed_80", False):
            emit(
                "spend",
                scope=scope.scope,
                percent=round(scope.percent, 1),
                notice="budget-80-percent",
                limit_usd=scope.limit / 1e6,
                spent_usd=scope.settled / 1e6,
                paged_by="SpendAlarm" if scope.scope == "daily" else None,
            )
