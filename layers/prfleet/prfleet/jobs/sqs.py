"""SQS adapters: send slim jobs (batched, failed entries retried), re-send one with a delay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prfleet.config import settings
from prfleet.config.aws import client
from prfleet.jobs import AskJob, BadMessage, CommentJob, FileJob, PrJob, excerpt, parse_message
from prfleet.observability import tracing
from prfleet.observability.redaction import redact

MAX_DELAY = 900  # SQS DelaySeconds upper bound: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html


class EnqueueError(RuntimeError):
    """Some messages could not be sent after retries; the message lists them."""


def _traced() -> dict[str, Any]:
    """The AWSTraceHeader system attribute of the sender's trace, so the consumer's trace links to it
    (https://docs.aws.amazon.com/xray/latest/devguide/xray-services-sqs.html); nothing with tracing off."""
    header = tracing.trace_header()
    if header is None:
        return {}
    return {"MessageSystemAttributes": {"AWSTraceHeader": {"DataType": "String", "StringValue": header}}}


def send_pr_job(job: PrJob | CommentJob) -> None:
    client("sqs").send_message(QueueUrl=settings().pr_queue_url, MessageBody=job.to_message(), **_traced())


def send_file_jobs(jobs: Sequence[FileJob | AskJob], *, queue_url: str | None = None, delay: int = 0) -> None:
    """SendMessageBatch in tens; entries SQS refuses are retried, then reported, never dropped silently."""
    url = queue_url or settings().jobs_queue_url
    sqs = client("sqs")
    traced = _traced()
    for start in range(0, len(jobs), 10):
        pending = {str(i): job for i, job in enumerate(jobs[start : start + 10])}
        for _attempt in range(3):
            reply = sqs.send_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": k, "MessageBody": j.to_message(), "DelaySeconds": min(delay, MAX_DELAY), **traced}
                    for k, j in pending.items()
                ],
            )
            failed = {f["Id"]: f for f in reply.get("Failed", [])}
            pending = {k: v for k, v in pending.items() if k in failed}
            if not pending:
                break
        if pending:
            raise EnqueueError(
                f"{len(pending)} file jobs not enqueued: {sorted(j.path for j in pending.values())}"
            )


def send_raw(body: str, *, queue_url: str | None = None, delay: int = 0) -> None:
    client("sqs").send_message(
        QueueUrl=queue_url or settings().jobs_queue_url,
        MessageBody=body,
        DelaySeconds=min(delay, MAX_DELAY),
        **_traced(),
    )


def receive_count(record: Any) -> int:
    """How many times SQS has delivered this message (0 when the record does not say: never fail over a log)."""
    try:
        return int(record.attributes.approximate_receive_count)
    except (AttributeError, KeyError, TypeError, ValueError):
        return 0


def parse_record(record: Any, kind: type | tuple[type, ...], logger: Any) -> Any:
    """The record's job of `kind` (a job class, or a tuple of them: a queue carrying two kinds); a message that is not one is logged at ERROR with its id and reason, then
    raised (Powertools' BatchProcessor logs failed records at debug level only: without this the DLQ would hold it
    unexplained)."""
    try:
        job = parse_message(record.body)
        if not isinstance(job, kind):
            wanted = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise BadMessage(f"expected a {wanted}, got a {type(job).__name__}")
    except BadMessage as exc:
        logger.set_correlation_id(None)
        logger.error(
            "bad message",
            extra={
                "event": "bad_message",
                "message_id": record.message_id,
                "reason": redact(str(exc))[:500],
                "receive_count": receive_count(record),
                "body_chars": len(record.body or ""),
                "body_start": redact(excerpt(record.body or "")),
            },
        )
        raise
    return job


def record_timing(record: Any) -> dict[str, float]:
    """When SQS took the message and first handed it out (epoch seconds): the wait in the queue on a timeline."""
    attrs = getattr(record, "attributes", None)
    out: dict[str, float] = {}
    for key, name in (
        ("sent_at", "sent_timestamp"),
        ("first_received_at", "approximate_first_receive_timestamp"),
    ):
        try:
            out[key] = int(getattr(attrs, name)) / 1000.0
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
    return out
