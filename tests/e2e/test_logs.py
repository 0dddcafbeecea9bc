"""No secret and no tool argument value in anything the demo writes: every handler log line (stack.log_lines and
functions.log.jsonl), the demo's own printed report, and moto's log, after a full review of the sample PR in
which the Anthropic secret holds a real-looking `sk-ant-...` key (sent to the offline model on every call)."""

from __future__ import annotations

import json
import uuid

import pytest

from prfleet_local.demo import sample
from prfleet_local.demo.run import Sandbox, print_pr_report
from prfleet_local.github.server import GitHubServer, GitRepo
from prfleet_local.model.server import FaultPlan, ModelServer
from prfleet_local.stack.local_stack import LocalStack

pytestmark = pytest.mark.e2e

FAKE_KEY = "sk-ant-api03-" + uuid.uuid4().hex + uuid.uuid4().hex[:20] + "-AAAA"
# Correlation context a tool_call line may carry (the run's own file, repository, PR...): everything else in
# such a line must be about the call (tool name, argument NAMES), never an argument's value.
TOOL_CALL_KEYS = {
    "level", "location", "message", "timestamp", "service", "cold_start", "function_name",
    "function_memory_size", "function_arn", "function_request_id", "correlation_id", "xray_trace_id",
    "event", "run_id", "agent", "repository", "pr", "head_sha", "path", "model", "delivery_id",
    "gen_ai.agent.name", "gen_ai.system", "gen_ai.provider.name", "gen_ai.request.model",
    "gen_ai.operation.name", "tool", "gen_ai.tool.name", "gen_ai.tool.call.id", "arg_names",
    "gen_ai.tool.arg_names",
}  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("logs")
    repo = GitRepo(workdir / "repo")
    github = GitHubServer(repo, full_name="acme/shop", tokens=["local-token"])
    model = ModelServer(faults=FaultPlan(read_chunks=2))  # read_file with start_line / end_line values
    secret = "whsec-" + uuid.uuid4().hex
    stack = LocalStack(
        workdir / "stack",
        github_url=github.start(),
        model_url=model.start(),
        webhook_secret=secret,
        anthropic_api_key=FAKE_KEY,
        sweep_interval=None,
        visibility_timeout=2,
    )
    try:
        stack.start()
        box = Sandbox(stack, github, repo, model, secret, workdir)
        number = box.open_sample_pr()
        payload = github.webhook_payload("opened", number)
        assert box.deliver("pull_request", payload)[0] == 202
        head = payload["pull_request"]["head"]["sha"]
        assert box.wait_for_review(number, head_sha=head, timeout=120)
        stack.sweep()  # the sweeper's lines too
        yield box, number, head
    finally:
        stack.stop()
        model.stop()
        github.stop()


def test_the_fake_anthropic_key_was_really_in_use(demo):
    box, _number, _head = demo
    client = box.stack.functions["AgentFunction"].module._client
    assert client is not None and client.api_key == FAKE_KEY
    assert box.model.requests  # every one of them was sent with x-api-key: FAKE_KEY (401 otherwise)


def test_no_secret_in_any_log_line_or_in_the_printed_report(demo, capsys):
    box, number, head = demo
    ok = print_pr_report(box, number, head, seeded=sample.SEEDED_BUGS)
    printed = capsys.readouterr()
    assert ok
    log_file = (box.stack.workdir / "functions.log.jsonl").read_text()
    moto_log = (box.stack.workdir / "moto.log").read_text(errors="replace")
    assert len(box.stack.log_lines) > 100 and log_file.count("\n") == len(box.stack.log_lines)
    texts = {
        "stack.log_lines": "\n".join(box.stack.log_lines),
        "functions.log.jsonl": log_file,
        "stdout": printed.out,
        "stderr": printed.err,
        "moto.log": moto_log,
    }
    for name, text in texts.items():
        for secret in (box.secret, "local-token", FAKE_KEY, FAKE_KEY[:24]):
            assert secret not in text, f"{name} contains a secret"
        assert "sk-ant-" not in text, name


def test_tool_call_lines_carry_argument_names_never_values(demo):
    box, _number, _head = demo
    lines = [json.loads(x) for x in box.stack.log_lines if x.startswith("{")]
    calls = [x for x in lines if x.get("event") == "tool_call"]
    results = [x for x in lines if x.get("event") == "tool_result"]
    assert calls and results
    # What the model actually passed: (tool, input) for every tool_use it sent.
    used = [
        (b["name"], b["input"])
        for m in box.model.responses
        for b in m["content"]
        if b.get("type") == "tool_use"
    ]
    ranges = [i for t, i in used if t == "read_file" and "start_line" in i]
    assert ranges, "read_file was never called with a range"
    other_paths = {i["path"] for t, i in used if t == "read_file"}
    for line in calls:
        assert set(line) <= TOOL_CALL_KEYS, set(line) - TOOL_CALL_KEYS
        assert line.get("gen_ai.tool.arg_names", line["arg_names"]) == line["arg_names"]
        assert all(isinstance(n, str) for n in line["arg_names"])
        inputs = [i for t, i in used if t == line["tool"]]
        assert sorted(line["arg_names"]) in [sorted(i) for i in inputs]
        # a path passed to read_file shows only as the run's own file (its context), never as an argument
        assert line.get("path") not in (other_paths - {line.get("path")})
    names = {n for line in calls for n in line["arg_names"]}
    assert {"path", "start_line", "end_line"} <= names
    for line in calls + results:
        for key in ("args", "arguments", "input", "tool_input", "start_line", "end_line", "findings"):
            assert key not in line
    # No file content, no finding text in any line: the seeded bug lines and the report bodies never appear.
    everything = "\n".join(box.stack.log_lines)
    for _path, code, _what in sample.SEEDED_BUGS:
        assert code.strip() not in everything, code
    for _t, i in used:
        for f in i.get("findings", []) if isinstance(i, dict) else []:
            assert f["body"] not in everything
