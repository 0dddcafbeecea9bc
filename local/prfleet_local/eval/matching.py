"""Which findings found which golden issues: deterministic, one to one.

A finding can match a golden issue when it names the same file and its line range ([line, end_line], or just
line) comes within WINDOW lines of the golden range [line, end_line] (distance 0 when they overlap).

Assignment rule: a maximum matching (the most golden issues found), each golden issue matched at most once and
each finding counted once. It is built with augmenting paths (Kuhn's algorithm), taking the golden issues in
corpus order, each trying its candidate findings nearest first (ties: the earlier finding in report order), so
the same input always gives the same pairs. A second finding on an already matched issue (a duplicate, e.g. from
another agent) is a false positive: duplicates are noise a reader pays for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prfleet_local.eval.corpus import Golden

WINDOW = 5


@dataclass(frozen=True)
class Match:
    """pairs: (golden index, finding index) for every true positive, in golden order."""

    pairs: list[tuple[int, int]]

    @property
    def true_positives(self) -> int:
        return len(self.pairs)

    def matched_findings(self) -> set[int]:
        return {f for _, f in self.pairs}


def _norm(path: str) -> str:
    return path.removeprefix("./")


def distance(golden: Golden, finding: Mapping[str, Any]) -> int | None:
    """Lines between the finding and the golden range (0 = overlapping), None when it names another file."""
    if _norm(str(finding.get("path", ""))) != _norm(golden.path):
        return None
    start = int(finding["line"])
    end = max(start, int(finding.get("end_line") or start))
    if end < golden.line:
        return golden.line - end
    if start > golden.end_line:
        return start - golden.end_line
    return 0


def match(golden: Sequence[Golden], findings: Sequence[Mapping[str, Any]], window: int = WINDOW) -> Match:
    """The one-to-one assignment of findings to golden issues described in the module docstring."""
    candidates: list[list[int]] = []
    for g in golden:
        near = [(d, j) for j, f in enumerate(findings) if (d := distance(g, f)) is not None and d <= window]
        candidates.append([j for _, j in sorted(near)])
    owner: dict[int, int] = {}  # finding index -> golden index

    def augment(i: int, seen: set[int]) -> bool:
        for j in candidates[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in range(len(golden)):
        augment(i, set())
    return Match(sorted((i, j) for j, i in owner.items()))
