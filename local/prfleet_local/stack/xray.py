"""The X-Ray stand-in: a daemon on UDP 127.0.0.1 that keeps the segment documents the functions send, per trace,
and the Lambda service's side of tracing (the function segment each invocation gets, its trace header, the links
from an SQS-triggered invocation's trace to the traces that sent its messages).

What Lambda does, and so what this does (docs/architecture.md, "Tracing"):
* With `Tracing: Active` Lambda records a segment for each invocation and hands the function a trace header
  (`_X_AMZN_TRACE_ID`: Root, Parent, Sampled) under which the X-Ray SDK sends its subsegments to the daemon at
  AWS_XRAY_DAEMON_ADDRESS (https://docs.aws.amazon.com/lambda/latest/dg/services-xray.html). One process hosts
  every local function, so the header is per invocation thread here rather than an environment variable.
* The daemon takes UDP datagrams of a JSON header line `{"format": "json", "version": 1}` and one segment document
  (https://docs.aws.amazon.com/xray/latest/devguide/xray-api-sendingdata.html); a datagram without that header or
  over 64 KB is dropped, as the daemon drops it.
* An SQS-triggered invocation starts its own trace; the traces of the messages' senders (their AWSTraceHeader) are
  linked to it, up to 20 per segment (https://docs.aws.amazon.com/xray/latest/devguide/xray-tracelinking.html).
* Sampling: every invocation is sampled here (X-Ray's default rule samples the first request each second and 5 %
  after it), so the local timeline always exists; that is more than the service records, never less strict about
  what a recorded segment must hold.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

HEADER = {"format": "json", "version": 1}
MAX_DATAGRAM = 64 * 1024
MAX_LINKS = 20  # "Each trace segment can be linked to up to 20 traces" (xray-tracelinking.html)


def new_trace_id(now: float | None = None) -> str:
    """1-<8 hex digits of epoch seconds>-<24 hex digits>, X-Ray's trace id format."""
    return f"1-{int(now or time.time()):08x}-{secrets.token_hex(12)}"


def new_segment_id() -> str:
    return secrets.token_hex(8)


def parse_header(header: str | None) -> dict[str, str]:
    """`Root=...;Parent=...;Sampled=1` as a dict (empty for None)."""
    out: dict[str, str] = {}
    for part in (header or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key and value:
            out[key] = value
    return out


class XRayDaemon:
    """UDP listener on 127.0.0.1 (an ephemeral port); `segments(trace_id)` and `links` are what was recorded."""

    def __init__(self, record_to: Path | None = None) -> None:
        self.record_to = record_to  # every segment and link as a JSON line, for `prfleet trace --local`
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self._docs: dict[str, list[dict[str, Any]]] = {}
        self.links: dict[str, set[str]] = {}  # consumer trace id -> sender trace ids
        self.dropped = 0
        self._lock = threading.Lock()
        self._received = threading.Condition(self._lock)

    def serve(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                data = self.sock.recv(MAX_DATAGRAM + 1)
            except (TimeoutError, OSError):
                continue
            self.receive(data)
        self.sock.close()

    def receive(self, data: bytes) -> None:
        """One datagram: the header line, then one segment document; anything else is dropped."""
        head, _, body = data.partition(b"\n")
        try:
            if len(data) > MAX_DATAGRAM or json.loads(head) != HEADER:
                raise ValueError("not an X-Ray datagram")
            doc = json.loads(body)
            trace_id = doc["trace_id"]
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self.dropped += 1
            return
        self.put(trace_id, doc)

    def put(self, trace_id: str, doc: dict[str, Any]) -> None:
        with self._received:
            self._docs.setdefault(trace_id, []).append(doc)
            self._write({"trace_id": trace_id, "doc": doc})
            self._received.notify_all()

    def link(self, trace_id: str, senders: list[str]) -> None:
        with self._lock:
            self.links.setdefault(trace_id, set()).update(senders[:MAX_LINKS])
            self._write({"link": trace_id, "senders": senders[:MAX_LINKS]})

    def _write(self, line: dict[str, Any]) -> None:
        if self.record_to is not None:
            with open(self.record_to, "a") as f:
                f.write(json.dumps(line, default=str) + "\n")

    @classmethod
    def load(cls, path: Path) -> XRayDaemon:
        """What a stack recorded (its `record_to` file), without a socket: for reading only."""
        store = cls.__new__(cls)
        store.record_to, store._docs, store.links, store.dropped = None, {}, {}, 0
        store._lock = threading.Lock()
        store._received = threading.Condition(store._lock)
        for line in path.read_text().splitlines():
            item = json.loads(line)
            if "link" in item:
                store.links.setdefault(item["link"], set()).update(item["senders"])
            else:
                store._docs.setdefault(item["trace_id"], []).append(item["doc"])
        return store

    def segments(self, trace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._docs.get(trace_id, []))

    def traces(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {k: list(v) for k, v in self._docs.items()}

    def upstream(self, trace_ids: set[str]) -> set[str]:
        """The traces and every trace they link to, transitively: the senders of their messages, back to the
        webhook (consumer -> sender only, so another PR's traces linked to a shared sender stay out)."""
        with self._lock:
            edges = {k: set(v) for k, v in self.links.items()}
        seen, todo = set(trace_ids), list(trace_ids)
        while todo:
            for sender in edges.get(todo.pop(), set()) - seen:
                seen.add(sender)
                todo.append(sender)
        return seen

    def linked(self, trace_id: str) -> set[str]:
        """Every trace reachable from `trace_id` through links, either way (the trace itself included)."""
        with self._lock:
            edges = {k: set(v) for k, v in self.links.items()}
        seen, todo = {trace_id}, [trace_id]
        while todo:
            t = todo.pop()
            near = edges.get(t, set()) | {k for k, v in edges.items() if t in v}
            todo.extend(near - seen)
            seen |= near
        return seen


class InvocationTrace:
    """The Lambda service's side of one traced invocation: its header, and its function segment when it ends."""

    def __init__(self, function: str, event: Any) -> None:
        self.function = function
        self.start = time.time()
        self.trace_id = new_trace_id(self.start)
        self.segment_id = new_segment_id()
        self.header = f"Root={self.trace_id};Parent={self.segment_id};Sampled=1"
        records = event.get("Records", []) if isinstance(event, dict) else []
        roots = [parse_header((r.get("attributes") or {}).get("AWSTraceHeader")).get("Root") for r in records]
        self.senders = list(dict.fromkeys(r for r in roots if r))

    def finish(self, daemon: XRayDaemon, request_id: str, *, error: bool) -> None:
        doc = {
            "name": self.function,
            "id": self.segment_id,
            "trace_id": self.trace_id,
            "start_time": self.start,
            "end_time": time.time(),
            "origin": "AWS::Lambda::Function",
            "aws": {"request_id": request_id},
            "fault": error,
        }
        daemon.put(self.trace_id, doc)
        if self.senders:
            daemon.link(self.trace_id, self.senders)


_local = threading.local()


def current_header() -> str | None:
    return getattr(_local, "header", None)


def set_header(header: str | None) -> None:
    """The calling invocation thread's trace header (Lambda's `_X_AMZN_TRACE_ID` for that invocation)."""
    _local.header = header


def configure_sdk(daemon_address: str) -> None:
    """Point the X-Ray SDK's one recorder at the stand-in, with its Lambda context reading the per-thread header."""
    from aws_xray_sdk.core import lambda_launcher, xray_recorder

    class ThreadLambdaContext(lambda_launcher.LambdaContext):
        def put_subsegment(self, subsegment: Any) -> None:
            # Outside an invocation (Lambda's init phase; here also the stack's own threads) nothing is recorded.
            if current_header() is None:
                return
            current = self.get_trace_entity()
            if not self._is_subsegment(current) and (
                getattr(current, "initializing", None) or type(current).__name__ == "DummySegment"
            ):
                return
            current.add_subsegment(subsegment)
            self._local.entities.append(subsegment)

        def _refresh_context(self) -> None:
            from aws_xray_sdk.core.models.trace_header import TraceHeader

            header = TraceHeader.from_header_str(current_header())
            segment = getattr(self._local, "segment", None)
            if segment and (not header.root or header.root == segment.trace_id):
                return
            self._initialize_context(header)

    os.environ["AWS_XRAY_DAEMON_ADDRESS"] = daemon_address
    xray_recorder.configure(
        context=ThreadLambdaContext(), daemon_address=daemon_address, sampling=False, streaming_threshold=0
    )
