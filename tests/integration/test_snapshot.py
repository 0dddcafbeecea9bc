"""The head's snapshot end to end on the strict fakes: GitHub's tarball endpoint (302 to a codeload link, no
Authorization sent there), the planner's store into S3 (moto) and an agent container's open, unpack and warm reuse."""

from __future__ import annotations

import io
import os
import tarfile
import uuid

import boto3
import pytest

from prfleet.github import ArchiveTooLarge, GitHub, GitHubError, TokenAuth
from prfleet.repository import snapshot
from prfleet.repository.snapshot import Manifest, open_snapshot, store_snapshot
from prfleet_local.github import hostile
from prfleet_local.github.server import GitHubServer, GitRepo
from prfleet_local.stack.moto_proc import moto_server

REPO = "acme/shop"
TOKEN = "ghp_snapshot_token"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def s3():
    with moto_server() as url:
        saved = dict(os.environ)
        os.environ.update(
            AWS_ENDPOINT_URL=url,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="t",
            AWS_SECRET_ACCESS_KEY="t",
        )
        client = boto3.client("s3")
        try:
            yield client
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture
def bucket(s3):
    """A bucket of the test's own (commits made within the same second can have the same sha in two tests)."""
    name = f"snapshots-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def github(tmp_path):
    repo = GitRepo(tmp_path / "repo")
    repo.commit({"README.md": "# shop\n", "src/app.py": "def f():\n    return 1\n"}, "base")
    repo.branch("feature")
    repo.commit({"src/app.py": "def f(x):\n    return x\n"}, "change", symlinks={"src/alias.py": "app.py"})
    server = GitHubServer(repo, REPO, tokens=[TOKEN])
    server.start()
    snapshot.forget_snapshots()
    try:
        yield server, repo, GitHub(server.api_url, TokenAuth(TOKEN), sleep=lambda s: None)
    finally:
        snapshot.forget_snapshots()
        server.stop()


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []

    def __call__(self, name: str, **fields) -> None:
        self.seen.append((name, fields))


def s3_calls(client) -> list[str]:
    """Every S3 operation the client sends from now on (botocore's before-call event)."""
    calls: list[str] = []
    client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    return calls


def test_the_archive_is_one_api_request_and_a_download_without_our_credential(github):
    server, repo, gh = github
    head = repo.sha("feature")
    out = io.BytesIO()
    size = gh.archive(REPO, head, out, max_bytes=MB)
    assert size == len(out.getvalue()) > 0
    assert [p for m, p in server.requests] == [f"/repos/{REPO}/tarball/{head}"]  # one API request
    [(path, had_auth)] = server.downloads
    assert path.startswith("/_codeload/") and had_auth is False
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r:gz") as tar:
        names = tar.getnames()
    top = f"acme-shop-{head[:7]}"  # GitHub's top-level folder: {owner}-{repo}-{sha7}
    assert {n.split("/")[0] for n in names} == {top}
    assert f"{top}/src/app.py" in names and f"{top}/src/alias.py" in names


def test_an_unknown_ref_is_a_404_and_a_too_large_archive_stops_at_the_cap(github):
    server, repo, gh = github
    with pytest.raises(GitHubError) as missing:
        gh.archive(REPO, "0" * 40, io.BytesIO(), max_bytes=MB)
    assert missing.value.status == 404
    with pytest.raises(ArchiveTooLarge, match="larger than 100 bytes"):
        gh.archive(REPO, repo.sha("feature"), io.BytesIO(), max_bytes=100)


def test_store_then_open_round_trip_and_warm_reuse(github, s3, bucket, tmp_path):
    server, repo, gh = github
    head = repo.sha("feature")
    events = Events()
    manifest = store_snapshot(gh, s3, bucket, REPO, head, max_bytes=MB, extra={"k": "v"}, emit=events)
    assert manifest.status == "ok" and manifest.archive_bytes > 0 and manifest.extra == {"k": "v"}
    stored = s3.get_object(Bucket=bucket, Key=f"snapshots/{REPO}/{head}.tar.gz")
    assert stored["ServerSideEncryption"] == "AES256"
    assert Manifest.from_json(
        s3.get_object(Bucket=bucket, Key=f"snapshots/{REPO}/{head}.json")["Body"].read()
    )
    api = len(server.requests)

    # Idempotent per head: a second planning of the head makes no GitHub request.
    again = store_snapshot(gh, s3, bucket, REPO, head, max_bytes=MB, emit=events)
    assert again == manifest and len(server.requests) == api

    calls = s3_calls(s3)
    root = tmp_path / "unpacked"
    snap = open_snapshot(s3, bucket, REPO, head, root=root, max_bytes=MB, max_entries=100, emit=events)
    assert snap.root == root / head and snap.reason is None and snap.manifest == manifest
    assert (snap.root / "src" / "app.py").read_text() == "def f(x):\n    return x\n"
    assert os.readlink(snap.root / "src" / "alias.py") == "app.py"
    assert calls == ["GetObject", "GetObject"]  # the manifest, the archive
    warm = open_snapshot(s3, bucket, REPO, head, root=root, max_bytes=MB, max_entries=100, emit=events)
    assert warm == snap and calls == ["GetObject", "GetObject"]  # warm: no S3 request
    assert [f["outcome"] for n, f in events.seen if n == "snapshot"] == ["ok", "exists", "unpacked"]


def test_at_most_two_heads_stay_unpacked(github, s3, bucket, tmp_path):
    server, repo, gh = github
    heads = [repo.sha("feature")]
    for i in range(2):
        heads.append(repo.commit({f"f{i}.txt": "x\n"}, f"more {i}"))
    root = tmp_path / "unpacked"
    for head in heads:
        store_snapshot(gh, s3, bucket, REPO, head, max_bytes=MB, emit=Events())
        assert open_snapshot(
            s3, bucket, REPO, head, root=root, max_bytes=MB, max_entries=100, emit=Events()
        ).root
    assert sorted(p.name for p in root.iterdir()) == sorted(heads[1:])


def test_too_large_is_recorded_and_the_agent_is_told(github, s3, bucket, tmp_path):
    server, repo, gh = github
    head = repo.commit({"more.txt": "z\n"}, "another head")
    manifest = store_snapshot(gh, s3, bucket, REPO, head, max_bytes=100, emit=Events())
    assert manifest.status == "too_large" and "MaxRepoBytes" in (manifest.reason or "")
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"snapshots/{REPO}/{head}")["Contents"]
    ]
    assert keys == [f"snapshots/{REPO}/{head}.json"]  # no archive
    snap = open_snapshot(
        s3, bucket, REPO, head, root=tmp_path / "u", max_bytes=100, max_entries=100, emit=Events()
    )
    assert snap.root is None and "over MaxRepoBytes" in (snap.reason or "")


def test_unpacked_past_the_cap_falls_back_with_the_reason(github, s3, bucket, tmp_path):
    """The download fits, the unpacked tree would not: refused by safe_extract, nothing left under root."""
    server, repo, gh = github
    head = repo.commit({"big.txt": "y" * 200_000}, "big file")
    assert store_snapshot(gh, s3, bucket, REPO, head, max_bytes=MB, emit=Events()).status == "ok"
    root = tmp_path / "u"
    snap = open_snapshot(s3, bucket, REPO, head, root=root, max_bytes=100_000, max_entries=100, emit=Events())
    assert snap.root is None and "refused" in (snap.reason or "") and "100,000 bytes" in (snap.reason or "")
    assert [p for p in root.iterdir() if p.is_dir()] == []


def test_a_github_failure_is_a_failed_manifest_and_is_retried_next_time(github, s3, bucket, tmp_path):
    server, repo, gh = github
    head = repo.commit({"other.txt": "o\n"}, "a head GitHub fails on")
    server.inject(f"/repos/{REPO}/tarball/", status=404, times=1)
    failed = store_snapshot(gh, s3, bucket, REPO, head, max_bytes=MB, emit=Events())
    assert failed.status == "failed" and "GitHub" in (failed.reason or "")
    snap = open_snapshot(
        s3, bucket, REPO, head, root=tmp_path / "u", max_bytes=MB, max_entries=9, emit=Events()
    )
    assert snap.root is None and "failed" in (snap.reason or "")
    assert store_snapshot(gh, s3, bucket, REPO, head, max_bytes=MB, emit=Events()).status == "ok"


def test_no_manifest_means_no_snapshot(s3, bucket, tmp_path):
    snapshot.forget_snapshots()
    snap = open_snapshot(
        s3, bucket, "acme/none", "f" * 40, root=tmp_path, max_bytes=MB, max_entries=9, emit=Events()
    )
    assert snap == snapshot.Snapshot(None, None, "no snapshot of this head was stored")


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("traversal", "path traversal in"),
        ("absolute", "absolute path"),
        ("symlink", "leads out of the tree"),
        ("device", "device, fifo or other special file"),
        ("bomb", f"unpacks to more than {MB:,} bytes"),
    ],
)
def test_a_hostile_archive_from_github_is_refused_with_its_reason_and_nothing_escapes(
    github, s3, bucket, tmp_path, kind, why
):
    """The fake's hostile_archive fault: the planner stores what GitHub served, the agent refuses to unpack it."""
    server, repo, gh = github
    head = repo.commit({f"{kind}.txt": f"{kind}\n"}, f"a head served hostile ({kind})")
    server.hostile_archive(kind, bomb_bytes=8 * MB)
    assert store_snapshot(gh, s3, bucket, REPO, head, max_bytes=MB, emit=Events()).status == "ok"
    root = tmp_path / "work" / "snapshots"
    events = Events()
    snap = open_snapshot(s3, bucket, REPO, head, root=root, max_bytes=MB, max_entries=100, emit=events)
    assert snap.root is None and (snap.reason or "").startswith("the archive was refused: ")
    assert why in (snap.reason or "")
    assert [f for name, f in events.seen if name == "snapshot"] == [
        {
            "action": "opened",
            "outcome": "fallback",
            "reason": snap.reason,
            "repo": REPO,
            "head_sha": head,
        }
    ]
    assert list(root.iterdir()) == []  # neither the tree nor the half-unpacked folder beside it is left
    assert list(tmp_path.rglob(hostile.ESCAPED_NAME)) == [] and not (tmp_path / "escape").exists()
    assert server.take_archive_fault() is None  # one download, one hostile archive: the fault is spent
