"""Structured findings: what an agent reports through the report_findings tool, validated before we trust it.

The model's report is untrusted input like everything else it produces, so it is checked field by field and
the errors are phrased for the model: an invalid report gets one corrective turn with these messages.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from prfleet.repository.untrusted import path_problem

SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low", "info")
# How a finding relates to the PR: on its changed lines; elsewhere but caused by the change (a caller it breaks);
# an old problem the change only touches. `relation_of` decides it, the model only proposes.
RELATIONS: tuple[str, ...] = ("changed", "affected", "preexisting")
DEFAULT_RELATION = "changed"  # what a finding stored before relations existed is read as
MAX_FINDINGS = 50
MAX_TITLE = 200
MAX_BODY = 4000
MAX_SUGGESTION = 4000
_CATEGORY_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")

# The JSON schema of report_findings' input (also given to the model as the tool's input_schema).
REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "findings": {
            "type": "array",
            "maxItems": MAX_FINDINGS,
            "items": {
                "type": "object",
                "properties": {
                    "path": {
                        "type": "string",
                        "description": "Repository-relative path of the file the finding is in: the file under "
                        "review, or another file of the repository when the change breaks it (e.g. a caller).",
                    },
                    "line": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Line number in that file at the head SHA (for the file under review: "
                        "on the NEW side of the diff).",
                    },
                    "severity": {"type": "string", "enum": list(SEVERITIES)},
                    "category": {
                        "type": "string",
                        "description": "Kebab-case, e.g. bug, security, error-handling, tests, docs, "
                        "prompt-injection.",
                    },
                    "title": {"type": "string", "maxLength": MAX_TITLE},
                    "body": {"type": "string", "maxLength": MAX_BODY},
                    "suggestion": {
                        "type": "string",
                        "maxLength": MAX_SUGGESTION,
                        "description": "Optional replacement for the line, shown as a GitHub suggestion.",
                    },
                    "relation": {
                        "type": "string",
                        "enum": list(RELATIONS),
                        "description": "How the finding relates to the PR: changed (on a line the PR adds or "
                        "changes), affected (elsewhere, but caused by the change: a caller it breaks, text in "
                        "the PR description), preexisting (an old problem the PR does not cause). Checked "
                        "against the diff: a finding on an added line is always changed.",
                    },
                },
                "required": ["path", "line", "severity", "category", "title", "body"],
                "additionalProperties": False,
            },
        },
        "summary": {"type": "string", "maxLength": 2000, "description": "One paragraph about the file."},
    },
    "required": ["findings"],
    "additionalProperties": False,
}


class InvalidReport(ValueError):
    """A report_findings payload that does not match the schema; `errors` lists each problem for the model."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Finding:
    """One review comment anchored to a line on the new side of the diff."""

    path: str
    line: int
    severity: str
    category: str
    title: str
    body: str
    suggestion: str | None = None
    agent: str = ""
    relation: str = DEFAULT_RELATION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the results cache and the run record)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        """Inverse of to_dict; unknown keys are ignored so older records still load."""
        return cls(
            path=str(data["path"]),
            line=int(data["line"]),
            severity=str(data["severity"]),
            category=str(data["category"]),
            title=str(data["title"]),
            body=str(data["body"]),
            suggestion=data.get("suggestion"),
            agent=str(data.get("agent", "")),
            relation=relation_in(data),
        )

    def fingerprint(self, code_line: str) -> str:
        """Stable identity of this finding across pushes: survives line shifts, not edits of the line."""
        return fingerprint(self.agent, self.path, self.title, code_line)


def relation_in(data: Mapping[str, Any]) -> str:
    """The relation a stored finding (dict) carries; a record from before relations existed, or an unknown value,
    reads as "changed" (posted as before), the contract every reader of run findings shares."""
    value = data.get("relation")
    return value if value in RELATIONS else DEFAULT_RELATION


def relation_of(
    *, path: str, line: int, reviewed: str, changed_lines: Collection[int], claimed: str | None
) -> str:
    """The relation of a finding at `path`:`line`, decided by the diff rather than trusted from the model.

    On the file under review (`reviewed`) at a line the diff adds or changes (`changed_lines`, new side): changed,
    whatever the model said. Anywhere else: affected when the model says so (a caller the change breaks), else
    preexisting, so a model that calls an untouched line "changed" is corrected."""
    if path == reviewed and line in changed_lines:
        return "changed"
    return "affected" if claimed == "affected" else "preexisting"


def normalise_code_line(line: str) -> str:
    """Whitespace-insensitive form of a code line, so re-indentation does not change a fingerprint."""
    return " ".join(line.split())


def fingerprint(agent: str, path: str, rule: str, code_line: str) -> str:
    """Hex digest of (agent, path, rule/title, normalised code line); line numbers are left out on purpose."""
    key = "\x1f".join([agent, path, " ".join(rule.lower().split()), normalise_code_line(code_line)])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _check_str(item: Mapping[str, Any], key: str, where: str, errors: list[str], *, limit: int) -> str | None:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        errors.append(f"{where}.{key} must be a non-empty string")
        return None
    if len(value) > limit:
        errors.append(f"{where}.{key} is {len(value)} characters; the limit is {limit}")
        return None
    return value


def validate_report(
    payload: object,
    *,
    agent: str,
    allowed_paths: Collection[str] | None = None,
    line_counts: Mapping[str, int] | None = None,
    reviewed: str | None = None,
    changed_lines: Collection[int] | None = None,
) -> tuple[list[Finding], str | None]:
    """Check a report_findings input and turn it into Findings (and the optional summary).

    A finding may be on any file of the repository (a caller the change breaks is reported where it is): its
    path must be inside the repository in normal form (no "..", not absolute, not .git). `allowed_paths`, when
    given, is the set of files known to exist at the head (others are refused); `line_counts` bounds line numbers
    for the paths whose line count is known. `reviewed` and `changed_lines` (the file under review and the
    new-side lines its diff adds), when given, set each finding's relation by relation_of; without them the
    model's relation stands (default "changed"). Raises InvalidReport listing every problem, so one corrective
    turn can fix them all.
    """
    if not isinstance(payload, Mapping):
        raise InvalidReport(["the input must be a JSON object with a 'findings' array"])
    errors: list[str] = []
    extra = sorted(set(payload) - {"findings", "summary"})
    if extra:
        errors.append(f"unexpected top-level field(s): {', '.join(extra)}")
    summary = payload.get("summary")
    if summary is not None and not isinstance(summary, str):
        errors.append("summary must be a string")
        summary = None
    items = payload.get("findings")
    if not isinstance(items, list):
        errors.append("findings must be an array (use [] when there is nothing to report)")
        raise InvalidReport(errors)
    if len(items) > MAX_FINDINGS:
        errors.append(
            f"findings has {len(items)} items; report at most {MAX_FINDINGS}, the most important first"
        )
    findings: list[Finding] = []
    allowed = set(allowed_paths) if allowed_paths is not None else None
    for i, item in enumerate(items[:MAX_FINDINGS]):
        finding = _check_finding(
            item, f"findings[{i}]", errors, agent=agent, allowed=allowed, line_counts=line_counts
        )
        if finding is not None and reviewed is not None:
            finding = replace(
                finding,
                relation=relation_of(
                    path=finding.path,
                    line=finding.line,
                    reviewed=reviewed,
                    changed_lines=changed_lines or (),
                    claimed=finding.relation,
                ),
            )
        if finding is not None:
            findings.append(finding)
    if errors:
        raise InvalidReport(errors)
    return findings, summary


_REQUIRED = ("path", "line", "severity", "category", "title", "body")
_OPTIONAL = ("suggestion", "relation")


def _check_finding(
    item: object,
    where: str,
    errors: list[str],
    *,
    agent: str,
    allowed: set[str] | None,
    line_counts: Mapping[str, int] | None,
) -> Finding | None:
    """One item of the report as a Finding, or None with its problems appended to `errors`."""
    if not isinstance(item, Mapping):
        errors.append(f"{where} must be an object")
        return None
    before = len(errors)
    missing = [k for k in _REQUIRED if k not in item]
    if missing:
        errors.append(f"{where} lacks required field(s): {', '.join(missing)}")
    unknown = sorted(set(item) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        errors.append(f"{where} has unknown field(s): {', '.join(unknown)}")
    path = _check_str(item, "path", where, errors, limit=1000) if "path" in item else None
    if path is not None:
        _check_path(path, where, errors, allowed)
    line = item.get("line")
    if "line" in item:
        _check_line(line, path, where, errors, line_counts)
    severity = item.get("severity")
    if "severity" in item and severity not in SEVERITIES:
        errors.append(f"{where}.severity {severity!r} must be one of: {', '.join(SEVERITIES)}")
    category = item.get("category")
    if "category" in item and (not isinstance(category, str) or not _CATEGORY_RE.match(category)):
        errors.append(f"{where}.category must be lower-case kebab-case like 'bug' or 'error-handling'")
    title = _check_str(item, "title", where, errors, limit=MAX_TITLE) if "title" in item else None
    body = _check_str(item, "body", where, errors, limit=MAX_BODY) if "body" in item else None
    suggestion = item.get("suggestion")
    if suggestion is not None and (not isinstance(suggestion, str) or len(suggestion) > MAX_SUGGESTION):
        errors.append(f"{where}.suggestion must be a string of at most {MAX_SUGGESTION} characters")
    relation = item.get("relation")
    if "relation" in item and relation not in RELATIONS:
        errors.append(f"{where}.relation {relation!r} must be one of: {', '.join(RELATIONS)}")
    if len(errors) > before or not (path and title and body):
        return None
    return Finding(
        path=path,
        line=int(line),  # type: ignore[arg-type]
        severity=str(severity),
        category=str(category),
        title=title.strip(),
        body=body.strip(),
        suggestion=suggestion,
        agent=agent,
        relation=str(relation) if relation in RELATIONS else DEFAULT_RELATION,
    )


def _check_path(path: str, where: str, errors: list[str], allowed: set[str] | None) -> None:
    problem = path_problem(path)
    if problem is not None:
        errors.append(f"{where}.path {path!r}: {problem}")
    elif path != posixpath.normpath(path):
        errors.append(f"{where}.path {path!r}: write it as {posixpath.normpath(path)!r}")
    elif allowed is not None and path not in allowed:
        known = f" (e.g. {', '.join(sorted(allowed)[:5])})" if allowed else ""
        errors.append(
            f"{where}.path {path!r} is not a file of the repository at the PR head{known}; "
            "report a finding on a file that exists, at its repository-relative path"
        )


def _check_line(
    line: object, path: str | None, where: str, errors: list[str], line_counts: Mapping[str, int] | None
) -> None:
    if isinstance(line, bool) or not isinstance(line, int) or line < 1:
        errors.append(f"{where}.line must be an integer >= 1 (a line on the new side of the diff)")
    elif path is not None and line_counts is not None and path in line_counts:
        if line > max(line_counts[path], 1):
            errors.append(f"{where}.line {line} is past the end of {path} ({line_counts[path]} lines)")
