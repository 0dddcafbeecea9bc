"""POST /webhook: verify, dedupe, enqueue one slim PR job. Never imports the anthropic SDK."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from prfleet.config import secret_store, settings
from prfleet.jobs import sqs
from prfleet.observability.logger import make_logger
from prfleet.observability.metrics import make_metrics
from prfleet.observability.tracing import make_tracer
from prfleet.pipeline import webhook
from prfleet.store import deliveries

logger = make_logger()
metrics = make_metrics()
tracer = make_tracer()


def _reply(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    headers = webhook.lower_headers(event)
    logger.set_correlation_id(headers.get("x-github-delivery"))
    try:
        secret = secret_store.webhook_secret()
    except secret_store.SecretMissing as exc:
        logger.error("webhook secret missing: fill it in Secrets Manager", extra={"reason": str(exc)})
        metrics.add_metric(name="WebhookErrors", unit=MetricUnit.Count, value=1)
        return _reply(500, {"error": "webhook is not configured"})
    try:
        reply = webhook.handle(
            event,
            secret=secret,
            first_seen=deliveries.first_seen,
            enqueue=sqs.send_pr_job,
            forget=deliveries.forget,
            app_slug=settings().app_slug,
        )
    except Exception:
        logger.exception("webhook failed")
        metrics.add_metric(name="WebhookErrors", unit=MetricUnit.Count, value=1)
        return _reply(500, {"error": "internal error; GitHub may redeliver"})
    metrics.add_metric(name="WebhookDeliveries", unit=MetricUnit.Count, value=1)
    if reply.status >= 400:
        metrics.add_metric(name="WebhookRejected", unit=MetricUnit.Count, value=1)
    if reply.body.get(
        "comment_ignored"
    ):  # a comment to prfleet refused (bot, closed PR, ...): the log says why
        metrics.add_metric(name="CommentsIgnored", unit=MetricUnit.Count, value=1)
    logger.info(
        "webhook",
        extra={
            "event": "webhook",
            "status": reply.status,
            "github_event": headers.get("x-github-event"),
            "reply": reply.body,
        },
    )
    return _reply(reply.status, reply.body)
