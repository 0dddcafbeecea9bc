"""What the tests read back from a posted review: the commentable lines of a diff, the fingerprint markers of
posted findings, annotation batches; and a PR delivered and reviewed through a local sandbox. Test-only: prfleet itself never reads them back (the fan-in keeps its posted
fingerprints in the state table; the GitHub client batches annotations itself)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prfleet.pipeline import render
from prfleet.store import job_runs

_FP_RE = re.compile(r"<!--\s*prfleet:fp=([0-9a-fA-F]+)\s*-->")  # render.fp_marker's format
MAX_ANNOTATIONS_PER_REQUEST = 50  # https://docs.github.com/en/rest/checks/runs#update-a-check-run


def diff_lines(patch: str | None) -> set[int]:
    """The set of RIGHT-side line numbers an inline comment may use."""
    return set(render.diff_line_map(patch))


def posted_fingerprints(items: Iterable[Any]) -> set[str]:
    """Fingerprints found in review comments, reviews or plain bodies (dicts with `body`, or strings)."""
    found: set[str] = set()
    for item in items:
        body = (
            item
            if isinstance(item, str)
            else (item.get("body") if isinstance(item, Mapping) else getattr(item, "body", None))
        )
        if body:
            found.update(m.lower() for m in _FP_RE.findall(str(body)))
    return found


def batches(items: Sequence[Any], size: int = MAX_ANNOTATIONS_PER_REQUEST) -> list[list[Any]]:
    """Split into lists of at most `size` (annotations go 50 per request)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def review_opened(
    box: Any, repo: str, number: int, *, delivery: str, timeout: float = 300
) -> tuple[str, list]:
    """Deliver the PR's `opened` event to the sandbox's webhook and wait for its review: the head sha and the
    head's runs, every one of which succeeded."""
    payload = box.github.webhook_payload("opened", number)
    status, reply = box.deliver("pull_request", payload, delivery=delivery)
    assert status == 202, reply
    head = payload["pull_request"]["head"]["sha"]
    assert box.wait_for_review(number, head_sha=head, timeout=timeout)
    runs = job_runs.runs_of_head(repo, number, head)
    assert runs and all(r["status"] == "succeeded" for r in runs), [
        (r["path"], r["agent"], r["status"], r.get("error")) for r in runs if r["status"] != "succeeded"
    ]
    return head, runs
