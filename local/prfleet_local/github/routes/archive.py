"""The repository archive (`repos/download-tarball-archive`): `GET /repos/{o}/{r}/tarball/{ref}`.

As GitHub documents it (https://docs.github.com/en/rest/repos/contents#download-a-repository-archive-tar):
- the API answers `302 Found` with a `Location` on codeload.github.com ("Gets a redirect URL to download a tar
  archive for a repository ... you will need to use the Location header to make a second GET request");
- "For private repositories, these links are temporary and expire after five minutes": the fake's link carries a
  one-off token that the codeload side (codeload.py) checks, with no Authorization header, and expires after 300 s;
- an unknown ref is a 404, like every repository resource GitHub cannot find.
The archive itself (codeload.py) is `git archive` of the commit under one top-level folder
`{owner}-{repo}-{sha7}/`, the name GitHub gives it.
"""

from __future__ import annotations

import re
import secrets

from prfleet_local.github.routes.common import REPO, Answer, Call, HttpError, Route

LINK_TTL_S = 300  # "these links are temporary and expire after five minutes"
CODELOAD_PREFIX = "/_codeload/"  # the fake's stand-in for https://codeload.github.com/


def get_tarball(call: Call) -> Answer:
    """GET /repos/{o}/{r}/tarball/{ref}: 302 to a short-lived codeload link for the commit `ref` names."""
    srv = call.srv
    sha = srv.repo.resolve(call.params["ref"])
    if sha is None:
        raise HttpError(404, "Not Found")
    token = secrets.token_urlsafe(16)
    with srv.lock:
        srv.archive_links[token] = (sha, srv.clock() + LINK_TTL_S)
    owner, repo = call.params["owner"], call.params["repo"]
    location = f"{srv.api_url}{CODELOAD_PREFIX}{owner}/{repo}/legacy.tar.gz/{sha}?token={token}"
    return 302, None, {"Location": location}


ROUTES = [Route("GET", re.compile(REPO + r"/tarball/(?P<ref>.+)$"), get_tarball)]
