"""safe_extract against hostile archives built here: each is refused with its reason and leaves nothing on disk;
a good archive (GitHub's shape: one top-level folder) unpacks without that folder, symlinks kept as links."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from prfleet.repository.archive import ArchiveRefused, safe_extract

TOP = "acme-shop-abc1234"
MB = 1024 * 1024


def _member(name: str, kind: bytes = tarfile.REGTYPE, *, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, size, link, 0o644
    return info


def build(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> io.BytesIO:
    """A .tar.gz of exactly these members (tarfile writes what it is given: no sanitising)."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw.seek(0)
    return raw


def file(name: str, text: str = "x\n") -> tuple[tarfile.TarInfo, bytes]:
    data = text.encode()
    return _member(name, size=len(data)), data


def folder(name: str) -> tuple[tarfile.TarInfo, None]:
    return _member(name, tarfile.DIRTYPE), None


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    return _member(name, kind, link=target), None


def good() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [
        folder(f"{TOP}/"),
        file(f"{TOP}/README.md", "# shop\n"),
        folder(f"{TOP}/src/"),
        file(f"{TOP}/src/app.py", "def f():\n    return 1\n"),
        link(f"{TOP}/src/alias.py", "app.py"),
        link(f"{TOP}/docs", "src"),
    ]


def nothing_written(where: Path) -> bool:
    return list(where.iterdir()) == []


def test_a_good_archive_unpacks_without_its_top_folder_and_keeps_links_as_links(tmp_path):
    dest = tmp_path / "out" / "head"
    got = safe_extract(build(good()), dest, max_bytes=MB, max_entries=100)
    assert (got.files, got.symlinks) == (2, 2)
    assert got.bytes == len("# shop\n") + len("def f():\n    return 1\n")
    assert (dest / "src" / "app.py").read_text() == "def f():\n    return 1\n"
    assert (dest / "src" / "alias.py").is_symlink() and os.readlink(dest / "src" / "alias.py") == "app.py"
    assert os.readlink(dest / "docs") == "src"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["head"]  # no temporary folder left beside it


HOSTILE = {
    "path traversal": ([*good(), file(f"{TOP}/../evil.txt")], "path traversal"),
    "absolute path": ([folder(f"{TOP}/"), file("/etc/evil.txt")], "absolute path"),
    "symlink out of the tree": ([*good(), link(f"{TOP}/out", "../../etc/passwd")], "leads out of the tree"),
    "absolute symlink": ([*good(), link(f"{TOP}/out", "/etc/passwd")], "absolute path"),
    "symlink out through another symlink": (
        [*good(), folder(f"{TOP}/d/"), link(f"{TOP}/d/up", ".."), link(f"{TOP}/d/x", "up/../secret")],
        "leads out of the tree",
    ),
    "hard link out": ([*good(), link(f"{TOP}/h", "/etc/passwd", tarfile.LNKTYPE)], "absolute path"),
    "hard link up": ([*good(), link(f"{TOP}/h", f"{TOP}/../../x", tarfile.LNKTYPE)], "path traversal"),
    "device file": ([*good(), (_member(f"{TOP}/null", tarfile.CHRTYPE), None)], "device, fifo"),
    "fifo": ([*good(), (_member(f"{TOP}/pipe", tarfile.FIFOTYPE), None)], "device, fifo"),
    "two top-level folders": ([*good(), file("other-top/x.py")], "more than one top-level folder"),
    "file written through a symlinked folder": (
        [*good(), link(f"{TOP}/esc", "src"), file(f"{TOP}/esc/planted.py")],
        "which is not a folder",
    ),
    "duplicate name": ([*good(), file(f"{TOP}/README.md", "again")], "appears twice"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_is_refused_with_its_reason_and_nothing_is_written(tmp_path, case):
    entries, reason = HOSTILE[case]
    with pytest.raises(ArchiveRefused) as refused:
        safe_extract(build(entries), tmp_path / "head", max_bytes=MB, max_entries=100)
    assert reason in refused.value.reason
    assert nothing_written(tmp_path)


def test_too_many_entries_is_refused(tmp_path):
    entries = [folder(f"{TOP}/")] + [file(f"{TOP}/f{i}.txt") for i in range(20)]
    with pytest.raises(ArchiveRefused, match="more than 10 entries"):
        safe_extract(build(entries), tmp_path / "head", max_bytes=MB, max_entries=10)
    assert nothing_written(tmp_path)


def test_a_decompression_bomb_stops_at_the_cap(tmp_path):
    """64 MiB of zeros gzip to ~64 KB: refused by its declared size before its data is read."""
    big = 64 * MB
    raw = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w|") as t,
    ):
        t.addfile(_member(f"{TOP}/", tarfile.DIRTYPE))
        info = _member(f"{TOP}/zeros.bin", size=big)
        t.addfile(info, io.BytesIO(bytes(big)))
    assert raw.tell() < MB
    raw.seek(0)
    with pytest.raises(ArchiveRefused, match="unpacks to more than 1,048,576 bytes"):
        safe_extract(raw, tmp_path / "head", max_bytes=MB, max_entries=100)
    assert nothing_written(tmp_path)


def test_a_bomb_in_a_header_is_cut_while_decompressing(tmp_path):
    """A pax header of 64 MiB (tarfile would read it into memory) is stopped by the count of decompressed bytes."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as t:
            info = _member(f"{TOP}/a.txt", size=1)
            info.pax_headers = {"comment": "z" * (64 * MB)}
            t.addfile(info, io.BytesIO(b"a"))
    raw.seek(0)
    with pytest.raises(ArchiveRefused, match="decompression bomb"):
        safe_extract(raw, tmp_path / "head", max_bytes=MB, max_entries=10)
    assert nothing_written(tmp_path)


def test_not_a_tar_gz_is_refused(tmp_path):
    with pytest.raises(ArchiveRefused, match="not a readable tar.gz"):
        safe_extract(
            io.BytesIO(b"<html>rate limited</html>"), tmp_path / "head", max_bytes=MB, max_entries=10
        )
    assert nothing_written(tmp_path)


def test_an_existing_destination_is_never_overwritten(tmp_path):
    (tmp_path / "head").mkdir()
    with pytest.raises(FileExistsError):
        safe_extract(build(good()), tmp_path / "head", max_bytes=MB, max_entries=100)
