"""An added file is rebuilt from its patch only when the bytes hash to GitHub's blob sha (git's own object id)."""

from __future__ import annotations

import subprocess

import pytest

from prfleet.github import added_content, git_blob_sha


def git_sha(data: bytes) -> str:
    return (
        subprocess.run(["git", "hash-object", "--stdin"], input=data, capture_output=True, check=True)
        .stdout.decode()
        .strip()
    )


@pytest.mark.parametrize(
    ("data", "patch"),
    [
        (b"a\nb\n", "@@ -0,0 +1,2 @@\n+a\n+b"),
        (b"a\nb", "@@ -0,0 +1,2 @@\n+a\n+b\n\\ No newline at end of file"),
        (b"only\n", "@@ -0,0 +1 @@\n+only"),
    ],
)
def test_rebuilt_from_the_patch_when_the_sha_matches(data, patch):
    assert git_blob_sha(data) == git_sha(data)
    assert added_content(patch, git_sha(data)) == data


def test_anything_else_reads_the_blob():
    assert added_content("@@ -0,0 +1,2 @@\n+a\n+b", git_sha(b"a\nb\nc\n")) is None  # patch cut short
    assert added_content("@@ -1,2 +1,2 @@\n a\n-b\n+c", git_sha(b"a\nc\n")) is None  # not an added file
    assert added_content(None, git_sha(b"")) is None
