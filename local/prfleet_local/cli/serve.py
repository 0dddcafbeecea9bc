"""`prfleet local serve` (the local stack until Ctrl-C, recorded for `--local`) and `prfleet local send`."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import uuid
from pathlib import Path
from typing import Any

from prfleet_local.cli.errors import CliError, Terminated


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:port can be bound now (checked before anything starts, so nothing is left behind)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _secret() -> str:
    secret = os.environ.get("PRFLEET_WEBHOOK_SECRET")
    if not secret:
        raise CliError("set PRFLEET_WEBHOOK_SECRET to the secret you sign deliveries with")
    return secret


# Test-only: how often serve's local CloudWatch evaluates the alarms, in seconds (CloudWatch's minute otherwise), so
# that a test sees a transition without waiting for the minute. Not an option: CloudWatch has no such setting.
ALARM_INTERVAL_ENV = "PRFLEET_LOCAL_ALARM_INTERVAL_S"


def _alarm_interval() -> float:
    raw = os.environ.get(ALARM_INTERVAL_ENV, "").strip()
    if not raw:
        return 60.0
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 60:
        raise CliError(
            f"{ALARM_INTERVAL_ENV} must be a number of seconds above 0 and at most 60, got {raw!r}"
        )
    return value


def _check_port(port: int) -> None:
    """A TCP port to listen on or connect to: 1-65535 (0 would mean "any free port" to bind, and nothing to send to)."""
    if not 0 < port < 65536:
        raise CliError(f"--port must be between 1 and 65535, got {port}")


def serve(args: argparse.Namespace, *, workdir: Path | None) -> int:
    """Run the local stack until Ctrl-C or SIGTERM (exit 0), printing each finished check and alarm change."""
    from prfleet_local.cli.target import remove_local_state, state_path, write_local_state
    from prfleet_local.demo.model_choice import choose_model
    from prfleet_local.demo.run import sandbox

    _secret()
    _check_port(args.port)
    alarm_interval = _alarm_interval()
    if not port_free(args.port):
        raise CliError(
            f"port {args.port} is in use (another `prfleet local serve`?): choose another with --port"
        )
    model = choose_model(real=args.real, model_url=args.model_url, pace=args.pace)
    if model.kind == "real":
        print("local serve: --real: reviews call the Claude API and spend money on your ANTHROPIC_API_KEY")
    state = state_path()
    try:
        with sandbox(workdir, api_port=args.port, model=model, alarm_interval=alarm_interval) as box:
            number = box.open_sample_pr()
            payload_file = box.workdir / "sample-pr-opened.json"
            payload_file.write_text(json.dumps(box.github.webhook_payload("opened", number), indent=2))
            page = box.review_page(number)
            box.stack.alarm_listeners.append(_print_transition)
            write_local_state(
                state,
                box.stack,
                webhook_url=box.stack.webhook_url,
                github_url=box.github.api_url,
                review_pages=box.github.api_url + "/prfleet/",
                workdir=str(box.workdir),
            )
            try:
                offline = box.model.url if box.model else None
                print(f"webhook:  {box.stack.webhook_url}  (secret from PRFLEET_WEBHOOK_SECRET)")
                print(
                    f"GitHub:   {box.github.api_url}  (git repository {box.repo.path}, sample PR #{number})"
                )
                print(f"review:   {page}  (read-only page of the sample PR, once reviewed)")
                print(f"AWS:      {box.stack.moto.endpoint}  (AWS_ENDPOINT_URL for the aws CLI / boto3)")
                print(f"model:    {model.describe(offline)}")
                print(f"state:    {state}  (`prfleet cost report --local`, `prfleet alarms --local` read it)")
                print(
                    f"try:      prfleet local send --port {args.port} --event pull_request --payload {payload_file}"
                )
                # The handlers first: "Ctrl-C to stop" must be true when it is printed (a SIGINT sent on reading
                # that line once landed before them, on a busy machine: busy-machine CI run 8).
                stop = _stop_on_signals()
                print("Ctrl-C to stop", flush=True)
                _watch(box, stop)
                # A second Ctrl-C while the stack stops interrupts the stop, as before.
                signal.signal(signal.SIGINT, signal.default_int_handler)
            finally:
                remove_local_state(state)
    except (KeyboardInterrupt, Terminated):
        pass  # stopped while starting
    print("local serve: stopped", flush=True)
    return 0


def _print_transition(t: Any, _body: dict[str, Any]) -> None:
    """One line per alarm state change, as the local CloudWatch evaluates them every minute."""
    reason = " ".join(str(t.reason).split())[:160]
    print(
        f"{time.strftime('%H:%M:%S')} alarm {t.alarm_name}: {t.old_state} -> {t.new_state}: {reason}",
        flush=True,
    )


def _stop_on_signals() -> threading.Event:
    """Ctrl-C, SIGTERM and SIGHUP set an event the watch loop waits on, instead of raising wherever the main thread
    happens to be: an exception raised between a lock's acquire and its `with` block leaves the lock held, and the
    stack's orderly stop would then wait on it (a `make test` run on a busy machine once saw `serve` outlive its
    SIGINT by a minute)."""
    stop = threading.Event()

    def _set(_signum: int, _frame: object) -> None:
        stop.set()

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _set)
    return stop


def _watch(box: Any, stop: threading.Event) -> None:
    """Print every completed check run as it happens (with its review page) until a signal sets `stop`."""
    seen: set[int] = set()
    while not stop.wait(0.5):
        for check in list(box.github.check_runs.values()):
            if check.get("status") == "completed" and check["id"] not in seen:
                seen.add(check["id"])
                reviews = [r for r in box.github.reviews if r.get("commit_id") == check["head_sha"]]
                comments = sum(len(r.get("comments", [])) for r in reviews)
                number = next(
                    (n for n, pr in box.github.prs.items() if pr.head_sha == check["head_sha"]), None
                )
                where = f"  {box.review_page(number)}" if number else ""
                print(
                    f"{time.strftime('%H:%M:%S')} check {check['name']} on {check['head_sha'][:12]}: "
                    f"{check.get('conclusion')}; {len(reviews)} review(s), {comments} inline comment(s){where}",
                    flush=True,
                )


def send(args: argparse.Namespace) -> int:
    """Sign a payload file with PRFLEET_WEBHOOK_SECRET exactly as GitHub does and POST it to the webhook."""
    from prfleet.pipeline.webhook import signature_for
    from prfleet_local.demo.run import post

    secret = _secret()
    _check_port(args.port)
    path = Path(args.payload)
    try:
        body = path.read_bytes()
    except FileNotFoundError:
        raise CliError(f"--payload {path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"--payload {path} is a directory, not a JSON file") from None
    except OSError as exc:
        raise CliError(f"--payload {path}: {exc.strerror}") from None
    try:
        json.loads(body)
    except ValueError as exc:
        raise CliError(f"--payload {path} is not JSON: {exc}") from None
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": args.event,
        "X-GitHub-Delivery": args.delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature_for(secret.encode(), body),
    }
    url = args.url or f"http://127.0.0.1:{args.port}/webhook"
    try:
        status, reply = post(url, body, headers)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"no webhook answers at {url} ({reason}): is `prfleet local serve` running?") from None
    except ValueError:
        raise CliError(f"{url} answered, but not as prfleet's webhook (the reply is not JSON)") from None
    print(status, json.dumps(reply))
    if status == 401:
        print(
            "local send: 401: the webhook refused the signature: is PRFLEET_WEBHOOK_SECRET the one serve uses?",
            file=sys.stderr,
        )
    return 0 if status < 400 else 1
