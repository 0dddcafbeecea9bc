"""What "findings like this" means (issue 25): the rule a dismissed finding teaches, and which findings of a later
review a repository's rules suppress. Pure: the rules come from prfleet.store.feedback, the findings from the runs.

A rule is (agent, category, normalised title, path glob). The title is normalised so that the same kind of finding
on another symbol or number still matches (`No test for \\`parse\\`` and `No test for \\`load\\`` are one rule);
the glob is the finding's directory and extension (`shop/*.py`), so the rule covers the file and its siblings,
not the whole repository.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from prfleet.config.repo_config import path_matches

_QUOTED = re.compile(r"`[^`]*`|'[^'\s]*'|\"[^\"\s]*\"")
_NUMBER = re.compile(r"\b\d+(\.\d+)?\b")
MAX_TITLE_CHARS = 300


class Rule(Protocol):
    agent: str
    category: str
    title: str
    path_glob: str


def normalise_title(title: str) -> str:
    """A finding's title as a rule keeps it: lowercase, quoted names and numbers replaced, spaces collapsed."""
    text = _QUOTED.sub("`*`", str(title or ""))
    text = _NUMBER.sub("#", text)
    return " ".join(text.lower().split())[:MAX_TITLE_CHARS]


def path_glob_for(path: str) -> str:
    """The files a rule covers: the finding's directory and extension (`shop/*.py`; `*.py` at the root; the exact
    name for a file without an extension)."""
    directory, name = posixpath.split(str(path or ""))
    ext = posixpath.splitext(name)[1]
    pattern = f"*{ext}" if ext else name or "*"
    return f"{directory}/{pattern}" if directory else pattern


def _get(f: Any, key: str) -> Any:
    return f.get(key) if isinstance(f, Mapping) else getattr(f, key, None)


def matches(finding: Any, rule: Rule) -> bool:
    """Whether a finding is one the rule suppresses: same agent and category, same normalised title, a path the
    glob covers (directory-exact: `shop/*.py` does not cover `shop/sub/x.py`)."""
    path = str(_get(finding, "path") or "")
    if str(_get(finding, "agent") or "") != rule.agent:
        return False
    if str(_get(finding, "category") or "").lower() != rule.category.lower():
        return False
    if normalise_title(str(_get(finding, "title") or "")) != rule.title:
        return False
    if posixpath.dirname(path) != posixpath.dirname(rule.path_glob):
        return False
    return path_matches(path, [rule.path_glob])


def suppressed(findings: Iterable[Any], rules: Sequence[Rule]) -> tuple[list[Any], list[Any]]:
    """(kept, suppressed): the findings no rule matches, and those one does (counted on the review, never
    posted)."""
    kept, dropped = [], []
    for f in findings:
        (dropped if any(matches(f, r) for r in rules) else kept).append(f)
    return kept, dropped


def suppressed_note(count: int) -> str:
    """The sentence the review and the check say about suppressed findings; empty when there are none."""
    if not count:
        return ""
    return (
        f" {count} suppressed by the team: findings like ones dismissed with `/prfleet ignore` or a resolved "
        "thread (`prfleet feedback list` shows the rules)."
    )
