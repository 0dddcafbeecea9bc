"""The template's alarms at work (moto stores alarms, never evaluates them): evaluated on the run's metrics as
CloudWatch would, once a minute while the stack runs; each state change published to the alarm's actions (the
alert topic, CloudWatch's own message body) and mirrored into moto, so `prfleet alarms` shows the same states; and
the inbox an on-call integration would read from the alert topic."""

from __future__ import annotations

import fnmatch
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prfleet_local.stack.account import REGION, client
from prfleet_local.stack.alarms import AlarmEvaluator, notification_subject
from prfleet_local.stack.metrics import CloudWatchMetrics, SqsSampler, now


class Alerting:
    """`evaluate()` applies the alarms at an instant; `loop()` is CloudWatch's minute schedule of it."""

    def __init__(self, metrics: CloudWatchMetrics) -> None:
        self.metrics = metrics
        # Both given by the stack once the template is provisioned (LocalStack.start).
        self.alarm_definitions: dict[str, dict[str, Any]] = {}
        self.sqs: SqsSampler | None = None
        self.evaluator: AlarmEvaluator | None = None  # built at the first evaluation
        self.notifications: list[dict[str, Any]] = []
        # (alarm, topic, why) of each notification CloudWatch could not publish (its alarm history says so in AWS).
        self.failed_actions: list[tuple[str, str, str]] = []
        # Called with (transition, notification body) for every alarm state change, e.g. by the serve console.
        self.listeners: list[Callable[[Any, dict[str, Any]], None]] = []
        self._lock = threading.Lock()

    def evaluate(self, at: float | None = None) -> dict[str, str]:
        """Sample the SQS queues at `at` (default: prfleet's clock now), evaluate every alarm there and act on each
        transition; the alarms' states."""
        with self._lock:
            at = now() if at is None else at
            if self.evaluator is None:
                self.evaluator = AlarmEvaluator(self.alarm_definitions)
            if self.sqs is not None:
                self.metrics.add(self.sqs.sample(at))
            self.evaluator.evaluate(self.metrics.datapoints(), at)
            sns, cw = client("sns"), client("cloudwatch")
            for t in self.evaluator.last_transitions:
                body = self.evaluator.notification(t, region=REGION)
                for arn in self.evaluator.actions(t.alarm, t.new_state):
                    refused = cloudwatch_cannot_publish(arn)
                    if refused:
                        self.failed_actions.append((t.alarm, arn, refused))
                        print(f"prfleet local: {t.alarm}: action failed: {refused}", file=sys.__stderr__)
                        continue
                    sns.publish(
                        TopicArn=arn, Subject=notification_subject(t, region=REGION), Message=json.dumps(body)
                    )
                cw.set_alarm_state(
                    AlarmName=t.alarm,
                    StateValue=str(t.new_state),
                    StateReason=t.reason[:1023],
                    StateReasonData=json.dumps(t.reason_data, default=str),
                )
                self.notifications.append(body)
                for listener in list(self.listeners):
                    listener(t, body)
            return {k: str(v) for k, v in self.evaluator.states.items()}

    def loop(self, interval: float, stop: threading.Event) -> None:
        """CloudWatch evaluates every alarm once a minute; so does the stack while it runs (until `stop`)."""
        while not stop.wait(interval):
            try:
                self.evaluate()
            except Exception as exc:  # noqa: BLE001 - a failed evaluation must not end the loop; said on stderr
                if stop.is_set():
                    return
                print(f"prfleet local: alarm evaluation failed: {exc}", file=sys.__stderr__)


# What CloudWatch needs on an encrypted topic's key: the SNS developer guide's statement for AWS service event
# sources (https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services).
CLOUDWATCH = "cloudwatch.amazonaws.com"
PUBLISH_KEY_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")


def cloudwatch_cannot_publish(topic_arn: str) -> str | None:
    """Why an alarm's notification to this topic would fail in AWS (None: it is delivered). An unencrypted topic
    takes it; an encrypted one only through an enabled customer managed key whose policy allows CloudWatch both
    actions. The AWS managed alias/aws/sns never does (its policy cannot name CloudWatch). Stricter than needed
    where it cannot tell: a statement with a Condition is not taken to grant."""
    key = client("sns").get_topic_attributes(TopicArn=topic_arn)["Attributes"].get("KmsMasterKeyId")
    if not key:
        return None
    if key.startswith("alias/aws/") or ":alias/aws/" in key:
        return f"{key} is an AWS managed key: CloudWatch cannot use it to publish"
    kms = client("kms")
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    if meta.get("KeyState") != "Enabled":
        return f"key {meta['KeyId']} is {meta.get('KeyState')}"
    policy = json.loads(kms.get_key_policy(KeyId=meta["KeyId"], PolicyName="default")["Policy"])
    allowed: set[str] = set()
    for st in _as_list(policy.get("Statement")):
        principal = st.get("Principal")
        services = _as_list(principal.get("Service")) if isinstance(principal, dict) else []
        if CLOUDWATCH not in services and principal != "*":
            continue
        granted = {
            a
            for a in PUBLISH_KEY_ACTIONS
            if any(fnmatch.fnmatchcase(a, p) for p in _as_list(st.get("Action")))
        }
        if st.get("Effect") == "Deny" and granted:
            return f"key {meta['KeyId']}'s policy denies {CLOUDWATCH} {sorted(granted)}"
        if st.get("Effect") == "Allow" and "Condition" not in st:
            allowed |= granted
    missing = sorted(set(PUBLISH_KEY_ACTIONS) - allowed)
    return f"key {meta['KeyId']}'s policy does not allow {CLOUDWATCH} {missing}" if missing else None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def subscribe_alerts(topic_arn: str, queue_name: str) -> AlertInbox:
    """Subscribe a new SQS queue to the topic (what an on-call integration does) and return it."""
    sqs, sns = client("sqs"), client("sns")
    url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return AlertInbox(sqs, url)


@dataclass
class AlertMessage:
    """One message that reached the alert topic: the SNS Subject and the decoded Message."""

    subject: str
    body: dict[str, Any]
    topic_arn: str

    @property
    def alarm(self) -> str | None:
        """The alarm's name for a CloudWatch state change (None for other notices, e.g. the budget notice)."""
        return self.body.get("AlarmName")

    @property
    def state(self) -> str | None:
        return self.body.get("NewStateValue")


class AlertInbox:
    """An SQS queue subscribed to the AlertTopic; `receive()` drains it (SNS envelope decoded)."""

    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs, self.url = sqs, url
        self.received: list[AlertMessage] = []

    def receive(self, *, wait: float = 0.0) -> list[AlertMessage]:
        """Messages that arrived since the last call (waits up to `wait` seconds for the first one)."""
        out: list[AlertMessage] = []
        deadline = time.monotonic() + wait
        while True:
            got = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
                "Messages", []
            )
            for m in got:
                envelope = json.loads(m["Body"])
                try:
                    body = json.loads(envelope.get("Message") or "{}")
                except ValueError:
                    body = {"text": envelope.get("Message")}
                out.append(AlertMessage(envelope.get("Subject", ""), body, envelope.get("TopicArn", "")))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
            if got:
                continue
            if out or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        self.received.extend(out)
        return out
