"""Every hour: the ledger against Anthropic's Usage and Cost API; LedgerDriftPercent; the ledger moved onto the bill."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from prfleet.config import now, settings
from prfleet.cost import reconcile
from prfleet.cost.ledger import Ledger
from prfleet.observability.logger import make_logger
from prfleet.observability.metrics import make_metrics
from prfleet.observability.tracing import make_tracer

logger = make_logger()
metrics = make_metrics()
tracer = make_tracer()


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    get = reconcile.admin_getter()
    if get is None:
        logger.info(
            "reconcile skipped", extra={"event": "reconcile", "skipped": "no Admin API key in its secret"}
        )
        return {"skipped": True}
    result = reconcile.run(
        Ledger.from_settings(settings()), get, now=now(), api_key_id=settings().billing_api_key_id
    )
    metrics.add_metric(name="LedgerDriftPercent", unit=MetricUnit.Percent, value=result.drift_percent)
    worst = max(result.rows, key=lambda r: r.drift, default=None)
    logger.info(
        "reconciled",
        extra={
            "event": "reconcile",
            "rows": len(result.rows),
            "drift_percent": result.drift_percent,
            "applied_usd": result.applied_micros / 1e6,
            "worst_hour": worst.hour if worst else None,
            "worst_model": worst.model if worst else None,
            "worst_drift_tokens": worst.drift if worst else 0,
        },
    )
    return {
        "drift_percent": result.drift_percent,
        "applied_micros": result.applied_micros,
        "rows": len(result.rows),
    }
