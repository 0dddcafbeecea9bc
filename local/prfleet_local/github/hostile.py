"""Hostile repository archives, for the fake's `hostile_archive` fault (faults.py): GitHub's tarball of the commit
(codeload.py) with one entry added that a safe unpacker must refuse.

GitHub's own archives are `git archive` output (one top-level folder `{owner}-{repo}-{sha7}/`,
https://docs.github.com/en/rest/repos/contents#download-a-repository-archive-tar), and git itself can put only one of
these kinds in them: a symlink whose target leaves the tree (git stores any target). The others stand for an archive
altered on its way (a compromised mirror or proxy, a bug): the agents must not trust the bytes they unpack
(prfleet.repository.archive). Each kind names what it adds:
- `traversal`: a file `{top}/../../prfleet-escaped.txt` (a `..` path);
- `absolute`: a file `/tmp/prfleet-escaped.txt` (an absolute path);
- `symlink`: a symlink `{top}/escape -> ../../..` (a link out of the tree);
- `device`: a character device `{top}/dev-null` (a special file);
- `bomb`: a file of `bomb_bytes` zeros (a decompression bomb: a few hundred KB gzipped).
"""

from __future__ import annotations

import gzip
import io
import tarfile

KINDS = ("traversal", "absolute", "symlink", "device", "bomb")
ESCAPED_NAME = "prfleet-escaped.txt"  # what a traversal or absolute entry would write if it were unpacked
DEFAULT_BOMB_BYTES = 300 * 1024 * 1024  # over MaxRepoBytes' default (268,435,456)
_ZEROS = bytes(1024 * 1024)


class _Zeros(io.RawIOBase):
    """`size` zero bytes, read in chunks (the bomb's content is never held whole)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self.left, len(_ZEROS))
        buf[:n] = _ZEROS[:n]
        self.left -= n
        return n


def hostile(good: bytes, kind: str, *, bomb_bytes: int = DEFAULT_BOMB_BYTES) -> bytes:
    """`good` (a gzipped tar with one top-level folder) with the entry `kind` names appended."""
    if kind not in KINDS:
        raise ValueError(f"unknown hostile archive kind {kind!r}: one of {', '.join(KINDS)}")
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(good), mode="r:gz") as src,
        gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as dst,
    ):
        top = ""
        for member in src:
            top = top or member.name.split("/")[0]
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
        _add(dst, top, kind, bomb_bytes)
    return out.getvalue()


def _add(dst: tarfile.TarFile, top: str, kind: str, bomb_bytes: int) -> None:
    text = b"written outside the snapshot root\n"
    if kind in ("traversal", "absolute"):
        name = f"{top}/../../{ESCAPED_NAME}" if kind == "traversal" else f"/tmp/{ESCAPED_NAME}"
        info = tarfile.TarInfo(name)
        info.size = len(text)
        dst.addfile(info, io.BytesIO(text))
    elif kind == "symlink":
        info = tarfile.TarInfo(f"{top}/escape")
        info.type, info.linkname = tarfile.SYMTYPE, "../../.."
        dst.addfile(info)
    elif kind == "device":
        info = tarfile.TarInfo(f"{top}/dev-null")
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        dst.addfile(info)
    else:
        info = tarfile.TarInfo(f"{top}/zeros.bin")
        info.size = bomb_bytes
        dst.addfile(info, io.BufferedReader(_Zeros(bomb_bytes)))
