"""What every route shares: the call it answers, its answer, GitHub's error, pagination, and the limits two
resources share.

Pagination (every list): `per_page` at most 100 (30 by default), `Link` headers with next / last / first / prev:
https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from prfleet_local.github.state import GitHubState, PullRequest

MAX_PER_PAGE = 100
MAX_BODY = (
    65_536  # a review's or an issue comment's body (GitHub's validation answer, not in the OpenAPI text)
)
BOT_LOGIN = "prfleet[bot]"
REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"  # the prefix of every repository route

Answer = tuple[int, Any, dict[str, str]]  # status, JSON body, headers


class HttpError(Exception):
    """GitHub's error answer: `message`, optional `errors`, and headers (a rate limit's x-ratelimit-*)."""

    def __init__(
        self, status: int, message: str, errors: list[Any] | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}


@dataclass
class Call:
    """One authorized API call as a route sees it."""

    srv: GitHubState
    params: dict[str, str]  # the path's named groups, unquoted
    query: dict[str, str]
    body: dict[str, Any]
    auth: str | None  # the Authorization header
    path: str  # the request path, for pagination links


@dataclass(frozen=True)
class Route:
    """A method and path pattern, and the function answering it. An `app_jwt` route is authenticated by the
    app's JWT (checked by the route itself): no installation token, repository check or primary rate limit."""

    method: str
    pattern: re.Pattern[str]
    answer: Callable[[Call], Answer]
    app_jwt: bool = False


def iso(ts: float) -> str:
    """GitHub's timestamp format (ISO 8601, UTC, seconds)."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pull_request(call: Call) -> PullRequest:
    """The pull request `{n}` of the path, or a 404."""
    pr = call.srv.prs.get(int(call.params["n"]))
    if pr is None:
        raise HttpError(404, "Not Found")
    return pr


def paginate(call: Call, items: list[Any], *, wrap: Callable[[list[Any]], Any] | None = None) -> Answer:
    """One page of `items` with GitHub's Link header (`wrap` shapes the page, for lists inside an object)."""
    query = call.query
    per_page = max(1, min(MAX_PER_PAGE, int(query.get("per_page") or 30)))
    page = max(1, int(query.get("page") or 1))
    last = max(1, -(-len(items) // per_page))
    chunk = items[(page - 1) * per_page : page * per_page]
    base = call.srv.api_url + call.path

    def link(p: int) -> str:
        q = dict(query, per_page=str(per_page), page=str(p))
        return f"<{base}?{urllib.parse.urlencode(q)}>"

    rels = []
    if page < last:
        rels += [f'{link(page + 1)}; rel="next"', f'{link(last)}; rel="last"']
    if page > 1:
        rels += [f'{link(1)}; rel="first"', f'{link(page - 1)}; rel="prev"']
    headers = {"Link": ", ".join(rels)} if rels else {}
    return 200, (wrap(chunk) if wrap else chunk), headers
