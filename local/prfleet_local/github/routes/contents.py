"""The repository's files at a ref: the contents API, git blobs and git trees, read from the git repository.

- contents (`repos/get-content`): base64 up to 1 MB; 1-100 MB `encoding: none` with empty `content` (the
  `raw` media type or the blob has it); over 100 MB 403 `too_large`; a symlink whose target is a normal file in
  the repository answers with that file (its own path and sha), any other symlink as `type: symlink`:
  https://docs.github.com/en/rest/repos/contents#get-repository-content
- blobs (`git/get-blob`): base64, up to 100 MB: https://docs.github.com/en/rest/git/blobs#get-a-blob
- trees (`git/get-tree`): a recursive tree over `tree_max_entries` entries (GitHub: 100,000 or 7 MB) is cut and
  says `truncated: true`; `sha` is the tree's own sha: https://docs.github.com/en/rest/git/trees#get-a-tree
"""

from __future__ import annotations

import base64
import posixpath
import re

from prfleet_local.github.routes.common import REPO, Answer, Call, HttpError, Route


def get_contents(call: Call) -> Answer:
    """GET /repos/{o}/{r}/contents/{path}?ref=: a file, a directory listing, a symlink or a submodule."""
    srv = call.srv
    ref = call.query.get("ref") or srv.repo.default_branch
    path = call.params["path"].strip("/")
    if srv.repo.resolve(ref) is None:
        raise HttpError(404, f"No commit found for the ref {ref}")
    info = srv.repo.ls_tree(ref, path)
    if info is None:
        raise HttpError(404, "Not Found")
    mode, kind, sha, size = info
    name = path.rsplit("/", 1)[-1]
    common = {"name": name, "path": path, "sha": sha, "size": size}
    if kind == "tree":
        listing = srv.repo.git("ls-tree", "-l", ref, path + "/").splitlines()
        entries = []
        for line in listing:
            meta, _, p = line.partition("\t")
            m, k, s, sz = meta.split()
            entries.append(
                {
                    "name": p.rsplit("/", 1)[-1],
                    "path": p,
                    "sha": s,
                    "size": 0 if sz == "-" else int(sz),
                    "type": "dir" if k == "tree" else "file",
                }
            )
        return 200, entries, {}
    if kind != "blob":
        return 200, {**common, "type": "submodule"}, {}
    if mode == "120000":
        target = srv.repo.git_bytes("cat-file", "blob", sha).decode("utf-8", "surrogateescape")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        real = None
        if not target.startswith("/") and not resolved.startswith("..") and resolved != path:
            real = srv.repo.ls_tree(ref, resolved)
        if real is None or real[0] not in ("100644", "100755"):
            return 200, {**common, "type": "symlink", "target": target}, {}
        # "If the requested {path} points to a symlink, and the symlink's target is a normal file in the
        # repository, then the API responds with the content of the file."
        mode, kind, sha, size = real
        path, name = resolved, resolved.rsplit("/", 1)[-1]
        common = {"name": name, "path": path, "sha": sha, "size": size}
    # repos/get-content: up to 1 MB every feature; 1-100 MB no `content` ("encoding": "none"); over 100 MB
    # not supported: https://docs.github.com/en/rest/repos/contents#get-repository-content
    if size > srv.blob_max_bytes:
        raise HttpError(
            403,
            "This API returns blobs up to 100 MB in size. The requested blob is too large to fetch via the API",
            [{"resource": "Blob", "field": "data", "code": "too_large"}],
        )
    if size > srv.contents_max_bytes:
        return 200, {**common, "type": "file", "encoding": "none", "content": ""}, {}
    content = srv.repo.git_bytes("cat-file", "blob", sha)
    b64 = base64.encodebytes(content).decode()  # 76-char lines, like GitHub's wrapped base64
    return 200, {**common, "type": "file", "encoding": "base64", "content": b64}, {}


def get_blob(call: Call) -> Answer:
    """GET /repos/{o}/{r}/git/blobs/{sha}."""
    srv = call.srv
    sha = call.params["sha"]
    if srv.repo.object_type(sha) != "blob":
        raise HttpError(404, "Not Found")
    if int(srv.repo.git("cat-file", "-s", sha).strip()) > srv.blob_max_bytes:  # git/get-blob: up to 100 MB
        raise HttpError(
            403,
            "This API returns blobs up to 100 MB in size.",
            [{"resource": "Blob", "code": "too_large"}],
        )
    content = srv.repo.git_bytes("cat-file", "blob", sha)
    return (
        200,
        {
            "sha": sha,
            "size": len(content),
            "encoding": "base64",
            "content": base64.encodebytes(content).decode(),
        },
        {},
    )


def get_tree(call: Call) -> Answer:
    """GET /repos/{o}/{r}/git/trees/{sha}[?recursive=1]."""
    srv = call.srv
    ref = call.params["sha"]
    own = srv.repo.tree_sha(ref)  # git/get-tree takes a tree sha, or a commit or ref for its tree
    if own is None:
        raise HttpError(404, "Not Found")
    recursive = bool(call.query.get("recursive"))
    args = ["ls-tree", "-l", "-z"] + (["-r", "-t"] if recursive else []) + [ref]
    tree = []
    for item in srv.repo.git_bytes(*args).split(b"\0"):
        if not item:
            continue
        meta, _, p = item.decode("utf-8", "surrogateescape").partition("\t")
        m, k, s, sz = meta.split()
        entry = {"path": p, "mode": m, "type": k, "sha": s}
        if k == "blob":
            entry["size"] = int(sz)
        tree.append(entry)
    # git/get-tree: "If truncated is true in the response then the number of items in the tree array exceeded
    # our maximum limit" (100,000 entries or 7 MB): https://docs.github.com/en/rest/git/trees#get-a-tree
    truncated = recursive and len(tree) > srv.tree_max_entries
    if truncated:
        tree = tree[: srv.tree_max_entries]
    return 200, {"sha": own, "tree": tree, "truncated": truncated}, {}


ROUTES = [
    Route("GET", re.compile(REPO + r"/contents/(?P<path>.+)$"), get_contents),
    Route("GET", re.compile(REPO + r"/git/blobs/(?P<sha>[0-9a-f]{40})$"), get_blob),
    Route("GET", re.compile(REPO + r"/git/trees/(?P<sha>[^/]+)$"), get_tree),
]
