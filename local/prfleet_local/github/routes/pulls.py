"""Pull requests: one PR, its files, and a comparison of two commits.

PR files (`pulls/list-files`): per_page max 100, Link header pagination, at most 3000 files ("Responses include
a maximum of 3000 files"); which files carry a `patch` is diff.py's rule:
https://docs.github.com/en/rest/pulls/pulls#list-pull-requests-files
"""

from __future__ import annotations

import re
import urllib.parse

from prfleet_local.github.diff import compute_files
from prfleet_local.github.routes.common import REPO, Answer, Call, HttpError, Route, paginate, pull_request

FILES_CAP = 3000


def get_pull(call: Call) -> Answer:
    """GET /repos/{o}/{r}/pulls/{n}."""
    return 200, call.srv.pr_json(pull_request(call)), {}


def pull_files(call: Call) -> Answer:
    """GET /repos/{o}/{r}/pulls/{n}/files, paginated."""
    # pulls/list-files: "Responses include a maximum of 3000 files", 100 a page at most; `patch` left out
    # by compute_files: https://docs.github.com/en/rest/pulls/pulls#list-pull-requests-files
    files = call.srv.files_of(pull_request(call))[:FILES_CAP]
    api, name = call.srv.api_url, call.srv.full_name
    out = []
    for f in files:
        entry = {k: v for k, v in f.items() if k != "mode"}
        entry["contents_url"] = f"{api}/repos/{name}/contents/{urllib.parse.quote(f['filename'])}"
        out.append(entry)
    return paginate(call, out)


def compare(call: Call) -> Answer:
    """GET /repos/{o}/{r}/compare/{base}...{head}."""
    srv = call.srv
    base, head = srv.repo.resolve(call.params["base"]), srv.repo.resolve(call.params["head"])
    if base is None or head is None:
        raise HttpError(404, "Not Found")
    files = [{k: v for k, v in f.items() if k != "mode"} for f in compute_files(srv.repo, base, head)]
    ahead = int(srv.repo.git("rev-list", "--count", f"{base}..{head}").strip())
    behind = int(srv.repo.git("rev-list", "--count", f"{head}..{base}").strip())
    status = "identical" if base == head else "ahead" if not behind else "behind" if not ahead else "diverged"
    return (
        200,
        {
            "status": status,
            "ahead_by": ahead,
            "behind_by": behind,
            "merge_base_commit": {"sha": srv.repo.git("merge-base", base, head).strip()},
            "files": files[:FILES_CAP],
        },
        {},
    )


ROUTES = [
    Route("GET", re.compile(REPO + r"/pulls/(?P<n>\d+)$"), get_pull),
    Route("GET", re.compile(REPO + r"/pulls/(?P<n>\d+)/files$"), pull_files),
    Route("GET", re.compile(REPO + r"/compare/(?P<base>[^/]+)\.\.\.(?P<head>[^/]+)$"), compare),
]
