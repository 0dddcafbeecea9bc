"""Unpacking an untrusted repository archive (GitHub's tarball of a head) without letting it write outside its
folder, fill the disk, or plant device files.

The archive is judged whole before anything is written (first pass: headers only, nothing on disk), then extracted
with tarfile's `data` filter into a temporary folder next to `dest` and renamed into place, so a refusal at any
point leaves nothing behind. The `data` filter (https://docs.python.org/3/library/tarfile.html#tarfile.data_filter,
PEP 706) refuses absolute names, names and links resolving outside the destination and special files, and drops
ownership and unsafe mode bits; the first pass adds what it does not check: entry count, total size, one top-level
folder, duplicate names, entries under a symlinked directory, and link targets resolved through the archive's other
symlinks. Decompressed bytes are counted as they are read, so a gzip bomb stops at the cap, never at the disk's end.
"""

from __future__ import annotations

import gzip
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

HEADER_ALLOWANCE = 4096  # tar headers and pax records per entry, on top of the files' own bytes
_MAX_LINK_HOPS = 40  # as the kernel's MAXSYMLINKS


class ArchiveRefused(Exception):
    """The archive is not unpacked; `reason` says why, for the logs and the agents' coverage note."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Extracted:
    files: int
    bytes: int
    symlinks: int


class _Capped:
    """A reader that refuses to yield more than `limit` bytes (the decompressed stream of a gzip bomb)."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self.raw, self.limit, self.read_bytes = raw, limit, 0

    def read(self, size: int = -1) -> bytes:
        want = self.limit - self.read_bytes + 1 if size is None or size < 0 else size
        data = self.raw.read(min(want, self.limit - self.read_bytes + 1))
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            raise ArchiveRefused(f"decompresses past {self.limit:,} bytes (a decompression bomb?)")
        return data


@dataclass
class _Plan:
    """What the first pass learned: the top-level folder, the entries by stripped name, the links."""

    top: str | None = None
    entries: int = 0
    files: int = 0
    bytes: int = 0
    kinds: dict[str, str] = field(default_factory=dict)  # stripped path -> file, dir, symlink or hardlink
    symlinks: dict[str, str] = field(default_factory=dict)  # stripped path -> link target as stored
    hardlinks: dict[str, str] = field(default_factory=dict)  # stripped path -> stripped target


def _strip(plan: _Plan, name: str) -> str:
    """The member's path below the single top-level folder ("" for the folder itself)."""
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveRefused(f"absolute path {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise ArchiveRefused(f"empty entry name {name!r}")
    if ".." in parts:
        raise ArchiveRefused(f"path traversal in {name!r}")
    if plan.top is None:
        plan.top = parts[0]
    elif parts[0] != plan.top:
        raise ArchiveRefused(f"more than one top-level folder ({plan.top!r} and {parts[0]!r})")
    return "/".join(parts[1:])


def _resolve(path: str, links: dict[str, str]) -> str | None:
    """`path` with every symlink of the archive followed (lexically, as the OS would); None if it leaves the
    tree or loops."""
    hops = 0
    parts = path.split("/")
    done: list[str] = []
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                return None
            done.pop()
            continue
        here = "/".join([*done, part])
        if here in links:
            hops += 1
            target = links[here]
            if hops > _MAX_LINK_HOPS or target.startswith("/"):
                return None
            parts = target.split("/") + parts
            continue
        done.append(part)
    return "/".join(done)


def _judge(member: tarfile.TarInfo, plan: _Plan, *, max_bytes: int, max_entries: int) -> None:
    """Refuse a member the first pass can already see is hostile; record it in `plan`."""
    plan.entries += 1
    if plan.entries > max_entries:
        raise ArchiveRefused(f"more than {max_entries:,} entries")
    path = _strip(plan, member.name)
    kinds = plan.kinds
    if not path:
        if not member.isdir():
            raise ArchiveRefused(f"top-level entry {member.name!r} is not a folder")
        return
    if path in kinds:
        raise ArchiveRefused(f"{path!r} appears twice")
    parent = posixpath.dirname(path)
    while parent:
        if kinds.get(parent) not in (None, "dir"):
            raise ArchiveRefused(f"{path!r} lies under {parent!r}, which is not a folder")
        parent = posixpath.dirname(parent)
    if member.isreg():
        plan.files += 1
        plan.bytes += member.size
        if plan.bytes > max_bytes:
            raise ArchiveRefused(f"unpacks to more than {max_bytes:,} bytes")
        kinds[path] = "file"
    elif member.isdir():
        kinds[path] = "dir"
    elif member.issym():
        if member.linkname.startswith("/"):
            raise ArchiveRefused(f"symlink {path!r} points to the absolute path {member.linkname!r}")
        kinds[path] = "symlink"
        plan.symlinks[path] = member.linkname
    elif member.islnk():
        target = _strip(plan, member.linkname)
        if kinds.get(target) != "file":
            raise ArchiveRefused(
                f"hard link {path!r} to {member.linkname!r}, not a file earlier in the archive"
            )
        kinds[path] = "hardlink"
        plan.hardlinks[path] = target
    else:
        raise ArchiveRefused(f"{path!r} is a device, fifo or other special file")


def _first_pass(fileobj: BinaryIO, *, max_bytes: int, max_entries: int, cap: int) -> _Plan:
    plan = _Plan()
    with (
        gzip.GzipFile(fileobj=fileobj, mode="rb") as gz,
        tarfile.open(fileobj=_Capped(gz, cap), mode="r|") as tar,
    ):
        for member in tar:
            _judge(member, plan, max_bytes=max_bytes, max_entries=max_entries)
    if plan.top is None:
        raise ArchiveRefused("the archive is empty")
    for path, target in plan.symlinks.items():
        if _resolve(posixpath.join(posixpath.dirname(path), target), plan.symlinks) is None:
            raise ArchiveRefused(f"symlink {path!r} -> {target!r} leads out of the tree")
    return plan


def _extraction_filter(top: str):  # noqa: ANN202 - tarfile's filter signature
    """Strip the top-level folder, skip the folder itself, then tarfile's `data` filter."""

    def below_top(name: str) -> str:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        return "/".join(parts[1:]) if parts and parts[0] == top else ""

    def extraction_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        stripped = below_top(member.name)
        if not stripped:
            return None
        changes: dict[str, str] = {"name": stripped}
        if member.islnk():
            changes["linkname"] = below_top(member.linkname)
        return tarfile.data_filter(member.replace(**changes, deep=False), dest)

    return extraction_filter


def safe_extract(fileobj: BinaryIO, dest: Path, *, max_bytes: int, max_entries: int) -> Extracted:
    """Unpack the gzipped tar in `fileobj` (seekable) into `dest` (which must not exist), without its single
    top-level folder. Raises ArchiveRefused with the reason, leaving nothing at `dest` or beside it."""
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(f"{dest} exists: safe_extract unpacks into a new folder only")
    cap = max_bytes + HEADER_ALLOWANCE * max_entries + (1 << 20)
    start = fileobj.tell()
    try:
        plan = _first_pass(fileobj, max_bytes=max_bytes, max_entries=max_entries, cap=cap)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArchiveRefused(f"not a readable tar.gz: {exc}") from exc
    fileobj.seek(start)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with (
            gzip.GzipFile(fileobj=fileobj, mode="rb") as gz,
            tarfile.open(fileobj=_Capped(gz, cap), mode="r|") as tar,
        ):
            tar.extractall(tmp, filter=_extraction_filter(plan.top or ""))
        os.rename(tmp, dest)
    except tarfile.FilterError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveRefused(f"refused by tarfile's data filter: {exc}") from exc
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveRefused(f"not a readable tar.gz: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Extracted(files=plan.files + len(plan.hardlinks), bytes=plan.bytes, symlinks=len(plan.symlinks))
