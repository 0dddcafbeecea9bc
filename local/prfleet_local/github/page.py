"""The read-only review page of the local GitHub: what a reviewer would see of one PR on github.com."""

from __future__ import annotations

PAGE_PREFIX = "/prfleet/pulls/"


def page_url(api_url: str, number: int) -> str:
    """The address of PR `number`'s page on the local GitHub at `api_url`."""
    return f"{api_url}{PAGE_PREFIX}{number}"
