"""A git-backed stand-in for the GitHub REST API."""
