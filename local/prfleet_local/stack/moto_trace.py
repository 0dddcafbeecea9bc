"""SQS SendMessageBatch keeps each entry's MessageSystemAttributes (AWSTraceHeader), as SQS does.

moto 5.2.5's `SQSBackend.send_message_batch` passes each entry's body, attributes, delay, group and deduplication
id on to `send_message`, but not its MessageSystemAttributes, so a batch lost the X-Ray trace header that a single
SendMessage keeps. SQS documents the member on every batch entry
(https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatchRequestEntry.html) and
returns it as the AWSTraceHeader attribute on receive. Applied only in the moto server process (moto_proc.main).
"""

from __future__ import annotations

from typing import Any

_saved: dict[str, Any] = {}


def apply() -> None:
    """Patch moto in this process (idempotent)."""
    if _saved:
        return
    from moto.sqs.models import SQSBackend

    original = _saved["send_message_batch"] = SQSBackend.send_message_batch

    def send_message_batch(self: Any, queue_name: str, entries: dict[str, dict[str, Any]]) -> Any:
        messages, failed = original(self, queue_name, entries)
        by_id = {e["Id"]: e for e in entries.values()}
        for message in messages:
            system = by_id.get(getattr(message, "user_id", None), {}).get("MessageSystemAttributes")
            if system:
                message.system_attributes = system
        return messages, failed

    SQSBackend.send_message_batch = send_message_batch  # type: ignore[method-assign]
