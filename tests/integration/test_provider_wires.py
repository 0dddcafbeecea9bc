"""The offline model behind each AWS provider's wire, driven by the real SDK clients prfleet.model_client builds:
what succeeds, and what AWS would refuse (bad or stale signatures, the wrong region, the SDK's own API version on
InvokeModel, a base model id where a profile is needed, the provider's error shapes)."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

import anthropic
import pytest

from prfleet import agents, config
from prfleet.agents import model_client
from prfleet.cost import pricing
from prfleet_local.model import providers
from prfleet_local.model.server import FaultPlan, FaultRule, ModelServer

BEDROCK_MODELS = {
    "review": "global.anthropic.claude-sonnet-4-6",
    "tests": "us.anthropic.claude-haiku-4-5-20251001-v1:0",
    "docs": "us.anthropic.claude-haiku-4-5-20251001-v1:0",
}
WORKSPACE = "wrkspc_01LocalOffline"  # the offline account's workspace, bound to us-east-1
SYSTEM = "You are the review agent."
FIRST = '<untrusted_file path="app.py" total="2">\n1| x = eval(input())\n2| \n</untrusted_file>'
BASE = config.Settings(*"dslrqjtwg", anthropic_secret_id="")


@pytest.fixture(autouse=True)
def role_credentials(monkeypatch):
    """The Lambda role's session credentials, as the local stack sets them."""
    for name in ("AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK", "ANTHROPIC_AWS_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    from anthropic.lib.aws import _auth

    _auth._get_session.cache_clear()


@pytest.fixture
def server():
    with ModelServer() as srv:
        yield srv


def bedrock(server: ModelServer, **kw: Any) -> Any:
    cfg = replace(BASE, model_provider="bedrock", model_region="us-east-1", models=dict(BEDROCK_MODELS))
    return model_client.build(replace(cfg, model_endpoint_url=server.url, **kw))


def platform(server: ModelServer, **kw: Any) -> Any:
    cfg = replace(
        BASE, model_provider="claude-platform-aws", model_region="us-east-1", aws_workspace_id=WORKSPACE
    )
    return model_client.build(replace(cfg, model_endpoint_url=server.url, **kw))


def ask(client: Any, model: str, *, stream: bool = False) -> Any:
    args = {
        "model": model,
        "max_tokens": 4000,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": FIRST}],
    }
    if stream:
        with client.messages.stream(**args) as s:
            return s.get_final_message()
    return client.messages.create(**args)


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "invoke-with-response-stream"])
def test_bedrock_serves_the_profile_in_the_path_both_ways(server, stream):
    message = ask(bedrock(server), "us.anthropic.claude-haiku-4-5-20251001-v1:0", stream=stream)
    assert message.model == "claude-haiku-4-5-20251001"  # Bedrock names the model, not the profile invoked
    assert message.id.startswith("msg_bdrk_")
    assert message.stop_reason == "tool_use"
    tools = [b for b in message.content if b.type == "tool_use"]
    assert tools and tools[0].name == "read_file" and tools[0].input["path"] == "app.py"
    # The usage the policy billed is the one the SDK assembled from the stream.
    assert message.usage.input_tokens == server.responses[-1]["usage"]["input_tokens"] > 0
    assert message.usage.output_tokens == server.responses[-1]["usage"]["output_tokens"] > 0
    # What reached the Messages policy: the path's model, the body without Bedrock's wire fields.
    sent = server.requests[-1]
    assert sent["model"] == "us.anthropic.claude-haiku-4-5-20251001-v1:0"
    assert "anthropic_version" not in sent and sent.get("stream", False) is stream


def test_bedrock_stream_is_aws_event_stream_with_invocation_metrics(server):
    """The raw reply: event-stream frames that botocore decodes, chunk bytes = the Messages events."""
    from botocore.eventstream import EventStreamBuffer

    client = bedrock(server)
    raw = client.with_options(max_retries=0).messages.with_raw_response.create(
        model="global.anthropic.claude-sonnet-4-6",
        max_tokens=4000,
        system=SYSTEM,
        messages=[{"role": "user", "content": FIRST}],
        stream=True,
    )
    assert raw.headers["content-type"] == "application/vnd.amazon.eventstream"
    buf = EventStreamBuffer()
    buf.add_data(raw.http_response.read())
    frames = list(buf)
    assert {f.headers[":event-type"] for f in frames} == {"chunk"}
    events = [json.loads(base64.b64decode(json.loads(f.payload)["bytes"])) for f in frames]
    assert [e["type"] for e in events][0] == "message_start" and events[-1]["type"] == "message_stop"
    assert events[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] > 0


def test_bedrock_refuses_the_sdks_own_api_version(server):
    """Why model_client sets bedrock-2023-05-31: the plain SDK client's body version is refused."""
    from anthropic.lib.bedrock import AnthropicBedrock

    plain = AnthropicBedrock(aws_region="us-east-1", base_url=server.url, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as exc:
        ask(plain, "global.anthropic.claude-sonnet-4-6")
    assert "anthropic_version must be bedrock-2023-05-31" in str(exc.value)
    assert exc.value.response.headers["x-amzn-errortype"].startswith("ValidationException:")
    assert server.requests == []  # refused at the wire, never reached the model


def test_bedrock_base_model_id_needs_an_inference_profile(server):
    client = bedrock(server)
    with pytest.raises(anthropic.BadRequestError, match="inference profile"):
        ask(client, "anthropic.claude-sonnet-4-6")
    with pytest.raises(anthropic.BadRequestError, match="model identifier is invalid"):
        ask(client, "global.anthropic.claude-sonnet-5-5")  # a model InvokeModel does not serve


def test_bedrock_rejects_a_wrong_secret_and_a_stale_signature(server, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    from anthropic.lib.aws import _auth

    _auth._get_session.cache_clear()
    with pytest.raises(anthropic.PermissionDeniedError) as exc:
        ask(bedrock(server), "global.anthropic.claude-sonnet-4-6")
    assert exc.value.response.headers["x-amzn-errortype"].startswith("InvalidSignatureException")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    _auth._get_session.cache_clear()
    server.aws.clock = lambda: time.time() + 16 * 60  # the server 16 minutes ahead
    with pytest.raises(anthropic.PermissionDeniedError, match="Signature expired"):
        ask(bedrock(server), "global.anthropic.claude-sonnet-4-6")


def test_bedrock_error_shapes_for_throttling_and_overload(server):
    client = bedrock(server)
    server.set_faults(
        FaultPlan(rules=[FaultRule("429", requests=[1], retry_after=3), FaultRule("529", requests=[2])])
    )
    with pytest.raises(anthropic.RateLimitError) as exc:
        ask(client, "global.anthropic.claude-sonnet-4-6")
    assert exc.value.response.headers["x-amzn-errortype"].startswith("ThrottlingException")
    assert "retry-after" not in exc.value.response.headers  # Bedrock sends no retry hint: the loop backs off
    assert exc.value.body == {"message": "Too many requests, please wait before trying again."}
    with pytest.raises(anthropic.InternalServerError) as exc:
        ask(client, "global.anthropic.claude-sonnet-4-6", stream=True)
    assert exc.value.status_code == 503
    assert exc.value.response.headers["x-amzn-errortype"].startswith("ServiceUnavailableException")


def test_claude_platform_on_aws_serves_its_workspace(server):
    message = ask(platform(server), "claude-sonnet-5-5")
    assert message.model == "claude-sonnet-5-5" and message.stop_reason == "tool_use"
    assert server.requests[-1]["model"] == "claude-sonnet-5-5"


def test_claude_platform_on_aws_workspace_only_in_its_region_and_known(server):
    with pytest.raises(anthropic.PermissionDeniedError, match="bound to us-east-1"):
        ask(platform(server, model_region="eu-west-1"), "claude-sonnet-5-5")
    with pytest.raises(anthropic.PermissionDeniedError, match="does not exist"):
        ask(platform(server, aws_workspace_id="wrkspc_01Other"), "claude-sonnet-5-5")
    assert server.requests == []


def test_claude_platform_on_aws_signature_is_for_its_own_service(server):
    """A request signed for Bedrock does not authenticate on Claude Platform on AWS."""
    import httpx2
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = json.dumps(
        {"model": "claude-sonnet-5-5", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    )
    url = f"{server.url}/v1/messages"
    req = AWSRequest(
        "POST",
        url,
        data=body,
        headers={
            "content-type": "application/json",
            "anthropic-version": "2023-06-01",
            "anthropic-workspace-id": WORKSPACE,
        },
    )
    SigV4Auth(Credentials("testing", "testing"), "bedrock", "us-east-1").add_auth(req)
    reply = httpx2.post(url, content=body, headers=dict(req.prepare().headers))
    assert reply.status_code == 403
    assert reply.json()["message"].startswith(
        "Credential should be scoped to correct service: 'aws-external-anthropic'"
    )


def test_unsigned_first_party_requests_still_reach_the_claude_api_path(server):
    client = anthropic.Anthropic(api_key="offline", base_url=server.url, max_retries=0)
    assert ask(client, "claude-sonnet-5-5").model == "claude-sonnet-5-5"


def test_event_frames_round_trip_through_botocore():
    from botocore.eventstream import EventStreamBuffer

    buf = EventStreamBuffer()
    buf.add_data(providers.chunk_frame({"type": "ping"}) + providers.chunk_frame({"type": "message_stop"}))
    decoded = [json.loads(base64.b64decode(json.loads(f.payload)["bytes"])) for f in buf]
    assert decoded == [{"type": "ping"}, {"type": "message_stop"}]


def test_bedrock_stream_that_fails_midway_ends_with_an_exception_frame(server):
    """A billed stream cut by a server error: Bedrock ends it with an exception message, which the SDK raises."""
    server.set_faults(FaultPlan(rules=[FaultRule("stream_error", requests=[1])]))
    with pytest.raises(anthropic.APIStatusError) as exc:
        ask(bedrock(server), "global.anthropic.claude-sonnet-4-6", stream=True)
    assert exc.value.body["error"]["type"] == "internalServerException"
    assert server.bill()[-1].outcome == "stream_error"  # billed, as the policy bills it


@pytest.mark.parametrize(
    ("profile", "named"),
    [
        ("global.anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        ("us.anthropic.claude-sonnet-4-6", "claude-sonnet-4-6"),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929"),
        ("us.anthropic.claude-opus-4-20250514-v1:0", "claude-opus-4-20250514"),
    ],
)
def test_bedrock_response_names_a_claude_api_model_of_the_profile(profile, named):
    assert providers.bedrock_response_model(profile) == named
    assert pricing.table().canonical(named) == pricing.table().canonical(profile)


class _Source:
    title, body = "Add helpers", "Small helpers."
    files = {"app.py": "import os\n\n\ndef run(cmd):\n    return os.system(cmd)\n"}

    def read_file(self, path):
        return self.files.get(path)

    def file_diff(self, path):
        return "@@ -0,0 +1,5 @@\n" + "\n".join("+" + x for x in self.files[path].splitlines())

    def changed_files(self):
        from prfleet.agents.tools import ChangedFile

        return [ChangedFile(p, "added", "sha-" + p, 5, 0, "") for p in self.files]


class _Guard:
    def __init__(self):
        self.priced: list[tuple[str, Any]] = []

    def before_call(self, model, params):
        return None

    def after_call(self, token, usage, *, model):
        self.priced.append((model, usage))
        return pricing.cost_micros(model, usage)

    def on_error(self, token, exc):
        return 0


def test_agent_on_a_bedrock_profile_pays_its_premium_and_sends_effort_and_thinking(server):
    """A us. profile of Sonnet 4.6: the response names claude-sonnet-4-6, the call is priced on the profile
    (1.1x, the regional premium), and the request body carries adaptive thinking and the agent's effort (Sonnet
    4.6 takes both, matched on its Claude API id)."""
    from prfleet.jobs import FileJob

    profile = "us.anthropic.claude-sonnet-4-6"
    settings = type("S", (), {"agents": ("review",), "models": {"review": profile}})()
    spec = agents.agent_specs(settings)["review"]
    assert spec.effort == "high"
    guard, before = _Guard(), len(server.requests)
    result = agents.run_agent(
        FileJob("o/r", 1, "h" * 40, "b" * 40, "app.py", "blob1", "review", None, "d-1"),
        spec,
        _Source(),
        bedrock(server, models={"review": profile}),
        deadline=time.time() + 60,
        guard=guard,
        emit=lambda *a, **k: None,
        sleep=lambda s: None,
    )
    assert result.status == "succeeded", result.error
    assert result.model == "claude-sonnet-4-6"  # what the responses named
    assert guard.priced and {m for m, _ in guard.priced} == {profile}
    for _, usage in guard.priced:
        first_party = pricing.exact_cost("claude-sonnet-4-6", usage)
        assert first_party > 0 and pricing.exact_cost(profile, usage) == first_party * Decimal("1.1")
    assert result.cost_micros == sum(pricing.cost_micros(profile, u) for _, u in guard.priced)
    sent = server.requests[before:]  # the InvokeModel bodies, without anthropic_version
    assert sent and all(b["model"] == profile for b in sent)
    assert all(
        b["thinking"] == {"type": "adaptive"} and b["output_config"] == {"effort": "high"} for b in sent
    )
