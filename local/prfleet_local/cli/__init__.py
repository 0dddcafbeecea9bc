"""The `prfleet` command: demo, local stack, your own repository reviewed, review quality measured, what the team
thinks of the findings, the team's suppressions, cost, alarms, settings, GitHub App.

Every user mistake ends as one line on stderr and a non-zero exit (CliError, argparse errors, AWS errors), never a
traceback; SIGTERM and SIGHUP unwind like Ctrl-C, so every `with` block stops the servers it started, and the moto
child process watches its parent, so it ends even when this process is killed outright.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from prfleet_local.cli.errors import CliError, Terminated, one_line
from prfleet_local.eval.options import add_eval_options
from prfleet_local.model.pace import PACES


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (its default prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--real",
        action="store_true",
        help="call the real Claude API (needs ANTHROPIC_API_KEY; spends money). Default: the offline model",
    )
    parser.add_argument(
        "--model-url",
        metavar="URL",
        help="call any Messages-API server at URL (a gateway, a proxy, another stand-in) instead",
    )
    parser.add_argument(
        "--pace",
        choices=PACES,
        default="instant",
        help="the offline model answers at once (instant, default) or at a real model's time to first token "
        "and output speed per model tier (realistic; the figures and their sources: prfleet_local/model/pace.py)",
    )


def _workdir(value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise CliError(f"--workdir {value} is a file, not a directory")
    return path


def _demo(args: argparse.Namespace) -> int:
    from prfleet_local.demo.model_choice import choose_model
    from prfleet_local.demo.run import run_demo

    model = choose_model(real=args.real, model_url=args.model_url, pace=args.pace)
    return run_demo(
        _workdir(args.workdir),
        keep=args.keep,
        model=model,
        timeout=args.timeout,
        provider=args.provider,
        stay=args.stay,
    )


def _serve(args: argparse.Namespace) -> int:
    from prfleet_local.cli.serve import serve

    return serve(args, workdir=_workdir(args.workdir))


def _send(args: argparse.Namespace) -> int:
    from prfleet_local.cli.serve import send

    return send(args)


def _alarms(args: argparse.Namespace) -> int:
    from prfleet_local.cli.alarms import show_alarms

    return show_alarms(args)


def _review(args: argparse.Namespace) -> int:
    from prfleet_local.cli.review import review

    return review(args, workdir=_workdir(args.workdir))


def _eval(args: argparse.Namespace) -> int:
    from prfleet_local.eval.run import evaluate

    return evaluate(args, workdir=_workdir(args.workdir))


def _provider_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--provider",
        choices=["anthropic", "claude-platform-aws", "bedrock"],
        default="anthropic",
        help="the model provider's wire the offline model speaks (template parameter ModelProvider)",
    )


def _config_check(args: argparse.Namespace) -> int:
    from prfleet_local.cli.settings import config_check

    return config_check(args)


def _manifest(args: argparse.Namespace) -> int:
    from prfleet_local.cli.settings import github_app_manifest

    return github_app_manifest(args)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="prfleet", description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="review a sample pull request end to end on the local stack")
    demo.add_argument("--workdir", help="keep the repository, logs and stack files here")
    demo.add_argument(
        "--keep", action="store_true", help="keep the working directory (printed) after the run"
    )
    _provider_option(demo)
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the review (180)")
    demo.add_argument(
        "--stay",
        action="store_true",
        help="keep the stack and the review page up until Ctrl-C after the demo",
    )
    _model_options(demo)
    demo.set_defaults(func=_demo)

    review = sub.add_parser(
        "review", help="review a branch of your own git repository on the local stack, offline by default"
    )
    review.add_argument("path", metavar="PATH", help="a git repository (its working tree is not changed)")
    review.add_argument("--base", help="base REF (default: the merge base of --head with the default branch)")
    review.add_argument("--head", default="HEAD", help="head REF (default HEAD)")
    review.add_argument("--workdir", help="keep the clone, logs and stack files here")
    review.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the review (600)")
    review.add_argument(
        "--stay", action="store_true", help="keep the review page up until Ctrl-C after printing the review"
    )
    review.add_argument(
        "--json",
        action="store_true",
        help="print the review as one JSON object on stdout (progress on stderr): the range, each finding "
        "(path, line, end_line if any, severity, category, title, relation, agent, model, verified), each run, "
        "the cost and the time from webhook to posted review. verified is false for every finding until a "
        "verification pass exists",
    )
    _provider_option(review)
    _model_options(review)
    review.set_defaults(func=_review)

    evaluate = sub.add_parser(
        "eval",
        help="measure review quality on a corpus of cases with known issues (precision, recall, F1, cost, time)",
        description="Review every case of CORPUS (CASE/case.json: repo, base, head, golden issues) on the local "
        "stack as `prfleet review` does and score the findings: a finding matches a golden issue when it names "
        "the same file and a line within 5 of the golden range, or, for a golden issue without a path, when the "
        "LLM judge names it (one to one). CORPUS may also be the Martian benchmark's golden comments "
        "(DIR/golden_comments/*.json): each pull request is fetched read-only from GitHub with GITHUB_TOKEN. "
        "Offline by default: those figures measure the pipeline, not Claude.",
    )
    evaluate.add_argument(
        "corpus", metavar="CORPUS", help="a directory of cases (CASE/case.json), or of golden_comments/*.json"
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object (progress on stderr)")
    evaluate.add_argument(
        "--agents", metavar="A,B", help="only these agents review (default: the stack's, review,tests,docs)"
    )
    evaluate.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="a template.yaml parameter for every case's local stack, repeatable (e.g. --param ReviewModel=M "
        "--param ReviewEffort=high --param VerifyEffort=low), checked against the template before the first "
        "review; the output is split per agent, model and effort",
    )
    evaluate.add_argument("--workdir", help="keep each case's clone, logs and stack files here")
    evaluate.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for each case's review (600)"
    )
    _provider_option(evaluate)
    _model_options(evaluate)
    add_eval_options(evaluate)
    evaluate.set_defaults(func=_eval)

    local = sub.add_parser("local", help="the local stack").add_subparsers(
        dest="local_command", required=True
    )
    serve = local.add_parser(
        "serve", help="keep the local stack up; webhook at http://127.0.0.1:PORT/webhook"
    )
    serve.add_argument("--port", type=int, default=8787)
    serve.add_argument("--workdir", help="where the git repository and logs live")
    _model_options(serve)
    serve.set_defaults(func=_serve)
    send = local.add_parser("send", help="sign a webhook payload file (PRFLEET_WEBHOOK_SECRET) and POST it")
    send.add_argument("--payload", required=True, help="JSON file with the event payload")
    send.add_argument("--event", default="pull_request", help="X-GitHub-Event (default pull_request)")
    send.add_argument("--port", type=int, default=8787)
    send.add_argument("--url", help="webhook URL (default http://127.0.0.1:PORT/webhook)")
    send.add_argument("--delivery", help="X-GitHub-Delivery (default: a new uuid)")
    send.set_defaults(func=_send)

    from prfleet_local.cli import cost as costcli
    from prfleet_local.cli.target import add_target_options

    costcli.add_cost_parser(sub)

    from prfleet_local.cli import trace as tracecli

    tracecli.add_trace_parser(sub)

    from prfleet_local.cli import quality as qualitycli

    qualitycli.add_quality_parser(sub)

    from prfleet_local.cli import feedback as feedbackcli

    feedbackcli.add_feedback_parser(sub)

    alarms = sub.add_parser("alarms", help="each alarm of one stack: state, since when, why")
    add_target_options(alarms)
    alarms.set_defaults(func=_alarms)

    config = sub.add_parser("config", help="repository settings").add_subparsers(
        dest="config_command", required=True
    )
    check = config.add_parser("check", help="check a .prfleet.toml and print what it changes")
    check.add_argument("file", metavar="FILE", help="path to a .prfleet.toml")
    check.set_defaults(func=_config_check)

    app = sub.add_parser("github-app", help="the GitHub App prfleet runs as").add_subparsers(
        dest="app_command", required=True
    )
    manifest = app.add_parser(
        "manifest", help="print the GitHub App manifest (permissions, events) for GitHub's manifest flow"
    )
    manifest.add_argument("--webhook-url", required=True, help="the stack's WebhookUrl output")
    manifest.add_argument("--name", default="prfleet", help="the App's name on GitHub (default prfleet)")
    manifest.add_argument("--url", default="https://github.com/prfleet/prfleet", help="the App's homepage")
    manifest.add_argument(
        "--redirect-url", help="where GitHub sends you (with ?code=...) after creating the App"
    )
    manifest.add_argument(
        "--public", action="store_true", help="installable by any account (default: only the owner's)"
    )
    manifest.set_defaults(func=_manifest)
    return parser


def _terminate(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code: 0 done, 1 the command's own failure, 2 a user mistake, 130/143 stopped."""
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = [
        getattr(args, k, None)
        for k in (
            "local_command",
            "cost_command",
            "quality_command",
            "config_command",
            "app_command",
            "feedback_command",
        )
    ]
    prog = " ".join(["prfleet", args.command, *[x for x in sub if x]])
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        for s in previous:
            signal.signal(s, _terminate)
    except ValueError:  # not the main thread (an embedding test): leave signals alone
        previous = {}
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"{prog}: {one_line(exc)}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{prog}: terminated; everything it started is stopped", file=sys.stderr)
        return 143
    except BrokenPipeError:
        # The reader went away (`prfleet ... | head`): stop quietly, as a Unix filter does. Python's signal docs
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe): point stdout at devnull so the
        # interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - a bug still ends in one line; PRFLEET_DEBUG=1 shows where
        if os.environ.get("PRFLEET_DEBUG"):
            raise
        print(
            f"{prog}: unexpected error: {type(exc).__name__}: {one_line(exc)[:300]} "
            "(PRFLEET_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
