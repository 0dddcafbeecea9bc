"""`prfleet eval CORPUS`: each case reviewed on its own local stack exactly as `prfleet review` reviews a range
(prfleet_local.cli.review.review_range), then scored (scoring.py) and reported (report.py).

The whole corpus is checked before the first review, so a mistake in the last case costs no model call.
`--agents a,b` sets the local stack's AGENTS setting (prfleet.config.environment.Settings.agents: the agents the
planner plans) for the run; on a deployed stack a repository picks its agents with `.prfleet.toml`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prfleet_local.cli.errors import CliError
from prfleet_local.demo.model_choice import ModelChoice, choose_model
from prfleet_local.eval import report
from prfleet_local.eval.corpus import Case, load_corpus
from prfleet_local.eval.scoring import CaseResult, Score, case_result


def parse_agents(value: str | None) -> str | None:
    """--agents a,b checked against the agents prfleet has; None when not given."""
    if value is None:
        return None
    from prfleet.config.repo_config import KNOWN_AGENTS

    names = [a.strip() for a in value.split(",") if a.strip()]
    unknown = [a for a in names if a not in KNOWN_AGENTS]
    if not names or unknown:
        raise CliError(
            f"--agents {value!r}: {'unknown agent ' + ', '.join(unknown) if unknown else 'no agent named'}; "
            f"choose from {', '.join(KNOWN_AGENTS)}"
        )
    return ",".join(dict.fromkeys(names))


@contextmanager
def agents_setting(agents: str | None) -> Iterator[None]:
    """AGENTS for the local stack's functions (they run in this process) while the eval runs; restored after."""
    if agents is None:
        yield
        return
    before = os.environ.get("AGENTS")
    os.environ["AGENTS"] = agents
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("AGENTS", None)
        else:
            os.environ["AGENTS"] = before


def evaluate(args: argparse.Namespace, *, workdir: Path | None) -> int:
    """Run the corpus; print the table (or --json). 0 when every case was reviewed, 1 otherwise."""
    as_json = bool(args.json)
    out = sys.stderr if as_json else sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    agents = parse_agents(args.agents)
    model = choose_model(real=args.real, model_url=args.model_url, pace=args.pace)
    cases = load_corpus(Path(args.corpus).expanduser())
    if model.kind == "real":
        say(
            "prfleet eval: --real: the agents call the Claude API; this spends money on your ANTHROPIC_API_KEY"
        )
    say(f"prfleet eval: {len(cases)} case(s) from {args.corpus}")
    results: list[CaseResult] = []
    described = model.describe()
    try:
        with agents_setting(agents):
            for case in cases:
                results.append(_run_case(case, args, model, workdir, say))
    finally:
        for case in cases:
            case.cleanup()
    offline = model.kind == "offline"
    if as_json:
        print(json.dumps(report.to_json(results, model=described, offline=offline), indent=2))
    else:
        print()
        for line in report.table(results, model=described, offline=offline):
            print(line)
    return 0 if all(r.reviewed for r in results) else 1


def _run_case(
    case: Case,
    args: argparse.Namespace,
    model: ModelChoice,
    workdir: Path | None,
    say: Callable[[str], None],
) -> CaseResult:
    from prfleet_local.cli.review import _clone, resolve_range, review_range
    from prfleet_local.demo.run import sandbox
    from prfleet_local.model.providers import local_parameters

    source = case.checkout()
    try:
        base_sha, head_sha, what = resolve_range(source, case.base, case.head)
    except CliError as exc:
        raise CliError(f"case {case.name}: {exc}") from None
    say(f"\ncase {case.name}: {what} ({base_sha[:12]}..{head_sha[:12]}), {len(case.golden)} golden issue(s)")
    where = workdir / case.name if workdir else None
    with sandbox(
        where,
        model=model,
        repo=_clone(source, where, base_sha, head_sha),
        repo_name=f"eval/{case.name}",
        parameters=local_parameters(args.provider),
    ) as box:
        say(f"model: {model.describe(box.model.url if box.model else None)}")
        done = review_range(
            box,
            base_sha=base_sha,
            head_sha=head_sha,
            what=what,
            subject=f"eval case {case.name}",
            timeout=args.timeout,
            say=say,
        )
    if done is None:
        return CaseResult(case.name, False, Score(), error=f"no review within {args.timeout:.0f} s")
    return case_result(case.name, case.golden, done.findings(), done.runs, done.seconds)
