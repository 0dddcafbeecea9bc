"""Jobs: the slim messages the functions pass each other (a PR job, a file job, a comment job, an ask job), and
the SQS queue that carries them."""

from prfleet.jobs.messages import (
    MAX_BODY_CHARS,
    MAX_PATH_BYTES,
    VERSION,
    AskJob,
    BadMessage,
    CommentJob,
    FileJob,
    PrJob,
    excerpt,
    parse_message,
    pr_key,
    requeue_body,
)

__all__ = [
    "MAX_BODY_CHARS",
    "MAX_PATH_BYTES",
    "VERSION",
    "AskJob",
    "BadMessage",
    "CommentJob",
    "FileJob",
    "PrJob",
    "excerpt",
    "parse_message",
    "pr_key",
    "requeue_body",
]
