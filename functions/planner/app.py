"""PrQueue consumer: plan one file job per (changed file, agent); failed records come back via batchItemFailures."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from prfleet import events, github, jobs, planner

logger = events.make_logger()
metrics = events.make_metrics()
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    with events.record_metrics(metrics):  # flushed when the record ends, not only when the invocation returns
        _record(record)


def _record(record: SQSRecord) -> None:
    job = jobs.parse_message(record.body)
    if not isinstance(job, jobs.PrJob):
        raise jobs.BadMessage("planner received a file job")
    logger.set_correlation_id(job.delivery_id)
    plan = planner.plan_pr(job, github.client_for(job.installation_id))
    metrics.add_metric(name="JobsPlanned", unit=MetricUnit.Count, value=len(plan.jobs))
    logger.info(
        "planned", extra={"event": "planned", "repository": job.repo, "pr": job.number, **plan.summary()}
    )


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
