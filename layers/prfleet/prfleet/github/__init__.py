"""GitHub: the REST client (transport, App authentication, the endpoints prfleet calls) and the PR as its files."""

from prfleet.github.client import (
    AppAuth,
    GitHub,
    GitHubError,
    GitHubPrSource,
    GitHubRateLimited,
    GitHubUnprocessable,
    GitHubWriteUncertain,
    TokenAuth,
    added_content,
    auth_from_secret,
    clear_caches,
    client_for,
    deadline,
    git_blob_sha,
    reset_clients,
)

__all__ = [
    "AppAuth",
    "GitHub",
    "GitHubError",
    "GitHubPrSource",
    "GitHubRateLimited",
    "GitHubUnprocessable",
    "GitHubWriteUncertain",
    "TokenAuth",
    "added_content",
    "auth_from_secret",
    "clear_caches",
    "client_for",
    "deadline",
    "git_blob_sha",
    "reset_clients",
]
