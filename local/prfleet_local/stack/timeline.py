"""One PR head's path as a timeline, from the X-Ray segments the local stack recorded: the webhook, the planner,
each agent job with its model calls, the waits in the queues, the budget deferrals and fan-in, on one time axis,
with the cost of each bar. `prfleet trace PR --local` prints it (`text`); the review page draws it (`svg`).

A PR head's traces are found as X-Ray finds them: by the annotations repository, pr and head_sha on the planner's
and the agent jobs' subsegments, then through the links to the traces that sent their messages (the webhook's).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

FUNCTION = "AWS::Lambda::Function"
KINDS = ("function", "queue", "job", "model", "github", "deferred", "fan_in")
COLOURS = {
    "function": "#8c959f",
    "queue": "#d0d7de",
    "job": "#0969da",
    "model": "#8250df",
    "github": "#1a7f37",
    "deferred": "#bf8700",
    "fan_in": "#cf222e",
}


@dataclass
class Bar:
    label: str
    kind: str
    start: float
    end: float
    cost_micros: int = 0
    depth: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


def _ann(doc: dict[str, Any]) -> dict[str, Any]:
    return doc.get("annotations") or {}


def _meta(doc: dict[str, Any]) -> dict[str, Any]:
    return (doc.get("metadata") or {}).get("prfleet", {})


def head_traces(store: Any, repo: str, pr: int, head_sha: str) -> set[str]:
    """The traces whose subsegments are annotated with this PR head, and the traces they link back to."""
    own = {
        trace_id
        for trace_id, docs in store.traces().items()
        for d in docs
        if _ann(d).get("repository") == repo
        and _ann(d).get("pr") == pr
        and _ann(d).get("head_sha") == head_sha
    }
    return store.upstream(own)


def _function_label(name: str) -> str:
    short = name.rsplit("-", 1)[-1].removesuffix("Function").lower()
    return short or name


def _within(doc: dict[str, Any], outer: dict[str, Any]) -> bool:
    return outer["start_time"] <= doc["start_time"] and doc["end_time"] <= outer["end_time"]


def _model_bar(m: dict[str, Any]) -> Bar:
    meta = _meta(m)
    tokens = meta.get("tokens") or {}
    return Bar(
        f"model {meta.get('model', _ann(m).get('model', '?'))}",
        "model",
        m["start_time"],
        m["end_time"],
        int(meta.get("cost_micros") or 0),
        depth=2,
        detail={"tokens": sum(int(v) for v in tokens.values()), "request_id": meta.get("request_id")},
    )


def _job_bars(job: dict[str, Any], inner: list[dict[str, Any]]) -> list[Bar]:
    """One SQS record's work: its wait in the queue, the job, then its model calls, deferrals and fan-in."""
    meta, ann = _meta(job), _ann(job)
    bars: list[Bar] = []
    sent = meta.get("sent_at")
    if sent is not None and sent < job["start_time"]:
        bars.append(Bar("queue wait", "queue", sent, job["start_time"], depth=1))
    label = f"{ann['agent']} {meta.get('path', '')}".strip() if "agent" in ann else "plan"
    models = [_model_bar(d) for d in inner if d.get("name") == "model_call"]
    bars.append(
        Bar(label, "job", job["start_time"], job["end_time"], sum(b.cost_micros for b in models), 1, meta)
    )
    steps = models + [
        Bar(d["name"].replace("_", "-"), d["name"], d["start_time"], d["end_time"], depth=2)
        for d in inner
        if d.get("name") in ("fan_in", "deferred")
    ]
    return bars + sorted(steps, key=lambda b: b.start)


def _trace_bars(docs: list[dict[str, Any]]) -> list[Bar]:
    """One invocation's trace: its function segment, then each record's job (prfleet_local's own order)."""
    segment = next((d for d in docs if d.get("origin") == FUNCTION), None)
    jobs = sorted((d for d in docs if d.get("name") in ("## job", "## plan")), key=lambda d: d["start_time"])
    steps = [d for d in docs if d.get("name") in ("model_call", "fan_in", "deferred")]
    bars: list[Bar] = []
    for job in jobs:
        bars.extend(_job_bars(job, [d for d in steps if _within(d, job)]))
    if segment is not None:
        cost = sum(b.cost_micros for b in bars if b.kind == "model")
        bars.insert(
            0,
            Bar(
                _function_label(segment["name"]), "function", segment["start_time"], segment["end_time"], cost
            ),
        )
    return bars


def timeline(store: Any, repo: str, pr: int, head_sha: str) -> list[Bar]:
    """Every bar of the PR head's path, by start time (empty when nothing of it was traced)."""
    groups = [_trace_bars(store.segments(t)) for t in head_traces(store, repo, pr, head_sha)]
    return [b for g in sorted((g for g in groups if g), key=lambda g: g[0].start) for b in g]


def _usd(micros: int) -> str:
    return f"${micros / 1e6:.4f}" if micros else ""


def text(bars: list[Bar], width: int = 40) -> str:
    """The timeline as text: offset, duration, a bar on the common axis, what it is and what it cost."""
    if not bars:
        return "no traced segments for this PR head\n"
    t0 = min(b.start for b in bars)
    span = max(b.end for b in bars) - t0 or 1.0
    lines = []
    for b in bars:
        left = int((b.start - t0) / span * width)
        size = max(1, int((b.end - b.start) / span * width))
        axis = " " * left + ("#" if b.kind != "queue" else ".") * min(size, width - left)
        label = "  " * b.depth + b.label
        lines.append(
            f"{b.start - t0:7.2f}s {b.end - b.start:6.2f}s |{axis:<{width}}| {label:<44} {_usd(b.cost_micros)}"
        )
    total = sum(b.cost_micros for b in bars if b.kind == "model")
    lines.append(f"total {span:.2f}s, model calls {sum(b.kind == 'model' for b in bars)}, cost {_usd(total)}")
    return "\n".join(lines) + "\n"


def svg(bars: list[Bar], width: int = 860) -> str:
    """The timeline as an SVG picture: one row per bar on one time axis, coloured by kind, cost at the right."""
    if not bars:
        return '<p class="timeline-empty">no traced segments for this PR head</p>'
    t0 = min(b.start for b in bars)
    span = max(b.end for b in bars) - t0 or 1.0
    label_w, cost_w, row = 220, 80, 18
    plot = width - label_w - cost_w
    rows = []
    for i, b in enumerate(bars):
        x = label_w + (b.start - t0) / span * plot
        w = max(2.0, (b.end - b.start) / span * plot)
        y = 20 + i * row
        title = html.escape(f"{b.label}: {b.end - b.start:.2f}s {_usd(b.cost_micros)}")
        rows.append(
            f'<g class="bar {b.kind}"><title>{title}</title>'
            f'<text x="{4 + 10 * b.depth}" y="{y + 12}">{html.escape(b.label[:40])}</text>'
            f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{row - 5}" fill="{COLOURS[b.kind]}"/>'
            f'<text class="cost" x="{width - 4}" y="{y + 12}" text-anchor="end">{_usd(b.cost_micros)}</text></g>'
        )
    height = 30 + len(bars) * row
    axis = f'<text x="{label_w}" y="12">0 s</text><text x="{label_w + plot}" y="12" text-anchor="end">{span:.2f} s</text>'
    return (
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">{axis}{"".join(rows)}</svg>'
    )
