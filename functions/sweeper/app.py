"""Every minute: stuck runs, stranded reservations, the spend-limit circuit's probe, deferred jobs, spend metric."""

from __future__ import annotations

from typing import Any

from prfleet import events, github, runner, secrets, sweeper
from prfleet.config import settings

logger = events.make_logger()
metrics = events.make_metrics()


def probe(ledger: Any) -> None:
    """Only while the circuit is open: one minimal call with the cheapest configured model."""
    import anthropic

    client = anthropic.Anthropic(api_key=secrets.anthropic_api_key(), max_retries=0, timeout=30.0)
    models = sorted(set(settings().models.values()))
    model = next((m for m in models if "haiku" in m), models[0])
    runner.probe_call(client, ledger, model)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    counts = sweeper.sweep(gh_for=github.client_for, emitter=events.Emitter(logger, metrics), probe=probe)
    logger.info("swept", extra={"event": "swept", **counts})
    return counts
