"""The SQS event source mappings: pollers that receive from a queue and invoke its function with the batch, up to
the mapping's MaximumConcurrency, deleting what the function did not report in batchItemFailures; the queues'
depth, and whether the work has settled (nothing polled running, nothing left to receive)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

from prfleet_local.stack import template as tpl
from prfleet_local.stack.account import REGION, client


class EventSources:
    """Started by `start()`, stopped with the stack's `stop` event; `disable()` / `enable()` are the mappings'
    Enabled flag."""

    def __init__(
        self,
        template: dict[str, Any],
        ctx: tpl.Context,
        invoke: Callable[[str, dict[str, Any]], Any],
        *,
        stop: threading.Event,
        poll_wait: float,
    ) -> None:
        self.template, self.ctx = template, ctx
        self._invoke = invoke  # (logical id, event) -> the function's reply; raises for a function error
        self._stop = stop
        self.poll_wait = poll_wait
        self._enabled = threading.Event()  # the event source mappings' Enabled flag
        self._enabled.set()
        self._busy = 0  # batches being delivered now
        self._lock = threading.Lock()
        self._ages: dict[
            str, list[tuple[float, float]]
        ] = {}  # queue URL -> (received at, age of the message)

    def start(self, spawn: Callable[[Callable[[], None], str], None]) -> None:
        """One poller thread per unit of each SQS event's MaximumConcurrency, started with `spawn(target, name)`."""
        for logical, res in tpl.resources(self.template, "AWS::Serverless::Function").items():
            for ev in res["Properties"].get("Events", {}).values():
                if ev["Type"] != "SQS":
                    continue
                props = ev["Properties"]
                queue_arn = self.ctx.resolve(props["Queue"])
                queue_logical = next(
                    k for (k, a), v in self.ctx.attrs.items() if a == "Arn" and v == queue_arn
                )
                url = self.ctx.refs[queue_logical]
                concurrency = int(
                    self.ctx.resolve(props.get("ScalingConfig", {}).get("MaximumConcurrency", 2))
                )
                partial = "ReportBatchItemFailures" in props.get("FunctionResponseTypes", [])
                batch = int(props.get("BatchSize", 10))
                poll = functools.partial(self._poll, url, queue_arn, logical, batch, partial)
                for i in range(concurrency):  # MaximumConcurrency: at most this many invocations at once
                    spawn(poll, f"poller-{logical}-{i}")

    def disable(self) -> None:
        """Stop the pollers taking new messages (UpdateEventSourceMapping Enabled=false); running ones go on."""
        self._enabled.clear()

    def enable(self) -> None:
        self._enabled.set()

    def take_ages(self, url: str) -> list[tuple[float, float]]:
        """The (received at, age) of every message received from the queue since the last call."""
        with self._lock:
            return self._ages.pop(url, [])

    def _poll(self, url: str, arn: str, function: str, batch_size: int, partial: bool) -> None:
        sqs = client("sqs")
        while not self._stop.is_set():
            if not self._enabled.is_set():
                self._stop.wait(self.poll_wait)
                continue
            try:
                got = sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=min(batch_size, 10),
                    WaitTimeSeconds=0,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception:
                if self._stop.is_set():
                    return
                time.sleep(self.poll_wait)
                continue
            if not got:
                self._stop.wait(self.poll_wait)
                continue
            now = time.time()
            with self._lock:
                self._busy += 1
                self._ages.setdefault(url, []).extend(
                    (now, now - int(m["Attributes"]["SentTimestamp"]) / 1000.0)
                    for m in got
                    if "Attributes" in m
                )
            try:
                self._deliver(sqs, url, arn, function, got, partial)
            finally:
                with self._lock:
                    self._busy -= 1

    def _deliver(
        self, sqs: Any, url: str, arn: str, function: str, messages: list[dict[str, Any]], partial: bool
    ) -> None:
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
        try:
            reply = self._invoke(function, {"Records": records})
            failed = (
                {f["itemIdentifier"] for f in (reply or {}).get("batchItemFailures", [])}
                if partial
                else set()
            )
        except Exception:
            failed = {r["messageId"] for r in records}  # a crashed invocation returns the whole batch
        done = [r for r in records if r["messageId"] not in failed]
        for start in range(0, len(done), 10):
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                    for i, r in enumerate(done[start : start + 10])
                ],
            )
        # failed records stay in flight and reappear after the visibility timeout; the redrive policy applies.

    def queue_depth(self, logical: str, *, in_flight: bool = True) -> int:
        """Every message the queue still holds: visible, in flight (left out with `in_flight=False`), and delayed
        (a RetryLater's DelaySeconds: it is in neither of the other two counts,
        https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_GetQueueAttributes.html)."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"]
        if in_flight:
            names.append("ApproximateNumberOfMessagesNotVisible")
        attrs = client("sqs").get_queue_attributes(QueueUrl=self.ctx.refs[logical], AttributeNames=names)[
            "Attributes"
        ]
        return sum(int(attrs.get(n, 0)) for n in names)

    def wait_idle(self, timeout: float, queues: tuple[str, ...], *, in_flight: bool) -> bool:
        """True once the queues are empty and no polled invocation is running (checked twice in a row)."""
        deadline = time.monotonic() + timeout
        calm = 0
        while time.monotonic() < deadline:
            with self._lock:
                busy = self._busy
            if busy == 0 and all(self.queue_depth(q, in_flight=in_flight) == 0 for q in queues):
                calm += 1
                if calm >= 2:
                    return True
            else:
                calm = 0
            time.sleep(0.2)
        return False
