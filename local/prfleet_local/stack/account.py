"""The local AWS account every part of the stack talks to: its region, and boto3 clients on moto's endpoint."""

from __future__ import annotations

import os
from typing import Any

import boto3

REGION = "us-east-1"


def client(service: str) -> Any:
    """A boto3 client on the running stack's moto server (AWS_ENDPOINT_URL, set by LocalStack.start)."""
    return boto3.client(service, region_name=REGION, endpoint_url=os.environ["AWS_ENDPOINT_URL"])
