"""The `prfleet` command: demo, local stack, cost estimates and reports, alarm states."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from prfleet_local.demo.run import run_demo

    return run_demo(Path(args.workdir) if args.workdir else None, keep=args.keep, provider=args.provider)


def _serve(args: argparse.Namespace) -> int:
    import json
    import time

    from prfleet_local.demo.run import sandbox

    if not os.environ.get("PRFLEET_WEBHOOK_SECRET"):
        print("set PRFLEET_WEBHOOK_SECRET to the secret you sign deliveries with", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with sandbox(Path(args.workdir) if args.workdir else None, api_port=args.port) as box:
        number = box.open_sample_pr()
        payload_file = box.workdir / "sample-pr-opened.json"
        payload_file.write_text(json.dumps(box.github.webhook_payload("opened", number), indent=2))
        print(f"webhook:  {box.stack.webhook_url}  (secret from PRFLEET_WEBHOOK_SECRET)")
        print(f"GitHub:   {box.github.api_url}  (git repository {box.repo.path}, sample PR #{number})")
        print(f"AWS:      {box.stack.moto.endpoint}  (AWS_ENDPOINT_URL for the aws CLI / boto3)")
        print(f"model:    {'offline model ' + box.model.url if box.model else 'the real Claude API'}")
        print(
            f"try:      prfleet local send --port {args.port} --event pull_request --payload {payload_file}"
        )
        print("Ctrl-C to stop", flush=True)
        seen: set[int] = set()
        try:
            while not stop.wait(0.5):
                for check in list(box.github.check_runs.values()):
                    if check.get("status") == "completed" and check["id"] not in seen:
                        seen.add(check["id"])
                        reviews = [r for r in box.github.reviews if r.get("commit_id") == check["head_sha"]]
                        comments = sum(len(r.get("comments", [])) for r in reviews)
                        print(
                            f"{time.strftime('%H:%M:%S')} check {check['name']} on {check['head_sha'][:12]}: "
                            f"{check.get('conclusion')}; {len(reviews)} review(s), {comments} inline comment(s)",
                            flush=True,
                        )
        except KeyboardInterrupt:
            pass
    return 0


def _send(args: argparse.Namespace) -> int:
    """Sign a payload file with PRFLEET_WEBHOOK_SECRET exactly as GitHub does and POST it to the webhook."""
    import uuid

    from prfleet.webhook import signature_for
    from prfleet_local.demo.run import post

    secret = os.environ.get("PRFLEET_WEBHOOK_SECRET")
    if not secret:
        print("set PRFLEET_WEBHOOK_SECRET to the secret the webhook checks", file=sys.stderr)
        return 2
    body = Path(args.payload).read_bytes()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": args.event,
        "X-GitHub-Delivery": args.delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature_for(secret.encode(), body),
    }
    status, reply = post(args.url or f"http://127.0.0.1:{args.port}/webhook", body, headers)
    print(status, reply)
    return 0 if status < 400 else 1


def _alarms(args: argparse.Namespace) -> int:
    from prfleet_local.cli.alarms import show_alarms

    return show_alarms(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prfleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="review a sample pull request end to end on the local stack")
    demo.add_argument("--workdir", help="keep the repository, logs and stack files here")
    demo.add_argument(
        "--keep", action="store_true", help="keep the working directory (printed) after the run"
    )
    demo.add_argument(
        "--provider",
        choices=["anthropic", "claude-platform-aws", "bedrock"],
        default="anthropic",
        help="the model provider's wire the offline model speaks (template parameter ModelProvider)",
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
    send = local.add_parser("send", help="sign a webhook payload file (PRFLEET_WEBHOOK_SECRET) and POST it")
    send.add_argument("--payload", required=True, help="JSON file with the event payload")
    send.add_argument("--event", default="pull_request", help="X-GitHub-Event (default pull_request)")
    send.add_argument("--port", type=int, default=8787)
    send.add_argument("--url", help="webhook URL (default http://127.0.0.1:PORT/webhook)")
    send.add_argument("--delivery", help="X-GitHub-Delivery (default: a new uuid)")
    send.set_defaults(func=_send)

    from prfleet_local.cli import cost as costcli

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
