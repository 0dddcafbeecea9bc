"""The one place that reads configuration: environment variables set by template.yaml (or the local stack)."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache

DEFAULT_MODELS = {
    # Stronger model on review, cheaper one on tests and docs. Overridden by the template's parameters.
    "review": "claude-sonnet-5-5",
    "tests": "claude-haiku-5-5",
    "docs": "claude-haiku-5-5",
}


# Model providers (issue 15): who serves Claude and how the agent function authenticates to it.
PROVIDERS = ("anthropic", "claude-platform-aws", "bedrock")


class ConfigError(RuntimeError):
    """A setting is missing or malformed: the message names the variable."""


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None or value == "":
        raise ConfigError(f"environment variable {name} is not set")
    return value


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _positive(name: str, default: int) -> int:
    value = _int(name, default)
    if value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value}")
    return value


def _bounded(name: str, default: int, low: int, high: int) -> int:
    """An integer setting within the template parameter's MinValue..MaxValue (a hand-set variable too)."""
    value = _int(name, default)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    deliveries_table: str
    state_table: str
    results_table: str
    ledger_table: str
    pr_queue_url: str
    jobs_queue_url: str
    alert_topic_arn: str
    webhook_secret_id: str
    github_secret_id: str
    anthropic_secret_id: str
    github_api_url: str = "https://api.github.com"
    daily_budget_usd: float = 10.0
    pr_budget_usd: float = 2.0
    budget_timezone: str = "UTC"
    max_files: int = 300
    max_file_bytes: int = 200_000
    agents: tuple[str, ...] = ("review", "tests", "docs")
    models: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    delivery_ttl_days: int = 7
    secrets_max_age: int = 300
    max_receive_count: int = 3
    clock_offset_s: float = 0.0
    # -- model provider (issue 15): template parameter ModelProvider and what each provider needs
    model_provider: str = "anthropic"
    model_region: str = ""  # claude-platform-aws / bedrock: the region of the workspace or Bedrock endpoint
    aws_workspace_id: str = ""  # claude-platform-aws: the workspace (wrkspc_...) requests are billed to
    model_endpoint_url: str = ""  # base URL override (the local stack's offline model); empty in AWS
    # -- budget (issue 10): bounded jobs, exact reservations, reconciliation with the bill
    max_job_attempts: int = 8
    inference_geo: str = ""  # "" = not fixed: reservations assume the dearest geo ("us", 1.1x)
    exact_input_tokens: bool = False  # first call of a run sized with the token-counting endpoint
    pressure_retry_s: int = 60  # a refusal caused by open reservations retries after this delay (jittered)
    admin_secret_id: str = ""  # optional Admin API key secret for the Usage and Cost API
    billing_api_key_id: str = ""  # the API key whose usage the ledger books (report filter); "" = all keys
    anthropic_base_url: str = ""  # for the Usage and Cost API; "" = https://api.anthropic.com
    # -- agents (issue 11): effort, max_tokens, refusal fallback, shared-prefix cache TTL; agents.py has the why
    efforts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_EFFORTS))
    max_tokens: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_TOKENS))
    fallback_models: dict[str, str] = field(default_factory=dict)
    shared_prefix_cache_ttl: str = "1h"
    # -- the operator's settings (issue 14)
    fail_on: str = "never"  # FailOn: never, critical or high; a .prfleet.toml may choose its own
    max_inline_comments: int = 10  # MaxInlineComments (0..50): the noise budget; a .prfleet.toml may lower it
    # -- the repository snapshot (issue 23): "" = no bucket, the agents read through GitHub as before
    snapshot_bucket: str = ""
    max_repo_bytes: int = (
        268_435_456  # MaxRepoBytes: the unpacked size (and the download) a snapshot may have
    )
    max_repo_entries: int = 200_000  # entries of an archive (files, folders, links) unpacked at most
    snapshot_root: str = ""  # where agent containers unpack (under the function's ephemeral /tmp)
    # -- the conversation (issue 25): who prfleet is on GitHub, and the ask agent's model and effort
    app_slug: str = "prfleet"  # AppSlug: comments by `<slug>[bot]` are prfleet's own; `@<slug>` asks it
    ask_model: str = ""  # AskModel: "" = the review agent's model
    ask_effort: str = "medium"  # AskEffort: output_config.effort of the ask agent
    # -- the verification pass (issue 24 item 2): one verify run per PR head and posting before it is posted;
    # its model is models["verify"] (VerifyModel, empty = ReviewModel's), its effort efforts["verify"]
    verification: bool = True  # Verification on/off; off posts every candidate as before
    verify_candidates_per_run: int = 10  # VerifyCandidatesPerRun: more are split over runs in parallel


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = _env(name, default)
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


@lru_cache(maxsize=1)
def settings() -> Settings:
    """Settings from the environment, read once per Lambda container (call settings.cache_clear() in tests)."""
    return Settings(
        deliveries_table=_env("DELIVERIES_TABLE"),
        state_table=_env("STATE_TABLE"),
        results_table=_env("RESULTS_TABLE"),
        ledger_table=_env("LEDGER_TABLE"),
        pr_queue_url=_env("PR_QUEUE_URL"),
        jobs_queue_url=_env("JOBS_QUEUE_URL"),
        alert_topic_arn=_env("ALERT_TOPIC_ARN"),
        webhook_secret_id=_env("WEBHOOK_SECRET_ID"),
        github_secret_id=_env("GITHUB_SECRET_ID"),
        anthropic_secret_id=os.environ.get("ANTHROPIC_SECRET_ID", ""),  # only with ModelProvider anthropic
        github_api_url=_env("GITHUB_API_URL", "https://api.github.com").rstrip("/"),
        daily_budget_usd=_float("DAILY_BUDGET_USD", 10.0),
        pr_budget_usd=_float("PR_BUDGET_USD", 2.0),
        budget_timezone=_env("BUDGET_TIMEZONE", "UTC"),
        max_files=_int("MAX_FILES", 300),
        max_file_bytes=_int("MAX_FILE_BYTES", 200_000),
        agents=tuple(a.strip() for a in _env("AGENTS", "review,tests,docs").split(",") if a.strip()),
        models={
            "review": _env("REVIEW_MODEL", DEFAULT_MODELS["review"]),
            "tests": _env("TESTS_MODEL", DEFAULT_MODELS["tests"]),
            "docs": _env("DOCS_MODEL", DEFAULT_MODELS["docs"]),
            # VerifyModel: empty means the review agent's model (the same default, and on Bedrock the same
            # inference profile the role may already invoke)
            "verify": os.environ.get("VERIFY_MODEL", "").strip()
            or _env("REVIEW_MODEL", DEFAULT_MODELS["review"]),
        },
        delivery_ttl_days=_int("DELIVERY_TTL_DAYS", 7),
        secrets_max_age=_int("SECRETS_MAX_AGE", 300),
        max_receive_count=_int("MAX_RECEIVE_COUNT", 3),
        clock_offset_s=_float("CLOCK_OFFSET_SECONDS", 0.0),
        **_agent_settings(),
        **_provider_settings(),
        max_job_attempts=_int("MAX_JOB_ATTEMPTS", 8),
        inference_geo=os.environ.get("INFERENCE_GEO", "").strip(),
        exact_input_tokens=os.environ.get("EXACT_INPUT_TOKENS", "false").strip().lower() == "true",
        pressure_retry_s=_int("PRESSURE_RETRY_SECONDS", 60),
        admin_secret_id=os.environ.get("ADMIN_SECRET_ID", "").strip(),
        billing_api_key_id=os.environ.get("RECONCILE_FILTER_ID", "").strip(),
        anthropic_base_url=os.environ.get("ANTHROPIC_BASE_URL", "").strip().rstrip("/"),
        fail_on=_choice("FAIL_ON", "never", ("never", "critical", "high")),
        max_inline_comments=_bounded("MAX_INLINE_COMMENTS", 10, 0, 50),
        snapshot_bucket=os.environ.get("SNAPSHOT_BUCKET", "").strip(),
        max_repo_bytes=_positive("MAX_REPO_BYTES", 268_435_456),
        max_repo_entries=_positive("MAX_REPO_ENTRIES", 200_000),
        snapshot_root=os.environ.get("SNAPSHOT_ROOT", "").strip()
        or os.path.join(tempfile.gettempdir(), "prfleet-snapshots"),
        **_conversation_settings(),
        verification=_choice("VERIFICATION", "on", ("on", "off")) == "on",
        verify_candidates_per_run=_bounded("VERIFY_CANDIDATES_PER_RUN", 10, 1, 100),
    )


def _conversation_settings() -> dict[str, str]:
    """APP_SLUG, ASK_MODEL and ASK_EFFORT (template parameters AppSlug, AskModel, AskEffort)."""
    slug = os.environ.get("APP_SLUG", "").strip() or "prfleet"
    # GitHub App names become slugs of lowercase letters, digits and hyphens (the App's github.com/apps/<slug>).
    if not all(c.isalnum() or c == "-" for c in slug) or slug != slug.lower():
        raise ConfigError(f"APP_SLUG must be a GitHub App slug (lowercase letters, digits, -), got {slug!r}")
    effort = _env("ASK_EFFORT", "medium")
    if effort not in _EFFORT_VALUES:
        raise ConfigError(f"ASK_EFFORT must be one of {', '.join(_EFFORT_VALUES)}, got {effort!r}")
    return {"app_slug": slug, "ask_model": os.environ.get("ASK_MODEL", "").strip(), "ask_effort": effort}


def _provider_settings() -> dict[str, str]:
    """MODEL_PROVIDER and its settings; the region defaults to the function's own (AWS_REGION, set by Lambda)."""
    provider = _env("MODEL_PROVIDER", "anthropic")
    if provider not in PROVIDERS:
        raise ConfigError(f"MODEL_PROVIDER must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    return {
        "model_provider": provider,
        "model_region": os.environ.get("MODEL_REGION") or os.environ.get("AWS_REGION", ""),
        "aws_workspace_id": os.environ.get("ANTHROPIC_AWS_WORKSPACE_ID", ""),
        "model_endpoint_url": os.environ.get("MODEL_ENDPOINT_URL", "").rstrip("/"),
    }


# ---------------------------------------------------------------------------- agents (issue 11, own block)

# Effort per agent: review needs depth (high: Sonnet 5.5's default, recommended for coding and agentic work);
# tests and docs are simple, well-scoped checks (low: the effort docs' choice for speed- and cost-sensitive
# work). max_tokens holds thinking + answer (thinking counts toward it): a report at high effort on a 60k-char
# file thinks up to ~12k tokens and writes ~3k, so 32k leaves room, and one max_tokens stop is continued at 2x.
# The verify run (one per PR head) weighs every candidate against the code it reads: medium, between the review's
# depth and the tests/docs agents' quick checks (VerifyEffort).
DEFAULT_EFFORTS = {"review": "high", "tests": "low", "docs": "low", "verify": "medium"}
DEFAULT_MAX_TOKENS = {"review": 32_000, "tests": 16_000, "docs": 16_000, "verify": 16_000}
_EFFORT_VALUES = ("low", "medium", "high", "xhigh", "max")


def _agent_settings() -> dict:
    efforts, max_tokens, fallbacks = {}, {}, {}
    for agent in ("review", "tests", "docs", "verify"):
        prefix = agent.upper()
        effort = _env(f"{prefix}_EFFORT", DEFAULT_EFFORTS[agent])
        if effort not in _EFFORT_VALUES:
            raise ConfigError(f"{prefix}_EFFORT must be one of {', '.join(_EFFORT_VALUES)}, got {effort!r}")
        efforts[agent] = effort
        if agent == "verify":
            continue  # VerifyEffort only: its max_tokens is DEFAULT_MAX_TOKENS', it has no refusal fallback
        max_tokens[agent] = _int(f"{prefix}_MAX_TOKENS", DEFAULT_MAX_TOKENS[agent])
        if not 1024 <= max_tokens[agent] <= 128_000:
            raise ConfigError(f"{prefix}_MAX_TOKENS must be between 1024 and 128000")
        fallback = os.environ.get(f"{prefix}_FALLBACK_MODEL", "").strip()
        if fallback:
            fallbacks[agent] = fallback
    ttl = _env("SHARED_PREFIX_CACHE_TTL", "1h")
    if ttl not in ("5m", "1h"):
        raise ConfigError(f"SHARED_PREFIX_CACHE_TTL must be 5m or 1h, got {ttl!r}")
    max_tokens["verify"] = DEFAULT_MAX_TOKENS["verify"]
    return {
        "efforts": efforts,
        "max_tokens": max_tokens,
        "fallback_models": fallbacks,
        "shared_prefix_cache_ttl": ttl,
    }


def now() -> float:
    """prfleet's wall clock: epoch seconds, shifted by CLOCK_OFFSET_SECONDS (0 in AWS; drills and the local stack
    use it to live through a budget day change or a stuck run without waiting for one)."""
    return time.time() + settings().clock_offset_s
