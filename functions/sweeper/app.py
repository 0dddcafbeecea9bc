"""Every minute: stuck runs, stranded reservations, the spend-limit circuit's probe, deferred jobs, spend metric."""

from __future__ import annotations

from typing import Any

from prfleet import github
from prfleet.agents.model_client import build as build_model_client
from prfleet.config import secret_store, settings
from prfleet.cost import circuit
from prfleet.observability import events
from prfleet.observability.logger import make_logger
from prfleet.observability.metrics import make_metrics
from prfleet.pipeline import sweeper

logger = make_logger()
metrics = make_metrics()


def probe(ledger: Any) -> None:
    """Only while the circuit is open: one minimal, budgeted call with the cheapest configured model, through the
    one model client (prfleet.agents.model_client). The Claude API's spend limits open the circuit: the
    first-party API and Claude Platform on AWS (Anthropic's API behind AWS auth) probe; with Bedrock the sweeper
    closes it after the probe interval instead."""
    cfg = settings()
    model_client = build_model_client(cfg, api_key=secret_store.anthropic_api_key)
    models = sorted(set(cfg.models.values()))
    model = next((m for m in models if "haiku" in m), models[0])
    circuit.probe_call(model_client, ledger, model)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    counts = sweeper.sweep(
        client_for=github.client_for,
        emitter=events.Emitter(logger, metrics),
        probe=probe if settings().model_provider in ("anthropic", "claude-platform-aws") else None,
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
    )
    logger.info("swept", extra={"event": "swept", **counts})
    return counts
