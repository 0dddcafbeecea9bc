"""The PR as GitHub lists its files: one class for a changed file, shared by the GitHub client, the planner, the
stored file list and the agents' tools."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SYMLINK_MODE = "120000"  # a git tree entry's mode for a symbolic link


@dataclass(frozen=True)
class ChangedFile:
    """One file of the PR, as GitHub's /pulls/{n}/files lists it (mode 120000 marks a symlink)."""

    path: str
    status: str
    blob_sha: str
    additions: int = 0
    deletions: int = 0
    patch: str = ""
    mode: str = "100644"
    previous_path: str | None = None  # a renamed file's old path

    @classmethod
    def from_listing(cls, entry: Mapping[str, Any]) -> ChangedFile:
        """One entry of GitHub's file list (or the planner's stored copy of it)."""
        return cls(
            path=entry["filename"],
            status=str(entry.get("status") or "modified"),
            blob_sha=str(entry.get("sha") or ""),
            additions=int(entry.get("additions") or 0),
            deletions=int(entry.get("deletions") or 0),
            patch=entry.get("patch") or "",
            mode=str(entry.get("mode") or "100644"),
            previous_path=entry.get("previous_filename"),
        )
