"""The fake's codeload.github.com: the archive a tarball redirect points to (routes/archive.py).

What it follows (https://docs.github.com/en/rest/repos/contents#download-a-repository-archive-tar): the link is
temporary (five minutes) and needs no Authorization header (its token is in the URL, so a client must not send its
GitHub credential to this host); the body is a gzipped tar of the commit with one top-level folder
`{owner}-{repo}-{sha7}/` (what `git archive --prefix` writes; GitHub's archives name it so). Downloads are recorded
in `downloads` (path, whether an Authorization header came), apart from the API's `requests` (codeload is not the REST API and not under its rate limit).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from prfleet_local.github.hostile import hostile
from prfleet_local.github.routes.archive import CODELOAD_PREFIX


def archive_bytes(srv: Any, owner: str, repo: str, sha: str) -> bytes:
    """The commit `sha` as GitHub's tarball: gzip, one top-level folder `{owner}-{repo}-{sha7}/` (with a hostile
    entry added while a `hostile_archive` fault is on: faults.py)."""
    prefix = f"{owner}-{repo}-{sha[:7]}/"
    good = srv.repo.git_bytes("archive", "--format=tar.gz", f"--prefix={prefix}", sha)
    fault = srv.take_archive_fault()
    return hostile(good, fault[0], bomb_bytes=fault[1]) if fault else good


def serve_codeload(handler: Any, path: str, query: str) -> None:
    """Answer GET /_codeload/{owner}/{repo}/legacy.tar.gz/{sha}?token=... on the fake's request handler."""
    srv = handler.owner
    parts = path[len(CODELOAD_PREFIX) :].split("/")
    token = dict(urllib.parse.parse_qsl(query)).get("token", "")
    with srv.lock:
        link = srv.archive_links.get(token)
        srv.downloads.append((path, handler.headers.get("Authorization") is not None))
    status, body, ctype = 404, b"404: Not Found", "text/plain; charset=utf-8"
    if len(parts) == 4 and parts[2] == "legacy.tar.gz" and link is not None:
        sha, expires = link
        if srv.clock() > expires:
            status, body = 403, b"link expired"
        elif parts[3] == sha and f"{parts[0]}/{parts[1]}" == srv.full_name:
            status, body, ctype = 200, archive_bytes(srv, parts[0], parts[1], sha), "application/x-gzip"
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    if status == 200:
        name = f"{parts[0]}-{parts[1]}-{parts[3][:7]}.tar.gz"
        handler.send_header("Content-Disposition", f"attachment; filename={name}")
    handler.end_headers()
    handler.wfile.write(body)
