"""Who may call and who may do what: installation tokens for the app, and a collaborator's permission.

Installation tokens come from POST /app/installations/{id}/access_tokens, given an RS256 JWT signed by the app
(verified when the app's public key is configured; `exp` at most 10 minutes ahead), expiring after one hour:
https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app,
https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-an-installation-access-token-for-a-github-app
A collaborator's permission (`repos/get-collaborator-permission-level`): `maintain` reads as write, `triage` as read,
the role itself in `role_name`.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import jwt

from prfleet_local.github.routes.common import REPO, Answer, Call, HttpError, Route, iso


def installation_token(call: Call) -> Answer:
    """POST /app/installations/{id}/access_tokens: a one-hour token for the app's valid JWT."""
    srv = call.srv
    scheme, _, token = (call.auth or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HttpError(401, "A JSON web token could not be decoded")
    claims: dict[str, Any] = {}
    if srv.app_public_key_pem is not None:
        try:
            claims = jwt.decode(
                token,
                srv.app_public_key_pem,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"], "verify_iat": False, "verify_exp": False},
                leeway=0,
            )
        except jwt.PyJWTError as exc:
            raise HttpError(401, f"A JSON web token could not be decoded ({exc})") from None
        now = srv.clock()
        if claims["exp"] <= now:
            raise HttpError(401, "'Expiration time' claim ('exp') must be a numeric value in the future")
        # "The time must be no more than 10 minutes into the future."
        if claims["exp"] - now > 600 + 5 or claims["exp"] - claims["iat"] > 660:
            raise HttpError(401, "'Expiration time' claim ('exp') is too far in the future")
        if claims["iat"] > now + 5:
            raise HttpError(
                401, "'Issued at' claim ('iat') must be an Integer representing a time in the past"
            )
        if srv.app_id is not None and str(claims["iss"]) != srv.app_id:
            raise HttpError(401, "'Issuer' claim ('iss') must be the app's id")
    if int(call.params["id"]) != srv.installation_id:
        raise HttpError(404, "Not Found")
    new = "ghs_" + secrets.token_hex(18)
    expires = srv.clock() + srv.token_ttl
    with srv.lock:
        srv.issued_tokens[new] = expires
        srv.token_requests.append(claims)
    return (
        201,
        {"token": new, "expires_at": iso(expires), "permissions": {}, "repository_selection": "all"},
        {},
    )


def collaborator_permission(call: Call) -> Answer:
    """GET /repos/{o}/{r}/collaborators/{user}/permission."""
    user = call.params["user"]
    role = call.srv.collaborators.get(user)
    if role is None:
        raise HttpError(404, f"{user} is not a user")
    permission = {"maintain": "write", "triage": "read"}.get(role, role)
    return 200, {"permission": permission, "role_name": role, "user": {"login": user}}, {}


ROUTES = [
    Route(
        "POST",
        re.compile(r"^/app/installations/(?P<id>\d+)/access_tokens$"),
        installation_token,
        app_jwt=True,
    ),
    Route("GET", re.compile(REPO + r"/collaborators/(?P<user>[^/]+)/permission$"), collaborator_permission),
]
