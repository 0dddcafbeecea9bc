"""GitHub REST client on the standard library only (urllib), so the webhook and planner Lambdas stay light.

Auth is a GitHub App (RS256 JWT -> installation access token, cached until shortly before it expires) or
a plain token. Every request carries the documented headers; errors become GitHubError with a message that
says what to fix; 422 is GitHubUnprocessable; secondary rate limits are waited out (bounded,
injectable sleep).

Sources for the facts used here:
- JWT: RS256, `iat` 60 s in the past, `exp` no more than 10 minutes ahead, `iss` = app id:
  https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
- Installation tokens expire after one hour (`expires_at` in the reply):
  https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-an-installation-access-token-for-a-github-app
- Headers (Accept, X-GitHub-Api-Version 2022-11-28, User-Agent required):
  https://docs.github.com/en/rest/using-the-rest-api/getting-started-with-the-rest-api
- Link header pagination: https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api
- PR files: at most 3000 files, per_page max 100: https://docs.github.com/en/rest/pulls/pulls#list-pull-requests-files
- Contents: above 1 MB `content` is empty (`encoding: none`), use the blob:
  https://docs.github.com/en/rest/repos/contents#get-repository-content and
  https://docs.github.com/en/rest/git/blobs#get-a-blob (up to 100 MB)
- Secondary rate limits (403/429 + retry-after, or x-ratelimit-remaining: 0 until x-ratelimit-reset, else wait
  at least a minute): https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
- Check run annotations: 50 per request, later updates append:
  https://docs.github.com/en/rest/checks/runs#update-a-check-run
- Conditional requests (ETag / If-None-Match; a 304 does not count against the primary rate limit):
  https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate
- Recursive trees are cut at 100,000 entries or 7 MB (`truncated: true`):
  https://docs.github.com/en/rest/git/trees#get-a-tree
- A symlink whose target is a file in the repository comes back from the contents API as that file:
  https://docs.github.com/en/rest/repos/contents#get-repository-content

Writes that are not idempotent (POST a review, a comment, a check run; PATCH with annotations, which GitHub
appends) are never re-sent blindly after a 5xx or a timeout: GitHub may have applied them. The client first looks
for what it wrote (the hidden marker, the check run's external_id, the annotation count) and re-sends only when it
is not there. Rate-limit waits never pass the deadline set with `github.deadline(...)` (the Lambda's remaining
time): a longer wait raises GitHubRateLimited with `retry_after`, and the handler re-queues the job with a delay.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from prfleet.config import secret_store, settings
from prfleet.github.files import SYMLINK_MODE, ChangedFile

API_VERSION = "2022-11-28"
USER_AGENT = "prfleet"
FILES_CAP = 3000  # GitHub lists at most 3000 files of a pull request
PER_PAGE = 100
ANNOTATIONS_PER_REQUEST = 50
JWT_LIFETIME = 9 * 60  # GitHub allows at most 10 minutes; stay under it to absorb clock drift
JWT_BACKDATE = 60
TOKEN_REFRESH_MARGIN = 5 * 60  # refresh an installation token this long before its expires_at
SECONDARY_MIN_WAIT = 60.0  # "wait for at least one minute before retrying", then longer each time
ETAG_CACHE_BYTES = 16 * 1024 * 1024
BLOB_CACHE_BYTES = 32 * 1024 * 1024


class GitHubError(Exception):
    """A GitHub API call failed; `message` says what to do about it, `request_id` is for GitHub support."""

    def __init__(self, status: int, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{message} (HTTP {status}" + (f", request id {request_id})" if request_id else ")"))
        self.status = status
        self.message = message
        self.request_id = request_id


class GitHubUnprocessable(GitHubError):
    """422: GitHub understood the request but refused it (e.g. an inline comment outside the diff)."""

    def __init__(
        self, status: int, message: str, request_id: str | None = None, errors: list[Any] | None = None
    ):
        super().__init__(status, message, request_id)
        self.errors = errors or []


class GitHubWriteUncertain(GitHubError):
    """A non-idempotent write got a 5xx or no answer: GitHub may or may not have applied it."""


class GitHubRateLimited(GitHubError):
    """A rate limit whose wait exceeds what we may sleep here; `retry_after` says when to retry."""

    def __init__(self, status: int, message: str, request_id: str | None, retry_after: float) -> None:
        super().__init__(status, message, request_id)
        self.retry_after = retry_after


# --- transport ---


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _http(method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float) -> Response:
    """One HTTP exchange; non-2xx statuses are returned, not raised. Loopback skips proxies."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    opener = _direct if urllib.parse.urlsplit(url).hostname in _LOOPBACK else urllib.request.build_opener()
    try:
        with opener.open(req, timeout=timeout) as resp:
            return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        data = exc.read() if exc.fp else b""
        return Response(exc.code, {k.lower(): v for k, v in (exc.headers or {}).items()}, data)


def _base_headers() -> dict[str, str]:
    return {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": API_VERSION,
        "User-Agent": USER_AGENT,
    }


def _error_message(resp: Response) -> tuple[str, list[Any]]:
    try:
        data = resp.json()
    except ValueError:
        return resp.body[:200].decode("utf-8", "replace"), []
    if isinstance(data, dict):
        errors = data.get("errors") or []
        return str(data.get("message") or ""), errors if isinstance(errors, list) else [errors]
    return "", []


def _raise_for(resp: Response, method: str, path: str) -> None:
    """Turn a failed response into a GitHubError whose message names the likely fix."""
    request_id = resp.headers.get("x-github-request-id")
    detail, errors = _error_message(resp)
    what = f"{method} {path}"
    if resp.status == 401:
        msg = (
            f"GitHub rejected the credentials for {what}: check the GitHub secret (token, or app id and "
            f"private key) and that the installation token has not been revoked. "
            f"GitHub said: {detail or 'Bad credentials'}"
        )
    elif resp.status == 403:
        msg = (
            f"GitHub refused {what}: the token or app installation lacks a permission it needs "
            f"(pull requests: write, checks: write, contents: read, issues: write, metadata: read). "
            f"GitHub said: {detail}"
        )
    elif resp.status == 404:
        msg = (
            f"GitHub found nothing at {what}: the repository, pull request or file does not exist, "
            f"or the app is not installed on this repository "
            f"(GitHub answers 404 for private repositories it hides). "
            f"GitHub said: {detail or 'Not Found'}"
        )
    elif resp.status == 422:
        parts = [str(e.get("message") or e) if isinstance(e, dict) else str(e) for e in errors]
        msg = f"GitHub refused {what} as unprocessable: {detail}" + (
            f" ({'; '.join(parts)})" if parts else ""
        )
        raise GitHubUnprocessable(resp.status, msg, request_id, errors)
    else:
        msg = f"GitHub answered {resp.status} to {what}: {detail}"
    raise GitHubError(resp.status, msg, request_id)


# --- deadline and caches shared by the clients of one process (a warm Lambda container) ---

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("github_deadline", default=None)


@contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Within this block no GitHub wait (rate limit, backoff) may end after epoch second `at`."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


class _LruBytes:
    """A byte-bounded LRU: ETag'd responses by URL, blobs by sha (a blob never changes)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[Any, tuple[int, Any]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: Any, value: Any, size: int) -> None:
        if size > self.limit // 4:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old:
                self._size -= old[0]
            self._items[key] = (size, value)
            self._size += size
            while self._size > self.limit and self._items:
                _k, (n, _v) = self._items.popitem(last=False)
                self._size -= n

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._size = 0


_etags = _LruBytes(ETAG_CACHE_BYTES)
_blobs = _LruBytes(BLOB_CACHE_BYTES)


def clear_caches() -> None:
    """Forget cached ETag responses and blobs (tests, benchmarks)."""
    _etags.clear()
    _blobs.clear()


# --- auth ---


class Auth(Protocol):
    def authorization(self) -> str:
        """The value of the Authorization header."""
        ...

    def invalidate(self) -> None:
        """Forget a cached credential after GitHub rejected it."""
        ...


class TokenAuth:
    """A fixed token (a fine-grained PAT or an Actions token), for simple setups."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("empty GitHub token")
        self._token = token

    def authorization(self) -> str:
        return f"Bearer {self._token}"

    def invalidate(self) -> None:
        """A fixed token cannot be refreshed; the caller sees the 401."""

    def __repr__(self) -> str:
        return "TokenAuth(***)"


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# Installation tokens shared by every AppAuth in the process, so a warm Lambda container reuses them.
_token_cache: dict[tuple[str, str, int], tuple[str, float]] = {}
_token_lock = threading.Lock()


class AppAuth:
    """GitHub App installation auth: JWT signed with the app's key, exchanged for an installation token."""

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
        import jwt  # PyJWT; imported here so token-only setups never load cryptography

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
        headers = {**_base_headers(), "Authorization": f"Bearer {self.jwt()}"}
        resp = _http("POST", self.api_url + path, headers, b"", self._timeout)
        if resp.status >= 300:
            _raise_for(resp, "POST", path)
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


# --- client ---


_LINK_RE = re.compile(r'<([^>]+)>\s*;\s*rel="([^"]+)"')


def _first_annotations(payload: dict[str, Any], output: Mapping[str, Any] | None) -> list[Any]:
    """Put `output` with at most 50 annotations into `payload`; return the annotations left for follow-ups."""
    if output is None:
        return []
    out = dict(output)
    anns = list(out.pop("annotations", None) or [])
    if anns:
        out["annotations"] = anns[:ANNOTATIONS_PER_REQUEST]
    payload["output"] = out
    return anns[ANNOTATIONS_PER_REQUEST:]


def parse_link(header: str | None) -> dict[str, str]:
    """rel -> URL from a Link header."""
    return {rel: url for url, rel in _LINK_RE.findall(header or "")}


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _qpath(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


class GitHub:
    """The REST calls prfleet makes. `repo` is always "owner/name"."""

    def __init__(
        self,
        api_url: str,
        auth: Auth,
        *,
        timeout: float = 10,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        max_retries: int = 3,
        max_wait: float = 60.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.auth = auth
        self.timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self.max_retries = max_retries
        self.max_wait = max_wait

    # -- plumbing --

    def _rate_limit_wait(self, resp: Response, attempt: int) -> float | None:
        """Seconds to wait if this is a primary or secondary rate limit, else None.

        GitHub: honour `retry-after`; with `x-ratelimit-remaining: 0` wait until `x-ratelimit-reset`; otherwise
        wait at least a minute and longer on each further refusal (exponential).
        """
        if resp.status not in (403, 429):
            return None
        h = resp.headers
        if h.get("retry-after"):
            try:
                return max(0.0, float(h["retry-after"]))
            except ValueError:
                return SECONDARY_MIN_WAIT * 2**attempt
        if h.get("x-ratelimit-remaining") == "0":
            try:
                return max(1.0, float(h.get("x-ratelimit-reset", "0")) - self._clock() + 1)
            except ValueError:
                return SECONDARY_MIN_WAIT * 2**attempt
        detail, _ = _error_message(resp)
        if resp.status == 429 or "rate limit" in detail.lower():
            return SECONDARY_MIN_WAIT * 2**attempt
        return None

    def _room(self) -> float:
        """How long we may still wait: up to the deadline when one is set, else `max_wait`."""
        limit = _deadline.get()
        if limit is None:
            return self.max_wait
        return max(0.0, limit - self._clock())

    def _cache_scope(self) -> tuple[str, Any]:
        return (self.api_url, getattr(self.auth, "installation_id", id(self.auth)))

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        accept: str | None = None,
        idempotent: bool | None = None,
    ) -> Response:
        """One API call with auth; retries rate limits (within the deadline), a stale installation token, and
        5xx/network errors of idempotent requests. A non-idempotent write (POST by default) that gets a 5xx or
        no answer raises GitHubWriteUncertain instead: the caller looks for it before sending it again.
        GETs are conditional (If-None-Match) when an ETag is known; a 304 answers from the cached body."""
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self.api_url + path_or_url
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        path = urllib.parse.urlsplit(url).path
        data = json.dumps(body).encode() if body is not None else None
        safe = (method != "POST") if idempotent is None else idempotent
        cache_key = (*self._cache_scope(), url, accept) if method == "GET" else None
        cached: Response | None = _etags.get(cache_key) if cache_key else None
        refreshed = False
        attempt = 0
        while True:
            headers = {**_base_headers(), "Authorization": self.auth.authorization()}
            if accept:
                headers["Accept"] = accept
            if data is not None:
                headers["Content-Type"] = "application/json"
            if cached is not None and cached.headers.get("etag"):
                headers["If-None-Match"] = cached.headers["etag"]
            try:
                resp = _http(method, url, headers, data, self.timeout)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                msg = f"cannot reach GitHub at {self.api_url} for {method} {path}: {exc}"
                if not safe:
                    raise GitHubWriteUncertain(0, msg) from exc
                if attempt < self.max_retries and self._backoff(attempt):
                    attempt += 1
                    continue
                raise GitHubError(0, msg) from exc
            if resp.status == 304 and cached is not None:
                return cached
            if resp.status < 300:
                if cache_key and resp.headers.get("etag"):
                    _etags.put(cache_key, resp, len(resp.body))
                return resp
            if resp.status == 401 and not refreshed:
                refreshed = (
                    True  # an installation token may have been revoked or expired early: mint a new one
                )
                self.auth.invalidate()
                if isinstance(self.auth, AppAuth):
                    continue
            wait = self._rate_limit_wait(resp, attempt)
            if wait is not None:
                detail, _ = _error_message(resp)
                if attempt >= self.max_retries or wait > self._room():
                    raise GitHubRateLimited(
                        resp.status,
                        f"GitHub rate limit on {method} {path}: retry after {wait:.0f} s ({detail})",
                        resp.headers.get("x-github-request-id"),
                        wait,
                    )
                attempt += 1
                self._sleep(wait)
                continue
            if resp.status in (500, 502, 503, 504):
                if not safe:
                    detail, _ = _error_message(resp)
                    raise GitHubWriteUncertain(
                        resp.status,
                        f"GitHub answered {resp.status} to {method} {path}; it may have applied it: {detail}",
                        resp.headers.get("x-github-request-id"),
                    )
                if attempt < self.max_retries and self._backoff(attempt):
                    attempt += 1
                    continue
            _raise_for(resp, method, path)

    def _backoff(self, attempt: int) -> bool:
        """Sleep before retry `attempt + 1` (1 s, 2 s, 4 s ...) if the deadline allows; False if it does not."""
        wait = min(2.0**attempt, self.max_wait)
        if wait > self._room():
            return False
        self._sleep(wait)
        return True

    def _write_once(self, send: Callable[[], Any], find: Callable[[], Any | None] | None) -> Any:
        """Send a non-idempotent write; after an uncertain outcome look for it (`find`) before sending again.
        Without a way to look (`find` None) the uncertainty is raised: a duplicate is worse than a retry later."""
        attempt = 0
        while True:
            try:
                return send()
            except GitHubWriteUncertain:
                if find is None or attempt >= self.max_retries or not self._backoff(attempt):
                    raise
                attempt += 1
                found = find()
                if found is not None:
                    return found

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw).json()

    def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, *, key: str | None = None
    ) -> Iterator[Any]:
        """Every item of a list endpoint, following Link rel="next" (per_page=100)."""
        url: str | None = path
        query: Mapping[str, Any] | None = {"per_page": PER_PAGE, **(params or {})}
        while url:
            resp = self.request("GET", url, params=query)
            data = resp.json()
            items = data.get(key, []) if key and isinstance(data, dict) else data
            yield from items or []
            url = parse_link(resp.headers.get("link")).get("next")
            query = None  # the next URL carries the query

    # -- pull requests --

    def pr(self, repo: str, number: int) -> dict[str, Any]:
        return self._json("GET", f"/repos/{repo}/pulls/{int(number)}")

    def iter_pr_files(self, repo: str, number: int) -> Iterator[dict[str, Any]]:
        """Every listed file of the PR (GitHub stops at 3000)."""
        return self.paginate(f"/repos/{repo}/pulls/{int(number)}/files")

    def pr_files(
        self, repo: str, number: int, *, max_files: int, changed_files: int | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Up to `max_files` files of the PR and how many more it changes (past our cap or GitHub's 3000)."""
        files: list[dict[str, Any]] = []
        url: str | None = f"/repos/{repo}/pulls/{int(number)}/files"
        query: Mapping[str, Any] | None = {"per_page": PER_PAGE}
        more_pages = False
        while url:
            resp = self.request("GET", url, params=query)
            page = resp.json() or []
            room = max_files - len(files)
            files.extend(page[:room])
            url = parse_link(resp.headers.get("link")).get("next")
            query = None
            if len(page) > room or (url and len(files) >= max_files):
                more_pages = True
                break
        if not more_pages and len(files) < FILES_CAP and changed_files is None:
            return files, 0
        if changed_files is None:
            changed_files = int(self.pr(repo, number).get("changed_files") or len(files))
        return files, max(0, changed_files - len(files))

    def compare(self, repo: str, base: str, head: str) -> dict[str, Any]:
        return self._json("GET", f"/repos/{repo}/compare/{_q(base)}...{_q(head)}")

    def pr_diff(self, repo: str, number: int) -> str:
        """The whole PR as a unified diff (media type application/vnd.github.diff)."""
        resp = self.request("GET", f"/repos/{repo}/pulls/{int(number)}", accept="application/vnd.github.diff")
        return resp.body.decode("utf-8", "replace")

    # -- contents --

    def content(self, repo: str, path: str, ref: str) -> Any | None:
        """The contents API object (file, symlink or directory listing) at `ref`, or None on 404."""
        try:
            return self._json(
                "GET", f"/repos/{repo}/contents/{_qpath(path.lstrip('/'))}", params={"ref": ref}
            )
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise

    def file_at(self, repo: str, path: str, ref: str) -> bytes | None:
        """A file's bytes at `ref` (base64 contents API, git blob for files over 1 MB); None when absent.

        A symlink yields its target path, as git stores it; a directory yields None.
        """
        data = self.content(repo, path, ref)
        if data is None or isinstance(data, list):
            return None
        kind = data.get("type")
        if kind == "symlink":
            return str(data.get("target") or "").encode()
        if kind != "file":
            return None
        if data.get("encoding") == "base64" and (data.get("content") or not data.get("size")):
            return base64.b64decode(data.get("content") or "")
        return self.blob(repo, data["sha"])

    def blob(self, repo: str, sha: str) -> bytes:
        """A git blob by sha (base64, up to 100 MB); kept in a process-wide cache, since a blob never changes."""
        key = (*self._cache_scope(), repo, sha)
        hit = _blobs.get(key)
        if hit is not None:
            return hit
        data = self._json("GET", f"/repos/{repo}/git/blobs/{_q(sha)}")
        if data.get("encoding") == "base64":
            raw = base64.b64decode(data.get("content") or "")
        else:
            raw = str(data.get("content") or "").encode()
        _blobs.put(key, raw, len(raw))
        return raw

    def tree_obj(self, repo: str, sha: str, *, recursive: bool = True) -> dict[str, Any]:
        """The tree object at `sha` (a commit, tree or ref): {"sha", "tree": [...], "truncated": bool}."""
        params = {"recursive": "1"} if recursive else None
        return self._json("GET", f"/repos/{repo}/git/trees/{_q(sha)}", params=params) or {}

    def tree(self, repo: str, sha: str) -> list[dict[str, Any]]:
        """Recursive tree at `sha`: entries with path, mode, type, sha, size (possibly truncated by GitHub)."""
        return list(self.tree_obj(repo, sha).get("tree") or [])

    def collaborator_permission(self, repo: str, user: str) -> str:
        """admin / write / read / none (GitHub folds maintain into write, triage into read).

        https://docs.github.com/en/rest/collaborators/collaborators#get-repository-permissions-for-a-user
        """
        try:
            data = self._json("GET", f"/repos/{repo}/collaborators/{_q(user)}/permission")
        except GitHubError as exc:
            if exc.status == 404:
                return "none"
            raise
        return str(data.get("permission") or "none")

    # -- reviews --

    def create_review(
        self,
        repo: str,
        number: int,
        commit_id: str,
        body: str,
        comments: list[dict[str, Any]],
        event: str = "COMMENT",
        *,
        marker: str | None = None,
    ) -> dict[str, Any]:
        """One review with inline comments ({path, line, side, body}); 422 -> GitHubUnprocessable.

        With `marker` (a hidden HTML comment, unique per head and posting) the review is created at most once:
        after a 5xx or a timeout the PR's reviews are searched for the marker before the POST is sent again.
        """
        if marker and marker not in body:
            body = f"{body}\n\n{marker}"
        payload: dict[str, Any] = {"commit_id": commit_id, "body": body, "event": event}
        if comments:
            payload["comments"] = comments
        path = f"/repos/{repo}/pulls/{int(number)}/reviews"

        return self._write_once(
            lambda: self._json("POST", path, body=payload),
            (lambda: self.find_review(repo, number, commit_id, marker or "")) if marker else None,
        )

    def find_review(self, repo: str, number: int, commit_id: str, marker: str) -> dict[str, Any] | None:
        """The PR's review on `commit_id` whose body carries `marker`, if GitHub has one."""
        return next(
            (
                r
                for r in self.list_reviews(repo, number)
                if marker in (r.get("body") or "") and r.get("commit_id") == commit_id
            ),
            None,
        )

    def list_reviews(self, repo: str, number: int) -> list[dict[str, Any]]:
        return list(self.paginate(f"/repos/{repo}/pulls/{int(number)}/reviews"))

    def list_review_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        return list(self.paginate(f"/repos/{repo}/pulls/{int(number)}/comments"))

    # -- check runs --

    def create_check_run(
        self,
        repo: str,
        name: str,
        head_sha: str,
        status: str = "queued",
        *,
        external_id: str | None = None,
        details_url: str | None = None,
        conclusion: str | None = None,
        output: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a check run; annotations beyond 50 are sent through follow-up updates."""
        payload: dict[str, Any] = {"name": name, "head_sha": head_sha, "status": status}
        if external_id:
            payload["external_id"] = external_id
        if details_url:
            payload["details_url"] = details_url
        if conclusion:
            payload["conclusion"] = conclusion
        rest = _first_annotations(payload, output)

        def find() -> dict[str, Any] | None:
            return next(
                (
                    r
                    for r in self.list_check_runs(repo, head_sha, name=name)
                    if r.get("external_id") == external_id and r.get("name") == name
                ),
                None,
            )

        run = self._write_once(
            lambda: self._json("POST", f"/repos/{repo}/check-runs", body=payload),
            find if external_id else None,
        )
        if rest:
            self._append_annotations(repo, run["id"], dict(output or {}), rest, run)
        return run

    def update_check_run(
        self,
        repo: str,
        check_run_id: int,
        *,
        status: str | None = None,
        conclusion: str | None = None,
        output: Mapping[str, Any] | None = None,
        name: str | None = None,
        details_url: str | None = None,
    ) -> dict[str, Any]:
        """Update a check run. The first request carries status/conclusion and up to 50 annotations; the rest
        follow in batches of 50 (GitHub appends them)."""
        payload: dict[str, Any] = {}
        if name:
            payload["name"] = name
        if status:
            payload["status"] = status
        if conclusion:
            payload["conclusion"] = conclusion
        if details_url:
            payload["details_url"] = details_url
        rest = _first_annotations(payload, output)
        run = self._patch_check_run(repo, check_run_id, payload)
        if rest:
            run = self._append_annotations(repo, check_run_id, dict(output or {}), rest, run) or run
        return run

    def get_check_run(self, repo: str, check_run_id: int) -> dict[str, Any]:
        return self._json("GET", f"/repos/{repo}/check-runs/{int(check_run_id)}")

    def _patch_check_run(
        self, repo: str, check_run_id: int, payload: dict[str, Any], *, count_before: int | None = None
    ) -> dict[str, Any]:
        """PATCH a check run. Without annotations it is idempotent; with them GitHub appends, so after an
        uncertain outcome the run is read back: applied when it shows this payload's status, conclusion, title
        and summary (and, for a follow-up batch, the annotation count it would have after this batch)."""
        path = f"/repos/{repo}/check-runs/{int(check_run_id)}"
        anns = (payload.get("output") or {}).get("annotations") or []
        if not anns:
            return self._json("PATCH", path, body=payload)

        def find() -> dict[str, Any] | None:
            run = self.get_check_run(repo, check_run_id)
            out, want = run.get("output") or {}, payload.get("output") or {}
            same = all(run.get(k) == payload[k] for k in ("status", "conclusion") if k in payload) and all(
                out.get(k) == want[k] for k in ("title", "summary") if k in want
            )
            if count_before is not None:
                same = same and int(out.get("annotations_count") or 0) >= count_before + len(anns)
            return run if same else None

        return self._write_once(lambda: self._json("PATCH", path, body=payload, idempotent=False), find)

    def _append_annotations(
        self,
        repo: str,
        check_run_id: int,
        output: Mapping[str, Any],
        annotations: list[Any],
        run: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        title, summary = output.get("title") or "prfleet", output.get("summary") or ""
        count = int(((run or {}).get("output") or {}).get("annotations_count") or 0)
        last: dict[str, Any] | None = None
        for i in range(0, len(annotations), ANNOTATIONS_PER_REQUEST):
            batch = annotations[i : i + ANNOTATIONS_PER_REQUEST]
            last = self._patch_check_run(
                repo,
                check_run_id,
                {"output": {"title": title, "summary": summary, "annotations": batch}},
                count_before=count,
            )
            count = int((last.get("output") or {}).get("annotations_count") or count + len(batch))
        return last

    def list_check_runs(self, repo: str, sha: str, *, name: str | None = None) -> list[dict[str, Any]]:
        """Every check run on `sha` (named `name`, if given), newest first. `filter=all`: GitHub's default
        (`latest`) lists only the newest run of each name:
        https://docs.github.com/en/rest/checks/runs#list-check-runs-for-a-git-reference"""
        params = {"filter": "all", **({"check_name": name} if name else {})}
        return list(self.paginate(f"/repos/{repo}/commits/{_q(sha)}/check-runs", params, key="check_runs"))

    # -- issue comments --

    def list_issue_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        return list(self.paginate(f"/repos/{repo}/issues/{int(number)}/comments"))

    def find_issue_comment(self, repo: str, number: int, marker: str) -> dict[str, Any] | None:
        """The oldest comment on the PR containing the hidden marker."""
        for c in self.list_issue_comments(repo, number):
            if marker in (c.get("body") or ""):
                return c
        return None

    def create_issue_comment(
        self, repo: str, number: int, body: str, *, marker: str | None = None
    ) -> dict[str, Any]:
        """Create a PR comment; with `marker` (in the body) at most once, even after a 5xx or a timeout."""
        path = f"/repos/{repo}/issues/{int(number)}/comments"
        return self._write_once(
            lambda: self._json("POST", path, body={"body": body}),
            (lambda: self.find_issue_comment(repo, number, marker or "")) if marker else None,
        )

    def update_issue_comment(self, repo: str, comment_id: int, body: str) -> dict[str, Any]:
        return self._json("PATCH", f"/repos/{repo}/issues/comments/{int(comment_id)}", body={"body": body})

    def upsert_issue_comment(self, repo: str, number: int, marker: str, body: str) -> dict[str, Any]:
        """Edit the comment carrying `marker` in place, else create it (the body always gets the marker)."""
        if marker not in body:
            body = f"{marker}\n{body}"
        existing = self.find_issue_comment(repo, number, marker)
        if existing is not None:
            if existing.get("body") == body:
                return existing
            return self.update_issue_comment(repo, existing["id"], body)
        return self.create_issue_comment(repo, number, body, marker=marker)


# --- PrSource over GitHub ---


_ADDED_HUNK = re.compile(r"^@@ -0,0 \+1(?:,\d+)? @@")


def git_blob_sha(data: bytes) -> str:
    """Git's object id of a blob: sha1 of "blob <size>\\0" + data (how a reconstruction is verified)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def added_content(patch: str | None, blob_sha: str) -> bytes | None:
    """An added file's bytes rebuilt from its patch (one hunk of "+" lines), only if they hash to `blob_sha`;
    else None (read the blob)."""
    lines = (patch or "").split("\n")
    if not blob_sha or not _ADDED_HUNK.match(lines[0]):
        return None
    body, newline = [], True
    for line in lines[1:]:
        if line.startswith("+"):
            body.append(line[1:])
        elif line.startswith("\\"):
            newline = False  # "\\ No newline at end of file"
        else:
            return None
    data = ("\n".join(body) + ("\n" if newline and body else "")).encode("utf-8", "surrogateescape")
    return data if git_blob_sha(data) == blob_sha else None


class GitHubPrSource:
    """Read-only view of a PR at its head SHA over the REST API.

    Files: the list the planner stored for the head (`files`, from prfleet.headfiles), else listed from GitHub
    once, lazily. Contents: changed files by blob sha (git blobs API: up to 100 MB, cached by sha, never by path
    and ref); other paths through the contents API at the head sha (over 1 MB its `content` is empty: the blob).
    Symlinks are known from the tree's mode 120000 (`symlinks`, and each file's `mode`), never from the contents
    API's `type`: GitHub serves a symlink to a file in the repository as that file. An answer for another path
    than the one asked is treated as a symlink too. Symlinks are never followed.
    """

    def __init__(
        self,
        gh: GitHub,
        repo: str,
        number: int,
        head_sha: str,
        *,
        title: str | None = None,
        body: str | None = None,
        files: list[dict[str, Any]] | None = None,
        symlinks: Iterable[str] | None = None,
        max_files: int = FILES_CAP,
        max_file_bytes: int | None = None,
    ) -> None:
        self.gh = gh
        self.repo = repo
        self.number = int(number)
        self.head_sha = head_sha
        self._title = title
        self._body = body
        self._raw_files = files
        self._symlinks = set(symlinks or ())
        self._tree_known = symlinks is not None  # else read once from the head's tree, when first needed
        self._max_files = max_files
        self._max_file_bytes = max_file_bytes
        self._files: dict[str, ChangedFile] | None = None
        self._sizes: dict[str, int] = {}
        self._contents: dict[str, str | None] = {}
        self._modes: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def _pr_meta(self) -> None:
        pr = self.gh.pr(self.repo, self.number)
        if self._title is None:
            self._title = str(pr.get("title") or "")
        if self._body is None:
            self._body = str(pr.get("body") or "")

    @property
    def title(self) -> str:
        if self._title is None:
            self._pr_meta()
        return self._title or ""

    @property
    def body(self) -> str:
        if self._body is None:
            self._pr_meta()
        return self._body or ""

    def _load(self) -> dict[str, ChangedFile]:
        with self._lock:
            if self._files is None:
                raw = self._raw_files
                if raw is None:
                    raw, _more = self.gh.pr_files(self.repo, self.number, max_files=self._max_files)
                files = {}
                for f in raw:
                    mode = str(f.get("mode") or "100644")
                    files[f["filename"]] = ChangedFile(
                        path=f["filename"],
                        status=str(f.get("status") or "modified"),
                        blob_sha=str(f.get("sha") or ""),
                        additions=int(f.get("additions") or 0),
                        deletions=int(f.get("deletions") or 0),
                        patch=f.get("patch") or "",
                        mode=mode,
                        previous_path=f.get("previous_filename"),
                    )
                    if mode == SYMLINK_MODE:
                        self._symlinks.add(f["filename"])
                    if f.get("size") is not None:
                        self._sizes[f["filename"]] = int(f["size"])
                self._files = files
            return self._files

    def changed_files(self) -> list[ChangedFile]:
        return list(self._load().values())

    def file_diff(self, path: str) -> str:
        """GitHub's `patch` for the file; for a diff GitHub left out as too large, a note saying so (the file is
        read instead); empty for a file without textual changes or not in the PR."""
        f = self._load().get(path)
        if f is None:
            return ""
        if not f.patch and (f.additions or f.deletions):
            return (
                f"(GitHub does not show this diff: too large, +{f.additions} -{f.deletions} lines; "
                "read the file instead)"
            )
        return f.patch or ""

    def _is_symlink(self, path: str) -> bool:
        """The path, or a directory on the way to it, is a symlink in the head's tree."""
        self._load()
        if not self._tree_known:
            with self._lock:
                if not self._tree_known:
                    tree = self.gh.tree(self.repo, self.head_sha)
                    self._symlinks.update(e["path"] for e in tree if e.get("mode") == SYMLINK_MODE)
                    self._tree_known = True
        parts = path.split("/")
        return any("/".join(parts[:i]) in self._symlinks for i in range(1, len(parts) + 1))

    def mode(self, path: str) -> str | None:
        """'120000' for a symlink, '100644' for a file, None when unknown or absent (reads the file)."""
        path = path.lstrip("/")
        if self._is_symlink(path):
            return SYMLINK_MODE
        if path not in self._modes:
            self.read_file(path)
        return self._modes.get(path)

    def read_file(self, path: str) -> str | None:
        """The file's text at the head SHA; None when absent; a short note for a symlink (never followed)."""
        path = path.lstrip("/")
        if path not in self._contents:
            self._contents[path] = self._read(path)
        return self._contents[path]

    def _too_big(self, size: int) -> str | None:
        if self._max_file_bytes is not None and size > self._max_file_bytes:
            return f"(file of {size} bytes is over the limit of {self._max_file_bytes}; not read)"
        return None

    def _read(self, path: str) -> str | None:
        if self._is_symlink(path):
            self._modes[path] = SYMLINK_MODE
            return "(symlink: not followed)"
        changed = self._load().get(path)
        if changed is not None and changed.blob_sha:
            if changed.status == "removed":
                self._modes[path] = None
                return None
            self._modes[path] = changed.mode
            note = self._too_big(self._sizes.get(path, 0))
            if note:
                return note
            whole = added_content(changed.patch, changed.blob_sha) if changed.status == "added" else None
            if whole is not None:  # an added file's patch is the whole file: no request
                return whole.decode("utf-8", "replace")
            return self.gh.blob(self.repo, changed.blob_sha).decode("utf-8", "replace")
        data = self.gh.content(self.repo, path, self.head_sha)
        if data is None or isinstance(data, list) or data.get("type") not in ("file", "symlink"):
            self._modes[path] = None
            return None
        if data.get("type") == "symlink" or str(data.get("path") or path) != path:
            # GitHub answered with the symlink itself, or with the file it points to.
            self._modes[path] = SYMLINK_MODE
            self._symlinks.add(path)
            return "(symlink: not followed)"
        self._modes[path] = "100644"
        size = int(data.get("size") or 0)
        note = self._too_big(size)
        if note:
            return note
        if data.get("encoding") == "base64" and (data.get("content") or not size):
            raw = base64.b64decode(data.get("content") or "")
        else:
            raw = self.gh.blob(self.repo, data["sha"])
        return raw.decode("utf-8", "replace")


# --- the clients the functions use ---

_clients: dict[int | None, GitHub] = {}


def client_for(installation_id: int | None) -> GitHub:
    """A GitHub client for an installation, from the GitHub secret and the configured API URL (cached)."""

    gh = _clients.get(installation_id)
    if gh is None or gh.api_url != settings().github_api_url:
        api_url = settings().github_api_url
        gh = GitHub(api_url, auth_from_secret(secret_store.github_credentials(), api_url, installation_id))
        _clients[installation_id] = gh
    return gh


def reset_clients() -> None:
    _clients.clear()
