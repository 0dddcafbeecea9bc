"""PrQueue consumer: plan one file job per (changed file, agent); failed records come back via batchItemFailures.

GitHub waits (rate limits, backoff) never pass the Lambda's remaining time: a longer one returns the PR job to
PrQueue as a fresh message with that delay (so a rate limit does not count towards the DLQ's receive limit).
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from prfleet import github, jobs
from prfleet.config import settings
from prfleet.jobs import sqs
from prfleet.observability import tracing
from prfleet.observability.logger import make_logger
from prfleet.observability.metrics import make_metrics, record_metrics
from prfleet.observability.redaction import redact
from prfleet.observability.tracing import make_tracer
from prfleet.pipeline import conversation, planner

logger = make_logger()
metrics = make_metrics()
tracer = make_tracer()
# A batch whose every record failed is reported, not raised (the agent's handler says why; Powertools' "Working with
# full batch failures", https://docs.powertools.aws.dev/lambda/python/latest/utilities/batch/): the planner's
# AWS/Lambda Errors then count only what it could not report itself. The reported records are retried all the same
# (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html#services-sqs-batchfailurereporting).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
DEADLINE_MARGIN_S = 5.0  # leave time to re-queue the job and report the batch


def record_handler(record: SQSRecord, context: Any) -> None:
    with record_metrics(metrics):  # flushed when the record ends, not only when the invocation returns
        _record(record, context)


def _record(record: SQSRecord, context: Any) -> None:
    job = sqs.parse_record(record, (jobs.PrJob, jobs.CommentJob), logger)
    logger.set_correlation_id(job.delivery_id)
    if isinstance(job, jobs.CommentJob):
        with tracing.subsegment("## comment", repository=job.repo, pr=job.number) as span:
            span.metadata(comment=job.comment_id, command=job.command, **sqs.record_timing(record))
            _comment(record, job, context)
        return
    with tracing.subsegment("## plan", repository=job.repo, pr=job.number, head_sha=job.head_sha) as span:
        span.metadata(**sqs.record_timing(record))
        _plan(record, job, context)


def _comment(record: SQSRecord, job: jobs.CommentJob, context: Any) -> None:
    """A comment to prfleet (pipeline.conversation): a question sent on, a suppression learned, or a refusal
    logged with its reason and counted (CommentsIgnored)."""
    deadline = time.time() + context.get_remaining_time_in_millis() / 1000.0 - DEADLINE_MARGIN_S
    try:
        with github.deadline(deadline):
            summary = conversation.take_comment(job, github.client_for(job.installation_id))
    except github.GitHubRateLimited as exc:
        sqs.send_raw(record.body, queue_url=settings().pr_queue_url, delay=int(exc.retry_after + 0.999))
        logger.info("requeued", extra={"event": "requeued", "reason": str(exc)})
        return
    if summary.get("comment_ignored"):
        metrics.add_metric(name="CommentsIgnored", unit=MetricUnit.Count, value=1)
    logger.info(
        "comment",
        extra={
            "event": "comment",
            "repository": job.repo,
            "pr": job.number,
            "comment": job.comment_id,
            "command": job.command,
            "author": job.author,
            **summary,
        },
    )


def _plan(record: SQSRecord, job: jobs.PrJob, context: Any) -> None:
    deadline = time.time() + context.get_remaining_time_in_millis() / 1000.0 - DEADLINE_MARGIN_S
    try:
        with github.deadline(deadline):
            plan = planner.plan_pr(job, github.client_for(job.installation_id))
    except github.GitHubRateLimited as exc:
        delay = int(exc.retry_after + 0.999)
        sqs.send_raw(record.body, queue_url=settings().pr_queue_url, delay=delay)
        metrics.add_metric(name="PlannerDeferred", unit=MetricUnit.Count, value=1)
        logger.info(
            "requeued",
            extra={"event": "requeued", "reason": str(exc), "delay_s": min(delay, sqs.MAX_DELAY)},
        )
        return
    except Exception as exc:
        # Retried by SQS, then dead-lettered: the reason must be in the log under the delivery id.
        receives = sqs.receive_count(record)
        logger.exception(
            "planning failed",
            extra={
                "event": "error",
                "error_type": type(exc).__name__,
                "reason": redact(str(exc))[:500],
                "message_id": record.message_id,
                "repository": job.repo,
                "pr": job.number,
                "receive_count": receives,
                "final_attempt": receives >= settings().max_receive_count,
            },
        )
        raise
    metrics.add_metric(name="JobsPlanned", unit=MetricUnit.Count, value=len(plan.jobs))
    logger.info(
        "planned", extra={"event": "planned", "repository": job.repo, "pr": job.number, **plan.summary()}
    )


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(
        event=event,
        record_handler=lambda record: record_handler(record, context),
        processor=processor,
        context=context,
    )
