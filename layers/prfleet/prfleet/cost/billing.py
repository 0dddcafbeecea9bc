"""Was a failed model call billed? The ledger books a call that may have been billed and releases one that was not.

The rules, each from the page that states it:

- An error the API answered with an error body (HTTP 4xx/5xx: 400, 401, 403, 404, 413, 429, 500, 529, ...) is not
  billed: "In general, failed requests are not charged"
  (https://support.claude.com/en/articles/8114526-how-will-i-be-billed-for-claude-api-use; the error shapes are on
  https://platform.claude.com/docs/en/api/errors).
- A call whose client timed out or lost the connection after the request was sent IS billed: "you will be charged
  if your client disconnects or times out in the middle of an API call that was on track to be successful" (same
  support page). httpx raises ReadTimeout / WriteTimeout / ReadError / WriteError / RemoteProtocolError once the
  request is (being) written; the SDK wraps them in APITimeoutError / APIConnectionError with the httpx error as
  `__cause__` (anthropic/_base_client.py, `_send_single_request`).
- A request that never left the machine is not billed: httpx ConnectTimeout, PoolTimeout, ConnectError and
  ProxyError happen before a byte of the request reaches the API.
- A 200 whose body cannot be parsed (truncated JSON, a body that fails validation) was answered: billed.
- An error event inside a stream (the SDK raises APIStatusError on an SSE `error` event with the stream's 200
  status, https://platform.claude.com/docs/en/api/handle-errors "handle an error that arrives in a stream"), or
  any failure after `message_start`, is billed: the input was processed and output may have been generated.
- Anything not positively known to be unbilled is treated as billed (an over-booking is corrected by
  reconciliation; an under-booking breaks the budget).

Spend limits come in two shapes (https://platform.claude.com/docs/en/api/errors): a 400 invalid_request_error
"You have reached your specified (workspace) API usage limits" when an organization or workspace spend limit set
by the user is reached, and a 429 rate_limit_error whose `error.details.error_code` is
`enforced_spend_limit_reached` (the usage tier's monthly cap; no retry-after). Neither is billed; both open the
circuit (see prfleet.circuit).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# httpx (httpx2 in this SDK) errors raised before the request was written: the API never saw the call.
_NOT_SENT = frozenset({"ConnectTimeout", "PoolTimeout", "ConnectError", "ProxyError", "UnsupportedProtocol"})
_SPEND_400 = re.compile(r"reached your specified (workspace )?API usage limits", re.IGNORECASE)
SPEND_CODE = "enforced_spend_limit_reached"


@dataclass(frozen=True)
class Verdict:
    billed: bool
    reason: str


def _causes(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out and len(out) < 8:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def classify(exc: BaseException, *, started: bool = False) -> Verdict:
    """Whether a call that raised `exc` may have been billed. `started`: the stream's message_start arrived."""
    if started:
        return Verdict(True, f"{type(exc).__name__} after message_start: the input was processed")
    status = _status(exc)
    if status is not None:
        if status >= 400:
            return Verdict(False, f"the API answered {status} with an error body")
        return Verdict(True, f"error event inside a {status} stream")
    for cause in _causes(exc):
        if type(cause).__name__ in _NOT_SENT:
            return Verdict(False, f"{type(cause).__name__}: the request was never sent")
    names = [type(c).__name__ for c in _causes(exc)]
    if any("Timeout" in n for n in names):
        return Verdict(True, "timed out after the request was sent")
    if any(n in ("ReadError", "WriteError", "RemoteProtocolError", "CloseError") for n in names):
        return Verdict(True, "connection lost after the request was sent")
    if any(
        n in ("APIResponseValidationError", "JSONDecodeError", "ValidationError") for n in names
    ) or isinstance(exc, ValueError):
        return Verdict(True, "a 200 whose body could not be read")
    return Verdict(True, f"{type(exc).__name__}: not known to be unbilled")


def _body(exc: BaseException) -> Any:
    body = getattr(exc, "body", None)
    if isinstance(body, str | bytes):
        try:
            return json.loads(body)
        except ValueError:
            return None
    return body


def spend_limit(exc: BaseException) -> str | None:
    """The spend-limit reason when `exc` is one of the two documented spend-limit errors, else None."""
    status = _status(exc)
    if status not in (400, 429):
        return None
    body = _body(exc)
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    details = error.get("details") if isinstance(error.get("details"), dict) else {}
    code = getattr(exc, "error_code", None) or details.get("error_code")
    message = str(error.get("message") or getattr(exc, "message", "") or "")
    if status == 429 and code == SPEND_CODE:
        return f"monthly spend cap of the usage tier reached: {message[:200]}"
    if status == 400 and _SPEND_400.search(message):
        return f"spend limit reached: {message[:200]}"
    return None
