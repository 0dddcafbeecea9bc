"""SQS adapters: send slim jobs (batched, failed entries retried), re-send one with a delay."""

from __future__ import annotations

from collections.abc import Sequence

from prfleet.aws import client
from prfleet.config import settings
from prfleet.jobs import FileJob, PrJob

MAX_DELAY = 900  # SQS DelaySeconds upper bound: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html


class EnqueueError(RuntimeError):
    """Some messages could not be sent after retries; the message lists them."""


def send_pr_job(job: PrJob) -> None:
    client("sqs").send_message(QueueUrl=settings().pr_queue_url, MessageBody=job.to_message())


def send_file_jobs(jobs: Sequence[FileJob], *, queue_url: str | None = None, delay: int = 0) -> None:
    """SendMessageBatch in tens; entries SQS refuses are retried, then reported, never dropped silently."""
    url = queue_url or settings().jobs_queue_url
    sqs = client("sqs")
    for start in range(0, len(jobs), 10):
        pending = {str(i): job for i, job in enumerate(jobs[start : start + 10])}
        for _attempt in range(3):
            reply = sqs.send_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": k, "MessageBody": j.to_message(), "DelaySeconds": min(delay, MAX_DELAY)}
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
        QueueUrl=queue_url or settings().jobs_queue_url, MessageBody=body, DelaySeconds=min(delay, MAX_DELAY)
    )
