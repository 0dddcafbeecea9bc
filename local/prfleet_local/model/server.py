"""An offline stand-in for the Anthropic Messages API, as strict as the real one: no network, no key.

It speaks POST /v1/messages (JSON and streaming SSE) for the real anthropic SDK and drives the prfleet tool
loop like a current model would: it thinks (adaptive thinking, scaled by effort, billed as output, counted
toward max_tokens), asks for several tools in one turn (read_file and get_diff; list_changed_files and the
PR's tests), then calls report_findings with findings from a real static analysis (analysis.py), then ends its
turn. Each behaviour follows a documentation page, cited in the module that implements it:

- validate.py — what the API rejects with 400 (fields the current models refuse, tool_result pairing, thinking
  signatures, cache_control limits);
- thinking.py — adaptive thinking, effort, display, signatures, per-model rules;
- cache.py — prompt caching with per-model minimums, TTLs and the 20-block lookback;
- tokens.py — a token count closer to the tokenizer than characters / 4;
- faults.py — errors, spend limits, timeouts after billing, resets, truncated bodies, mid-stream errors;
- bill.py — the server's own bill and GET /v1/organizations/usage_report/messages over it;
- wire.py — the error body and the server-sent events;
- policy.py — the deterministic model: which tools it calls next and what it reports;
- verify.py — the deterministic verifier of prfleet's verify run (reads and greps, then verdicts);
- results.py, learned.py, callers.py — what it reads in tool results (the contract's formats), what it learns of
  the repository from them, and which calls a changed signature breaks;
- model_log.py — per request, what it asked for and the tool results behind each fact it reported;
- handler.py — the HTTP routes, and replies bent as a fault would (held, reset, cut short);
- providers.py — the Bedrock and Claude Platform on AWS wires in front of the same policy;
- judge.py — the offline stand-in for `prfleet eval`'s LLM judge (shared words, not judgement).
- pace.py — how long a response takes: at once, or a real model's time to first token and output speed.

Everything is switchable per test through a FaultPlan (at start, `set_faults()`, or POST /_faults).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from prfleet.cost import pricing
from prfleet_local.model import judge, providers, thinking, tokens, verify
from prfleet_local.model.bill import Bill, BillRecord, ReportError, api_key_id
from prfleet_local.model.cache import PromptCache, prompt_tokens
from prfleet_local.model.faults import (
    BILLED_FAULTS,
    DEFAULT_RETRY_AFTER_S,
    FAULT_KINDS,
    FaultPlan,
    FaultRule,
)
from prfleet_local.model.handler import Handler
from prfleet_local.model.model_log import ModelLog
from prfleet_local.model.pace import PACES, Pace
from prfleet_local.model.policy import Conversation, OfflineModel
from prfleet_local.model.reply import Reply
from prfleet_local.model.results import text_of
from prfleet_local.model.validate import validate
from prfleet_local.model.wire import LABEL, error_body, stream_events

__all__ = ["FAULT_KINDS", "LABEL", "FaultPlan", "FaultRule", "ModelServer"]

_SERVER_TOOL = re.compile(r"^(web_search|web_fetch|code_execution|tool_search)")
_STOP_FAULTS = ("max_tokens", "refusal", "pause_turn", "context_exceeded", "stop_reason")


class ModelServer:
    """The offline Messages API on 127.0.0.1; start() returns the base URL for ANTHROPIC_BASE_URL."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | None = None,
        clock: Callable[[], float] = time.time,
        pace: Pace | str = "instant",
        wait: Callable[[float], object] | None = None,
    ) -> None:
        # `wait(seconds)`: how a reply waits (a sleep the server's stop cuts short), injectable for tests
        self.host, self.port = host, port
        self.clock = clock
        self.pace = pace if isinstance(pace, Pace) else Pace(pace)
        self.requests: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self.cache = PromptCache(clock)
        self._bill = Bill(clock)
        self._issued: dict[str, list[str]] = {}  # tool_use id -> signatures of the turn's thinking blocks
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.wait = wait or self._stopping.wait
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._count = 0
        self._count_requests = 0
        self.token_counts: list[dict[str, Any]] = []  # every count_tokens answer (free: never on the bill)
        self._log = ModelLog()  # the proof that the model learned the repository only through its tool calls
        self.set_faults(faults or FaultPlan())
        # The Bedrock / Claude Platform on AWS wires; SigV4 is checked against the real time the SDK signs with.
        self.aws = providers.AwsAccount.from_price_table()

    # -- lifecycle

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self._httpd.server_address[1]}"

    def start(self) -> str:
        server = self

        class Bound(Handler):
            owner = server

        self._httpd = ThreadingHTTPServer((self.host, self.port), Bound)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="offline-model", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_faults(self, plan: FaultPlan) -> None:
        """Replace the fault plan; its request numbers count from now."""
        with self._lock:
            self.plan = plan
            self._rng = random.Random(plan.seed)
            self._base = self._count
            self.cache.enforce_minimum = plan.cache_minimums

    def model_log(self) -> list[dict[str, Any]]:
        """What the model asked for and the facts behind its reports, per answered request (model_log.py)."""
        return self._log.entries()

    def bill(self) -> list[BillRecord]:
        """Every call the server billed, in order (the Usage API report reads the same records)."""
        return self._bill.records()

    @staticmethod
    def api_key_id(key: str) -> str:
        """The api_key_id the bill and the usage report show for `key`."""
        return api_key_id(key)

    # -- request handling

    def _fault_for(self, agent: str | None = None) -> tuple[int, FaultRule | None]:
        with self._lock:
            self._count += 1
            n = self._count - self._base
            for rule in (r for r in self.plan.rules if r.agent in (None, agent)):  # FaultRule.agent
                if n in rule.requests or (rule.probability and self._rng.random() < rule.probability):
                    return self._count, rule
            return self._count, None

    def _issued_thinking(self, tool_use_id: str) -> list[str] | None:
        with self._lock:
            return self._issued.get(tool_use_id)

    def handle(self, headers: dict[str, str], raw: bytes) -> Reply:
        """The reply to one POST /v1/messages."""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        number, rule = self._fault_for(_agent_of(body))
        rid = f"req_offline_{number:06d}"
        base = {"request-id": rid, "content-type": "application/json"}

        def error(
            status: int, kind: str, message: str, extra: dict[str, str] | None = None, code: str | None = None
        ) -> Reply:
            hdrs = {**base, **(extra or {})}
            if rule is not None and rule.should_retry is not None:
                hdrs["x-should-retry"] = "true" if rule.should_retry else "false"
            return Reply(
                status, hdrs, json.dumps(error_body(kind, message, error_code=code, request_id=rid)).encode()
            )

        key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not key:
            return error(401, "authentication_error", "x-api-key header is required")
        if not headers.get("anthropic-version"):
            return error(400, "invalid_request_error", "anthropic-version header is required")
        problem = validate(body, strict_fields=self.plan.strict_fields, issued_thinking=self._issued_thinking)
        if problem:
            return error(400, "invalid_request_error", problem)
        model = body["model"]
        if self.plan.strict_fields and not _known_model(model):
            return error(404, "not_found_error", f"model: {model}")
        with self._lock:
            self.requests.append(body)
        kind = rule.kind if rule else None
        if kind == "429":  # an ordinary rate limit carries retry-after (rate-limits page; faults.py)
            extra = {}
            if not rule.omit_retry_after:
                wait = rule.retry_after if rule.retry_after is not None else DEFAULT_RETRY_AFTER_S
                extra["retry-after"] = str(wait)
            if rule.retry_after_ms is not None:
                extra["retry-after-ms"] = str(rule.retry_after_ms)
            return error(
                429, "rate_limit_error", "Number of request tokens has exceeded your rate limit", extra
            )
        if kind == "spend_limit":  # the usage tier's monthly cap: no retry-after (errors page)
            return error(
                429,
                "rate_limit_error",
                "Your organization has reached the monthly usage limit of its API tier; access resumes "
                "at 00:00 UTC on the first day of next month",
                code="enforced_spend_limit_reached",
            )
        if kind == "spend_limit_claude_code":
            extra = {"retry-after": str(rule.retry_after if rule.retry_after is not None else 3600)}
            return error(
                429, "rate_limit_error", "The Claude Code workspace has reached its spend limit", extra
            )
        if kind in ("spend_limit_org", "spend_limit_workspace"):
            scope = "workspace " if kind == "spend_limit_workspace" else ""
            resume = time.strftime("%Y-%m-01", time.gmtime(self.clock() + 32 * 86400))
            return error(
                400,
                "invalid_request_error",
                f"You have reached your specified {scope}API usage limits. You will regain access on "
                f"{resume} at 00:00 UTC.",
            )
        if kind == "529":
            extra = {"retry-after": str(rule.retry_after)} if rule.retry_after is not None else {}
            return error(529, "overloaded_error", "Overloaded", extra)
        if kind == "500":
            return error(500, "api_error", "Internal server error")
        message, signatures = self._message(body, number, rule, key)
        with self._lock:
            self.responses.append(message)
            for block in message["content"]:
                if block["type"] == "tool_use" and signatures:
                    self._issued[block["id"]] = signatures
        u = message["usage"]
        self._bill.add(
            BillRecord(
                request_id=rid,
                time=self.clock(),
                model=message["model"],
                api_key_id=api_key_id(key),
                uncached_input_tokens=u["input_tokens"],
                cache_creation_5m_input_tokens=u["cache_creation"]["ephemeral_5m_input_tokens"],
                cache_creation_1h_input_tokens=u["cache_creation"]["ephemeral_1h_input_tokens"],
                cache_read_input_tokens=u["cache_read_input_tokens"],
                output_tokens=u["output_tokens"],
                thinking_tokens=u["output_tokens_details"]["thinking_tokens"],
                outcome=kind if kind in BILLED_FAULTS else "ok",
                streamed=bool(body.get("stream")),
                context_window="0-200k"
                if u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
                <= 200_000
                else "200k-1M",
            )
        )
        return _reply(message, base, streamed=bool(body.get("stream")), rule=rule, pace=self.pace)

    def _message(
        self, body: dict[str, Any], number: int, rule: FaultRule | None, key: str
    ) -> tuple[dict[str, Any], list[str]]:
        """The assistant message for a valid request, with thinking, max_tokens and the usage it bills."""
        model = body["model"]
        rules = thinking.rules_for(model)
        usage = self.cache.usage(body, scope=api_key_id(key))
        total_prompt = (
            usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
        )
        conv = Conversation.parse(body)
        turn = _turn(self.plan, conv, body)
        content, stop = turn.content, turn.stop
        for k, block in enumerate(b for b in content if b["type"] == "tool_use"):
            block["id"] = f"toolu_offline_{number:06d}_{k + 1}"  # unique, as the API's ids are
        self._log.record(f"req_offline_{number:06d}", conv, turn)
        stop_details = None
        kind = rule.kind if rule else None
        has_server_tools = any(_SERVER_TOOL.match(str(t.get("type", ""))) for t in body.get("tools") or [])
        if kind == "pause_turn" and not has_server_tools:
            kind = None  # pause_turn only occurs with server tools (handling stop reasons page)
        if model in self.plan.refuse_models and kind is None:
            kind = "refusal"
        if kind in _STOP_FAULTS:
            stop = {
                "max_tokens": "max_tokens",
                "refusal": "refusal",
                "pause_turn": "pause_turn",
                "context_exceeded": "model_context_window_exceeded",
            }.get(kind, rule.stop_reason if rule else "")
            content = (
                []
                if stop == "refusal"
                else [{"type": "text", "text": f"{LABEL}: stopped with {stop} (injected)."}]
            )
            if stop == "refusal":
                stop_details = {
                    "type": "refusal",
                    "category": "cyber",
                    "explanation": f"{LABEL}: this request was declined by a safety classifier (injected).",
                }
        if total_prompt > rules.context_window:
            stop, content = "model_context_window_exceeded", []
        think = self.plan.thinking and thinking.thinks(body) and stop not in ("refusal",)
        n_think = thinking.budget(turn.kind, turn.work_tokens, body, self.plan.thinking_scale) if think else 0
        visible = sum(
            tokens.count(json.dumps(b["input"]) if b["type"] == "tool_use" else b.get("text", ""), model)
            for b in content
        ) + 2 * len(content)
        max_tokens = int(body["max_tokens"])
        display = thinking.display_of(body)
        signatures: list[str] = []
        blocks: list[dict[str, Any]] = []
        if n_think:
            text = thinking.thinking_text(turn.kind, conv.path, n_think, display)
            truncated = n_think >= max_tokens
            signature = "" if truncated else thinking.sign(model, body["messages"], text, n_think)
            blocks.append({"type": "thinking", "thinking": text, "signature": signature})
            if signature:
                signatures.append(signature)
                if self.plan.redacted_thinking:  # part of the thinking came back encrypted (thinking.py)
                    data = thinking.sign_redacted(model, body["messages"], n_think)
                    blocks.append({"type": "redacted_thinking", "data": data})
                    signatures.append(data)
        output = n_think + visible
        if output > max_tokens and stop != "max_tokens":
            stop, output = "max_tokens", max_tokens
            room = max_tokens - n_think
            if room > 0 and content and content[0]["type"] == "text":
                blocks.append({"type": "text", "text": content[0]["text"][: room * 2]})
            signatures = []  # a cut turn carries no tool_use to pair thinking with
        else:
            blocks.extend(content)
            output = max(output, 1)
        usage["output_tokens"] = output
        usage["output_tokens_details"] = {"thinking_tokens": min(n_think, output)}
        usage["service_tier"] = "standard"
        usage["inference_geo"] = body.get("inference_geo") or "not_available"
        message = {
            "id": f"msg_offline_{number:06d}",
            "type": "message",
            "role": "assistant",
            "model": self.plan.served_models.get(model, model),  # e.g. an alias resolved to a snapshot
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "stop_details": stop_details,
            "usage": usage,
        }
        return message, signatures

    # POST /v1/messages/count_tokens (https://platform.claude.com/docs/en/api/messages/count_tokens and the
    # token-counting guide, https://platform.claude.com/docs/en/build-with-claude/token-counting): the same
    # structured input as creating a message (system, tools, messages, thinking, tool_choice, output_config, ...),
    # no max_tokens; the answer is `{"input_tokens": N}`, the total input tokens of that request; free of charge
    # (rate-limited on its own), so nothing goes on the bill and the prompt cache is untouched; an
    # invalid_request_error for server tools (web
    # search, web fetch, code execution, tool search), the MCP connector and image/document blocks with a `url` or
    # `file` source; every active model supports it, an unknown model is a 404 as for /v1/messages.
    COUNT_FIELDS = frozenset(
        {
            "messages",
            "model",
            "system",
            "tools",
            "tool_choice",
            "thinking",
            "output_config",
            "output_format",
            "cache_control",
            "context_management",
            "mcp_servers",
        }
    )

    def count_tokens(self, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
        """The reply (status, headers, JSON) to one POST /v1/messages/count_tokens."""
        with self._lock:
            self._count_requests += 1
            rid = f"req_offline_count_{self._count_requests:06d}"
        hdrs = {"request-id": rid}

        def error(status: int, kind: str, message: str) -> tuple[int, dict[str, str], dict[str, Any]]:
            return status, hdrs, error_body(kind, message, request_id=rid)

        key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not key:
            return error(401, "authentication_error", "x-api-key header is required")
        if not headers.get("anthropic-version"):
            return error(400, "invalid_request_error", "anthropic-version header is required")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return error(400, "invalid_request_error", "the request body must be a JSON object")
        extra = sorted(set(body) - self.COUNT_FIELDS)
        if extra:
            return error(400, "invalid_request_error", f"{extra[0]}: Extra inputs are not permitted")
        if body.get("mcp_servers"):
            return error(400, "invalid_request_error", "mcp_servers: the MCP connector is not supported here")
        for tool in body.get("tools") or []:
            if isinstance(tool, dict) and _SERVER_TOOL.match(str(tool.get("type", ""))):
                return error(
                    400, "invalid_request_error", f"tools: server tool {tool['type']} cannot be counted"
                )
        for msg in body.get("messages") or []:
            for block in (
                msg.get("content") if isinstance(msg, dict) and isinstance(msg.get("content"), list) else []
            ):
                source = block.get("source") if isinstance(block, dict) else None
                if isinstance(source, dict) and source.get("type") in ("url", "file"):
                    return error(
                        400,
                        "invalid_request_error",
                        f"{block.get('type')}: a {source['type']} source cannot be counted; send it as base64",
                    )
        # The rest is the Messages API's own structure check (with a max_tokens it does not take here).
        problem = validate(
            {**body, "max_tokens": 1},
            strict_fields=self.plan.strict_fields,
            issued_thinking=self._issued_thinking,
        )
        if problem:
            return error(400, "invalid_request_error", problem)
        if self.plan.strict_fields and not _known_model(body["model"]):
            return error(404, "not_found_error", f"model: {body['model']}")
        counted = prompt_tokens(body)
        with self._lock:
            self.token_counts.append({"model": body["model"], "input_tokens": counted})
        return 200, hdrs, {"input_tokens": counted}

    def usage_report(self, headers: dict[str, str], query: str) -> tuple[int, dict[str, Any]]:
        """GET /v1/organizations/usage_report/messages (Admin API key required)."""
        key = headers.get("x-api-key", "")
        if not key.startswith("sk-ant-admin"):
            return 401, error_body(
                "authentication_error", "the Usage and Cost API requires an Admin API key (sk-ant-admin...)"
            )
        if not headers.get("anthropic-version"):
            return 400, error_body("invalid_request_error", "anthropic-version header is required")
        try:
            return 200, self._bill.usage_report(urllib.parse.parse_qs(query), headers)
        except ReportError as exc:
            return 400, error_body("invalid_request_error", str(exc))


def _turn(plan: FaultPlan, conv: Conversation, body: dict[str, Any]) -> Any:
    """The model's turn: the eval's judge (judge.py) answers its own requests; the verify run (its system prompt
    names the verify agent) is answered by the offline verifier (verify.py); every other request by the offline
    model (policy.py)."""
    judged = judge.answer(body)
    if judged:
        return judged
    if conv.agent == verify.AGENT:
        return verify.next_turn(plan, conv, body)
    return OfflineModel(plan).next_turn(conv)


def _agent_of(body: Any) -> str | None:
    """The prfleet agent a request's system prompt names (for FaultRule.agent), None when there is none."""
    if not isinstance(body, dict):
        return None
    m = re.search(r"You are the (\w+) agent", text_of(body.get("system", "")))
    return m.group(1) if m else None


def _reply(
    message: dict[str, Any], base: dict[str, str], *, streamed: bool, rule: FaultRule | None, pace: Pace
) -> Reply:
    """The 200 of a message, whole or as events, bent as its fault says and waiting as the pace says."""
    kind = rule.kind if rule else None
    action = {
        "timeout_after_billing": "hold",
        "reset_after_read": "reset",
        "truncated": "truncate",
        "stream_error": "stream_error",
    }.get(kind or "", "send")
    delay = rule.delay if rule and kind in ("slow", "timeout_after_billing") else 0.0
    after = rule.after_events if rule else 3
    model, usage = message["model"], message["usage"]
    if streamed:
        hdrs = {**base, "content-type": "text/event-stream", "cache-control": "no-cache"}
        events = stream_events(message)
        gaps = pace.stream_gaps(model, events, usage)
        return Reply(200, hdrs, events=events, action=action, delay=delay, after_events=after, gaps=gaps)
    delay += pace.seconds(model, usage["output_tokens"])
    return Reply(200, base, json.dumps(message).encode(), action=action, delay=delay, after_events=after)


def _known_model(model: str) -> bool:
    try:
        pricing.table().canonical(model)
    except pricing.UnknownModel:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the offline model server standalone: python -m prfleet_local.model.server --port P."""
    parser = argparse.ArgumentParser(description=f"prfleet {LABEL} server (Anthropic Messages API stand-in)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--faults", help="FaultPlan as JSON", default=None)
    parser.add_argument(
        "--pace", choices=PACES, default="instant", help="answer at once, or at a real model's pace (pace.py)"
    )
    args = parser.parse_args(argv)
    plan = FaultPlan.from_dict(json.loads(args.faults)) if args.faults else None
    server = ModelServer(args.host, args.port, faults=plan, pace=args.pace)
    print(
        f"{LABEL} listening on {server.start()}  (export ANTHROPIC_BASE_URL=... ANTHROPIC_API_KEY=offline)",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
