"""The offline model behind each AWS provider's wire protocol, exactly as the anthropic SDK speaks it.

The Messages semantics (the policy, usage, faults) stay in `server.ModelServer.handle`; this module only
translates the wire in front of it:

* Amazon Bedrock InvokeModel (`anthropic.lib.bedrock.AnthropicBedrock`): `POST /model/{modelId}/invoke` and
  `/model/{modelId}/invoke-with-response-stream`, the model id (an inference profile) in the path, the API version
  in the body (`anthropic_version: bedrock-2023-05-31`), no `model` or `stream` in the body, the stream as AWS
  event-stream frames whose `chunk.bytes` carry the Messages stream events, errors as Bedrock's REST-JSON
  exceptions (`x-amzn-ErrorType`, `{"message": ...}`)
  (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModel.html,
  https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModelWithResponseStream.html,
  https://platform.claude.com/docs/en/build-with-claude/claude-on-amazon-bedrock-legacy).
* Claude Platform on AWS (`anthropic.lib.aws.AnthropicAWS`): the Claude API's `POST /v1/messages`, SigV4-signed
  for service `aws-external-anthropic`, the workspace in `anthropic-workspace-id`; a workspace is reachable only
  through its own region's endpoint
  (https://docs.aws.amazon.com/claude-platform/latest/userguide/authentication.html,
  https://docs.aws.amazon.com/claude-platform/latest/userguide/workspaces.html).

Both check the SigV4 `Authorization` header as AWS does: its shape, the credential scope (date, region, service),
`x-amz-date` within 15 minutes, `host` and `x-amz-date` (and a session token, when sent) among the signed headers,
and the signature itself, recomputed with the secret of a known access key
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv4-signed-request-examples.html,
https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
import struct
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from prfleet.cost import pricing
from prfleet_local.model.model_ids import bedrock_response_model
from prfleet_local.model.reply import Reply

LABEL = "offline model"
BEDROCK_VERSION = "bedrock-2023-05-31"
SIGV4_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[A-Za-z0-9]{4,128})/(?P<date>\d{8})/(?P<region>[a-z]{2}(-gov)?-[a-z]+-\d)/"
    r"(?P<service>[a-z0-9-]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<sig>[0-9a-f]{64})$"
)
MAX_SKEW_S = 15 * 60
_INVOKE_RE = re.compile(r"^/model/(?P<model>[^/]+)/(?P<op>invoke|invoke-with-response-stream)$")


@dataclass
class AwsAccount:
    """What the offline AWS endpoints know: access keys and their secrets, the Claude Platform workspaces and
    their regions, and the Bedrock model ids offered (inference profiles; base ids that need one)."""

    credentials: Mapping[str, str] = field(default_factory=lambda: {"testing": "testing"})
    workspaces: Mapping[str, str] = field(default_factory=lambda: {"wrkspc_01LocalOffline": "us-east-1"})
    bedrock_models: frozenset[str] = frozenset()
    bedrock_base_ids: frozenset[str] = frozenset()
    clock: Callable[[], float] = time.time
    calls: list[dict[str, str]] = field(default_factory=list)  # every authenticated call: wire, model, region

    @classmethod
    def from_price_table(cls, **kw: Any) -> AwsAccount:
        """Bedrock's offer as documented (the model table prfleet's prices.json copies, with its source)."""
        data = json.loads(pricing.PRICES_PATH.read_text())
        rows = data["providers"]["bedrock"]["models"]
        return cls(
            bedrock_models=frozenset(pricing.provider_models("bedrock")),
            bedrock_base_ids=frozenset(r["bedrock_id"] for r in rows),
            **kw,
        )


def local_parameters(provider: str) -> dict[str, str]:
    """Template parameters for a local run through `provider` (the offline account's workspace; Bedrock
    profiles, since the Claude API defaults are not Bedrock ids)."""
    if provider == "anthropic":
        return {}
    if provider == "claude-platform-aws":
        return {"ModelProvider": provider, "AnthropicAwsWorkspaceId": "wrkspc_01LocalOffline"}
    if provider == "bedrock":
        return {
            "ModelProvider": provider,
            "ReviewModel": "global.anthropic.claude-sonnet-4-6",
            "TestsModel": "us.anthropic.claude-haiku-4-5-20251001-v1:0",
            "DocsModel": "global.anthropic.claude-haiku-4-5-20251001-v1:0",
        }
    raise ValueError(f"unknown model provider {provider!r}")


# ------------------------------------------------------------------------------------------------ SigV4


class SignatureError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def verify_sigv4(
    account: AwsAccount,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    service: str,
) -> str:
    """The signing region of a correctly signed request for `service`; raises SignatureError otherwise."""
    auth = headers.get("authorization", "")
    if not auth:
        raise SignatureError("MissingAuthenticationTokenException", "Authorization header is missing")
    m = SIGV4_RE.match(auth)
    if not m:
        raise SignatureError(
            "IncompleteSignatureException", f"Authorization header is not a SigV4 signature ({LABEL})"
        )
    if m["service"] != service:
        raise SignatureError(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{service}'. ({LABEL})",
        )
    signed = m["signed"].split(";")
    if signed != sorted(signed) or "host" not in signed or "x-amz-date" not in signed:
        raise SignatureError("IncompleteSignatureException", "host and x-amz-date must be signed, in order")
    if "x-amz-security-token" in headers and "x-amz-security-token" not in signed:
        raise SignatureError("IncompleteSignatureException", "x-amz-security-token must be signed")
    missing = [h for h in signed if h not in headers]
    if missing:
        raise SignatureError("IncompleteSignatureException", f"signed headers not sent: {', '.join(missing)}")
    amz_date = headers["x-amz-date"]
    try:
        when = _dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        raise SignatureError(
            "IncompleteSignatureException", f"x-amz-date {amz_date!r} is malformed"
        ) from None
    if amz_date[:8] != m["date"]:
        raise SignatureError(
            "InvalidSignatureException", "Date in Credential scope does not match x-amz-date"
        )
    if abs(when.timestamp() - account.clock()) > MAX_SKEW_S:
        raise SignatureError("InvalidSignatureException", "Signature expired")
    secret = account.credentials.get(m["akid"])
    if secret is None:
        raise SignatureError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    if _signature(method, url, headers, signed, body, m, secret) != m["sig"]:
        raise SignatureError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        )
    return m["region"]


def _signature(
    method: str,
    url: str,
    headers: Mapping[str, str],
    signed: list[str],
    body: bytes,
    m: re.Match[str],
    secret: str,
) -> str:
    """Recompute the signature with botocore's signer over exactly the signed headers."""
    request = AWSRequest(method=method, url=url, headers={h: headers[h] for h in signed}, data=body)
    request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(
        Credentials(m["akid"], secret, headers.get("x-amz-security-token")), m["service"], m["region"]
    )
    canonical = signer.canonical_request(request)
    return signer.signature(signer.string_to_sign(request, canonical), request)


# ------------------------------------------------------------------------------------------ event stream


def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return struct.pack("!B", len(n)) + n + b"\x07" + struct.pack("!H", len(v)) + v  # type 7: string


def event_frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total length, headers length, CRC32), headers, payload, CRC32
    (https://docs.aws.amazon.com/transcribe/latest/dg/streaming-setting-up.html#streaming-event-stream, the
    encoding botocore.eventstream decodes)."""
    hdrs = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(hdrs) + len(payload) + 4
    prelude = struct.pack("!II", total, len(hdrs))
    prelude += struct.pack("!I", zlib.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + hdrs + payload
    return message + struct.pack("!I", zlib.crc32(message) & 0xFFFFFFFF)


def chunk_frame(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":")).encode()
    payload = json.dumps(
        {"bytes": base64.b64encode(data).decode(), "p": "abcdefghijklmnopqrstuvwxyzABCDEF"[: len(data) % 32]}
    )
    return event_frame(
        {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
        payload.encode(),
    )


def exception_frame(kind: str, message: str) -> bytes:
    """A stream-level exception (`:message-type exception`), as InvokeModelWithResponseStream ends a failed
    stream; the SDK surfaces it as an `error` event."""
    payload = json.dumps({"message": message}).encode()
    return event_frame(
        {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}, payload
    )


def _sse_data(event: bytes) -> dict[str, Any]:
    """The JSON of one server-sent event (`event: ...\ndata: {...}\n\n`)."""
    for line in event.decode().splitlines():
        if line.startswith("data:"):
            return json.loads(line[5:].strip())
    raise ValueError(f"no data line in {event!r}")


# ---------------------------------------------------------------------------------------------- Bedrock

# Bedrock's REST-JSON exceptions: (HTTP status, x-amzn-ErrorType) for the error the Messages policy produced.
_BEDROCK_ERRORS = {
    400: (400, "ValidationException"),
    401: (403, "AccessDeniedException"),
    403: (403, "AccessDeniedException"),
    404: (400, "ValidationException"),
    413: (400, "ValidationException"),
    429: (429, "ThrottlingException"),
    500: (500, "InternalServerException"),
    529: (503, "ServiceUnavailableException"),
}
_BEDROCK_MESSAGES = {
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "ServiceUnavailableException": "Bedrock is unable to process your request.",
    "InternalServerException": "The server encountered an internal error while processing the request.",
}


def _bedrock_error(status: int, kind: str, message: str, rid: str) -> Reply:
    headers = {
        "content-type": "application/json",
        "x-amzn-requestid": rid,
        "x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
    }
    return Reply(status, headers, json.dumps({"message": message}).encode())


def bedrock(
    owner: Any, account: AwsAccount, *, method: str, path: str, headers: Mapping[str, str], raw: bytes
) -> Reply | None:
    """Bedrock InvokeModel[WithResponseStream] in front of the Messages policy; None if `path` is not one."""
    m = _INVOKE_RE.match(path.split("?", 1)[0])
    if not m:
        return None
    rid = str(uuid.uuid4())
    url = f"http://{headers.get('host', '127.0.0.1')}{path}"
    try:
        region = verify_sigv4(account, method=method, url=url, headers=headers, body=raw, service="bedrock")
    except SignatureError as exc:
        return _bedrock_error(403, exc.code, exc.message, rid)
    model = urllib.parse.unquote(m["model"])
    if model not in account.bedrock_models:
        if model in account.bedrock_base_ids:
            return _bedrock_error(
                400,
                "ValidationException",
                f"Invocation of model ID {model} with on-demand throughput isn't supported. Retry your request with "
                "the ID or ARN of an inference profile that contains this model.",
                rid,
            )
        return _bedrock_error(400, "ValidationException", "The provided model identifier is invalid.", rid)
    try:
        body = json.loads(raw or b"")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _bedrock_error(
            400,
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
            rid,
        )
    extraneous = sorted(k for k in ("model", "stream") if k in body)
    if extraneous:
        return _bedrock_error(
            400,
            "ValidationException",
            f"Malformed input request: #: extraneous key [{extraneous[0]}] is not permitted",
            rid,
        )
    if body.get("anthropic_version") != BEDROCK_VERSION:
        return _bedrock_error(
            400,
            "ValidationException",
            f"Malformed input request: anthropic_version must be {BEDROCK_VERSION}, got {body.get('anthropic_version')!r}",
            rid,
        )
    stream = m["op"] == "invoke-with-response-stream"
    account.calls.append({"wire": f"bedrock:{m['op']}", "model": model, "region": region})
    messages_body = {k: v for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta")}
    messages_body.update(model=model, stream=stream)
    # One stable key per caller (the signature changes every request): the prompt cache and the bill scope by it.
    akid = SIGV4_RE.match(headers["authorization"])["akid"]  # type: ignore[index]
    started = time.monotonic()
    reply = owner.handle(
        {"x-api-key": f"sigv4-{akid}", "anthropic-version": "2023-06-01"}, json.dumps(messages_body).encode()
    )
    if reply.status != 200:
        try:
            text = json.loads(reply.body)["error"].get("message", "")
        except (ValueError, KeyError, TypeError, AttributeError):
            text = ""
        code, kind = _BEDROCK_ERRORS.get(reply.status, (500, "InternalServerException"))
        return _bedrock_error(code, kind, _BEDROCK_MESSAGES.get(kind, text), rid)
    # the reply's own waits (a slow fault, the model's pace) are sent after this: they count toward the latency
    latency = str(int((time.monotonic() - started + reply.delay + sum(reply.gaps)) * 1000))
    if not stream:
        try:
            message = json.loads(reply.body)
            message["id"] = message["id"].replace("msg_", "msg_bdrk_", 1)
            message["model"] = bedrock_response_model(message["model"])  # the model, not the profile
            payload = json.dumps(message).encode()
            usage = message["usage"]
        except (ValueError, KeyError, TypeError):
            payload, usage = reply.body, {}
        hdrs = {
            "content-type": "application/json",
            "x-amzn-requestid": rid,
            "x-amzn-bedrock-input-token-count": str(usage.get("input_tokens", 0)),
            "x-amzn-bedrock-output-token-count": str(usage.get("output_tokens", 0)),
            "x-amzn-bedrock-invocation-latency": latency,
        }
        return Reply(
            200, hdrs, payload, action=reply.action, delay=reply.delay, after_events=reply.after_events
        )
    # The policy's SSE events, re-framed: Bedrock sends no ping, and adds its metrics to message_stop.
    paced = zip(reply.events, reply.gaps or [0.0] * len(reply.events), strict=True)
    kept = [(data, gap) for data, gap in ((_sse_data(e), g) for e, g in paced) if data.get("type") != "ping"]
    events, gaps = [d for d, _ in kept], [g for _, g in kept]
    usage: dict[str, Any] = {}
    for e in events:
        if e["type"] == "message_start":
            e["message"]["id"] = e["message"]["id"].replace("msg_", "msg_bdrk_", 1)
            e["message"]["model"] = bedrock_response_model(e["message"]["model"])
            usage.update(e["message"].get("usage") or {})
        elif e["type"] == "message_delta":
            usage.update(e.get("usage") or {})
        elif e["type"] == "message_stop":
            e["amazon-bedrock-invocationMetrics"] = {
                "inputTokenCount": int(usage.get("input_tokens", 0)),
                "outputTokenCount": int(usage.get("output_tokens", 0)),
                "invocationLatency": int(latency),
                "firstByteLatency": int(latency),
            }
    frames = [chunk_frame(e) for e in events]
    action = reply.action
    if action == "stream_error":  # the stream ends with Bedrock's exception frame, not an SSE error event
        frames = frames[: reply.after_events] + [
            exception_frame("internalServerException", _BEDROCK_MESSAGES["InternalServerException"])
        ]
        action = "send"
    hdrs = {
        "content-type": "application/vnd.amazon.eventstream",
        "x-amzn-requestid": rid,
        "x-amzn-bedrock-content-type": "application/json",
    }
    return Reply(
        200, hdrs, events=frames, action=action, delay=reply.delay, after_events=reply.after_events, gaps=gaps
    )


# ------------------------------------------------------------------------------------ Claude Platform on AWS


def claude_platform(
    owner: Any, account: AwsAccount, *, method: str, path: str, headers: Mapping[str, str], raw: bytes
) -> Reply | None:
    """Claude Platform on AWS: a SigV4-signed /v1/messages (service aws-external-anthropic) for a workspace of the
    signing region, then the Claude API's own semantics and shapes; None for a request that is not SigV4-signed
    (the Claude API's own path)."""
    if path.split("?", 1)[0] != "/v1/messages" or not headers.get("authorization", "").startswith("AWS4-"):
        return None
    rid = str(uuid.uuid4())
    url = f"http://{headers.get('host', '127.0.0.1')}{path}"

    def aws_error(status: int, kind: str, message: str) -> Reply:
        hdrs = {"content-type": "application/json", "x-amzn-requestid": rid, "x-amzn-errortype": kind}
        return Reply(status, hdrs, json.dumps({"message": message}).encode())

    try:
        region = verify_sigv4(
            account, method=method, url=url, headers=headers, body=raw, service="aws-external-anthropic"
        )
    except SignatureError as exc:
        return aws_error(403, exc.code, exc.message)
    if headers.get("x-api-key"):
        return aws_error(400, "ValidationException", "send either a SigV4 signature or an API key, not both")
    workspace = headers.get("anthropic-workspace-id", "")
    if not workspace:
        return aws_error(400, "ValidationException", "the anthropic-workspace-id header is required")
    bound = account.workspaces.get(workspace)
    if bound is None:
        return aws_error(
            403, "AccessDeniedException", f"workspace {workspace} does not exist in this account"
        )
    if bound != region:
        return aws_error(
            403,
            "AccessDeniedException",
            f"workspace {workspace} is bound to {bound}; call the {bound} endpoint",
        )
    account.calls.append({"wire": "claude-platform-aws", "workspace": workspace, "region": region})
    akid = SIGV4_RE.match(headers["authorization"])["akid"]  # type: ignore[index]
    inner = {k: v for k, v in headers.items() if k != "authorization"}
    reply = owner.handle({**inner, "x-api-key": f"sigv4-{akid}-{workspace}"}, raw)
    reply.headers["x-amzn-requestid"] = rid
    return reply


def dispatch(
    owner: Any, account: AwsAccount, *, method: str, path: str, headers: Mapping[str, str], raw: bytes
) -> Reply | None:
    """The Reply of whichever AWS provider `path` and `headers` belong to, or None for the Claude API."""
    for wire in (bedrock, claude_platform):
        reply = wire(owner, account, method=method, path=path, headers=headers, raw=raw)
        if reply is not None:
            return reply
    return None
