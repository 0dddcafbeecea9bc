"""One PR head's whole path in X-Ray, through the local stack: the functions' segments reach the X-Ray daemon
stand-in, the SQS messages carry AWSTraceHeader, and the traces of the webhook, the planner, every agent job and
fan-in are linked as X-Ray links an SQS-triggered function's trace to its senders'. The model-call subsegments
carry the tokens and the cost the runs recorded; `prfleet trace` prints the timeline and the review page draws it
(checked in headless Chromium).

Set PRFLEET_SCREENSHOT_TIMELINE=docs/trace-timeline.png to refresh the README's picture from this run.
"""

from __future__ import annotations

import base64
import io
import os
import time
from argparse import Namespace
from pathlib import Path

import pytest

from prfleet_local.cli.trace import show_trace
from prfleet_local.demo.run import pr_runs, sandbox
from prfleet_local.stack import timeline
from tests.e2e import chromium

pytestmark = pytest.mark.e2e
FUNCTION = "AWS::Lambda::Function"


def _wait_for_segments(store, repo, number, head, expected_jobs, timeout):
    """The daemon receives over UDP after the invocation ends: wait until every job's subsegment is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        traces = timeline.head_traces(store, repo, number, head)
        docs = [d for t in traces for d in store.segments(t)]
        if sum(d.get("name") == "## job" for d in docs) >= expected_jobs:
            return traces, docs
        time.sleep(0.2)
    pytest.fail("the agent jobs' segments did not all reach the X-Ray stand-in")


def test_one_pr_head_is_traced_from_the_webhook_through_every_agent_job_to_fan_in(tmp_path):
    with sandbox(tmp_path, sweep_interval=None) as box:
        number = box.open_sample_pr()
        payload = box.github.webhook_payload("opened", number)
        head = payload["pull_request"]["head"]["sha"]
        assert box.deliver("pull_request", payload)[0] == 202
        assert box.wait_for_review(number, head_sha=head, timeout=180)
        runs = pr_runs(box, number, head)
        assert runs
        store = box.stack.xray
        traces, docs = _wait_for_segments(store, box.repo_name, number, head, len(runs), timeout=30)

        # every function on the path has its Lambda segment in the linked traces
        functions = [d["name"] for d in docs if d.get("origin") == FUNCTION]
        assert any(n.endswith("WebhookFunction") for n in functions), functions
        assert sum(n.endswith("PlannerFunction") for n in functions) == 1, functions
        assert sum(n.endswith("AgentFunction") for n in functions) >= 1

        # a job subsegment for every run (a redelivered message adds another: the local queues redeliver after
        # seconds), annotated so that X-Ray finds it by repository, PR, head and agent
        jobs = [d for d in docs if d.get("name") == "## job"]
        traced = {
            (d["annotations"]["agent"], d["metadata"]["prfleet"]["path"], d["annotations"]["pr"])
            for d in jobs
            if d["annotations"]["head_sha"] == head and d["annotations"]["repository"] == box.repo_name
        }
        assert traced == {(r["agent"], r["path"], number) for r in runs}
        (plan_trace,) = {t for t in traces for d in store.segments(t) if d.get("name") == "## plan"}
        webhook_trace = {
            t for t in traces for d in store.segments(t) if d["name"].endswith("WebhookFunction")
        }
        assert store.links[plan_trace] & webhook_trace
        job_traces = {t for t in traces for d in store.segments(t) if d.get("name") == "## job"}
        verify_traces = {  # the head's verify job is sent by the fan-in of the agent job that completed the head
            t
            for t in job_traces
            for d in store.segments(t)
            if d.get("name") == "## job" and d["annotations"]["agent"] == "verify"
        }
        assert verify_traces, "the verify job has its trace"
        for job_trace in job_traces:
            linked = plan_trace in store.links[job_trace]
            by_fan_in = job_trace in verify_traces and bool(
                store.links[job_trace] & (job_traces - {job_trace})
            )
            assert linked or by_fan_in, (
                "an agent trace is not linked to the planner's (or, verify, to a job's)"
            )

        # fan-in ran in the agent traces (every job's outcome counted there)
        assert sum(d.get("name") == "fan_in" for d in docs) >= len(runs)

        # model calls: tokens and cost as the runs recorded them
        calls = [d for d in docs if d.get("name") == "model_call"]
        meta = [d["metadata"]["prfleet"] for d in calls]
        assert all(sum(m["tokens"].values()) > 0 and m["request_id"] for m in meta)
        assert sum(m["cost_micros"] for m in meta) == sum(int(r.get("cost_micros") or 0) for r in runs) > 0

        # the text timeline names the planner, each job and its model calls, with their costs
        out = io.StringIO()
        show_trace(Namespace(pr=f"{box.repo_name}#{number}", head=None, local=True), out=out, store=store)
        text = out.getvalue()
        assert head[:12] in text and "planner" in text and "webhook" in text
        assert text.count("model ") >= len(calls) and "queue wait" in text and "fan-in" in text
        total = sum(m["cost_micros"] for m in meta)
        assert f"cost ${total / 1e6:.4f}" in text

        _page_draws_the_timeline(box, number, calls, runs, tmp_path)


def _page_draws_the_timeline(box, number, calls, runs, tmp_path):
    binary = chromium.find()
    if binary is None:
        if os.environ.get("PRFLEET_REQUIRE_BROWSER"):
            pytest.fail("no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH: `make test` installs it where it can (apt-get install chromium)")
    browser = chromium.Browser(binary)
    try:
        browser.open(box.review_page(number))
        assert browser.evaluate("document.querySelectorAll('svg.timeline').length") == 1
        assert browser.evaluate("document.querySelectorAll('svg.timeline g.bar.model rect').length") == len(
            calls
        )
        jobs = browser.evaluate("document.querySelectorAll('svg.timeline g.bar.job rect').length")
        assert jobs >= len(runs) + 1  # the planner's and every run's (a redelivery adds one)
        # bars on one axis: every bar inside the plot, none of zero width
        widths = browser.evaluate(
            "[...document.querySelectorAll('svg.timeline rect')].map(r => r.width.baseVal.value)"
        )
        assert min(widths) > 0
        rect = browser.evaluate(
            "(() => { const r = document.querySelector('svg.timeline').getBoundingClientRect();"
            " return [r.x, r.y + window.scrollY, r.width, r.height]; })()"
        )
        browser.screenshot()  # lays the whole page out at its full height
        clip = dict(zip(("x", "y", "width", "height"), rect, strict=True), scale=1)
        png = base64.b64decode(
            browser.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)[
                "data"
            ]
        )
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        (tmp_path / "trace-timeline.png").write_bytes(png)
        target = os.environ.get("PRFLEET_SCREENSHOT_TIMELINE")
        if target:
            Path(target).write_bytes(png)
    finally:
        browser.close()
