"""X-Ray tracing: Powertools Tracer for the handlers, and the few subsegments the layer records itself (a model
call, a GitHub request, one SQS record's job) with the annotations X-Ray can search by.

The only module of the layer that touches aws_xray_sdk, and lazily: a function with tracing off (unit tests, a
local run without the X-Ray stand-in) never imports it, and the SDK costs import time (docs/performance.md,
"Cold start with the Tracer"). Botocore is the only library patched: the model and GitHub calls get subsegments
of their own here (with tokens, cost and request id), so patching httpx or http.client would record them twice.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PATCHED = ("botocore",)  # the one library patched: see the module docstring


# Lambda sets LAMBDA_TASK_ROOT in every execution environment; Powertools Tracer uses it to tell Lambda from
# elsewhere (https://docs.aws.amazon.com/powertools/python/latest/core/tracer/, "Auto-disable when not running in
# AWS Lambda environment").
def enabled() -> bool:
    """Tracing on: in a Lambda execution environment (or the local stack's stand-in), not switched off."""
    off = os.getenv("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in ("1", "true", "yes", "on")
    return bool(os.getenv("LAMBDA_TASK_ROOT")) and not off


def make_tracer() -> Any:
    """The handler's Powertools Tracer (one shared configuration per process, as Powertools keeps it)."""
    from aws_lambda_powertools import Tracer

    return Tracer(disabled=not enabled(), patch_modules=list(PATCHED) if enabled() else [])


class Span:
    """One open subsegment, or nothing when tracing is off: annotations are indexed for X-Ray's filter
    expressions (repository, pr, head_sha, agent), metadata carries the rest (tokens, cost, request id)."""

    def __init__(self, entity: Any = None) -> None:
        self.entity = entity

    def annotate(self, **values: Any) -> None:
        if self.entity is None:
            return
        for key, value in values.items():
            if value is not None:
                self.entity.put_annotation(
                    key, value if isinstance(value, (bool, int, float)) else str(value)
                )

    def metadata(self, **values: Any) -> None:
        if self.entity is None:
            return
        for key, value in values.items():
            self.entity.put_metadata(key, value, "prfleet")

    def http(self, method: str, url: str, status: int | None = None) -> None:
        """The request and response as X-Ray's `http` fields (the trace map's remote node)."""
        if self.entity is None:
            return
        self.entity.put_http_meta("method", method)
        self.entity.put_http_meta("url", url)
        if status is not None:
            self.entity.put_http_meta("status", status)


def _recorder() -> Any:
    from aws_xray_sdk.core import xray_recorder

    return xray_recorder


@contextmanager
def subsegment(name: str, *, remote: bool = False, **annotations: Any) -> Iterator[Span]:
    """A subsegment around the block (a no-op Span with tracing off); an exception is recorded on it and raised."""
    if not enabled():
        yield Span()
        return
    recorder = _recorder()
    entity = recorder.begin_subsegment(name, "remote" if remote else "local")
    span = Span(entity)
    span.annotate(**annotations)
    try:
        yield span
    except BaseException as exc:
        if entity is not None:
            entity.add_exception(exc, traceback.extract_stack())
        raise
    finally:
        if entity is not None:
            recorder.end_subsegment()


def trace_header() -> str | None:
    """The X-Ray trace header of the current subsegment, for a message's AWSTraceHeader system attribute
    (https://docs.aws.amazon.com/xray/latest/devguide/xray-services-sqs.html); None with tracing off."""
    if not enabled():
        return None
    entity = _recorder().get_trace_entity()
    trace_id = getattr(entity, "trace_id", None)
    if not trace_id or not getattr(entity, "sampled", False):
        return None
    return f"Root={trace_id};Parent={entity.id};Sampled=1"
