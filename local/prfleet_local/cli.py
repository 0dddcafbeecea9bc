"""The `prfleet` command: demo, local stack, cost estimates and reports, alarm states."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from prfleet_local.demo import run_demo

    return run_demo(Path(args.workdir) if args.workdir else None, keep=args.keep)


def _serve(args: argparse.Namespace) -> int:
    from prfleet_local.demo import sandbox

    if not os.environ.get("PRFLEET_WEBHOOK_SECRET"):
        print("set PRFLEET_WEBHOOK_SECRET to the secret you sign deliveries with", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with sandbox(Path(args.workdir) if args.workdir else None, api_port=args.port) as box:
        print(f"webhook:  {box.stack.webhook_url}  (secret from PRFLEET_WEBHOOK_SECRET)")
        print(f"GitHub:   {box.github.api_url}  (git repository {box.repo.path})")
        print(f"AWS:      {box.stack.moto.endpoint}  (AWS_ENDPOINT_URL for the aws CLI / boto3)")
        print(f"model:    {'offline model ' + box.model.url if box.model else 'the real Claude API'}")
        print("Ctrl-C to stop", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


def _alarms(args: argparse.Namespace) -> int:
    from prfleet_local.alarms_cli import show_alarms

    return show_alarms(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prfleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="review a sample pull request end to end on the local stack")
    demo.add_argument("--workdir", help="keep the repository, logs and stack files here")
    demo.add_argument(
        "--keep", action="store_true", help="keep the working directory (printed) after the run"
    )
    demo.set_defaults(func=_demo)

    local = sub.add_parser("local", help="the local stack").add_subparsers(
        dest="local_command", required=True
    )
    serve = local.add_parser(
        "serve", help="keep the local stack up; webhook at http://127.0.0.1:PORT/webhook"
    )
    serve.add_argument("--port", type=int, default=8787)
    serve.add_argument("--workdir", help="where the git repository and logs live")
    serve.set_defaults(func=_serve)

    from prfleet_local import costcli

    costcli.add_cost_parser(sub)

    alarms = sub.add_parser(
        "alarms", help="each alarm's state and last change (AWS describe_alarms, or local)"
    )
    alarms.add_argument(
        "--stack", default=os.environ.get("PRFLEET_STACK", "prfleet"), help="CloudFormation stack"
    )
    alarms.set_defaults(func=_alarms)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
