"""What a user mistake looks like on the command line: one line on stderr and a non-zero exit, never a traceback.

Commands raise `CliError` for anything the user can fix; `main` prints it as `prfleet: <message>` and exits 2.
AWS errors are translated here (no credentials, no region, no endpoint, a stack that does not exist) because
botocore's own messages name its internals, not what to do.
"""

from __future__ import annotations

from typing import Any


class CliError(Exception):
    """A mistake the user can act on; the message says what to do. Exit code 2 unless given."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class Terminated(BaseException):
    """SIGTERM or SIGHUP in the main thread: unwinds like Ctrl-C so every `with` block stops what it started."""


def one_line(text: object) -> str:
    """Collapse whitespace so a message can never span lines."""
    return " ".join(str(text).split())


def aws_error(exc: BaseException, doing: str) -> CliError:
    """A botocore exception as an actionable one-line CliError (`doing`: "describe stack prfleet")."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return CliError(f"cannot {doing}: no AWS credentials (set AWS_PROFILE or run `aws configure`)")
    if isinstance(exc, bx.NoRegionError):
        return CliError(f"cannot {doing}: no AWS region (give --region or set AWS_REGION)")
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectionClosedError | bx.ConnectTimeoutError):
        return CliError(
            f"cannot {doing}: no answer from {getattr(exc, 'kwargs', {}).get('endpoint_url', 'AWS')}"
        )
    if isinstance(exc, bx.ClientError):
        err: dict[str, Any] = exc.response.get("Error", {})
        code, message = err.get("Code", "Error"), err.get("Message", "")
        if code in (
            "ExpiredToken",
            "ExpiredTokenException",
            "InvalidClientTokenId",
            "UnrecognizedClientException",
        ):
            return CliError(f"cannot {doing}: the AWS credentials were refused ({code}); renew them")
        return CliError(f"cannot {doing}: {code}: {one_line(message)}")
    if isinstance(exc, bx.BotoCoreError):
        return CliError(f"cannot {doing}: {one_line(exc)}")
    raise exc
