"""PR files as GitHub lists them, computed by git: the diff from the merge base to the head, renames detected,
and which lines of a patch a review comment may sit on.

pulls/list-files leaves `patch` out for binary files and for a file diff over `patch_max_lines` lines or
`patch_max_bytes` bytes (GitHub documents 20,000 lines / 500 KB per file for diffs it shows; the API's exact cut
is not documented, hence configurable):
https://docs.github.com/en/rest/pulls/pulls#list-pull-requests-files,
https://docs.github.com/en/repositories/creating-and-managing-repositories/repository-limits#diff-limits
"""

from __future__ import annotations

import re
from typing import Any

from prfleet_local.github.gitrepo import GitRepo

PATCH_MAX_LINES = 20_000
PATCH_MAX_BYTES = 500 * 1024

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_STATUS = {"A": "added", "M": "modified", "D": "removed", "R": "renamed", "C": "copied", "T": "changed"}


def diff_sides(patch: str | None) -> tuple[set[int], set[int]]:
    """(LEFT lines, RIGHT lines) that are part of the patch, as GitHub validates review comments."""
    left: set[int] = set()
    right: set[int] = set()
    old = new = 0
    for line in (patch or "").split("\n"):
        m = _HUNK.match(line)
        if m:
            old, new = int(m.group(1)), int(m.group(3))
            continue
        if line.startswith("+"):
            right.add(new)
            new += 1
        elif line.startswith("-"):
            left.add(old)
            old += 1
        elif line.startswith(" "):
            left.add(old)
            right.add(new)
            old += 1
            new += 1
    return left, right


def compute_files(
    repo: GitRepo,
    base_sha: str,
    head_sha: str,
    *,
    patch_max_lines: int = PATCH_MAX_LINES,
    patch_max_bytes: int = PATCH_MAX_BYTES,
) -> list[dict[str, Any]]:
    """PR files as GitHub lists them: diff from the merge base to the head, renames detected, no `patch` for
    binary files or file diffs over `patch_max_lines` lines / `patch_max_bytes` bytes."""
    merge_base = repo.git("merge-base", base_sha, head_sha).strip()
    raw = repo.git_bytes("diff", "--raw", "-z", "-M", "--no-abbrev", merge_base, head_sha).split(b"\0")
    entries: list[dict[str, Any]] = []
    i = 0
    while i < len(raw) and raw[i]:
        meta = raw[i].decode()
        _old_mode, new_mode, old_sha, new_sha, status = meta[1:].split()
        letter = status[0]
        if letter in "RC":
            old_path, new_path = (
                raw[i + 1].decode("utf-8", "surrogateescape"),
                raw[i + 2].decode("utf-8", "surrogateescape"),
            )
            i += 3
        else:
            old_path = new_path = raw[i + 1].decode("utf-8", "surrogateescape")
            i += 2
        entry: dict[str, Any] = {
            "sha": old_sha if letter == "D" else new_sha,
            "filename": new_path,
            "status": _STATUS.get(letter, "modified"),
            "mode": new_mode,
        }
        if letter in "RC":
            entry["previous_filename"] = old_path
        entries.append(entry)
    numstat = repo.git_bytes("diff", "--numstat", "-z", "-M", merge_base, head_sha).split(b"\0")
    counts: list[tuple[int | None, int | None]] = []
    j = 0
    while j < len(numstat) and numstat[j]:
        add, dele, rest = numstat[j].decode("utf-8", "surrogateescape").split("\t", 2)
        j += 3 if rest == "" else 1  # renames: "a\td\t\0old\0new\0"
        counts.append((None if add == "-" else int(add), None if dele == "-" else int(dele)))
    patch_text = repo.git("diff", "-M", "--no-color", "--no-ext-diff", merge_base, head_sha)
    blocks = re.split(r"(?m)^diff --git ", patch_text)[1:]
    if not (len(entries) == len(counts) == len(blocks)):
        raise RuntimeError(
            f"diff outputs disagree: {len(entries)} raw, {len(counts)} numstat, {len(blocks)} patches"
        )
    for entry, (add, dele), block in zip(entries, counts, blocks, strict=True):
        binary = add is None
        entry["additions"] = add or 0
        entry["deletions"] = dele or 0
        entry["changes"] = entry["additions"] + entry["deletions"]
        if not binary:
            at = block.find("\n@@")
            if at >= 0:
                patch = block[at + 1 :].rstrip("\n")
                too_big = len(patch.encode("utf-8", "surrogateescape")) > patch_max_bytes
                if not too_big and patch.count("\n") + 1 <= patch_max_lines:
                    entry["patch"] = patch
    return entries
