"""The fake GitHub's REST routes, one module per resource; each module cites the GitHub pages it follows.

access (installation tokens, collaborator permission), pulls (a PR, its files, compare), reviews (reviews and
review comments), contents (contents, blobs, trees), archive (the tarball redirect), checks (check runs), issues
(issue comments), reactions (a reaction on a review or issue comment), comments (a review comment, a reply in
its thread, an issue comment).
"""

from __future__ import annotations

from prfleet_local.github.routes import (
    access,
    archive,
    checks,
    comments,
    contents,
    issues,
    pulls,
    reactions,
    reviews,
)
from prfleet_local.github.routes.common import Route

ROUTES: list[Route] = [
    *access.ROUTES,
    *pulls.ROUTES,
    *reviews.ROUTES,
    *contents.ROUTES,
    *archive.ROUTES,
    *checks.ROUTES,
    *issues.ROUTES,
    *reactions.ROUTES,
    *comments.ROUTES,
]
