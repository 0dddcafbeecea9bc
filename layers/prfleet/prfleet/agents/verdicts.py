"""The verify run's verdicts: the report_verdicts schema, its validation, and what the verdicts do to a head's
candidate findings (keep, drop, merge), all pure.

The verdicts are untrusted model output like a report_findings payload: checked field by field, with errors
phrased for the model (an invalid report gets one corrective turn). Verdicts name candidates by the ids the verify
run gave them (c1, c2, ...); the run stores them by the candidates' fingerprints (`by_fingerprint`), so the posting
applies them to the head's findings (`judge`) without trusting any order, and a cached verdict set fits the same
candidates whatever order they come in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prfleet.agents.findings import SEVERITIES

DECISIONS: tuple[str, ...] = ("keep", "drop")
MAX_CANDIDATES = 100  # candidates one verify run weighs (the most severe first); the rest post unverified
MAX_REASON = 300  # characters: a one-line reason a reviewer can check

VERDICTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "verdicts": {
            "type": "array",
            "maxItems": MAX_CANDIDATES,
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "description": "The candidate's id as given (c1, c2, ...)."},
                    "decision": {"type": "string", "enum": list(DECISIONS)},
                    "reason": {
                        "type": "string",
                        "maxLength": MAX_REASON,
                        "description": "One line a reviewer can check: what in the code confirms or refutes it.",
                    },
                    "severity": {
                        "type": "string",
                        "enum": list(SEVERITIES),
                        "description": "The final severity of a kept candidate (default: as reported).",
                    },
                    "confidence": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": 1,
                        "description": "How sure you are that a kept candidate is real (0 to 1).",
                    },
                    "merges": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Ids of other candidates that report the same problem; this kept one "
                        "absorbs them (they get no verdict of their own).",
                    },
                },
                "required": ["id", "decision", "reason"],
                "additionalProperties": False,
            },
        },
        "summary": {
            "type": "string",
            "maxLength": 2000,
            "description": "One paragraph about the candidates.",
        },
    },
    "required": ["verdicts"],
    "additionalProperties": False,
}

REPORT_VERDICTS_TOOL: dict[str, Any] = {
    "name": "report_verdicts",
    "description": "Report your verdicts on the candidates (call once): one per candidate that no other kept "
    "candidate merges, each keep or drop with a one-line reason.",
    "input_schema": VERDICTS_SCHEMA,
}


class InvalidVerdicts(ValueError):
    """A report_verdicts payload that does not fit the candidates; `errors` lists each problem for the model."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Verdict:
    """One decision on one candidate (by the id the run gave it)."""

    id: str
    decision: str
    reason: str
    severity: str | None = None
    confidence: float | None = None
    merges: tuple[str, ...] = ()


_KEYS = {"id", "decision", "reason", "severity", "confidence", "merges"}


def parse_verdicts(
    payload: object, ids: Sequence[str], *, require_all: bool = True
) -> tuple[list[Verdict], str | None]:
    """Check a report_verdicts input against the candidates' ids; InvalidVerdicts lists every problem.

    Refused: an unknown or repeated id, a decision other than keep/drop, a missing or empty reason, a severity or
    confidence out of range, a merge of an unknown id, of itself, of a candidate merged twice or judged on its own,
    or merges on a dropped candidate. `require_all`: every candidate is judged or merged (the first report); the
    corrective turn's report may leave some out, and those are posted unverified (`judge`).
    """
    if not isinstance(payload, Mapping):
        raise InvalidVerdicts(["the input must be a JSON object with a 'verdicts' array"])
    errors: list[str] = []
    extra = sorted(set(payload) - {"verdicts", "summary"})
    if extra:
        errors.append(f"unexpected top-level field(s): {', '.join(extra)}")
    summary = payload.get("summary")
    if summary is not None and not isinstance(summary, str):
        errors.append("summary must be a string")
        summary = None
    items = payload.get("verdicts")
    if not isinstance(items, list):
        raise InvalidVerdicts([*errors, "verdicts must be an array of verdict objects"])
    known = set(ids)
    verdicts: list[Verdict] = []
    judged: dict[str, int] = {}
    for i, item in enumerate(items):
        verdict = _verdict(item, f"verdicts[{i}]", known, errors)
        if verdict is None:
            continue
        if verdict.id in judged:
            errors.append(
                f"verdicts[{i}]: {verdict.id} already has a verdict (verdicts[{judged[verdict.id]}])"
            )
            continue
        judged[verdict.id] = i
        verdicts.append(verdict)
    merged = _check_merges(verdicts, judged, known, errors)
    if require_all:
        missing = [c for c in ids if c not in judged and c not in merged]
        if missing:
            errors.append(
                f"no verdict for {', '.join(missing)}: judge every candidate, or merge it into a kept one"
            )
    if errors:
        raise InvalidVerdicts(errors)
    return verdicts, summary


def _verdict(item: object, where: str, known: set[str], errors: list[str]) -> Verdict | None:
    """One item as a Verdict, or None with its problems appended to `errors`."""
    if not isinstance(item, Mapping):
        errors.append(f"{where} must be an object")
        return None
    before = len(errors)
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        errors.append(f"{where} has unknown field(s): {', '.join(unknown)}")
    cid = item.get("id")
    if not isinstance(cid, str) or cid not in known:
        errors.append(f"{where}.id {cid!r} is not a candidate id (they are c1..c{len(known)})")
    decision = item.get("decision")
    if decision not in DECISIONS:
        errors.append(f"{where}.decision {decision!r} must be keep or drop")
    reason = item.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        errors.append(f"{where} has no reason: give every verdict a one-line reason")
    elif len(reason) > MAX_REASON:
        errors.append(f"{where}.reason is {len(reason)} characters; the limit is {MAX_REASON}")
    severity = item.get("severity")
    if severity is not None and severity not in SEVERITIES:
        errors.append(f"{where}.severity {severity!r} must be one of: {', '.join(SEVERITIES)}")
    confidence = item.get("confidence")
    if confidence is not None and (
        isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1
    ):
        errors.append(f"{where}.confidence must be a number from 0 to 1")
    merges = item.get("merges", [])
    if not isinstance(merges, list) or not all(isinstance(m, str) for m in merges):
        errors.append(f"{where}.merges must be an array of candidate ids")
        merges = []
    if len(errors) > before:
        return None
    return Verdict(
        id=str(cid),
        decision=str(decision),
        reason=" ".join(str(reason).split()),
        severity=severity,
        confidence=float(confidence) if confidence is not None else None,
        merges=tuple(dict.fromkeys(merges)),
    )


def _check_merges(
    verdicts: list[Verdict], judged: Mapping[str, int], known: set[str], errors: list[str]
) -> set[str]:
    """The ids merged into kept candidates; a merge that cannot stand is an error."""
    merged: dict[str, str] = {}
    for v in verdicts:
        for m in v.merges:
            if m not in known:
                errors.append(f"{v.id} merges {m!r}, which is not a candidate id")
            elif v.decision != "keep":
                errors.append(f"{v.id} is dropped and cannot merge {m}: only a kept candidate absorbs others")
            elif m == v.id:
                errors.append(f"{v.id} merges itself")
            elif m in merged:
                errors.append(f"{m} is merged into both {merged[m]} and {v.id}")
            elif m in judged:
                errors.append(f"{m} is merged into {v.id} and also has a verdict of its own: give it none")
            else:
                merged[m] = v.id
    return set(merged)


@dataclass(frozen=True)
class StoredVerdict:
    """A verdict as the verify run stores it: by the candidate's fingerprint (and those it merges)."""

    fingerprint: str
    decision: str
    reason: str
    severity: str | None = None
    confidence: float | None = None
    merges: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the run record's `verdicts`, the result cache)."""
        return {
            "fingerprint": self.fingerprint,
            "decision": self.decision,
            "reason": self.reason,
            "severity": self.severity,
            "confidence": self.confidence,
            "merges": list(self.merges),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoredVerdict:
        """Inverse of to_dict."""
        return cls(
            fingerprint=str(data["fingerprint"]).lower(),
            decision=str(data["decision"]),
            reason=str(data.get("reason") or ""),
            severity=data.get("severity"),
            confidence=data.get("confidence"),
            merges=tuple(str(m).lower() for m in data.get("merges") or ()),
        )


def by_fingerprint(verdicts: Iterable[Verdict], fingerprints: Mapping[str, str]) -> list[StoredVerdict]:
    """The verdicts keyed by the fingerprints of the candidates their ids name (`fingerprints`: id -> fp)."""
    return [
        StoredVerdict(
            fingerprint=fingerprints[v.id],
            decision=v.decision,
            reason=v.reason,
            severity=v.severity,
            confidence=v.confidence,
            merges=tuple(fingerprints[m] for m in v.merges),
        )
        for v in verdicts
    ]


def fingerprint_in(finding: Mapping[str, Any]) -> str:
    """A stored finding's fingerprint (the runner sets one on every finding), lower-case."""
    return str(finding.get("fingerprint") or "").lower()


@dataclass
class Judged:
    """What the verdicts make of a head's candidates.

    kept: the findings to post, each a copy with its final severity, the verifier's `confidence`, `verified`
        True, `verify_reason`, and `found_by` (every agent whose candidate it absorbed, its own first);
    dropped: (finding, reason) for each dropped candidate;
    merged: (finding, the fingerprint of the kept finding that absorbed it);
    unjudged: candidates no verdict covers (over MAX_CANDIDATES, or left out of a corrective report), posted
        as they were, labelled unverified."""

    kept: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    merged: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    unjudged: list[dict[str, Any]] = field(default_factory=list)


def judge(findings: Iterable[Mapping[str, Any]], verdicts: Iterable[StoredVerdict]) -> Judged:
    """Apply fingerprint-keyed verdicts to the candidate findings (pure). A merge naming a candidate that is not
    among `findings` is ignored; a candidate both merged and judged keeps its own verdict (parse_verdicts refuses
    that, a stored set from elsewhere might not)."""
    by_fp: dict[str, dict[str, Any]] = {}
    for f in findings:
        by_fp.setdefault(fingerprint_in(f), dict(f))
    decided = {v.fingerprint: v for v in verdicts if v.fingerprint in by_fp}
    absorbed: dict[str, str] = {}
    for v in decided.values():
        if v.decision == "keep":
            for m in v.merges:
                if m in by_fp and m not in decided and m not in absorbed:
                    absorbed[m] = v.fingerprint
    out = Judged()
    for fp, f in by_fp.items():
        v = decided.get(fp)
        if v is None and fp in absorbed:
            out.merged.append((f, absorbed[fp]))
        elif v is None:
            out.unjudged.append(f)
        elif v.decision == "drop":
            out.dropped.append((f, v.reason))
        else:
            agents = [str(f.get("agent") or "")]
            agents += [str(by_fp[m].get("agent") or "") for m, into in absorbed.items() if into == fp]
            kept = dict(
                f, verified=True, verify_reason=v.reason, found_by=list(dict.fromkeys(a for a in agents if a))
            )
            if v.severity in SEVERITIES:
                kept["severity"] = v.severity
            if v.confidence is not None:
                kept["confidence"] = v.confidence
            out.kept.append(kept)
    return out
