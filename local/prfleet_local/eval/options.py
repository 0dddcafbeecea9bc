"""`prfleet eval`'s options for the judge and for the Martian format, added to the CLI's parser.

Kept apart from run.py so that building the parser (every `prfleet` command does) imports nothing heavy: the
judge's module imports the anthropic SDK.
"""

from __future__ import annotations

import argparse

DEFAULT_GITHUB_URL = "https://api.github.com"
DEFAULT_JUDGE_HELP = "the cheaper tier, TestsModel's default"


def add_eval_options(parser: argparse.ArgumentParser) -> None:
    """--judge-model, --no-judge and --github-url."""
    judge = parser.add_mutually_exclusive_group()
    judge.add_argument(
        "--judge-model",
        metavar="MODEL",
        help="the model of the LLM judge that matches golden issues given without a path (the Martian "
        f"benchmark's golden comments), called on the run's model endpoint; default: {DEFAULT_JUDGE_HELP}. "
        "Its calls and cost are reported apart",
    )
    judge.add_argument(
        "--no-judge",
        action="store_true",
        help="call no judge: golden issues without a path are reported unjudged and counted as missed",
    )
    parser.add_argument(
        "--github-url",
        metavar="URL",
        default=DEFAULT_GITHUB_URL,
        help="the GitHub REST API the Martian format's pull requests are fetched from, read-only, with "
        f"GITHUB_TOKEN (default {DEFAULT_GITHUB_URL})",
    )
