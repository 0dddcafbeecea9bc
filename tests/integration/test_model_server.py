"""The offline model server with the real anthropic SDK: as strict as the API, and billing like it."""

import datetime as dt
import json
import time
import urllib.error
import urllib.request

import anthropic
import pytest

from prfleet_local.model.server import FaultPlan, FaultRule, ModelServer

MODEL = "claude-sonnet-5-5"
ADMIN = {"x-api-key": "sk-ant-admin-offline", "anthropic-version": "2023-06-01"}


@pytest.fixture(scope="module")
def server():
    with ModelServer() as srv:
        yield srv


@pytest.fixture
def client(server):
    server.set_faults(FaultPlan())
    yield anthropic.Anthropic(base_url=server.url, api_key="offline-key-a", max_retries=0, timeout=10)
    server.set_faults(FaultPlan())


def ask(client, **kw):
    params = {"model": MODEL, "max_tokens": 2000, "messages": [{"role": "user", "content": "hello there"}]}
    params.update(kw)
    return client.messages.create(**params)


def get(server, path, headers=ADMIN):
    req = urllib.request.Request(server.url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def since(server):
    return len(server.bill())


# --------------------------------------------------------------------------------------------- the bill


def test_every_answered_call_is_billed_with_its_buckets_and_key(client, server):
    n = since(server)
    msg = ask(client)
    rec = server.bill()[n]
    assert rec.request_id == msg._request_id and rec.model == MODEL and rec.outcome == "ok"
    assert rec.api_key_id == server.api_key_id("offline-key-a") and "offline-key-a" not in rec.api_key_id
    assert rec.uncached_input_tokens == msg.usage.input_tokens
    assert (
        rec.output_tokens == msg.usage.output_tokens > rec.thinking_tokens > 0
    )  # it thought, billed as output
    assert msg.usage.output_tokens_details.thinking_tokens == rec.thinking_tokens


def test_error_replies_are_not_billed(client, server):
    server.set_faults(FaultPlan(rules=[FaultRule("529", requests=[1]), FaultRule("429", requests=[2])]))
    n = since(server)
    with pytest.raises(anthropic.InternalServerError):
        ask(client)
    with pytest.raises(anthropic.RateLimitError):
        ask(client)
    with pytest.raises(anthropic.BadRequestError):
        ask(client, extra_body={"temperature": 0.2})
    assert since(server) == n


def test_timeout_after_billing_is_billed_and_the_client_times_out(client, server):
    server.set_faults(FaultPlan(rules=[FaultRule("timeout_after_billing", requests=[1], delay=5)]))
    n = since(server)
    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        ask(client.with_options(timeout=0.5))
    assert time.monotonic() - started < 4
    assert [r.outcome for r in server.bill()[n:]] == ["timeout_after_billing"]
    assert server.bill()[n].output_tokens > 0


def test_connection_reset_after_the_request_was_read_is_billed(client, server):
    server.set_faults(FaultPlan(rules=[FaultRule("reset_after_read", requests=[1])]))
    n = since(server)
    with pytest.raises(anthropic.APIConnectionError) as info:
        ask(client)
    assert not isinstance(info.value, anthropic.APITimeoutError)
    assert [r.outcome for r in server.bill()[n:]] == ["reset_after_read"]


def test_truncated_200_is_billed_and_unparseable(client, server):
    server.set_faults(FaultPlan(rules=[FaultRule("truncated", requests=[1])]))
    n = since(server)
    with pytest.raises((ValueError, anthropic.APIResponseValidationError)):
        ask(client)
    assert [r.outcome for r in server.bill()[n:]] == ["truncated"]


def test_truncated_stream_ends_without_a_stop_reason_and_is_billed(client, server):
    server.set_faults(FaultPlan(rules=[FaultRule("truncated", requests=[1], after_events=2)]))
    n = since(server)
    with client.messages.stream(
        model=MODEL, max_tokens=2000, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        message = stream.get_final_message()
    assert (
        message.stop_reason is None and message.usage.input_tokens > 0
    )  # message_start arrived, nothing else
    rec = server.bill()[n]
    assert rec.outcome == "truncated" and rec.streamed and rec.output_tokens > 0


def test_error_inside_a_200_stream_raises_the_sdk_status_error(client, server):
    server.set_faults(FaultPlan(rules=[FaultRule("stream_error", requests=[1], after_events=2)]))
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(
            model=MODEL, max_tokens=2000, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            stream.get_final_message()
    assert info.value.type == "overloaded_error"


# ----------------------------------------------------------------------------------------- rate limits


def test_an_ordinary_429_carries_retry_after_unless_the_rule_omits_it(client, server):
    """Rate-limits page: a 429 rate_limit_error comes "along with a retry-after header indicating how long to
    wait"; the rule's value, else a default; `omit_retry_after` is only for tests of a client without it."""
    server.set_faults(
        FaultPlan(
            rules=[
                FaultRule("429", requests=[1]),
                FaultRule("429", requests=[2], retry_after=7),
                FaultRule("429", requests=[3], omit_retry_after=True),
            ]
        )
    )
    seen = []
    for _ in range(3):
        with pytest.raises(anthropic.RateLimitError) as info:
            ask(client)
        assert info.value.type == "rate_limit_error" and info.value.error_code is None
        seen.append(info.value.response.headers.get("retry-after"))
    assert seen == ["1", "7", None]
    assert (
        FaultPlan.from_dict({"rules": [{"kind": "429", "omit_retry_after": True}]}).rules[0].omit_retry_after
    )


# ----------------------------------------------------------------------------------------- spend limits


def test_tier_spend_cap_is_429_with_error_code_and_no_retry_after(client, server):
    server.set_faults(FaultPlan(rules=[FaultRule("spend_limit", requests=[1], retry_after=30)]))
    with pytest.raises(anthropic.RateLimitError) as info:
        ask(client)
    exc = info.value
    assert exc.error_code == "enforced_spend_limit_reached"
    assert "retry-after" not in exc.response.headers and "x-should-retry" not in exc.response.headers


@pytest.mark.parametrize(
    ("kind", "scope"), [("spend_limit_org", ""), ("spend_limit_workspace", "workspace ")]
)
def test_spend_limits_you_set_are_400_invalid_request(client, server, kind, scope):
    server.set_faults(FaultPlan(rules=[FaultRule(kind, requests=[1])]))
    with pytest.raises(anthropic.BadRequestError) as info:
        ask(client)
    assert info.value.type == "invalid_request_error" and info.value.error_code is None
    assert info.value.api_message.startswith(f"You have reached your specified {scope}API usage limits")
    assert "retry-after" not in info.value.response.headers


def test_x_should_retry_only_when_the_rule_sets_it(client, server):
    server.set_faults(
        FaultPlan(rules=[FaultRule("500", requests=[1], should_retry=False), FaultRule("500", requests=[2])])
    )
    for expected in ("false", None):
        with pytest.raises(anthropic.InternalServerError) as info:
            ask(client)
        assert info.value.response.headers.get("x-should-retry") == expected


# ------------------------------------------------------------------------------------- the usage report


def _hour(ts):
    return dt.datetime.fromtimestamp(ts - ts % 3600, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_usage_report_groups_by_model_and_key_in_hourly_buckets():
    clock = {"t": 1_800_000_000.0}  # 2027-01-15T08:00:00Z, on an hour boundary
    with ModelServer(clock=lambda: clock["t"]) as srv:
        a = anthropic.Anthropic(base_url=srv.url, api_key="key-a", max_retries=0)
        b = anthropic.Anthropic(base_url=srv.url, api_key="key-b", max_retries=0)
        msgs = [ask(a), ask(b, model="claude-haiku-5-5")]
        clock["t"] += 3600 + 5
        msgs.append(ask(a))
        status, report = get(
            srv,
            f"/v1/organizations/usage_report/messages?starting_at={_hour(1_800_000_000)}"
            "&bucket_width=1h&group_by[]=model&group_by[]=api_key_id",
        )
        assert status == 200 and report["has_more"] is False and report["next_page"] is None
        first, second = report["data"][:2]
        assert (first["starting_at"], first["ending_at"]) == ("2027-01-15T08:00:00Z", "2027-01-15T09:00:00Z")
        rows = {(r["model"], r["api_key_id"]): r for r in first["results"]}
        assert set(rows) == {(MODEL, srv.api_key_id("key-a")), ("claude-haiku-5-5", srv.api_key_id("key-b"))}
        row = rows[(MODEL, srv.api_key_id("key-a"))]
        assert row["output_tokens"] == msgs[0].usage.output_tokens
        assert row["uncached_input_tokens"] == msgs[0].usage.input_tokens
        assert set(row["cache_creation"]) == {"ephemeral_1h_input_tokens", "ephemeral_5m_input_tokens"}
        assert row["workspace_id"] is None and row["service_tier"] is None  # not grouped by: null
        assert [r["output_tokens"] for r in second["results"]] == [msgs[2].usage.output_tokens]

        status, page1 = get(
            srv,
            f"/v1/organizations/usage_report/messages?starting_at={_hour(1_800_000_000)}&bucket_width=1h&limit=1",
        )
        assert status == 200 and page1["has_more"] is True and page1["next_page"].startswith("page_")
        assert page1["data"][0]["results"][0]["model"] is None  # no group_by: one row per bucket
        status, page2 = get(
            srv,
            f"/v1/organizations/usage_report/messages?starting_at={_hour(1_800_000_000)}&bucket_width=1h"
            f"&limit=1&page={page1['next_page']}",
        )
        assert page2["data"][0]["starting_at"] == "2027-01-15T09:00:00Z"


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("bucket_width=1h", ADMIN, 400),  # starting_at is required
        ("starting_at=2027-01-15T08:00:00Z&bucket_width=1h&limit=169", ADMIN, 400),  # 1h: at most 168
        ("starting_at=2027-01-15T08:00:00Z&group_by[]=colour", ADMIN, 400),
        ("starting_at=2027-01-15T08:00:00Z&group_by[]=speed", ADMIN, 400),  # needs the fast-mode beta header
        (
            "starting_at=2027-01-15T08:00:00Z",
            {"x-api-key": "offline-key-a", "anthropic-version": "2023-06-01"},
            401,
        ),
    ],
)
def test_usage_report_rejects_what_the_api_rejects(server, query, headers, status):
    code, body = get(server, "/v1/organizations/usage_report/messages?" + query, headers)
    assert code == status and body["type"] == "error"


# ------------------------------------------------------------------------------ rejected request fields


@pytest.mark.parametrize(
    "extra",
    [
        {"extra_body": {"temperature": 0.2}},  # this SDK no longer even has the parameters
        {"extra_body": {"top_p": 0.9}},
        {"extra_body": {"top_k": 5}},
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        {"thinking": {"type": "disabled"}},
        {"tool_choice": {"type": "any"}, "tools": [{"name": "t", "input_schema": {"type": "object"}}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure:"}]},
        {"output_config": {"effort": "extreme"}},
        {"max_tokens": 128_001},
    ],
)
def test_fields_the_current_models_reject_are_400(client, extra):
    with pytest.raises(anthropic.BadRequestError) as info:
        ask(client, **extra)
    assert info.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    ("model", "extra", "accepted"),
    [
        ("claude-haiku-4-5", {"thinking": {"type": "adaptive"}}, False),  # older models: no adaptive
        ("claude-opus-4-5", {"thinking": {"type": "adaptive"}}, False),
        ("claude-haiku-4-5", {"output_config": {"effort": "low"}}, False),  # no effort parameter
        ("claude-opus-4-5", {"output_config": {"effort": "max"}}, False),  # low / medium / high only
        ("claude-opus-4-5", {"output_config": {"effort": "medium"}}, True),
        ("claude-sonnet-4-6", {"output_config": {"effort": "xhigh"}}, False),  # max, but no xhigh
        (
            "us.anthropic.claude-sonnet-4-6",
            {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}},
            True,
        ),
        ("claude-opus-4-6", {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}, True),
        ("claude-opus-4-8", {"output_config": {"effort": "xhigh"}}, True),
    ],
)
def test_effort_levels_and_adaptive_thinking_only_where_the_model_has_them(client, model, extra, accepted):
    if accepted:
        assert ask(client, model=model, **extra).stop_reason
        return
    with pytest.raises(anthropic.BadRequestError, match="not supported for"):
        ask(client, model=model, **extra)


def test_unknown_model_is_404(client):
    with pytest.raises(anthropic.NotFoundError):
        ask(client, model="claude-nonexistent-9")


def test_a_thinking_block_edited_or_sent_to_another_model_is_rejected(client):
    first = ask(client, tools=[{"name": "read_file", "input_schema": {"type": "object"}}])
    blocks = [b.model_dump(exclude_none=True) for b in first.content]
    assert blocks[0]["type"] == "thinking" and blocks[0]["signature"] and blocks[0]["thinking"] == ""
    tampered = [dict(blocks[0], thinking="I changed my mind"), *blocks[1:]]
    history = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": tampered}]
    with pytest.raises(anthropic.BadRequestError, match="signature"):
        ask(client, messages=[*history, {"role": "user", "content": "go on"}])
    history[1]["content"] = blocks
    with pytest.raises(anthropic.BadRequestError, match="signature"):
        ask(client, model="claude-haiku-5-5", messages=[*history, {"role": "user", "content": "go on"}])


def test_a_redacted_thinking_block_must_come_back_as_issued(client, server):
    assert FaultPlan.from_dict({"redacted_thinking": True}).redacted_thinking  # POST /_faults, --faults
    assert not FaultPlan().redacted_thinking  # the current models do not produce them: off by default
    server.set_faults(FaultPlan(redacted_thinking=True))
    tools = [{"name": "read_file", "input_schema": {"type": "object"}}]
    task = '<untrusted_file path="app.py" total="2">\n1| x = eval(input())\n2| \n</untrusted_file>'
    kw = {"tools": tools, "system": "You are the review agent."}
    first = ask(client, messages=[{"role": "user", "content": task}], **kw)
    blocks = [b.model_dump(exclude_none=True) for b in first.content]
    assert [b["type"] for b in blocks][:2] == ["thinking", "redacted_thinking"] and blocks[1]["data"]
    uses = [b["id"] for b in blocks if b["type"] == "tool_use"]
    assert uses

    def follow(content):
        return [
            {"role": "user", "content": task},
            {"role": "assistant", "content": content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": u, "content": "x"} for u in uses],
            },
        ]

    assert ask(client, messages=follow(blocks), **kw).stop_reason  # unchanged: accepted
    edited = [blocks[0], {"type": "redacted_thinking", "data": blocks[1]["data"][:-4] + "AAAA"}, *blocks[2:]]
    with pytest.raises(anthropic.BadRequestError, match="Invalid `data` in `redacted_thinking`"):
        ask(client, messages=follow(edited), **kw)
    with pytest.raises(anthropic.BadRequestError, match="passed back unchanged"):
        ask(client, messages=follow([blocks[0], *blocks[2:]]), **kw)  # dropped


def test_below_the_minimum_cacheable_length_nothing_is_cached(server):
    small = anthropic.Anthropic(base_url=server.url, api_key="offline-small-prefix", max_retries=0)
    system = [{"type": "text", "text": "Review code.", "cache_control": {"type": "ephemeral"}}]
    for _ in range(2):
        msg = ask(small, system=system)
        assert msg.usage.cache_creation_input_tokens == 0 and msg.usage.cache_read_input_tokens == 0
    long = [
        {"type": "text", "text": "Review this code carefully. " * 200, "cache_control": {"type": "ephemeral"}}
    ]
    first, second = ask(small, system=long), ask(small, system=long)
    assert first.usage.cache_creation.ephemeral_5m_input_tokens >= 512
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens


# ------------------------------------------------------------------------------- thinking and the cache


FILE_TURN = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": '<untrusted_file path="a.py" total="1">\n1| x = 1\n</untrusted_file>'}
        ],
    }
]


def test_thinking_scales_with_effort_and_counts_toward_max_tokens(client):
    tools = [{"name": "read_file", "input_schema": {"type": "object"}}]
    kw = {"tools": tools, "messages": FILE_TURN, "system": "You are the review agent"}
    low = ask(client, output_config={"effort": "low"}, **kw)
    high = ask(client, output_config={"effort": "high"}, **kw)
    default = ask(client, **kw)  # Sonnet 5.5 thinks at high by default
    t = [m.usage.output_tokens_details.thinking_tokens for m in (low, high, default)]
    assert 0 < t[0] < t[1] == t[2]
    tight = ask(client, max_tokens=t[1], **kw)  # no room left for the tool call after thinking
    assert tight.stop_reason == "max_tokens" and tight.usage.output_tokens == t[1]
    assert [b.type for b in tight.content] == ["thinking"] and tight.content[0].signature == ""


def test_every_tool_use_needs_its_result_first_in_the_next_user_turn(client):
    from prfleet_local.model.server import FaultPlan as Plan

    tools = [
        {"name": "read_file", "input_schema": {"type": "object"}},
        {"name": "get_diff", "input_schema": {"type": "object"}},
    ]
    body = [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": '<untrusted_file path="a.py" total="1">\n1| x = 1\n</untrusted_file>',
                }
            ],
        }
    ]
    first = ask(client, tools=tools, messages=body, system="You are the review agent")
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 2  # parallel tool use
    turn = {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]}
    one = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "ok"}]}
    with pytest.raises(anthropic.BadRequestError, match="without tool_result"):
        ask(client, tools=tools, messages=[*body, turn, one])
    late = {
        "role": "user",
        "content": [{"type": "text", "text": "here"}]
        + [{"type": "tool_result", "tool_use_id": u.id, "content": "ok"} for u in uses],
    }
    with pytest.raises(anthropic.BadRequestError, match="come first"):
        ask(client, tools=tools, messages=[*body, turn, late])
    dropped = {
        "role": "assistant",
        "content": [b.model_dump(exclude_none=True) for b in first.content if b.type != "thinking"],
    }
    both = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": u.id, "content": "ok"} for u in uses],
    }
    with pytest.raises(anthropic.BadRequestError, match="passed back unchanged"):
        ask(client, tools=tools, messages=[*body, dropped, both])
    assert ask(client, tools=tools, messages=[*body, turn, both]).stop_reason in ("tool_use", "end_turn")
    assert Plan().parallel_tools is True


def test_cache_ttls_lookback_and_ttl_order():
    from prfleet_local.model.cache import PromptCache

    now = {"t": 0.0}
    cache = PromptCache(lambda: now["t"])
    block = "Review this code carefully, line by line. " * 60  # well above Sonnet 5.5's 512 tokens

    def body(extra_blocks, ttl="5m", marked_last=True):
        content = [{"type": "text", "text": block, "cache_control": {"type": "ephemeral", "ttl": ttl}}]
        content += [{"type": "text", "text": f"note {i}"} for i in range(extra_blocks)]
        if marked_last and extra_blocks:
            content[-1] = dict(content[-1], cache_control={"type": "ephemeral"})
        return {"model": MODEL, "messages": [{"role": "user", "content": content}]}

    written = cache.usage(body(0))["cache_creation"]["ephemeral_5m_input_tokens"]
    assert written > 512
    now["t"] = 299
    assert cache.usage(body(0))["cache_read_input_tokens"] == written  # a hit refreshes: now valid to 599
    now["t"] = 598
    assert cache.usage(body(0))["cache_read_input_tokens"] == written
    now["t"] = 598 + 301
    assert cache.usage(body(0))["cache_read_input_tokens"] == 0  # expired after 5 minutes unused
    # The lookback: a breakpoint finds the earlier entry within 20 blocks before it, not further.
    fresh = PromptCache(lambda: 0.0)
    fresh.usage(body(0))
    near = {"model": MODEL, "messages": body(15)["messages"]}
    near["messages"][0]["content"][0].pop("cache_control")
    assert fresh.usage(near)["cache_read_input_tokens"] == written
    fresh2 = PromptCache(lambda: 0.0)
    fresh2.usage(body(0))
    far = {"model": MODEL, "messages": body(25)["messages"]}
    far["messages"][0]["content"][0].pop("cache_control")
    assert fresh2.usage(far)["cache_read_input_tokens"] == 0
    # 1h entries live an hour and are billed in their own bucket.
    hour = PromptCache(lambda: now["t"])
    now["t"] = 0
    assert hour.usage(body(0, ttl="1h"))["cache_creation"]["ephemeral_1h_input_tokens"] == written
    now["t"] = 3000
    assert hour.usage(body(0, ttl="1h"))["cache_read_input_tokens"] == written


def test_a_1h_breakpoint_after_a_5m_one_is_rejected(client):
    system = [
        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "b", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    with pytest.raises(anthropic.BadRequestError, match="1h"):
        ask(client, system=system)
