"""The Martian code review benchmark's golden comments (https://github.com/withmartian/code-review-benchmark,
MIT licence, `offline/golden_comments/*.json`), read as `prfleet eval` cases.

Their format, as the repository's files and its offline/README.md ("Data format") have it: each file is a JSON
array of pull requests, each
`{"pr_title": str, "url": "https://github.com/OWNER/REPO/pull/N", "comments": [{"comment": str, "severity":
"Low" | "Medium" | "High" | "Critical", "category"?: str}], "original_url"?: str, "az_comment"?: str}`
(`category` is in the README's example, not in the shipped files; `original_url` names the upstream PR a fork's PR
copies; other keys are kept out of the way). A golden comment names no file or line: only the LLM judge can match
it (judge.py). Everything is checked before the first PR is fetched; a mistake is one line naming the file and the
entry.

`prfleet eval DIR` reads DIR/golden_comments/*.json (the benchmark's `offline/` folder) or DIR itself when it is
named golden_comments. Each PR is fetched read-only through the GitHub API (github_fetch.py) when its turn comes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prfleet_local.eval.corpus import CorpusError, Golden

GOLDEN_DIR = "golden_comments"
SEVERITIES = {"low": "low", "medium": "medium", "high": "high", "critical": "critical"}
_PULL_PATH = re.compile(r"^/(?P<owner>[A-Za-z0-9-]+)/(?P<repo>[A-Za-z0-9._-]+)/pull/(?P<n>[1-9]\d*)/?$")


@dataclass(frozen=True)
class MartianPr:
    """One benchmark PR: where it is on GitHub, its title, its golden comments (as golden issues without a
    path), the file it came from."""

    name: str
    url: str
    repo: str  # owner/name
    number: int
    title: str
    golden: list[Golden]
    source: str


def martian_dir(path: Path) -> Path | None:
    """The golden_comments folder of `path` (the folder itself, or its golden_comments/), None when it has none."""
    if path.name == GOLDEN_DIR and path.is_dir():
        return path
    if (path / GOLDEN_DIR).is_dir():
        return path / GOLDEN_DIR
    return None


def load_martian(folder: Path) -> list[MartianPr]:
    """Every PR of every golden_comments/*.json, in file then entry order, checked; names unique."""
    files = sorted(p for p in folder.glob("*.json") if p.is_file())
    if not files:
        raise CorpusError(f"{folder}: no *.json file (the Martian format: golden_comments/REPO.json)")
    prs: list[MartianPr] = []
    seen: dict[str, int] = {}
    for file in files:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorpusError(f"{file.name}: not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise CorpusError(f"{file.name}: must be a JSON array of pull requests")
        for i, entry in enumerate(data):
            pr = _pr(file.name, i, entry)
            count = seen.get(pr.name, 0)
            seen[pr.name] = count + 1
            if count:  # the same repository and number twice (another file, another fork): keep both apart
                pr = dataclasses.replace(pr, name=f"{pr.name}~{count + 1}")
            prs.append(pr)
    if not prs:
        raise CorpusError(f"{folder}: the golden comment files list no pull request")
    return prs


def parse_pull_url(url: Any) -> tuple[str, int] | None:
    """("owner/repo", number) of a pull request's URL (https://HOST/OWNER/REPO/pull/N), None if it is not one."""
    if not isinstance(url, str):
        return None
    parts = urllib.parse.urlsplit(url.strip())
    m = _PULL_PATH.match(parts.path)
    if parts.scheme != "https" or not parts.netloc or not m or parts.query or parts.fragment:
        return None
    return f"{m['owner']}/{m['repo']}", int(m["n"])


def _pr(file: str, i: int, entry: Any) -> MartianPr:
    where = f"{file}: entry {i}"
    if not isinstance(entry, dict):
        raise CorpusError(f"{where} must be an object with pr_title, url and comments")
    target = parse_pull_url(entry.get("url"))
    if target is None:
        raise CorpusError(
            f"{where}: url {entry.get('url')!r} is not a pull request URL (https://github.com/O/R/pull/N)"
        )
    repo, number = target
    title = entry.get("pr_title")
    if not isinstance(title, str) or not title.strip():
        raise CorpusError(f"{where}: pr_title must be a non-empty string")
    comments = entry.get("comments")
    if not isinstance(comments, list) or not comments:
        raise CorpusError(f"{where}: comments must be a non-empty list of golden comments")
    golden = [_comment(f"{where}: comments[{k}]", c) for k, c in enumerate(comments)]
    name = f"{repo.split('/')[1]}#{number}"
    return MartianPr(name, entry["url"].strip(), repo, number, title.strip(), golden, file)


def _comment(where: str, item: Any) -> Golden:
    if not isinstance(item, dict):
        raise CorpusError(f"{where} must be an object with comment and severity")
    text = item.get("comment")
    if not isinstance(text, str) or not text.strip():
        raise CorpusError(f"{where}: comment must be a non-empty string")
    severity = item.get("severity")
    if not isinstance(severity, str) or severity.strip().lower() not in SEVERITIES:
        raise CorpusError(f"{where}: severity {severity!r} is not one of Low, Medium, High, Critical")
    category = item.get("category")
    if category is not None and not isinstance(category, str):
        raise CorpusError(f"{where}: category must be a string when given")
    return Golden(None, None, None, SEVERITIES[severity.strip().lower()], text.strip())
