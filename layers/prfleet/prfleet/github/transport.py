"""How prfleet talks to GitHub's REST API: one HTTP exchange on the standard library (urllib, so the webhook and
planner Lambdas stay light), errors that say what to fix, retries, rate-limit waits bounded by the Lambda's
deadline, and the process-wide ETag and blob caches a warm container reuses.

Sources for the facts used here:
- Headers (Accept, X-GitHub-Api-Version 2022-11-28, User-Agent required):
  https://docs.github.com/en/rest/using-the-rest-api/getting-started-with-the-rest-api
- Link header pagination: https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api
- Secondary rate limits (403/429 + retry-after, or x-ratelimit-remaining: 0 until x-ratelimit-reset, else wait
  at least a minute): https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
- Conditional requests (ETag / If-None-Match; a 304 does not count against the primary rate limit):
  https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate

Rate-limit waits never pass the deadline set with `deadline(...)` (the Lambda's remaining time): a longer wait
raises GitHubRateLimited with `retry_after`, and the handler re-queues the job with a delay. A write that is not
idempotent (POST by default) is never re-sent here after a 5xx or no answer: it raises GitHubWriteUncertain and
the client looks for what it wrote first (prfleet.github.client).
"""

from __future__ import annotations

import contextvars
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from prfleet.observability import tracing

API_VERSION = "2022-11-28"
USER_AGENT = "prfleet"
PER_PAGE = 100
SECONDARY_MIN_WAIT = 60.0  # "wait for at least one minute before retrying", then longer each time
ETAG_CACHE_BYTES = 16 * 1024 * 1024
BLOB_CACHE_BYTES = 32 * 1024 * 1024
_RETRIED_5XX = (500, 502, 503, 504)


# --- errors ---


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


class ArchiveTooLarge(Exception):
    """A download passed its byte cap: reading stopped there (the rest of the body was never read)."""

    def __init__(self, url_path: str, limit: int) -> None:
        super().__init__(f"the archive at {url_path} is larger than {limit:,} bytes: download stopped there")
        self.limit = limit


class GitHubRateLimited(GitHubError):
    """A rate limit whose wait exceeds what we may sleep here; `retry_after` says when to retry."""

    def __init__(self, status: int, message: str, request_id: str | None, retry_after: float) -> None:
        super().__init__(status, message, request_id)
        self.retry_after = retry_after


# --- one HTTP exchange ---


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class _Unfollowed(urllib.request.HTTPRedirectHandler):
    """Redirects are returned to the caller, not followed: urllib would send every header of the request, the
    Authorization header included, on to the Location's host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_direct_unfollowed = urllib.request.build_opener(urllib.request.ProxyHandler({}), _Unfollowed())
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 1024 * 1024


def _opener(url: str, follow_redirects: bool) -> urllib.request.OpenerDirector:
    """Loopback skips proxies; `follow_redirects=False` returns a 3xx as it is."""
    loopback = urllib.parse.urlsplit(url).hostname in _LOOPBACK
    if follow_redirects:
        return _direct if loopback else urllib.request.build_opener()
    return _direct_unfollowed if loopback else urllib.request.build_opener(_Unfollowed())


def send(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    timeout: float,
    *,
    follow_redirects: bool = True,
) -> Response:
    """One HTTP exchange; non-2xx statuses are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    opener = _opener(url, follow_redirects)
    try:
        with opener.open(req, timeout=timeout) as resp:
            return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        data = exc.read() if exc.fp else b""
        return Response(exc.code, {k.lower(): v for k, v in (exc.headers or {}).items()}, data)


def download(url: str, out: BinaryIO, *, max_bytes: int, timeout: float) -> int:
    """GET `url` with no credential (a pre-signed link such as codeload's) into `out`, at most `max_bytes`;
    returns the bytes written. Past the cap it stops reading and raises ArchiveTooLarge; a non-2xx answer raises
    GitHubError. Redirects are not followed (a signed link has none to give)."""
    path = urllib.parse.urlsplit(url).path
    req = urllib.request.Request(url, method="GET", headers={"User-Agent": USER_AGENT})
    try:
        with _opener(url, False).open(req, timeout=timeout) as resp:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ArchiveTooLarge(path, max_bytes)
            written = 0
            while chunk := resp.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise ArchiveTooLarge(path, max_bytes)
                out.write(chunk)
            return written
    except urllib.error.HTTPError as exc:
        raise GitHubError(exc.code, f"the archive download at {path} answered {exc.code}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise GitHubError(0, f"cannot download the archive at {path}: {exc}") from exc


def base_headers() -> dict[str, str]:
    """The headers GitHub documents for every request."""
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


def raise_for(resp: Response, method: str, path: str) -> None:
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


def rate_limit_wait(resp: Response, attempt: int, clock: Callable[[], float]) -> float | None:
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
            return max(1.0, float(h.get("x-ratelimit-reset", "0")) - clock() + 1)
        except ValueError:
            return SECONDARY_MIN_WAIT * 2**attempt
    detail, _ = _error_message(resp)
    if resp.status == 429 or "rate limit" in detail.lower():
        return SECONDARY_MIN_WAIT * 2**attempt
    return None


_LINK_RE = re.compile(r'<([^>]+)>\s*;\s*rel="([^"]+)"')


def next_page(resp: Response) -> str | None:
    """The URL of the next page from the Link header (rel="next"), None on the last page."""
    links = {rel: url for url, rel in _LINK_RE.findall(resp.headers.get("link") or "")}
    return links.get("next")


# --- the deadline and the caches shared by the clients of one process (a warm Lambda container) ---

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("github_deadline", default=None)


@contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Within this block no GitHub wait (rate limit, backoff) may end after epoch second `at`."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


class ByteLru:
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


etag_cache = ByteLru(ETAG_CACHE_BYTES)
blob_cache = ByteLru(BLOB_CACHE_BYTES)


def clear_caches() -> None:
    """Forget cached ETag responses and blobs (tests, benchmarks)."""
    etag_cache.clear()
    blob_cache.clear()


# --- requests with auth and retries ---


class Auth(Protocol):
    """What a request needs from a credential (prfleet.github.auth: TokenAuth, AppAuth)."""

    renewable: bool  # after a 401, invalidate() and a retry can bring a new credential

    def authorization(self) -> str:
        """The value of the Authorization header."""
        ...

    def invalidate(self) -> None:
        """Forget a cached credential after GitHub rejected it."""
        ...


class Transport:
    """API calls with auth: retries rate limits (within the deadline), a stale installation token, and 5xx or
    network errors of idempotent requests; conditional GETs answered from the ETag cache on a 304."""

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

    def cache_scope(self) -> tuple[str, Any]:
        """What cached answers are keyed under: the API and the installation (or this credential)."""
        return (self.api_url, getattr(self.auth, "installation_id", id(self.auth)))

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
        follow_redirects: bool = True,
    ) -> Response:
        """One API call. A non-idempotent write (POST by default) that gets a 5xx or no answer raises
        GitHubWriteUncertain: the caller looks for it before sending it again. With `follow_redirects=False` a
        3xx is returned as it is (its Location is the caller's to follow, without our Authorization header)."""
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self.api_url + path_or_url
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        path = urllib.parse.urlsplit(url).path
        data = json.dumps(body).encode() if body is not None else None
        safe = (method != "POST") if idempotent is None else idempotent
        cache_key = (*self.cache_scope(), url) if method == "GET" else None
        cached: Response | None = etag_cache.get(cache_key) if cache_key else None
        renewed = False
        attempt = 0
        while True:
            try:
                with tracing.subsegment(f"GitHub {method}", remote=True) as span:
                    headers = self._headers(data is not None, cached)
                    resp = send(method, url, headers, data, self.timeout, follow_redirects=follow_redirects)
                    span.http(method, f"{self.api_url}{path}", resp.status)
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
            if not follow_redirects and resp.status in _REDIRECTS:
                return resp
            if resp.status < 300:
                if cache_key and resp.headers.get("etag"):
                    etag_cache.put(cache_key, resp, len(resp.body))
                return resp
            if resp.status == 401 and not renewed:
                renewed = True  # an installation token may have been revoked or expired early: mint a new one
                self.auth.invalidate()
                if self.auth.renewable:
                    continue
            if self._waited_to_retry(resp, f"{method} {path}", safe, attempt):
                attempt += 1
                continue
            raise_for(resp, method, path)

    def _headers(self, has_body: bool, cached: Response | None) -> dict[str, str]:
        headers = {**base_headers(), "Authorization": self.auth.authorization()}
        if has_body:
            headers["Content-Type"] = "application/json"
        if cached is not None and cached.headers.get("etag"):
            headers["If-None-Match"] = cached.headers["etag"]
        return headers

    def _waited_to_retry(self, resp: Response, what: str, safe: bool, attempt: int) -> bool:
        """After a failed answer: True once we have waited out a rate limit or a 5xx and may retry; False for
        an answer to raise as it is. Raises GitHubRateLimited when the wait does not fit before the deadline
        (or retries ran out) and GitHubWriteUncertain for a 5xx to a non-idempotent write."""
        wait = rate_limit_wait(resp, attempt, self._clock)
        if wait is not None:
            if attempt >= self.max_retries or wait > self._room():
                detail, _ = _error_message(resp)
                raise GitHubRateLimited(
                    resp.status,
                    f"GitHub rate limit on {what}: retry after {wait:.0f} s ({detail})",
                    resp.headers.get("x-github-request-id"),
                    wait,
                )
            self._sleep(wait)
            return True
        if resp.status not in _RETRIED_5XX:
            return False
        if not safe:
            detail, _ = _error_message(resp)
            raise GitHubWriteUncertain(
                resp.status,
                f"GitHub answered {resp.status} to {what}; it may have applied it: {detail}",
                resp.headers.get("x-github-request-id"),
            )
        return attempt < self.max_retries and self._backoff(attempt)

    def _room(self) -> float:
        """How long we may still wait: up to the deadline when one is set, else `max_wait`."""
        limit = _deadline.get()
        if limit is None:
            return self.max_wait
        return max(0.0, limit - self._clock())

    def _backoff(self, attempt: int) -> bool:
        """Sleep before retry `attempt + 1` (1 s, 2 s, 4 s ...) if the deadline allows; False if it does not."""
        wait = min(2.0**attempt, self.max_wait)
        if wait > self._room():
            return False
        self._sleep(wait)
        return True

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
            url = next_page(resp)
            query = None  # the next URL carries the query
