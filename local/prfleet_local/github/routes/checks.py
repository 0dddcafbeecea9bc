"""Check runs: create, update (status history and annotations kept for assertions), get, and list for a ref.

- `checks/create`, `checks/update`: `output` requires `title` and `summary`; `summary` and `text` at most 65,535
  characters; at most 50 annotations per request, later requests append; an annotation's `message` and
  `raw_details` at most 64 KB, its `title` at most 255 characters, columns only on one line; `conclusion`
  required with `status: completed`, and never `stale` (only GitHub sets it):
  https://docs.github.com/en/rest/checks/runs
- `checks/list-for-ref`: `filter` is `latest` unless `all` is asked for (only the newest run of each name),
  `check_name` and `status` filter: https://docs.github.com/en/rest/checks/runs#list-check-runs-for-a-git-reference
"""

from __future__ import annotations

import re
import time
from typing import Any

from prfleet_local.github.routes.common import REPO, Answer, Call, HttpError, Route, iso, paginate
from prfleet_local.github.state import run_json

MAX_ANNOTATIONS = 50
MAX_CHECK_TEXT = 65_535
MAX_ANNOTATION_BYTES = 64 * 1024
MAX_ANNOTATION_TITLE = 255


def _check_output(run: dict[str, Any], output: dict[str, Any] | None) -> None:
    """Validate a check run's `output` and apply it (annotations append)."""
    if output is None:
        return
    # checks/create, checks/update: output requires title and summary; summary and text maxLength 65535.
    missing = [k for k in ("title", "summary") if not isinstance(output.get(k), str)]
    if missing:
        raise HttpError(422, "Invalid request.", [f"output is missing required key(s): {', '.join(missing)}"])
    for key in ("summary", "text"):
        if len(output.get(key) or "") > MAX_CHECK_TEXT:
            raise HttpError(
                422, "Invalid request.", [f"output.{key} is longer than {MAX_CHECK_TEXT} characters"]
            )
    annotations = output.get("annotations") or []
    if len(annotations) > MAX_ANNOTATIONS:
        raise HttpError(
            422, "Unprocessable Entity", [f"Only {MAX_ANNOTATIONS} annotations are allowed per request"]
        )
    for a in annotations:
        missing = [k for k in ("path", "start_line", "end_line", "annotation_level", "message") if k not in a]
        if missing or a.get("annotation_level") not in ("notice", "warning", "failure"):
            raise HttpError(422, "Unprocessable Entity", [f"invalid annotation {a!r}"])
        # The annotation object of checks/create and checks/update: `message` and `raw_details` "The maximum
        # size is 64 KB", `title` "The maximum size is 255 characters", line numbers start at 1, and
        # `start_column` / `end_column` only "on the same line" (start_line == end_line).
        problems = [
            f"annotation {k} is larger than 64 KB"
            for k in ("message", "raw_details")
            if len(str(a.get(k) or "").encode("utf-8")) > MAX_ANNOTATION_BYTES
        ]
        if len(str(a.get("title") or "")) > MAX_ANNOTATION_TITLE:
            problems.append(f"annotation title is longer than {MAX_ANNOTATION_TITLE} characters")
        lines = (a.get("start_line"), a.get("end_line"))
        if not all(isinstance(n, int) and n >= 1 for n in lines):
            problems.append("annotation start_line and end_line are line numbers starting at 1")
        elif ("start_column" in a or "end_column" in a) and lines[0] != lines[1]:
            problems.append("annotation columns are only supported when start_line equals end_line")
        if problems:
            raise HttpError(422, "Unprocessable Entity", problems)
    for key in ("title", "summary", "text"):
        if key in output:
            run["output"][key] = output[key]
    run["output"]["annotations"].extend(annotations)
    run["output"]["annotations_count"] = len(run["output"]["annotations"])
    if annotations:
        run["annotation_batches"].append(len(annotations))


def _apply_status(run: dict[str, Any], body: dict[str, Any]) -> None:
    """Validate and apply `status` / `conclusion`, recording the status history."""
    status = body.get("status")
    conclusion = body.get("conclusion")
    if conclusion is not None and status is None:
        status = "completed"
    if status is not None:
        if status not in ("queued", "in_progress", "completed"):
            raise HttpError(422, "Unprocessable Entity", [f"status {status!r} is not valid"])
        if status == "completed" and conclusion not in (
            "success",
            "failure",
            "neutral",
            "cancelled",
            "skipped",
            "timed_out",
            "action_required",
        ):
            raise HttpError(422, "Unprocessable Entity", ["conclusion is required when status is completed"])
        run["status"] = status
        run["conclusion"] = conclusion if status == "completed" else None
        if status == "completed":
            run["completed_at"] = iso(time.time())
        run["history"].append((status, run["conclusion"]))


def create_check_run(call: Call) -> Answer:
    """POST /repos/{o}/{r}/check-runs."""
    srv = call.srv
    if not call.body.get("name") or not call.body.get("head_sha"):
        raise HttpError(422, "Unprocessable Entity", ["name and head_sha are required"])
    if srv.repo.object_type(call.body["head_sha"]) != "commit":
        raise HttpError(422, "Unprocessable Entity", ["No commit found for SHA: " + call.body["head_sha"]])
    run = {
        "id": srv.next_id(),
        "name": call.body["name"],
        "head_sha": call.body["head_sha"],
        "external_id": call.body.get("external_id"),
        "details_url": call.body.get("details_url"),
        "status": "queued",
        "conclusion": None,
        "started_at": iso(time.time()),
        "completed_at": None,
        "output": {
            "title": None,
            "summary": None,
            "text": None,
            "annotations": [],
            "annotations_count": 0,
        },
        "history": [],
        "annotation_batches": [],
    }
    _check_output(run, call.body.get("output"))
    _apply_status(
        run, {"status": call.body.get("status") or "queued", "conclusion": call.body.get("conclusion")}
    )
    with srv.lock:
        srv.check_runs[run["id"]] = run
    return 201, run_json(run), {}


def update_check_run(call: Call) -> Answer:
    """PATCH /repos/{o}/{r}/check-runs/{id}: output and annotations append, status moves on."""
    srv = call.srv
    run = srv.check_runs.get(int(call.params["id"]))
    if run is None:
        raise HttpError(404, "Not Found")
    with srv.lock:
        _check_output(run, call.body.get("output"))
        _apply_status(run, call.body)
        for key in ("name", "details_url", "external_id"):
            if key in call.body:
                run[key] = call.body[key]
    return 200, run_json(run), {}


def get_check_run(call: Call) -> Answer:
    """GET /repos/{o}/{r}/check-runs/{id}."""
    run = call.srv.check_runs.get(int(call.params["id"]))
    if run is None:
        raise HttpError(404, "Not Found")
    return 200, run_json(run), {}


def list_check_runs(call: Call) -> Answer:
    """GET /repos/{o}/{r}/commits/{sha}/check-runs, paginated."""
    sha = call.srv.repo.resolve(call.params["sha"]) or call.params["sha"]
    # checks/list-for-ref: `check_name` and `status` filter; `filter` is `latest` (the default: only the most
    # recent run of each name) or `all`: https://docs.github.com/en/rest/checks/runs#list-check-runs-for-a-git-reference
    which = call.query.get("filter") or "latest"
    if which not in ("latest", "all"):
        raise HttpError(422, "Validation Failed", [f"filter {which!r} is not one of latest, all"])
    status = call.query.get("status")
    if status is not None and status not in ("queued", "in_progress", "completed"):
        raise HttpError(
            422, "Validation Failed", [f"status {status!r} is not one of queued, in_progress, completed"]
        )
    runs = sorted(call.srv.check_runs_for(sha), key=lambda r: r["id"], reverse=True)
    if "check_name" in call.query:
        runs = [r for r in runs if r["name"] == call.query["check_name"]]
    if which == "latest":
        newest: dict[str, dict[str, Any]] = {}
        for r in runs:
            newest.setdefault(r["name"], r)
        runs = list(newest.values())
    if status is not None:
        runs = [r for r in runs if r["status"] == status]
    out = [run_json(r) for r in runs]
    return paginate(call, out, wrap=lambda chunk: {"total_count": len(out), "check_runs": chunk})


ROUTES = [
    Route("POST", re.compile(REPO + r"/check-runs$"), create_check_run),
    Route("PATCH", re.compile(REPO + r"/check-runs/(?P<id>\d+)$"), update_check_run),
    Route("GET", re.compile(REPO + r"/check-runs/(?P<id>\d+)$"), get_check_run),
    Route("GET", re.compile(REPO + r"/commits/(?P<sha>[^/]+)/check-runs$"), list_check_runs),
]
