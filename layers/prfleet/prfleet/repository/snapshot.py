"""A snapshot of the repository at a PR's head: stored once per head by the planner, unpacked once per head by
each agent container and reused while it is warm.

S3 layout (SnapshotBucket, SSE-S3, expired by the bucket's lifecycle rule after SnapshotRetentionDays):
  snapshots/{owner}/{name}/{head_sha}.tar.gz   GitHub's tarball of the head, as downloaded (status ok only)
  snapshots/{owner}/{name}/{head_sha}.json     the Manifest, written last: its presence means the head is done
Planner: `store_snapshot` (one GitHub API request per head, none when the manifest is already there). Agent:
`open_snapshot` (the manifest, then the archive, unpacked by `archive.safe_extract` under `root/{head_sha}`). Neither
raises for a repository that is too large, a GitHub failure or a refused archive: the manifest or the Snapshot says
why, and the agents fall back to reading the PR's files through GitHub.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from prfleet.github import ArchiveTooLarge, GitHubError
from prfleet.observability.events import Emitter
from prfleet.observability.logger import make_logger
from prfleet.observability.metrics import make_metrics
from prfleet.repository.archive import ArchiveRefused, safe_extract

PREFIX = "snapshots/"
STATUSES = ("ok", "too_large", "failed")
KEEP_UNPACKED = (
    2  # heads unpacked per container: the current one and the one before (a force-push mid-review)
)
KEEP_KNOWN = 32  # heads remembered per container (a too-large head is not asked about again)
_MISSING = (
    "NoSuchKey",
    "404",
    "NotFound",
    "AccessDenied",
    "403",
)  # the agent may not list: missing reads as 403

_CHUNK = 1024 * 1024
Emit = Callable[..., None]


def archive_key(repo: str, head_sha: str) -> str:
    return f"{PREFIX}{repo}/{head_sha}.tar.gz"


def manifest_key(repo: str, head_sha: str) -> str:
    return f"{PREFIX}{repo}/{head_sha}.json"


@dataclass(frozen=True)
class Manifest:
    """What the planner stored for a head: `status` ok (the archive is there), too_large or failed (`reason`)."""

    status: str
    reason: str | None = None
    archive_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        data = json.loads(raw)
        if data.get("status") not in STATUSES:
            raise ValueError(f"snapshot manifest with unknown status {data.get('status')!r}")
        return cls(
            status=data["status"],
            reason=data.get("reason"),
            archive_bytes=int(data.get("archive_bytes") or 0),
            extra=dict(data.get("extra") or {}),
        )


@dataclass(frozen=True)
class Snapshot:
    """The head as an agent container has it: `root` the unpacked tree, or None with `reason` (the fallback)."""

    root: Path | None
    manifest: Manifest | None
    reason: str | None = None


def _default_emit() -> Emit:
    return Emitter(make_logger(), make_metrics()).emit


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _read_manifest(s3: Any, bucket: str, repo: str, head_sha: str) -> Manifest | None:
    """The head's manifest, or None when there is none (NoSuchKey; 403 for a reader without s3:ListBucket)."""
    try:
        body = s3.get_object(Bucket=bucket, Key=manifest_key(repo, head_sha))["Body"].read()
    except ClientError as exc:
        if _error_code(exc) in _MISSING:
            return None
        raise
    return Manifest.from_json(body)


def _listed(s3: Any, bucket: str, repo: str, head_sha: str) -> bool:
    """Whether the head's manifest exists, by a listing of its exact key (s3:ListBucket on the prefix only)."""
    key = manifest_key(repo, head_sha)
    resp = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    return any(o.get("Key") == key for o in resp.get("Contents") or [])


# ------------------------------------------------------------------------------------------------ the planner


def store_snapshot(
    gh: Any,
    s3: Any,
    bucket: str,
    repo: str,
    head_sha: str,
    *,
    max_bytes: int,
    extra: dict[str, Any] | None = None,
    emit: Emit | None = None,
) -> Manifest:
    """Download the head's tarball into S3 and write its manifest, once per head: a head whose manifest says ok
    or too_large is not downloaded again (a failed one is retried). Too large and GitHub failures become the
    manifest's status; an S3 failure raises (the PR job is retried)."""
    emit = emit or _default_emit()
    if _listed(s3, bucket, repo, head_sha):
        known = _read_manifest(s3, bucket, repo, head_sha)
        if known is not None and known.status != "failed":
            emit(
                "snapshot",
                action="stored",
                outcome="exists",
                status=known.status,
                repo=repo,
                head_sha=head_sha,
            )
            return known
    with tempfile.TemporaryFile() as tmp:
        try:
            size = gh.archive(repo, head_sha, tmp, max_bytes=max_bytes)
        except ArchiveTooLarge as exc:
            manifest = Manifest("too_large", f"the archive is over MaxRepoBytes ({max_bytes:,} bytes)")
            reason = str(exc)
        except GitHubError as exc:
            manifest = Manifest("failed", f"GitHub: {exc.message}"[:500])
            reason = exc.message
        else:
            tmp.seek(0)
            s3.put_object(
                Bucket=bucket,
                Key=archive_key(repo, head_sha),
                Body=tmp,
                ContentLength=size,
                ContentType="application/gzip",
                ServerSideEncryption="AES256",
            )
            manifest, reason = Manifest("ok", None, size), ""
    manifest = Manifest(manifest.status, manifest.reason, manifest.archive_bytes, dict(extra or {}))
    s3.put_object(
        Bucket=bucket,
        Key=manifest_key(repo, head_sha),
        Body=manifest.to_json(),
        ContentType="application/json",
        ServerSideEncryption="AES256",
    )
    emit(
        "snapshot",
        action="stored",
        outcome=manifest.status,
        archive_bytes=manifest.archive_bytes,
        reason=reason or None,
        repo=repo,
        head_sha=head_sha,
    )
    return manifest


# ------------------------------------------------------------------------------------------------ the agent

_lock = threading.Lock()
_known: OrderedDict[tuple[str, str], Snapshot] = OrderedDict()  # (repo, head) -> Snapshot, oldest first


def forget_snapshots() -> None:
    """Forget what this container knows and delete what it unpacked (tests, benchmarks)."""
    with _lock:
        for snap in _known.values():
            if snap.root is not None:
                shutil.rmtree(snap.root, ignore_errors=True)
        _known.clear()


def _evict() -> None:
    """At most KEEP_UNPACKED unpacked trees and KEEP_KNOWN heads: the oldest go (their trees deleted)."""
    unpacked = [k for k, s in _known.items() if s.root is not None]
    for key in unpacked[: max(0, len(unpacked) - KEEP_UNPACKED)]:
        gone = _known.pop(key)
        if gone.root is not None:
            shutil.rmtree(gone.root, ignore_errors=True)
    while len(_known) > KEEP_KNOWN:
        _known.popitem(last=False)


def open_snapshot(
    s3: Any,
    bucket: str,
    repo: str,
    head_sha: str,
    *,
    root: Path,
    max_bytes: int,
    max_entries: int,
    emit: Emit | None = None,
) -> Snapshot:
    """The head's snapshot in this container: reused while warm (no S3 request), else the manifest and the archive
    read from S3 and unpacked under `root/{head_sha}`. Without a tree, `reason` says why (for the coverage note)."""
    emit = emit or _default_emit()
    key = (repo, head_sha)
    with _lock:
        warm = _known.get(key)
        if warm is not None and (warm.root is None or warm.root.is_dir()):
            _known.move_to_end(key)
            return warm
        snap = _open(s3, bucket, repo, head_sha, root=root, max_bytes=max_bytes, max_entries=max_entries)
        _known[key] = snap
        _evict()
    emit(
        "snapshot",
        action="opened",
        outcome="unpacked" if snap.root is not None else "fallback",
        reason=snap.reason,
        repo=repo,
        head_sha=head_sha,
    )
    return snap


def _open(
    s3: Any, bucket: str, repo: str, head_sha: str, *, root: Path, max_bytes: int, max_entries: int
) -> Snapshot:
    manifest = _read_manifest(s3, bucket, repo, head_sha)
    if manifest is None:
        return Snapshot(None, None, "no snapshot of this head was stored")
    if manifest.status == "too_large":
        return Snapshot(
            None, manifest, f"the repository is over MaxRepoBytes ({max_bytes:,} bytes; no snapshot)"
        )
    if manifest.status != "ok":
        return Snapshot(None, manifest, f"the snapshot failed: {manifest.reason}")
    dest = root / head_sha
    if dest.is_dir():  # unpacked whole by an earlier open of this container (the rename is atomic)
        return Snapshot(dest, manifest)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=root) as tmp:
        try:
            body = s3.get_object(Bucket=bucket, Key=archive_key(repo, head_sha))["Body"]
            while chunk := body.read(_CHUNK):
                tmp.write(chunk)
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                return Snapshot(None, manifest, "the snapshot's archive is missing (expired?)")
            raise
        tmp.seek(0)
        try:
            safe_extract(tmp, dest, max_bytes=max_bytes, max_entries=max_entries)
        except ArchiveRefused as exc:
            return Snapshot(None, manifest, f"the archive was refused: {exc.reason}")
    return Snapshot(dest, manifest)
