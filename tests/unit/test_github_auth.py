"""GitHub App auth: RS256 JWT -> installation token (against the fake GitHub, key generated here), caching."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from prfleet.github import AppAuth, GitHub, GitHubError, TokenAuth, auth_from_secret
from prfleet_local.github.server import GitHubServer, GitRepo

REPO = "acme/shop"
APP_ID = "12345"
INSTALLATION = 77


def _keypair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def keys():
    return _keypair()


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def app_server(tmp_path, keys):
    private, public = keys
    repo = GitRepo(tmp_path / "repo")
    repo.commit({"a.py": "x = 1\n"}, "base")
    repo.branch("feature")
    repo.commit({"a.py": "x = 2\n"}, "edit")
    AppAuth.clear_cache()
    clock = Clock()
    with GitHubServer(repo, REPO, public, app_id=APP_ID, installation_id=INSTALLATION, clock=clock) as server:
        number = server.open_pr(REPO, "main", "feature", "t", "b")
        yield server, private, number
    AppAuth.clear_cache()


def test_jwt_claims_follow_github_rules(keys):
    private, public = keys
    now = 1_700_000_000
    auth = AppAuth(APP_ID, private, "http://127.0.0.1:1", INSTALLATION, clock=lambda: now)
    token = auth.jwt()
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(
        token, public, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False}
    )
    assert claims["iss"] == APP_ID
    assert claims["iat"] == now - 60  # backdated against clock drift
    assert 0 < claims["exp"] - now <= 600  # GitHub: no more than 10 minutes into the future


def test_token_exchange_and_caching_until_near_expiry(app_server):
    server, private, number = app_server
    clock = server.clock  # one clock for GitHub and for us
    auth = AppAuth(APP_ID, private, server.api_url, INSTALLATION, clock=clock)
    gh = GitHub(server.api_url, auth)
    assert gh.pr(REPO, number)["number"] == number
    assert len(server.token_requests) == 1
    assert server.token_requests[0]["iss"] == APP_ID  # the server verified the signature with the public key
    gh.pr(REPO, number)
    gh.pr_files(REPO, number, max_files=10)
    assert len(server.token_requests) == 1  # reused

    clock.offset = 3600 - 6 * 60  # 6 minutes before expires_at: still reused
    gh.pr(REPO, number)
    assert len(server.token_requests) == 1
    clock.offset = 3600 - 4 * 60  # within the 5-minute margin: refreshed
    gh.pr(REPO, number)
    assert len(server.token_requests) == 2

    other = AppAuth(APP_ID, private, server.api_url, INSTALLATION, clock=clock)
    GitHub(server.api_url, other).pr(REPO, number)
    assert len(server.token_requests) == 2  # shared across instances (a warm Lambda container)


def test_revoked_token_is_replaced_once(app_server):
    server, private, number = app_server
    gh = GitHub(server.api_url, AppAuth(APP_ID, private, server.api_url, INSTALLATION))
    gh.pr(REPO, number)
    server.issued_tokens.clear()  # GitHub forgot (revoked) the token
    assert gh.pr(REPO, number)["number"] == number
    assert len(server.token_requests) == 2


def test_wrong_key_is_a_clear_401(app_server):
    server, _private, number = app_server
    other_private, _ = _keypair()
    gh = GitHub(server.api_url, AppAuth(APP_ID, other_private, server.api_url, INSTALLATION))
    with pytest.raises(GitHubError) as err:
        gh.pr(REPO, number)
    assert err.value.status == 401
    assert "private key" in err.value.message and "access_tokens" in err.value.message


def test_wrong_app_id_and_unknown_installation_rejected(app_server):
    server, private, number = app_server
    with pytest.raises(GitHubError) as bad_iss:
        AppAuth("999", private, server.api_url, INSTALLATION).token()
    assert bad_iss.value.status == 401
    with pytest.raises(GitHubError) as bad_inst:
        AppAuth(APP_ID, private, server.api_url, 5).token()
    assert bad_inst.value.status == 404 and "not installed" in bad_inst.value.message


def test_unauthenticated_calls_get_401(app_server):
    server, _private, number = app_server
    with pytest.raises(GitHubError) as err:
        GitHub(server.api_url, TokenAuth("ghs_made_up")).pr(REPO, number)
    assert err.value.status == 401


def test_auth_from_secret_variants(keys):
    private, _ = keys
    app = auth_from_secret({"app_id": APP_ID, "private_key": private}, "https://api.github.com", INSTALLATION)
    assert isinstance(app, AppAuth) and app.installation_id == INSTALLATION
    escaped = json.dumps({"app_id": 1, "private_key": private.replace("\n", "\\n")})
    assert isinstance(auth_from_secret(escaped, "https://api.github.com", 3), AppAuth)
    token = auth_from_secret('{"token": "ghp_abc"}', "https://api.github.com", None)
    assert isinstance(token, TokenAuth) and token.authorization() == "Bearer ghp_abc"
    assert "ghp_abc" not in repr(token)
    with pytest.raises(ValueError, match="neither"):
        auth_from_secret({"app_id": APP_ID}, "https://api.github.com", 1)
    with pytest.raises(ValueError, match="installation id"):
        auth_from_secret({"app_id": APP_ID, "private_key": private}, "https://api.github.com", None)
