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
- wire.py — the error body and the server-sent events.

Everything is switchable per test through a FaultPlan (at start, `set_faults()`, or POST /_faults).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prfleet_local.model import providers, thinking, tokens
from prfleet_local.model.analysis import analyse
from prfleet_local.model.bill import Bill, BillRecord, ReportError, api_key_id
from prfleet_local.model.cache import PromptCache, prompt_tokens
from prfleet_local.model.faults import (
    BILLED_FAULTS,
    DEFAULT_RETRY_AFTER_S,
    FAULT_KINDS,
    FaultPlan,
    FaultRule,
)
from prfleet_local.model.validate import validate
from prfleet_local.model.wire import LABEL, error_body, stream_events

__all__ = ["FAULT_KINDS", "LABEL", "FaultPlan", "FaultRule", "ModelServer", "analyse"]

# --------------------------------------------------------------------------------------------- conversation

_OPEN_RE = r"<untrusted_{kind}((?:\s+\w+=\"[^\"]*\")*)>\n?(.*?)\n?</untrusted_{kind}>"
_ATTR_RE = re.compile(r'(\w+)="([^"]*)"')
_LINE_RE = re.compile(r"^\s*(\d+)\| ?(.*)$")


def _unescape(s: str) -> str:
    return (
        s.replace("&quot;", '"')
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
    )


def _blocks(kind: str, text: str) -> list[tuple[dict[str, str], str]]:
    out = []
    for m in re.finditer(_OPEN_RE.format(kind=kind), text, re.DOTALL):
        attrs = {k: _unescape(v) for k, v in _ATTR_RE.findall(m.group(1))}
        body = re.sub(r"&lt;(\s*/?\s*untrusted)", r"<\1", m.group(2), flags=re.IGNORECASE)
        out.append((attrs, body))
    return out


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            _text_of(b.get("text", b.get("content", ""))) for b in content if isinstance(b, dict)
        )
    return ""


@dataclass
class Conversation:
    """What the offline model understands of a request: agent, file under review, and the tool history."""

    agent: str
    path: str | None
    total_lines: int
    description: str
    first_file_lines: dict[int, str]
    calls: list[tuple[str, dict[str, Any], str, bool]]  # (tool, input, result text, is_error)
    last_user_text: str
    last_role: str

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Conversation:
        system = _text_of(body.get("system", ""))
        m = re.search(r"You are the (\w+) agent", system)
        agent = m.group(1) if m else "review"
        messages = body.get("messages") or []
        first = _text_of(messages[0].get("content")) if messages else ""
        files = _blocks("file", first)
        path = files[0][0].get("path") if files else None
        total = int(files[0][0].get("total", "0") or 0) if files else 0
        first_lines = _numbered(files[0][1]) if files else {}
        desc = "\n".join(b for _, b in _blocks("pr_description", first))
        uses: dict[str, tuple[str, dict[str, Any]]] = {}
        calls = []
        for msg in messages:
            content = msg.get("content")
            if not isinstance(content, list):
                continue
            for block in content:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_use":
                    uses[block.get("id", "")] = (block.get("name", ""), block.get("input") or {})
                elif block.get("type") == "tool_result":
                    name, args = uses.get(block.get("tool_use_id", ""), ("?", {}))
                    calls.append(
                        (name, args, _text_of(block.get("content", "")), bool(block.get("is_error")))
                    )
        last = messages[-1] if messages else {}
        return cls(
            agent,
            path,
            total,
            desc,
            first_lines,
            calls,
            _text_of(last.get("content")),
            str(last.get("role", "user")),
        )


def _numbered(body: str) -> dict[int, str]:
    out = {}
    for line in body.split("\n"):
        m = _LINE_RE.match(line)
        if m:
            out[int(m.group(1))] = m.group(2)
    return out


_TEST_PATH = re.compile(r"(^|/)(tests?/|test_[^/]*$|[^/]*_test\.py$)")


@dataclass
class Turn:
    """What the model does this turn, before thinking is added: visible blocks, stop reason, and the kind of
    thinking that precedes them (plan, tool, report, end) with how much code it weighs."""

    content: list[dict[str, Any]]
    stop: str
    kind: str
    work_tokens: int = 0


class OfflineModel:
    """The deterministic policy: which tools to call next (several at once when they are independent), and the
    final report."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan

    def _chunks(self, total: int) -> list[tuple[int, int] | None]:
        n = self.plan.read_chunks
        if n <= 1 or total <= 1:
            return [None]
        size = math.ceil(total / n)
        return [(s, min(s + size - 1, total)) for s in range(1, total + 1, size)]

    def _windows(self, conv: Conversation) -> list[tuple[int, int] | None]:
        """30-line windows centred on the first findings in the copy of the file the first message carried."""
        text = "\n".join(
            conv.first_file_lines.get(i, "") for i in range(1, max(conv.first_file_lines, default=0) + 1)
        )
        hot = sorted({f["line"] for f in analyse(conv.agent, conv.path or "", text)})
        total = max(conv.total_lines, 1)
        while len(hot) < self.plan.read_windows:
            hot.append(1 + (len(hot) * total) // self.plan.read_windows)
        out: list[tuple[int, int] | None] = []
        for line in hot[: self.plan.read_windows]:
            start = max(1, min(line - 15, total - 29))
            out.append((start, min(total, start + 29)))
        return out

    def _tool_use(self, conv: Conversation, name: str, args: dict[str, Any], k: int) -> dict[str, Any]:
        return {
            "type": "tool_use",
            "id": f"toolu_offline_{len(conv.calls) + k:03d}",
            "name": name,
            "input": args,
        }

    def next_turn(self, conv: Conversation) -> Turn:
        if conv.path is None:
            return Turn(
                [{"type": "text", "text": f"{LABEL}: no file under review in the first message."}],
                "end_turn",
                "end",
            )
        reports = [c for c in conv.calls if c[0] == "report_findings"]
        if reports and not reports[-1][3]:
            n = len(reports[-1][1].get("findings", []))
            return Turn(
                [{"type": "text", "text": f"{LABEL}: reported {n} finding(s) for {conv.path}."}],
                "end_turn",
                "end",
            )
        done = {(c[0], json.dumps(c[1], sort_keys=True)) for c in conv.calls}
        sequential = self.plan.read_chunks > 1 or bool(self.plan.read_windows) or not self.plan.parallel_tools
        wanted: list[tuple[str, dict[str, Any]]] = []
        ranges = self._windows(conv) if self.plan.read_windows else self._chunks(conv.total_lines)
        for chunk in ranges:
            args: dict[str, Any] = {"path": conv.path}
            if chunk:
                args.update(start_line=chunk[0], end_line=chunk[1])
            wanted.append(("read_file", args))
        if conv.agent == "review" and self.plan.read_chunks <= 1 and not self.plan.read_windows:
            wanted.append(("get_diff", {"path": conv.path}))
        test_texts: dict[str, str] = {}
        if conv.agent == "tests":
            wanted.append(("list_changed_files", {}))
            listing = next((c[2] for c in conv.calls if c[0] == "list_changed_files"), None)
            if listing is not None:
                for _, body in _blocks("file_list", listing):
                    for row in body.splitlines():
                        p = row.split("\t")[3] if row.count("\t") >= 3 else ""
                        if p and p != conv.path and _TEST_PATH.search(p) and len(wanted) < 12:
                            wanted.append(("read_file", {"path": p}))
        pending = [(n, a) for n, a in wanted if (n, json.dumps(a, sort_keys=True)) not in done]
        if pending:
            batch = pending[:1] if sequential else pending
            uses = [self._tool_use(conv, n, a, k + 1) for k, (n, a) in enumerate(batch)]
            return Turn(uses, "tool_use", "plan" if not conv.calls else "tool")
        lines: dict[int, str] = dict(conv.first_file_lines)
        for name, _args, result, is_error in conv.calls:
            if name != "read_file" or is_error:
                continue
            for attrs, body in _blocks("file", result):
                if attrs.get("path") == conv.path:
                    lines.update(_numbered(body))
                else:
                    test_texts[attrs.get("path", "")] = "\n".join(_numbered(body).values())
        text = "\n".join(lines.get(i, "") for i in range(1, max(lines, default=0) + 1))
        findings = analyse(conv.agent, conv.path, text, description=conv.description, test_texts=test_texts)
        if len(reports) < self.plan.invalid_reports:
            findings = [dict(f, line=0, severity="urgent") for f in findings] or [
                {
                    "path": conv.path,
                    "line": 0,
                    "severity": "urgent",
                    "category": "Bug",
                    "title": "",
                    "body": "",
                }
            ]
        summary = f"{LABEL}: {len(findings)} finding(s) from static analysis of {conv.path}."
        use = self._tool_use(conv, "report_findings", {"findings": findings, "summary": summary}, 1)
        return Turn([use], "tool_use", "report", work_tokens=tokens.count(text))


# ----------------------------------------------------------------------------------------------- the server

_SERVER_TOOL = re.compile(r"^(web_search|web_fetch|code_execution|tool_search)")
_STOP_FAULTS = ("max_tokens", "refusal", "pause_turn", "context_exceeded", "stop_reason")


@dataclass
class Reply:
    """What the handler does: a JSON body, or SSE events; `action` hides the reply as a fault would."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    events: list[bytes] = field(default_factory=list)
    action: str = "send"  # send | hold | reset | truncate | stream_error
    delay: float = 0.0
    after_events: int = 3

    def __iter__(self) -> Any:
        """(status, headers, body bytes, delay), for wires that re-encode the reply (providers.py); a cut body
        stays cut, a stream is its SSE bytes."""
        body = b"".join(self.events) if self.events else self.body
        if self.action == "truncate":
            body = body[: len(body) // 2]
        return iter((self.status, self.headers, body, self.delay))


class ModelServer:
    """The offline Messages API on 127.0.0.1; start() returns the base URL for ANTHROPIC_BASE_URL."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host, self.port = host, port
        self.clock = clock
        self.requests: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self.cache = PromptCache(clock)
        self._bill = Bill(clock)
        self._issued: dict[str, list[str]] = {}  # tool_use id -> signatures of the turn's thinking blocks
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._count = 0
        self._count_requests = 0
        self.token_counts: list[dict[str, Any]] = []  # every count_tokens answer (free: never on the bill)
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

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
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

    def bill(self) -> list[BillRecord]:
        """Every call the server billed, in order (the Usage API report reads the same records)."""
        return self._bill.records()

    @staticmethod
    def api_key_id(key: str) -> str:
        """The api_key_id the bill and the usage report show for `key`."""
        return api_key_id(key)

    # -- request handling

    def _fault_for(self) -> tuple[int, FaultRule | None]:
        with self._lock:
            self._count += 1
            n = self._count - self._base
            for rule in self.plan.rules:
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
        number, rule = self._fault_for()
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
        action = {
            "timeout_after_billing": "hold",
            "reset_after_read": "reset",
            "truncated": "truncate",
            "stream_error": "stream_error",
        }.get(kind or "", "send")
        delay = rule.delay if rule and kind in ("slow", "timeout_after_billing") else 0.0
        after = rule.after_events if rule else 3
        if body.get("stream"):
            hdrs = {**base, "content-type": "text/event-stream", "cache-control": "no-cache"}
            return Reply(
                200, hdrs, events=stream_events(message), action=action, delay=delay, after_events=after
            )
        payload = json.dumps(message).encode()
        return Reply(200, base, payload, action=action, delay=delay, after_events=after)

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
        turn = OfflineModel(self.plan).next_turn(conv)
        content, stop = turn.content, turn.stop
        for k, block in enumerate(b for b in content if b["type"] == "tool_use"):
            block["id"] = f"toolu_offline_{number:06d}_{k + 1}"  # unique, as the API's ids are
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


def _known_model(model: str) -> bool:
    from prfleet.cost import pricing

    try:
        pricing.table().canonical(model)
    except pricing.UnknownModel:
        return False
    return True


class _Handler(BaseHTTPRequestHandler):
    owner: ModelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        return

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, {"content-type": "application/json"}, json.dumps(payload).encode())

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0): the client sees a connection reset after sending its request."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        self.close_connection = True

    def _hold(self, seconds: float) -> None:
        """Keep the request open (billed) until the client gives up, the hold ends, or the server stops."""
        deadline = time.monotonic() + (seconds or 600.0)
        self.connection.settimeout(0.05)
        while time.monotonic() < deadline and not self.owner._stopping.is_set():
            try:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    break  # the client closed its side
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                break
        self.close_connection = True

    def _reply(self, reply: Reply) -> None:
        if reply.action == "reset":
            self._reset()
            return
        if reply.action == "hold":
            self._hold(reply.delay)
            return
        if reply.delay:
            self.owner._stopping.wait(reply.delay)
        if not reply.events:
            payload = reply.body
            if reply.action == "truncate":
                payload = payload[: len(payload) // 2]
            self._send(reply.status, reply.headers, payload)
            return
        try:
            self.send_response(reply.status)
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.send_header("connection", "close")
            self.end_headers()
            events = reply.events
            if reply.action in ("truncate", "stream_error"):
                events = events[: reply.after_events]
            for event in events:
                self.wfile.write(event)
                self.wfile.flush()
            if reply.action == "stream_error":
                from prfleet_local.model.wire import sse

                self.wfile.write(sse("error", error_body("overloaded_error", "Overloaded")))
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = self.path.split("?", 1)[0]
        if path == "/_faults":
            try:
                self.owner.set_faults(FaultPlan.from_dict(json.loads(raw or b"{}")))
            except (ValueError, TypeError) as exc:
                self._json(400, error_body("invalid_request_error", str(exc)))
                return
            self._json(200, self.owner.plan.to_dict())
            return
        routed = providers.dispatch(  # an AWS provider's wire in front of handle() (providers.py)
            self.owner, self.owner.aws, method="POST", path=self.path, headers=headers, raw=raw
        )
        if routed is not None:
            self._reply(routed)
            return
        if path == "/v1/messages/count_tokens":
            status, hdrs, payload = self.owner.count_tokens(headers, raw)
            self._send(status, {**hdrs, "content-type": "application/json"}, json.dumps(payload).encode())
            return
        if path != "/v1/messages":
            self._json(404, error_body("not_found_error", f"no route {path}"))
            return
        self._reply(self.owner.handle(headers, raw))

    def do_GET(self) -> None:  # noqa: N802
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}
        if path == "/_faults":
            self._json(200, self.owner.plan.to_dict())
        elif path == "/_bill":
            self._json(200, {"data": [r.to_dict() for r in self.owner.bill()]})
        elif path == "/v1/organizations/usage_report/messages":
            status, payload = self.owner.usage_report(headers, query)
            self._json(status, payload)
        else:
            self._json(200, {"ok": True, "label": LABEL})


def main(argv: list[str] | None = None) -> int:
    """Run the offline model server standalone: python -m prfleet_local.model.server --port P."""
    parser = argparse.ArgumentParser(description=f"prfleet {LABEL} server (Anthropic Messages API stand-in)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--faults", help="FaultPlan as JSON", default=None)
    args = parser.parse_args(argv)
    plan = FaultPlan.from_dict(json.loads(args.faults)) if args.faults else None
    server = ModelServer(args.host, args.port, faults=plan)
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
