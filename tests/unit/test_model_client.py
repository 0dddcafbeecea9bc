"""prfleet.model_client: one client per provider, what each sends on the wire, and the refusals (run time and
deploy time) of models a provider does not offer."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import httpx2
import pytest

from prfleet import config
from prfleet.agents import model_client
from prfleet.cost import pricing
from prfleet_local.stack import template as tpl

BASE = config.Settings(
    deliveries_table="d",
    state_table="s",
    results_table="r",
    ledger_table="l",
    pr_queue_url="q",
    jobs_queue_url="j",
    alert_topic_arn="t",
    webhook_secret_id="w",
    github_secret_id="g",
    anthropic_secret_id="",
)
BEDROCK_MODELS = {
    "review": "global.anthropic.claude-sonnet-4-6",
    "tests": "us.anthropic.claude-haiku-4-5-20251001-v1:0",
    "docs": "us.anthropic.claude-haiku-4-5-20251001-v1:0",
}
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "m",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 1},
}
SIGV4 = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=AKIDTEST/\d{8}/(?P<region>[a-z0-9-]+)/(?P<service>[a-z-]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=[0-9a-f]{64}$"
)


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch):
    """Static test credentials in the default chain (what the Lambda role's session gives the function)."""
    for name in ("AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK", "ANTHROPIC_AWS_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-test")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-test")
    from anthropic.lib.aws import _auth

    _auth._get_session.cache_clear()


def _sent(client: Any, **create: Any) -> httpx2.Request:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=MESSAGE)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    # The agent loop's own call: with_options(max_retries=0) must keep the provider's client class.
    client.with_options(max_retries=0, http_client=http).messages.create(
        max_tokens=16, messages=[{"role": "user", "content": "hi"}], **create
    )
    (request,) = seen
    return request


def test_anthropic_uses_the_key_from_secrets_manager():
    client = model_client.build(BASE, api_key=lambda: "sk-ant-test")
    request = _sent(client, model="claude-sonnet-5-5")
    assert request.url.path == "/v1/messages"
    # This SDK version presents the key as a bearer token (older ones sent x-api-key).
    assert (
        request.headers.get("x-api-key") == "sk-ant-test"
        or request.headers["authorization"] == "Bearer sk-ant-test"
    )
    assert "x-amz-date" not in request.headers


def test_claude_platform_on_aws_signs_for_its_service_and_names_the_workspace():
    cfg = replace(
        BASE, model_provider="claude-platform-aws", model_region="us-west-2", aws_workspace_id="wrkspc_01T"
    )
    asked = []
    client = model_client.build(cfg, api_key=lambda: asked.append(1))
    request = _sent(client, model="claude-sonnet-5-5")
    assert asked == []  # no secret is read for an AWS provider
    assert str(request.url).startswith("https://aws-external-anthropic.us-west-2.api.aws/v1/messages")
    assert request.headers["anthropic-workspace-id"] == "wrkspc_01T"
    assert "x-api-key" not in request.headers
    m = SIGV4.match(request.headers["authorization"])
    assert m and m["region"] == "us-west-2" and m["service"] == "aws-external-anthropic"
    assert "host" in m["signed"].split(";") and "x-amz-date" in m["signed"].split(";")
    assert request.headers["x-amz-security-token"] == "session-test"
    assert json.loads(request.content)["model"] == "claude-sonnet-5-5"


def test_bedrock_puts_the_profile_in_the_path_and_the_invoke_api_version_in_the_body():
    cfg = replace(BASE, model_provider="bedrock", model_region="eu-central-1", models=dict(BEDROCK_MODELS))
    client = model_client.build(cfg)
    request = _sent(client, model="global.anthropic.claude-sonnet-4-6")
    assert request.url.host == "bedrock-runtime.eu-central-1.amazonaws.com"
    assert request.url.path == "/model/global.anthropic.claude-sonnet-4-6/invoke"
    body = json.loads(request.content)
    assert "model" not in body and "stream" not in body
    assert body["anthropic_version"] == model_client.BEDROCK_ANTHROPIC_VERSION == "bedrock-2023-05-31"
    m = SIGV4.match(request.headers["authorization"])
    assert m and m["region"] == "eu-central-1" and m["service"] == "bedrock"


def test_bedrock_model_id_with_a_version_colon_is_sent_unescaped_as_the_sdk_does():
    cfg = replace(BASE, model_provider="bedrock", model_region="us-east-1", models=dict(BEDROCK_MODELS))
    request = _sent(model_client.build(cfg), model="us.anthropic.claude-haiku-4-5-20251001-v1:0")
    assert request.url.raw_path.decode() == "/model/us.anthropic.claude-haiku-4-5-20251001-v1:0/invoke"


def test_local_endpoint_override_reaches_every_provider():
    for cfg in (
        replace(BASE, model_endpoint_url="http://127.0.0.1:9"),
        replace(
            BASE,
            model_provider="bedrock",
            model_region="us-east-1",
            models=dict(BEDROCK_MODELS),
            model_endpoint_url="http://127.0.0.1:9",
        ),
    ):
        client = model_client.build(cfg, api_key=lambda: "k")
        assert str(client.base_url).rstrip("/") == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    "provider, models, match",
    [
        (
            "bedrock",
            dict(config.DEFAULT_MODELS),
            "model 'claude-(sonnet|haiku)-5-5' is not a bedrock model id",
        ),
        ("bedrock", {**BEDROCK_MODELS, "docs": "anthropic.claude-haiku-4-5-20251001-v1:0"}, "docs model"),
        ("bedrock", {**BEDROCK_MODELS, "docs": "jp.anthropic.claude-haiku-4-5-20251001-v1:0"}, "docs model"),
        ("anthropic", {**config.DEFAULT_MODELS, "tests": "us.anthropic.claude-sonnet-4-6"}, "tests model"),
        ("claude-platform-aws", {**config.DEFAULT_MODELS, "tests": "claude-opus-4-1"}, "tests model"),
    ],
)
def test_a_model_the_provider_does_not_offer_is_refused_before_any_call(provider, models, match):
    cfg = replace(
        BASE, model_provider=provider, model_region="us-east-1", aws_workspace_id="wrkspc_1", models=models
    )
    with pytest.raises(model_client.ProviderConfigError, match=match):
        model_client.build(cfg, api_key=lambda: "k")


def test_a_fallback_model_the_provider_does_not_offer_is_refused_too():
    cfg = replace(
        BASE,
        model_provider="bedrock",
        model_region="us-east-1",
        models=dict(BEDROCK_MODELS),
        fallback_models={"review": "claude-opus-5-5"},
    )
    with pytest.raises(model_client.ProviderConfigError, match="review fallback model 'claude-opus-5-5'"):
        model_client.build(cfg)


def test_claude_platform_on_aws_without_a_workspace_is_refused():
    cfg = replace(BASE, model_provider="claude-platform-aws", model_region="us-east-1")
    with pytest.raises(model_client.ProviderConfigError, match="ANTHROPIC_AWS_WORKSPACE_ID"):
        model_client.build(cfg)


def test_unknown_provider_is_a_configuration_error(monkeypatch):
    for name, value in {
        "DELIVERIES_TABLE": "d",
        "STATE_TABLE": "s",
        "RESULTS_TABLE": "r",
        "LEDGER_TABLE": "l",
        "PR_QUEUE_URL": "q",
        "JOBS_QUEUE_URL": "j",
        "ALERT_TOPIC_ARN": "t",
        "WEBHOOK_SECRET_ID": "w",
        "GITHUB_SECRET_ID": "g",
        "MODEL_PROVIDER": "vertex",
    }.items():
        monkeypatch.setenv(name, value)
    config.settings.cache_clear()
    try:
        with pytest.raises(config.ConfigError, match="MODEL_PROVIDER"):
            config.settings()
    finally:
        config.settings.cache_clear()


def test_bedrock_geographic_profiles_pay_the_regional_premium_and_global_does_not():
    usage = {"input_tokens": 100_000, "output_tokens": 0}
    assert pricing.cost_micros("global.anthropic.claude-sonnet-4-6", usage) == 300_000
    assert pricing.cost_micros("us.anthropic.claude-sonnet-4-6", usage) == 330_000
    assert pricing.cost_micros("claude-sonnet-4-6", usage) == 300_000
    # Sonnet 4 predates the premium: every profile costs the same.
    assert pricing.cost_micros("eu.anthropic.claude-sonnet-4-20250514-v1:0", usage) == 300_000
    # The reservation's worst case carries the premium too, so a regional call never exceeds what was reserved.
    assert pricing.worst_case_micros("us.anthropic.claude-sonnet-4-6", 1000, 100) == 1.1 * (
        pricing.worst_case_micros("global.anthropic.claude-sonnet-4-6", 1000, 100)
    )


# ------------------------------------------------------------------------------------ deploy-time refusal

T = tpl.load()


def _rules(params: dict[str, str]) -> None:
    tpl.Context(T, parameters=dict(params)).check_rules()


def test_template_rules_list_exactly_the_ids_each_provider_is_priced_for():
    """The deploy-time lists (template Rules) and the run-time check read the same table."""
    lists, fallbacks, verify = {}, {}, {}
    models = [{"Ref": "ReviewModel"}, {"Ref": "TestsModel"}, {"Ref": "DocsModel"}]
    fallback_refs = [{"Ref": f"{a}FallbackModel"} for a in ("Review", "Tests", "Docs")]
    for rule in T["Rules"].values():
        if (
            "RuleCondition" not in rule
        ):  # a rule for every provider (AskModelIsAnAgentModel), not a model list
            continue
        provider = rule["RuleCondition"]["Fn::Equals"][1]
        members = [
            a["Assert"]["Fn::EachMemberIn"] for a in rule["Assertions"] if "Fn::EachMemberIn" in a["Assert"]
        ]
        lists[provider] = [allowed for refs, allowed in members if refs == models]
        fallbacks[provider] = [allowed for refs, allowed in members if refs == fallback_refs]
        verify[provider] = [allowed for refs, allowed in members if refs == [{"Ref": "VerifyModel"}]]
    assert set(lists) == set(config.PROVIDERS)
    for provider, (ids,) in verify.items():  # VerifyModel: empty (ReviewModel's) or one of the provider's ids
        assert ids == ["", *pricing.provider_models(provider)], provider
    for provider, (ids,) in lists.items():
        assert ids == pricing.provider_models(provider), provider
    for provider, (ids,) in fallbacks.items():
        # A fallback is a Claude API id (its parameter's pattern): allowed where the provider takes those ids.
        expected = [""] if provider == "bedrock" else ["", *pricing.provider_models(provider)]
        assert ids == expected, provider


@pytest.mark.parametrize(
    "params, match",
    [
        ({"ModelProvider": "bedrock"}, "BedrockModels"),  # the Claude API defaults are not Bedrock ids
        (
            {
                "ModelProvider": "bedrock",
                **{f"{a}Model": "global.anthropic.claude-sonnet-5-5" for a in ("Review", "Tests", "Docs")},
            },
            "BedrockModels",
        ),
        ({"ModelProvider": "claude-platform-aws"}, "needs AnthropicAwsWorkspaceId"),
        ({"ModelProvider": "anthropic", "DocsModel": "claude-haiku-9"}, "ClaudeApiModels"),
        ({"ModelProvider": "anthropic", "VerifyModel": "claude-haiku-9"}, "VerifyModel must be empty"),
        (
            {
                "ModelProvider": "bedrock",
                **{f"{a.title()}Model": m for a, m in BEDROCK_MODELS.items()},
                "ReviewFallbackModel": "claude-opus-5-5",
            },
            "leave them empty",
        ),
        (
            {"ModelProvider": "anthropic", "TestsFallbackModel": "claude-opus-9"},
            "fallback models must be empty or",
        ),
    ],
)
def test_deploy_is_refused_for_a_model_or_setting_the_provider_lacks(params, match):
    with pytest.raises(tpl.TemplateError, match=match):
        _rules(params)


def test_each_provider_deploys_with_its_own_parameters():
    _rules({})
    _rules({"ModelProvider": "claude-platform-aws", "AnthropicAwsWorkspaceId": "wrkspc_01AbC"})
    _rules({"ModelProvider": "bedrock", **{f"{a.title()}Model": m for a, m in BEDROCK_MODELS.items()}})


def test_every_provider_row_names_its_source_and_a_priced_model(tmp_path):
    data = json.loads(pricing.PRICES_PATH.read_text())
    for provider, spec in data["providers"].items():
        for row in spec["models"]:
            assert row["source"].startswith("https://"), (provider, row)
    # A provider row for a model without a price row is an error when the table loads, never a zero price later.
    data["providers"]["bedrock"]["models"].append(
        {
            "model": "claude-unpriced-9",
            "bedrock_id": "anthropic.claude-unpriced-9",
            "profiles": ["us"],
            "source": "https://x",
        }
    )
    bad = tmp_path / "prices.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="claude-unpriced-9"):
        pricing.load_table(bad)


def test_an_unknown_provider_spelling_is_never_priced():
    for model in (
        "global.anthropic.claude-sonnet-5-5",
        "apac.anthropic.claude-haiku-4-5-20251001-v1:0",
        "anthropic.claude-sonnet-4-6",
    ):
        with pytest.raises(pricing.UnknownModel):
            pricing.cost_micros(model, {"input_tokens": 10, "output_tokens": 1})
