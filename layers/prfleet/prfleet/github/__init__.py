"""GitHub: the REST transport (errors, retries, rate limits, caches), App authentication, the endpoints prfleet
calls, and the PR at its head as the agents read it."""

from prfleet.github.auth import AppAuth, TokenAuth, auth_from_secret
from prfleet.github.client import GitHub, client_for, reset_clients
from prfleet.github.pr_source import GitHubPrSource, added_content, git_blob_sha
from prfleet.github.transport import (
    ArchiveTooLarge,
    GitHubError,
    GitHubRateLimited,
    GitHubUnprocessable,
    GitHubWriteUncertain,
    clear_caches,
    deadline,
)

__all__ = [
    "AppAuth",
    "ArchiveTooLarge",
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
