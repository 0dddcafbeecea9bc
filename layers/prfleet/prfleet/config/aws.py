"""The one way to build an AWS client: boto3 reads AWS_ENDPOINT_URL itself, so local and AWS differ only by env."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=3, read_timeout=10)


@cache
def client(service: str) -> Any:
    """A cached boto3 client (clients are thread-safe; call client.cache_clear() when the env changes)."""
    return boto3.client(service, config=_CONFIG)
