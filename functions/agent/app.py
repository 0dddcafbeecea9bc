"""JobsQueue consumer: one Claude agent run per file job, within the budget; only failed records are retried."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from prfleet import github, jobs
from prfleet.agents.model_client import build as build_model_client
from prfleet.config import secret_store, settings
from prfleet.jobs import sqs
from prfleet.observability import events, tracing
from prfleet.observability.logger import make_logger
from prfleet.observability.metrics import make_metrics, record_metrics
from prfleet.observability.redaction import redact
from prfleet.observability.tracing import make_tracer
from prfleet.pipeline import answering, runner

logger = make_logger()
metrics = make_metrics()
tracer = make_tracer()
# Records that fail are reported in batchItemFailures, also when every record of the batch failed: Powertools' default
# (raise_on_entire_batch_failure=True) raises BatchProcessingError then, which Lambda counts as an invocation Error
# although the function handled and reported each failure ("Working with full batch failures",
# https://docs.powertools.aws.dev/lambda/python/latest/utilities/batch/). A one-record batch that failed its three
# receives read as three AWS/Lambda Errors on top of its RunsFailed, so ErrorRateAlarm counted it several times.
# With False, AgentFunction's Errors count only what it could not report itself (a timeout, a crash, an OOM kill).
# The reported records are still retried: SQS makes them visible again after the visibility timeout and the redrive
# policy applies ("Implementing partial batch responses",
# https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html#services-sqs-batchfailurereporting).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
_client: Any = None


def model_client() -> Any:
    """One SDK client per container, for the configured provider (prfleet.agents.model_client)."""
    global _client
    if _client is None:
        _client = build_model_client(settings(), api_key=secret_store.anthropic_api_key)
    return _client


def record_handler(record: SQSRecord, context: Any) -> None:
    with record_metrics(metrics):  # flushed when the record ends, not only when the invocation returns
        _record(record, context)


def _record(record: SQSRecord, context: Any) -> None:
    job = sqs.parse_record(record, (jobs.FileJob, jobs.AskJob), logger)
    logger.set_correlation_id(job.delivery_id)
    if isinstance(job, jobs.AskJob):
        annotations = {"repository": job.repo, "pr": job.number, "head_sha": job.head_sha, "agent": job.agent}
        with tracing.subsegment("## ask", **annotations) as span:
            span.metadata(comment=job.comment_id, job_id=job.job_id, **sqs.record_timing(record))
            _ask(record, job, context)
        return
    annotations = {"repository": job.repo, "pr": job.number, "head_sha": job.head_sha, "agent": job.agent}
    with tracing.subsegment("## job", **annotations) as span:
        span.metadata(path=job.path, job_id=job.job_id, **sqs.record_timing(record))
        _run(record, job, context)


def _run(record: SQSRecord, job: jobs.FileJob, context: Any) -> None:
    _attempt(record, job, context, runner.process, runner.fail, "job failed")


def _ask(record: SQSRecord, job: jobs.AskJob, context: Any) -> None:
    """An ask job (pipeline.answering): the same retries and last-delivery record as a file job's; its last
    delivery's failure is said in its thread."""
    _attempt(record, job, context, answering.answer, answering.fail, "ask failed")


def _attempt(record: SQSRecord, job: Any, context: Any, run: Any, fail: Any, failed: str) -> None:
    """One delivery of a job: `run` it; a busy run goes back to SQS, a RetryLater is re-sent delayed, anything
    else is logged and, on the last delivery, recorded with `fail` (the message still goes to the DLQ)."""
    emitter = events.Emitter(
        logger,
        metrics,
        repository=job.repo,
        pr=job.number,
        head_sha=job.head_sha,
        path=job.path,
        delivery_id=job.delivery_id,
        agent=job.agent,
    )
    final_attempt = sqs.receive_count(record) >= settings().max_receive_count
    try:
        run(
            job,
            remaining_ms=context.get_remaining_time_in_millis,
            client_for=github.client_for,
            model_client=model_client(),
            emitter=emitter,
            final_attempt=final_attempt,
        )
    except runner.RunBusy as exc:
        # Not a failure of the job: SQS shows this copy again after the visibility timeout (runner.RunBusy).
        logger.info(
            "duplicate delivery while the run is alive: handed back to SQS", extra={"reason": str(exc)}
        )
        raise
    except runner.RetryLater as exc:
        # A fresh, delayed copy: waiting on the API's rate limit must not count towards the DLQ's receive limit.
        sqs.send_raw(exc.body or record.body, delay=min(900, int(exc.delay + 0.999)))
        logger.info("requeued", extra={"event": "requeued", "reason": str(exc), "delay_s": exc.delay})
    except Exception as exc:
        # Powertools' batch processor notes a failed record only at debug level: say it here.
        logger.exception(
            failed,
            extra={"job_failed": job.job_id, "final_attempt": final_attempt, "message_id": record.message_id},
        )
        if final_attempt:  # record the failure so the review (or the thread) completes
            fail(github.client_for, job, emitter, redact(str(exc)), type(exc).__name__)
        raise


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
