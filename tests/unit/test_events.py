"""prfleet.events: the log line of every agent event, redaction, and the EMF metrics the alarms read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from prfleet.observability import events
from prfleet.observability.logger import make_logger
from prfleet.observability.metrics import make_metrics
from prfleet.observability.redaction import forget_secrets, redact, register_secret
from prfleet_local.stack.alarms import Datapoint
from prfleet_local.stack.emf_capture import capture

FLEET = {"service": "prfleet"}
REVIEW = {"service": "prfleet", "agent": "review"}

CONTEXT = dict(
    run_id="run-1",
    agent="review",
    repo="octo/hello",
    pr=42,
    head_sha="a" * 40,
    path="src/app.py",
    model="claude-haiku-4-5",
    delivery_id="delivery-123",
)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE", raising=False)
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    forget_secrets()
    metrics = make_metrics()
    metrics.clear_metrics()  # Powertools shares metric state per process
    # A logger name of its own, so that no other test's Logger configuration can own the handler.
    logger = make_logger("prfleet-events-test")
    yield logger, metrics
    metrics.clear_metrics()
    forget_secrets()


def emitter(env: Any, clock: FakeClock | None = None, **overrides: Any) -> events.Emitter:
    logger, metrics = env
    ctx = {**CONTEXT, **overrides}
    return events.Emitter(logger, metrics, clock=clock or FakeClock(), **ctx)


def sums(points: list[Datapoint], dims: dict[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in points:
        if dict(p.dimensions) == dims:
            out[p.name] = out.get(p.name, 0.0) + p.value
    return out


# ----------------------------------------------------------------------------------------------- log lines


def test_one_json_line_per_event_with_correlation_fields(env: Any) -> None:
    e = emitter(env)
    with capture() as cap:
        for name in sorted(events.EVENTS):
            e.emit(name)
    logs = cap.logs()
    assert [line["event"] for line in logs] == sorted(events.EVENTS)
    for line in logs:
        assert line["message"] == line["event"]
        assert line["timestamp"]
        assert line["run_id"] == "run-1"
        assert line["agent"] == "review"
        assert line["repository"] == "octo/hello"
        assert line["pr"] == 42
        assert line["head_sha"] == "a" * 40
        assert line["path"] == "src/app.py"
        assert line["model"] == "claude-haiku-4-5"
        assert line["delivery_id"] == line["correlation_id"] == "delivery-123"
        assert line["gen_ai.agent.name"] == "review"
        assert line["gen_ai.system"] == "anthropic"
        assert line["gen_ai.request.model"] == "claude-haiku-4-5"


def test_api_call_line_has_tokens_cost_duration_and_genai_names(env: Any) -> None:
    e = emitter(env)
    usage = {
        "input_tokens": 1200,
        "output_tokens": 300,
        "cache_read_input_tokens": 5000,
        "cache_creation_input_tokens": 800,
    }
    with capture() as cap:
        e.emit(
            "api_call",
            usage=usage,
            cost_micros=4321,
            duration_ms=850,
            stop_reason="tool_use",
            response_id="msg_01",
            response_model="claude-haiku-4-5-20251001",
        )
    (line,) = cap.logs("api_call")
    assert line["input_tokens"] == 1200
    assert line["output_tokens"] == 300
    assert line["cache_read_tokens"] == 5000
    assert line["cache_write_tokens"] == 800
    assert line["cost_micros"] == 4321
    assert line["cost_usd"] == pytest.approx(0.004321)
    assert line["duration_ms"] == 850
    assert line["gen_ai.operation.name"] == "chat"
    assert line["gen_ai.response.model"] == "claude-haiku-4-5-20251001"
    assert line["gen_ai.response.id"] == "msg_01"
    assert line["gen_ai.response.finish_reasons"] == ["tool_use"]
    # For Anthropic the semantic conventions count cached input in gen_ai.usage.input_tokens.
    assert line["gen_ai.usage.input_tokens"] == 1200 + 5000 + 800
    assert line["gen_ai.usage.output_tokens"] == 300
    assert line["gen_ai.usage.cache_read.input_tokens"] == 5000
    assert line["gen_ai.usage.cache_creation.input_tokens"] == 800


def test_tool_events_log_argument_names_never_values(env: Any) -> None:
    e = emitter(env)
    token = "ghp_" + "Z9" * 18
    plain_secret = "correct-horse-battery-staple"
    with capture() as cap:
        e.emit(
            "tool_call",
            tool="read_file",
            args={"path": "config/prod.env", "password": plain_secret, "t": token},
        )
        e.emit("tool_result", tool="read_file", result=f"DB_PASSWORD={plain_secret}\n")
    everything = "\n".join(cap.lines)
    assert plain_secret not in everything
    assert token not in everything
    assert "config/prod.env" not in everything
    call, result = cap.logs("tool_call")[0], cap.logs("tool_result")[0]
    assert call["arg_names"] == ["password", "path", "t"]
    assert call["gen_ai.tool.name"] == "read_file"
    assert call["gen_ai.operation.name"] == "execute_tool"
    assert result["result_chars"] == len(f"DB_PASSWORD={plain_secret}\n")


def test_error_line_has_type_and_redacted_message(env: Any) -> None:
    e = emitter(env)
    register_secret("s3cr3t-webhook-value")
    with capture() as cap:
        e.emit(
            "error",
            error=RuntimeError("signature mismatch for s3cr3t-webhook-value, key sk-ant-api03-abcDEF123"),
        )
        e.emit("error", error_type="RateLimited", message="Authorization: Bearer abc.def-ghi_jkl retry later")
    first, second = cap.logs("error")
    assert first["error_type"] == "RuntimeError"
    assert first["error_message"] == "signature mismatch for [REDACTED], key [REDACTED]"
    assert second["error_type"] == "RateLimited"
    assert second["error_message"] == "Authorization: Bearer [REDACTED] retry later"
    assert "s3cr3t" not in "\n".join(cap.lines)


def test_unknown_event_is_refused(env: Any) -> None:
    with pytest.raises(ValueError, match="unknown event"):
        emitter(env).emit("finished")


def test_duration_comes_from_the_injected_clock_when_not_given(env: Any) -> None:
    clock = FakeClock(100.0)
    e = emitter(env, clock, run_id="run-clock")
    with capture() as cap:
        e.emit("start")
        clock.t = 102.5
        e.emit("complete", status="succeeded")
    assert cap.logs("complete")[0]["duration_ms"] == 2500.0


def test_bind_adds_context_without_changing_the_parent(env: Any) -> None:
    logger, metrics = env
    parent = events.Emitter(logger, metrics, repository="octo/hello", delivery_id="d-9")
    child = parent.bind(run_id="run-b", agent="docs", path="README.md")
    with capture() as cap:
        child.emit("skipped", reason="disabled")
        parent.emit("heartbeat")
    skipped, beat = cap.logs()
    assert (skipped["agent"], skipped["run_id"], skipped["repository"]) == ("docs", "run-b", "octo/hello")
    assert skipped["reason"] == "disabled"
    assert "agent" not in beat and beat["correlation_id"] == "d-9"


# ----------------------------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    "secret",
    [
        "sk-ant-api03-" + "x1Y2" * 20 + "-AA",
        "sk-ant-admin01-" + "q" * 40,
        "ghp_" + "a1B2" * 9,
        "ghs_" + "Q" * 36,
        "gho_" + "7" * 36,
        "github_pat_11ABCDEFG0" + "x" * 60,
        "AKIAIOSFODNN7EXAMPLE",
        "ASIAY34FZKBOKMUTVV7A",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1c7\nabc==\n-----END RSA PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",  # cut off before its END line
    ],
)
def test_redact_removes_each_pattern(secret: str) -> None:
    text = f"before {secret} after"
    out = redact(text, [])
    assert secret not in out
    assert out.startswith("before ")
    assert "[REDACTED" in out


def test_redact_bearer_keeps_the_scheme() -> None:
    assert redact("Authorization: Bearer eyJhbGciOi.J9x_y-z", []) == "Authorization: Bearer [REDACTED]"


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "token budget reached for src/ghp_helper.py at line 12 (sk-ant is a prefix)"
    assert redact(text, []) == text


def test_redact_registered_and_given_secrets() -> None:
    forget_secrets()
    try:
        register_secret("registered-value-1234")
        register_secret("short")  # too short to redact safely: ignored
        out = redact("a registered-value-1234 b given-value-5678 c short", ["given-value-5678"])
        assert out == "a [REDACTED] b [REDACTED] c short"
    finally:
        forget_secrets()


def test_registered_multiline_secret_is_redacted_also_json_escaped() -> None:
    forget_secrets()
    try:
        key = "line-one-of-a-key\nline-two-of-a-key"
        register_secret(key)
        assert redact(json.dumps({"k": key})) == '{"k": "[REDACTED]"}'
        assert redact(f"raw: {key}") == "raw: [REDACTED]"
    finally:
        forget_secrets()


# ----------------------------------------------------------------------------------------------- metrics


def run_a_job(e: events.Emitter) -> None:
    e.emit("start")
    e.emit(
        "api_call",
        input_tokens=100,
        output_tokens=20,
        cache_read_tokens=1000,
        cache_write_tokens=50,
        cost_micros=2500,
        duration_ms=900,
    )
    e.emit("tool_call", tool="read_file", args={"path": "x"})
    e.emit("complete", status="succeeded", duration_ms=4000)


def test_fleet_metrics_carry_only_service_and_per_agent_copies_add_agent(env: Any) -> None:
    e = emitter(env)
    with capture() as cap:
        run_a_job(e)
        e.flush()
    points = cap.datapoints()
    fleet, per_agent = sums(points, FLEET), sums(points, REVIEW)
    expected = {
        "RunsStarted": 1,
        "CacheMisses": 1,
        "ModelCalls": 1,
        "InputTokens": 100,
        "OutputTokens": 20,
        "CacheReadTokens": 1000,
        "CacheWriteTokens": 50,
        "CostUsd": 0.0025,
        "RunsSucceeded": 1,
        "RunDuration": 4000,
    }
    assert fleet == pytest.approx(expected)
    assert per_agent == pytest.approx(expected)
    assert {p.namespace for p in points} == {"prfleet"}
    assert {frozenset(p.dimensions) for p in points} == {frozenset(FLEET), frozenset(REVIEW)}
    units = {(p.name, p.unit) for p in points}
    assert ("RunDuration", "Milliseconds") in units and ("RunsStarted", "Count") in units
    # The fleet EMF object declares exactly one dimension set: ["service"].
    fleet_blobs = [b for b in cap.emf() if "agent" not in b]
    assert [d["Dimensions"] for b in fleet_blobs for d in b["_aws"]["CloudWatchMetrics"]] == [[["service"]]]


@pytest.mark.parametrize(
    ("event", "fields", "metric"),
    [
        ("cached", {}, "CacheHits"),
        ("deferred", {"reason": "budget"}, "JobsDeferred"),
        ("superseded", {}, "JobsSuperseded"),
        ("stuck", {}, "StuckRuns"),
        ("complete", {"status": "partial"}, "RunsPartial"),
        ("complete", {"status": "failed"}, "RunsFailed"),
        ("api_call", {"error": "overloaded", "input_tokens": 0}, "ModelErrors"),
        ("error", {"error_type": "overloaded_error", "status": 529, "attempt": 1}, "ModelErrors"),
        ("snapshot", {"action": "opened", "outcome": "fallback", "reason": "too large"}, "SnapshotFallbacks"),
    ],
)
def test_event_to_metric_mapping(env: Any, event: str, fields: dict[str, Any], metric: str) -> None:
    e = emitter(env, run_id=f"run-{event}-{metric}")
    with capture() as cap:
        e.emit(event, **fields)
        e.flush()
    assert sums(cap.datapoints(), FLEET)[metric] == 1
    assert sums(cap.datapoints(), REVIEW)[metric] == 1


def test_events_without_metrics_publish_nothing(env: Any) -> None:
    e = emitter(env)
    with capture() as cap:
        for name in ("tool_call", "tool_result", "skipped", "heartbeat"):
            e.emit(name)
        e.flush()
    assert cap.emf() == []


def test_a_snapshot_unpacked_or_stored_is_not_a_fallback(env: Any) -> None:
    e = emitter(env)
    with capture() as cap:
        e.emit("snapshot", action="opened", outcome="unpacked")
        e.emit(
            "snapshot", action="stored", outcome="too_large"
        )  # the planner: counted when an agent opens it
        e.flush()
    assert cap.emf() == []


def test_a_failed_run_is_counted_once(env: Any) -> None:
    e = emitter(env, run_id="run-fail")
    with capture() as cap:
        e.emit("start")
        e.emit("error", error=TimeoutError("deadline"), fatal=True, duration_ms=1000)
        e.emit("complete", status="failed", duration_ms=1000)  # the runner reports the same outcome again
        e.bind(path="src/app.py").emit("failed", reason="again")  # another emitter, same run
        e.flush()
    fleet = sums(cap.datapoints(), FLEET)
    assert fleet["RunsFailed"] == 1
    assert fleet["RunDuration"] == 1000
    assert "RunsSucceeded" not in fleet
    assert [line.get("already_counted") for line in cap.logs("complete")] == [True, True]


def test_non_fatal_errors_do_not_fail_the_run(env: Any) -> None:
    e = emitter(env, run_id="run-recovers")
    with capture() as cap:
        e.emit("start")
        e.emit("error", error_type="overloaded_error", message="529", status=529, attempt=1)
        e.emit("error", error_type="invalid_report", message="line 900 is outside the file")
        e.emit("complete", status="succeeded", duration_ms=10)
        e.flush()
    fleet = sums(cap.datapoints(), FLEET)
    assert fleet["RunsSucceeded"] == 1
    assert "RunsFailed" not in fleet
    assert fleet["ModelErrors"] == 1
    assert {line["level"] for line in cap.logs("error")} == {"WARNING"}


def test_runner_failure_path_error_then_failed_counts_once(env: Any) -> None:
    e = emitter(env, run_id="run-final-attempt")
    with capture() as cap:
        e.emit("error", error_type="Stuck", message="no event for 5 minutes")
        e.emit("failed", reason="no event for 5 minutes")
        e.flush()
    assert sums(cap.datapoints(), FLEET)["RunsFailed"] == 1
    assert cap.logs("complete")[0]["status"] == "failed"


def test_a_rerun_of_the_same_run_id_counts_again(env: Any) -> None:
    e = emitter(env, run_id="run-requeued")
    with capture() as cap:
        for _ in range(2):
            e.emit("start")
            e.emit("complete", status="failed", duration_ms=5)
        e.flush()
    assert sums(cap.datapoints(), FLEET)["RunsFailed"] == 2


@dataclass
class Status:
    scope: str
    settled: int
    reserved: int
    limit: int
    percent: float
    crossed_80: bool
    day: str = "2026-11-28"


def test_spend_publishes_daily_scope_fleet_only(env: Any) -> None:
    e = emitter(env)
    with capture() as cap:
        e.spend(Status("daily", 8_500_000, 200_000, 10_000_000, 87.0, True))
        e.spend(Status("pr#octo/hello#42", 1_900_000, 0, 2_000_000, 95.0, True))
        e.flush()
    points = cap.datapoints()
    assert sums(points, FLEET) == {"DailySpendUsd": 8.5, "DailySpendPercent": 87.0}
    assert sums(points, REVIEW) == {}
    logs = cap.logs("spend")
    assert [line["level"] for line in logs] == ["WARNING", "WARNING"]
    assert logs[0]["spend_usd"] == 8.5 and logs[0]["crossed_80"] is True


def test_module_level_spend_uses_the_shared_metrics(env: Any) -> None:
    _, metrics = env
    with capture() as cap:
        events.spend(Status("daily", 1_000_000, 0, 10_000_000, 10.0, False))
        metrics.flush_metrics()
    assert sums(cap.datapoints(), FLEET)["DailySpendPercent"] == 10.0


def test_metric_helper_for_webhook_counters(env: Any) -> None:
    logger, metrics = env
    e = events.Emitter(logger, metrics)
    with capture() as cap:
        e.metric("WebhookRejected")
        e.metric("WebhookErrors", 2)
        e.flush()
    assert sums(cap.datapoints(), FLEET) == {"WebhookRejected": 1, "WebhookErrors": 2}
    with pytest.raises(ValueError):
        e.metric("NotAMetric")


def test_namespace_and_service_follow_the_powertools_env(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "prfleet-staging")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "prfleet-staging")
    metrics = make_metrics()
    e = events.Emitter(env[0], metrics, agent="tests", run_id="run-env")
    with capture() as cap:
        e.emit("cached")
        e.flush()
    points = cap.datapoints()
    assert {p.namespace for p in points} == {"prfleet-staging"}
    assert {tuple(sorted(p.dimensions.items())) for p in points} == {
        (("service", "prfleet-staging"),),
        (("agent", "tests"), ("service", "prfleet-staging")),
    }


def test_capture_passthrough_still_writes(env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with capture(passthrough=True) as cap:
        print("plain text line")
        emitter(env).emit("heartbeat")
    assert "plain text line" in capsys.readouterr().out
    assert cap.lines[0] == "plain text line"
    assert cap.logs("heartbeat")
