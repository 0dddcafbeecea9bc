"""Which findings found which golden issues: one to one, the same pairs for the same input.

A finding can match a golden issue with a path when it names the same file and its line range ([line, end_line],
or just line) comes within WINDOW lines of the golden range [line, end_line] (distance 0 when they overlap); its
candidates are tried nearest first (ties: the earlier finding in report order). A golden issue without a path
can match only the findings the LLM judge named for it (judge.py), in the judge's order (best first); with no
judgement (no judge, or a malformed answer) it has no candidate and counts as missed.

Assignment rule: a maximum matching over all golden issues of both kinds together (the most golden issues
found), each golden issue matched at most once and each finding counted once. It is built with augmenting paths
(Kuhn's algorithm), taking the golden issues in corpus order, each trying its candidates in the order above, so
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
    """Lines between the finding and the golden range (0 = overlapping), None when it names another file or the
    golden issue names none."""
    if golden.path is None or golden.line is None or golden.end_line is None:
        return None
    if _norm(str(finding.get("path", ""))) != _norm(golden.path):
        return None
    start = int(finding["line"])
    end = max(start, int(finding.get("end_line") or start))
    if end < golden.line:
        return golden.line - end
    if start > golden.end_line:
        return start - golden.end_line
    return 0


def candidates(
    golden: Sequence[Golden],
    findings: Sequence[Mapping[str, Any]],
    judged: Mapping[int, Sequence[int]] | None = None,
    window: int = WINDOW,
) -> list[list[int]]:
    """Per golden issue, the findings that may match it, in the order they are tried (module docstring)."""
    out: list[list[int]] = []
    for i, g in enumerate(golden):
        if g.judged:
            named = (judged or {}).get(i, ())
            out.append([j for j in dict.fromkeys(named) if 0 <= j < len(findings)])
            continue
        near = [(d, j) for j, f in enumerate(findings) if (d := distance(g, f)) is not None and d <= window]
        out.append([j for _, j in sorted(near)])
    return out


def assign(options: Sequence[Sequence[int]]) -> Match:
    """The maximum one-to-one assignment of golden issues (rows, in order) to findings (each row's candidates,
    tried in order) by augmenting paths."""
    owner: dict[int, int] = {}  # finding index -> golden index

    def augment(i: int, seen: set[int]) -> bool:
        for j in options[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in range(len(options)):
        augment(i, set())
    return Match(sorted((i, j) for j, i in owner.items()))


def match(
    golden: Sequence[Golden],
    findings: Sequence[Mapping[str, Any]],
    window: int = WINDOW,
    judged: Mapping[int, Sequence[int]] | None = None,
) -> Match:
    """The one-to-one assignment of findings to golden issues described in the module docstring; `judged` maps
    the index of a golden issue without a path to the finding indices the judge named for it."""
    return assign(candidates(golden, findings, judged, window))
