"""Who prfleet is to GitHub: a GitHub App (RS256 JWT -> installation access token, cached until shortly before it
expires) or a plain token, built from the GitHub secret.

Sources for the facts used here:
- JWT: RS256, `iat` 60 s in the past, `exp` no more than 10 minutes ahead, `iss` = app id:
  https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
- Installation tokens expire after one hour (`expires_at` in the reply):
  https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-an-installation-access-token-for-a-github-app
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from prfleet.github.transport import Auth, GitHubError, base_headers, raise_for, send

JWT_LIFETIME = 9 * 60  # GitHub allows at most 10 minutes; stay under it to absorb clock drift
JWT_BACKDATE = 60
TOKEN_REFRESH_MARGIN = 5 * 60  # refresh an installation token this long before its expires_at


class TokenAuth:
    """A fixed token (a fine-grained PAT or an Actions token), for simple setups."""

    renewable = False  # a fixed token cannot be refreshed; the caller sees the 401

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("empty GitHub token")
        self._token = token

    def authorization(self) -> str:
        return f"Bearer {self._token}"

    def invalidate(self) -> None:
        """Nothing cached to forget."""

    def __repr__(self) -> str:
        return "TokenAuth(***)"


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# Installation tokens shared by every AppAuth in the process, so a warm Lambda container reuses them.
_token_cache: dict[tuple[str, str, int], tuple[str, float]] = {}
_token_lock = threading.Lock()


class AppAuth:
    """GitHub App installation auth: JWT signed with the app's key, exchanged for an installation token."""

    renewable = True  # a revoked or early-expired installation token is minted anew

    def __init__(
        self,
        app_id: str | int,
        private_key_pem: str,
        api_url: str,
        installation_id: int,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = 10,
    ) -> None:
        if not installation_id:
            raise ValueError("a GitHub App needs the installation id (from the webhook's installation.id)")
        self.app_id = str(app_id)
        self._key = private_key_pem
        self.api_url = api_url.rstrip("/")
        self.installation_id = int(installation_id)
        self._clock = clock
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"AppAuth(app_id={self.app_id}, installation_id={self.installation_id})"

    def jwt(self) -> str:
        """An RS256 JWT for this app: issued 60 s in the past (clock drift), expiring within 10 minutes."""
        # Lazy: PyJWT loads cryptography (about 60-90 ms measured with -X importtime), which token-only setups
        # and every Lambda that reuses a cached installation token never need.
        import jwt

        now = int(self._clock())
        claims = {"iat": now - JWT_BACKDATE, "exp": now + JWT_LIFETIME, "iss": self.app_id}
        return jwt.encode(claims, self._key, algorithm="RS256")

    @property
    def _cache_key(self) -> tuple[str, str, int]:
        return (self.api_url, self.app_id, self.installation_id)

    def token(self) -> str:
        """The installation token, reused until TOKEN_REFRESH_MARGIN before its expires_at."""
        with _token_lock:
            cached = _token_cache.get(self._cache_key)
            if cached and cached[1] - TOKEN_REFRESH_MARGIN > self._clock():
                return cached[0]
        path = f"/app/installations/{self.installation_id}/access_tokens"
        headers = {**base_headers(), "Authorization": f"Bearer {self.jwt()}"}
        resp = send("POST", self.api_url + path, headers, b"", self._timeout)
        if resp.status >= 300:
            raise_for(resp, "POST", path)
        data = resp.json() or {}
        token = data.get("token")
        if not token:
            raise GitHubError(
                resp.status, f"POST {path} returned no token", resp.headers.get("x-github-request-id")
            )
        expires = data.get("expires_at")
        expires_at = _parse_time(expires) if expires else self._clock() + 3600
        with _token_lock:
            _token_cache[self._cache_key] = (token, expires_at)
        return token

    def authorization(self) -> str:
        return f"Bearer {self.token()}"

    def invalidate(self) -> None:
        with _token_lock:
            _token_cache.pop(self._cache_key, None)

    @staticmethod
    def clear_cache() -> None:
        """Forget every cached installation token (tests)."""
        with _token_lock:
            _token_cache.clear()


def auth_from_secret(secret: Mapping[str, Any] | str, api_url: str, installation_id: int | None) -> Auth:
    """Build Auth from the GitHub secret: {"app_id", "private_key"} (preferred) or {"token"}."""
    if isinstance(secret, str):
        text = secret.strip()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = {"token": text} if text else {}
        secret = parsed if isinstance(parsed, dict) else {}
    app_id = secret.get("app_id")
    key = secret.get("private_key")
    if app_id and key:
        if not installation_id:
            raise ValueError(
                "the GitHub secret holds a GitHub App, but the event carries no installation id; "
                "install the app on the repository (webhook payload field installation.id)"
            )
        return AppAuth(app_id, str(key).replace("\\n", "\n"), api_url, int(installation_id))
    token = secret.get("token") or secret.get("value")
    if token:
        return TokenAuth(str(token))
    raise ValueError(
        'the GitHub secret must be JSON {"app_id": "...", "private_key": "-----BEGIN ... KEY-----..."} '
        'or {"token": "..."}; it has neither'
        + (" (app_id without private_key or the reverse)" if app_id or key else "")
    )
