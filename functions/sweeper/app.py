"""Every minute: stuck runs, stranded reservations, deferred jobs after the budget reset, the spend metric."""

from __future__ import annotations

from typing import Any

from prfleet import events, github, sweeper

logger = events.make_logger()
metrics = events.make_metrics()


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    counts = sweeper.sweep(gh_for=github.client_for, emitter=events.Emitter(logger, metrics))
    logger.info("swept", extra={"event": "swept", **counts})
    return counts
