"""The one way to build the model client: the anthropic SDK client of the configured provider.

- `anthropic`: the Claude API with the key from Secrets Manager (`anthropic.Anthropic`).
- `claude-platform-aws`: Claude Platform on AWS (`anthropic.lib.aws.AnthropicAWS`), SigV4-signed with the
  Lambda role's credentials (service `aws-external-anthropic`), billed to one workspace
  (https://docs.aws.amazon.com/claude-platform/latest/userguide/authentication.html).
- `bedrock`: Amazon Bedrock InvokeModel (`anthropic.lib.bedrock.AnthropicBedrock`), SigV4 service `bedrock`,
  model id (an inference profile) in the path
  (https://platform.claude.com/docs/en/build-with-claude/claude-on-amazon-bedrock-legacy).

All three expose the same `messages.create` / `messages.stream` surface, so the agent loop, budget, cache and
events do not change with the provider. No AWS provider needs a secret: the role signs each request.
Every configured model is checked against the provider's ids before a client exists (run-time refusal of a
model the provider does not offer or prfleet cannot price).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from prfleet.config import Settings
from prfleet.cost import pricing

# InvokeModel reads the API version from the body; the models it serves accept only this value. The SDK
# sends its own newest version (2026-10-21), which they may reject with a 400
# (https://platform.claude.com/docs/en/build-with-claude/claude-on-amazon-bedrock-legacy, the warning on top).
BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
TIMEOUT_S = 60.0


class ProviderConfigError(ValueError):
    """The provider's settings are incomplete, or a configured model is not one of the provider's ids."""


def check_models(provider: str, models: dict[str, str]) -> None:
    """Refuse any agent model the provider does not offer under that id (and prfleet cannot price)."""
    for agent, model in sorted(models.items()):
        try:
            pricing.provider_model(provider, model)
        except pricing.UnknownModel:
            sample = ", ".join(pricing.provider_models(provider)[:4])
            raise ProviderConfigError(
                f"{agent} model {model!r} is not a {provider} model id prfleet can price (for example {sample})"
            ) from None


def build(cfg: Settings, *, api_key: Any = None) -> Any:
    """The SDK client for `cfg.model_provider`, with the SDK's own retries off (the agent loop retries and
    logs every attempt). `api_key` is a callable returning the Anthropic key, asked only for `anthropic`."""
    check_models(cfg.model_provider, cfg.models)
    check_models(cfg.model_provider, {f"{a} fallback": m for a, m in cfg.fallback_models.items() if m})
    base_url = cfg.model_endpoint_url or None
    if cfg.model_provider == "anthropic":
        import anthropic

        if api_key is None:
            raise ProviderConfigError("provider anthropic needs the API key from Secrets Manager")
        return anthropic.Anthropic(api_key=api_key(), base_url=base_url, max_retries=0, timeout=TIMEOUT_S)
    if not cfg.model_region:
        raise ProviderConfigError(
            f"provider {cfg.model_provider} needs a region (MODEL_REGION or AWS_REGION)"
        )
    if cfg.model_provider == "claude-platform-aws":
        from anthropic.lib.aws import AnthropicAWS

        if not cfg.aws_workspace_id:
            raise ProviderConfigError("provider claude-platform-aws needs ANTHROPIC_AWS_WORKSPACE_ID")
        # No api_key and no explicit keys: the SDK signs with SigV4 from the default credential chain (the
        # Lambda role's session credentials in the environment).
        return AnthropicAWS(
            aws_region=cfg.model_region,
            workspace_id=cfg.aws_workspace_id,
            base_url=base_url,
            max_retries=0,
            timeout=TIMEOUT_S,
        )
    if cfg.model_provider == "bedrock":
        return _bedrock_client()(
            aws_region=cfg.model_region, base_url=base_url, max_retries=0, timeout=TIMEOUT_S
        )
    raise ProviderConfigError(f"unknown model provider {cfg.model_provider!r}")


@cache
def _bedrock_client() -> type:
    """AnthropicBedrock with the InvokeModel API version in every body (the SDK keeps a value already set)."""
    from anthropic.lib.bedrock import AnthropicBedrock

    class BedrockInvokeClient(AnthropicBedrock):
        def _prepare_options(self, options: Any) -> Any:
            if isinstance(options.json_data, dict):
                options = options.model_copy()
                options.json_data = {"anthropic_version": BEDROCK_ANTHROPIC_VERSION, **options.json_data}
            return super()._prepare_options(options)

    return BedrockInvokeClient
