"""Fuzzed queue messages: what the planner (PrQueue) and the agent (JobsQueue) do with messages that are not
their jobs: malformed, oversized, the wrong kind, well-formed but pointing nowhere.

What an operator relies on: such a message never disappears and never blocks the queue. It is retried up to the
queue's maxReceiveCount, then SQS moves it, body intact (same MessageId), to the dead-letter queue
(https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html); and
the function's log says why, next to the message id, so whoever drains the DLQ can tell a poison message from an
outage.

Examples: `parse_message` 500 arbitrary strings plus 300 job-shaped objects (pure, no stack); through the local
stack 3 examples x 6 messages per queue (each example waits for maxReceiveCount=2 receives at a 6 s visibility
timeout). Derandomized, so CI runs the same inputs every time.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prfleet import jobs
from prfleet_local.demo.run import sandbox

FUZZ = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

PR_FIELDS: dict[str, Any] = {
    "kind": "pr",
    "v": jobs.VERSION,
    "repo": "acme/shop",
    "number": 7,
    "head_sha": "a" * 40,
    "base_sha": "b" * 40,
    "installation_id": 1,
    "delivery_id": "d-1",
    "action": "opened",
}
FILE_FIELDS: dict[str, Any] = {
    "kind": "file",
    "v": jobs.VERSION,
    "repo": "acme/shop",
    "number": 7,
    "head_sha": "a" * 40,
    "base_sha": "b" * 40,
    "path": "shop/cart.py",
    "blob_sha": "c" * 40,
    "agent": "review",
    "installation_id": 1,
    "delivery_id": "d-1",
}
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)),
    max_leaves=12,
)


@st.composite
def job_shaped(draw: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A PR or file job with fields dropped, retyped or replaced by random JSON."""
    data = dict(base or draw(st.sampled_from([PR_FIELDS, FILE_FIELDS])))
    for key in draw(st.lists(st.sampled_from(sorted(data)), max_size=3, unique=True)):
        action = draw(st.sampled_from(["drop", "random", "string", "empty"]))
        if action == "drop":
            del data[key]
        elif action == "random":
            data[key] = draw(json_values)
        elif action == "string":
            data[key] = str(data[key])
        else:
            data[key] = type(data[key])() if data[key] is not None else ""
    return data


# ------------------------------------------------------------------------------------------ pure properties


@settings(max_examples=500, **FUZZ)
@given(st.one_of(st.text(max_size=300), st.builds(json.dumps, json_values)))
def test_parse_message_of_any_text_is_a_job_or_a_bad_message(body):
    try:
        job = jobs.parse_message(body)
    except jobs.BadMessage as exc:
        assert str(exc)  # the reason is said
    else:
        assert isinstance(job, (jobs.PrJob, jobs.FileJob))


@settings(max_examples=300, **FUZZ)
@given(job_shaped())
def test_parse_message_of_job_shaped_objects_is_a_job_or_a_bad_message(data):
    try:
        job = jobs.parse_message(json.dumps(data))
    except jobs.BadMessage as exc:
        assert str(exc)
    else:
        assert job.to_message() and jobs.parse_message(job.to_message()) == job


def well_typed(job: jobs.PrJob | jobs.FileJob) -> bool:
    strings = ["repo", "head_sha", "base_sha", "delivery_id"]
    strings += ["action"] if isinstance(job, jobs.PrJob) else ["path", "blob_sha", "agent"]
    inst = job.installation_id
    return (
        all(isinstance(getattr(job, n), str) for n in strings)
        and type(job.number) is int
        and (inst is None or type(inst) is int)
        and (not isinstance(job, jobs.PrJob) or job.requested_by is None or isinstance(job.requested_by, str))
    )


@settings(max_examples=300, **FUZZ)
@given(job_shaped())
def test_an_accepted_job_is_well_typed(data):
    try:
        job = jobs.parse_message(json.dumps(data))
    except jobs.BadMessage:
        return
    assert well_typed(job), job


# ------------------------------------------------------------------------------------- through the local stack


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    with sandbox(
        tmp_path_factory.mktemp("fuzz-jobs"),
        parameters={"MaxReceiveCount": 2},
        sweep_interval=None,
        visibility_timeout=6,  # longer than a failing attempt under load: no redelivery while it still runs
    ) as b:
        yield b


@st.composite
def bad_message(draw: Any, queue: str) -> str:
    """One message the queue's consumer must refuse (`unique` gives job-shaped ones their own job id)."""
    own, other = (PR_FIELDS, FILE_FIELDS) if queue == "PrQueue" else (FILE_FIELDS, PR_FIELDS)
    fresh: dict[str, Any] = {}
    kind = draw(st.sampled_from(["text", "truncated", "wrong_kind", "mangled", "oversized", "nowhere"]))
    if kind == "text":
        return draw(st.text(min_size=1, max_size=200))
    if kind == "truncated":
        raw = json.dumps(dict(own, **fresh))
        return raw[: draw(st.integers(1, len(raw) - 1))]
    if kind == "wrong_kind":
        return json.dumps(dict(other, **fresh))
    if kind == "mangled":
        data = draw(job_shaped(dict(own, **fresh)))
        body = json.dumps(data)
        try:
            jobs.parse_message(body)
        except jobs.BadMessage:
            return body
        return json.dumps(dict(data, v=99))  # parseable after all: make it an unsupported version
    if kind == "oversized":  # under SQS's size limit, far over any job: a 200 KB path on a repo nobody has
        return json.dumps(dict(own, path="p/" + "x" * 200_000, repo="nobody/nothing", **fresh))
    # well-formed, for a repository and PR that do not exist: GitHub answers 404 every time
    return json.dumps(dict(own, repo="nobody/nothing", number=draw(st.integers(1, 999)), **fresh))


def drain_dlq(box: Any, dlq: str, want: set[str], timeout: float = 150.0) -> dict[str, str]:
    """MessageId -> body of everything that reached `dlq`, until every id in `want` arrived or time is up."""
    sqs = box.stack.client("sqs")
    url = box.stack.queue_url(dlq)
    got: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while not want <= set(got) and time.monotonic() < deadline:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        ):
            got[m["MessageId"]] = m["Body"]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        time.sleep(0.3)
    return got


def where_are(box: Any, queue: str, missing: dict[str, str]) -> str:
    """What tells a slow move from a lost message: the queue's own counts and every log line naming the ids."""
    sqs = box.stack.client("sqs")
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    counts = {
        q: sqs.get_queue_attributes(QueueUrl=box.stack.queue_url(q), AttributeNames=names)["Attributes"]
        for q in (queue, DLQ_OF[queue])
    }
    lines = [line[:300] for line in box.stack.log_lines if any(m in line for m in missing)]
    bodies = [body[:120] for body in missing.values()]
    return f"not in {DLQ_OF[queue]}: {bodies}; queues {counts}; lines naming them: {lines}"


def unique(body: str) -> str:
    """A fresh head sha and delivery id where the body has non-empty string ones: the same job twice is a
    redelivery, which prfleet rightly settles once (the second copy is deleted, not dead-lettered), and
    hypothesis may draw the same job twice or replay an example."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict):
        return body
    for key in ("head_sha", "delivery_id"):
        if isinstance(data.get(key), str) and data[key]:
            data[key] = uuid.uuid4().hex
    return json.dumps(data)


def send_batch(box: Any, queue: str, bodies: list[str]) -> dict[str, str]:
    sqs = box.stack.client("sqs")
    sent: dict[str, str] = {}
    for body in bodies:
        mid = sqs.send_message(QueueUrl=box.stack.queue_url(queue), MessageBody=body)["MessageId"]
        sent[mid] = body
    return sent


DLQ_OF = {"PrQueue": "PrDLQ", "JobsQueue": "JobsDLQ"}
RESULTS: dict[str, dict[str, str]] = {}  # queue -> message id -> body, for the log test


@pytest.mark.e2e
@pytest.mark.parametrize("queue", ["PrQueue", "JobsQueue"])
def test_bad_messages_end_in_the_dlq_with_their_body_intact(box, queue):
    sent_all: dict[str, str] = {}

    @settings(max_examples=3, **FUZZ)
    @given(st.lists(bad_message(queue), min_size=6, max_size=6))
    def run(bodies: list[str]) -> None:
        sent = send_batch(box, queue, [unique(b) for b in bodies])
        got = drain_dlq(box, DLQ_OF[queue], set(sent))
        missing = set(sent) - set(got)
        assert not missing, where_are(box, queue, {m: sent[m] for m in missing})
        for mid, body in sent.items():
            assert got[mid] == body  # body intact
        sent_all.update(sent)

    run()
    # Nothing keeps circulating once every bad message is dead-lettered (no endless re-sends of a fresh copy).
    if not box.stack.wait_idle(timeout=90):
        sqs = box.stack.client("sqs")
        left = sqs.receive_message(
            QueueUrl=box.stack.queue_url(queue), MaxNumberOfMessages=10, VisibilityTimeout=0
        )
        bodies = [m["Body"][:160] for m in left.get("Messages", [])]
        raise AssertionError(f"{queue} still busy after every bad message reached the DLQ: {bodies}")
    RESULTS[queue] = sent_all


def reasons_logged(box: Any, queue: str, sent: dict[str, str], *, parseable: bool) -> list[str]:
    """Bodies whose failure no ERROR/WARNING line explains: found by SQS message id, a PR job by its delivery id
    (the correlation id of every line about it), a file job by its own id (the agent's `job_failed` ERROR line:
    a PR's file jobs share its delivery id)."""
    own = jobs.PrJob if queue == "PrQueue" else jobs.FileJob
    logs = [line for line in box.stack.log_lines if '"level":"ERROR"' in line or '"level":"WARNING"' in line]
    unexplained = []
    for mid, body in sent.items():
        try:
            job = jobs.parse_message(body)
        except jobs.BadMessage:
            job = None
        job = job if isinstance(job, own) else None  # the wrong kind is refused like an unparseable body
        if (job is not None) != parseable:
            continue
        # an unparseable one by its message id, with the reason said; a job by its delivery id
        if isinstance(job, jobs.FileJob):
            keys = [f'"job_failed":"{job.job_id}"']
        else:
            keys = [f'"correlation_id":"{job.delivery_id}"'] if job else [mid]
        if not any(k in line and (job or '"reason":"' in line) for line in logs for k in keys):
            unexplained.append(body[:100])
    return unexplained


@pytest.mark.e2e
@pytest.mark.parametrize("queue", ["PrQueue", "JobsQueue"])
def test_a_dead_lettered_unparseable_message_has_its_reason_logged_with_its_id(box, queue):
    sent = RESULTS.get(queue)
    if sent is None:
        pytest.skip("runs after test_bad_messages_end_in_the_dlq_with_their_body_intact")
    unexplained = reasons_logged(box, queue, sent, parseable=False)
    assert not unexplained, f"{len(unexplained)} with no logged reason, e.g. {unexplained[:3]}"
    # never a whole huge body in the log: the oversized (200 KB) one is cut to its start
    said = [x for x in box.stack.log_lines if '"bad_message"' in x and any(mid in x for mid in sent)]
    assert said and max(map(len, said)) < 5_000, max(map(len, said))


@pytest.mark.e2e
# The JobsQueue case was an xfail while the fixture's visibility was 1 s: a copy redelivered while the first attempt
# still ran ended as a duplicate, and SQS dead-lettered it with no reason. At 6 s (and in AWS, 6 x the Timeout) no
# copy comes back while an attempt runs; it passed in every CI run since, so it is a plain test again.
@pytest.mark.parametrize("queue", ["PrQueue", "JobsQueue"])
def test_a_dead_lettered_job_has_its_own_reason_logged(box, queue):
    sent = RESULTS.get(queue)
    if sent is None:
        pytest.skip("runs after test_bad_messages_end_in_the_dlq_with_their_body_intact")
    unexplained = reasons_logged(box, queue, sent, parseable=True)
    assert not unexplained, f"{len(unexplained)} with no logged reason, e.g. {unexplained[:3]}"
