"""DynamoDB's own failures through the whole local stack (faults injected at the moto proxy, nothing mocked).

What a user relies on: a throttled request is retried and the review still comes; a write whose response was
lost (applied, then HTTP 500, then botocore's retry) neither loses nor duplicates anything.
"""

from __future__ import annotations

import json
import uuid

import pytest

from prfleet_local.demo.run import sandbox
from prfleet_local.stack.moto_proc import FaultPlan, FaultRule
from tests.conftest import load_payload

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    with sandbox(tmp_path_factory.mktemp("aws-faults"), sweep_interval=None) as b:
        b.stack.disable_event_sources()  # PrQueue keeps what the webhook enqueues
        yield b


@pytest.fixture(autouse=True)
def no_faults(box):
    yield
    box.stack.moto.set_faults(FaultPlan())


def enqueued_during(box, deliver) -> tuple[int, dict, int]:
    before = box.stack.queue_depth("PrQueue")
    status, reply = deliver()
    return status, reply, box.stack.queue_depth("PrQueue") - before


def test_a_throttled_dedupe_write_is_retried_and_the_delivery_enqueued_once(box):
    box.stack.moto.set_faults(FaultPlan([FaultRule("throttle", tables=["DeliveriesTable"], requests=[1, 2])]))
    payload = load_payload("pull_request.opened.payload.json")
    status, reply, enqueued = enqueued_during(box, lambda: box.deliver("pull_request", payload))
    assert (status, enqueued) == (202, 1), reply
    assert box.stack.moto.injected() == {("throttle", "dynamodb", "PutItem"): 2}


def test_a_dedupe_write_whose_response_was_lost_still_enqueues_the_delivery(box):
    box.stack.moto.set_faults(
        FaultPlan([FaultRule("lost_response", tables=["DeliveriesTable"], requests=[1])])
    )
    payload = load_payload("pull_request.opened.payload.json")
    delivery = str(uuid.uuid4())
    status, reply, enqueued = enqueued_during(
        box, lambda: box.deliver("pull_request", payload, delivery=delivery)
    )
    # The dedupe write was applied and its answer lost (botocore's retry may meet the fault again): still one job.
    assert box.stack.moto.injected().get(("lost_response", "dynamodb", "PutItem"), 0) >= 1
    assert (status, enqueued) == (202, 1), json.dumps(reply)
