"""The demo through each model provider (issue 15): the stack deployed from template.yaml with the provider's
parameters, the agent function's real SDK client for it (anthropic.Anthropic, anthropic.lib.aws.AnthropicAWS,
anthropic.lib.bedrock.AnthropicBedrock), the offline model behind the provider's wire with SigV4 checked. The
seeded bugs are found, and the ledger is what the offline server billed, at the provider's prices."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from typing import Any

import pytest

from prfleet.cost import pricing
from prfleet.store import job_runs
from prfleet_local.demo import sample
from prfleet_local.demo.run import REPO, sandbox
from prfleet_local.model.providers import bedrock_response_model, local_parameters

pytestmark = pytest.mark.e2e

CLIENTS = {
    "anthropic": "anthropic.Anthropic",
    "claude-platform-aws": "anthropic.lib.aws.AnthropicAWS",
    "bedrock": "anthropic.lib.bedrock.AnthropicBedrock",
}


@pytest.fixture(autouse=True)
def restore_environment():
    """The local stack sets the functions' environment in this process: a provider's MODEL_* must not outlive
    its test (the next test file in this worker expects the default provider)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    from prfleet import config
    from prfleet.config import aws

    config.settings.cache_clear()
    aws.client.cache_clear()


def _usage(record: Any) -> dict[str, Any]:
    """A bill record's token buckets as the usage object pricing reads."""
    return {
        "input_tokens": record.uncached_input_tokens,
        "cache_read_input_tokens": record.cache_read_input_tokens,
        "cache_creation_input_tokens": record.cache_creation_5m_input_tokens
        + record.cache_creation_1h_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": record.cache_creation_5m_input_tokens,
            "ephemeral_1h_input_tokens": record.cache_creation_1h_input_tokens,
        },
        "output_tokens": record.output_tokens,
    }


def _client_class(provider: str) -> type:
    module, _, name = CLIENTS[provider].rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


@pytest.mark.parametrize("provider", sorted(CLIENTS))
def test_the_demo_through_each_provider(tmp_path, provider):
    with sandbox(
        tmp_path, parameters=local_parameters(provider), sweep_interval=None, visibility_timeout=2
    ) as box:
        stack = box.stack
        # Deployed as the template says for this provider: an Anthropic secret only for `anthropic`.
        assert ("AnthropicSecret" in stack.created) == (provider == "anthropic")
        # ... and the ledger-drift alarm only where there is a usage report to drift from.
        assert ("LedgerDriftAlarm" in stack.created) == (provider == "anthropic")
        number = box.open_sample_pr()
        payload = box.github.webhook_payload("opened", number)
        head = payload["pull_request"]["head"]["sha"]
        assert box.deliver("pull_request", payload)[0] == 202
        assert box.wait_for_review(number, head_sha=head, timeout=180)

        client = stack.functions["AgentFunction"].module._client
        assert isinstance(client, _client_class(provider)), type(client)
        runs = job_runs.runs_of_head(REPO, number, head)
        assert runs and all(r["status"] == "succeeded" for r in runs), [
            (r["path"], r["agent"], r["status"]) for r in runs
        ]
        params = local_parameters(provider)
        configured = {
            "review": params.get("ReviewModel", "claude-sonnet-5-5"),
            "tests": params.get("TestsModel", "claude-haiku-5-5"),
            "docs": params.get("DocsModel", "claude-haiku-5-5"),
        }
        configured["verify"] = params.get("VerifyModel") or configured["review"]  # empty: ReviewModel's
        assert {(r["agent"], r["model"]) for r in runs} <= set(configured.items())

        # The seeded bugs are found and posted.
        found = {(f["path"], int(f["line"])) for r in runs for f in json.loads(r.get("findings") or "[]")}
        for path, code, what in sample.SEEDED_BUGS:
            assert (path, sample.bug_line(path, code)) in found, what
        assert box.github.reviews and box.github.check_runs_for(head)[0]["conclusion"] == "success"

        # Every model call went over the provider's wire: Bedrock's path carries the profile.
        served = box.model.responses
        assert served and {m["model"] for m in served} <= set(configured.values())
        wires = {c["wire"] for c in box.model.aws.calls}
        assert len(box.model.aws.calls) == (0 if provider == "anthropic" else len(served))
        assert (
            wires
            <= {
                "anthropic": set(),
                "claude-platform-aws": {"claude-platform-aws"},
                "bedrock": {"bedrock:invoke", "bedrock:invoke-with-response-stream"},
            }[provider]
        )
        if provider == "bedrock":
            assert sorted(c["model"] for c in box.model.aws.calls) == sorted(m["model"] for m in served)

        # The ledger equals the offline server's bill at the provider's prices (Bedrock: 1.1x on the us. profile).
        bill = sum(pricing.cost_micros(r.model, _usage(r)) for r in box.model.bill())
        assert len(box.model.bill()) == len(served)
        ledger = stack.client("dynamodb").scan(TableName=stack.table("LedgerTable"))["Items"]
        (day,) = [i for i in ledger if i["scope"]["S"] == "daily"]
        assert int(day["settled"]["N"]) == bill == sum(int(r["cost_micros"]) for r in runs) > 0
        if provider == "bedrock":
            us = [m for m in served if m["model"].startswith("us.")]
            assert us
            for m in us:
                first_party = pricing.exact_cost("claude-haiku-4-5", m["usage"])
                assert pricing.exact_cost(m["model"], m["usage"]) == first_party * Decimal("1.1")
            # The responses named the Anthropic model, as Bedrock's do, not the profile: priced by that name the
            # ledger would have missed the us. profile's premium; it is charged because the call is priced on the
            # profile invoked (pricing.billed_model).
            named = {bedrock_response_model(m["model"]) for m in us}
            assert named == {"claude-haiku-4-5-20251001"}
            by_name = sum(
                pricing.cost_micros(bedrock_response_model(r.model), _usage(r)) for r in box.model.bill()
            )
            assert by_name < bill
