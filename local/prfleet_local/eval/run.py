"""`prfleet eval CORPUS`: each case reviewed on its own local stack exactly as `prfleet review` reviews a range
(prfleet_local.cli.review.review_range), its golden issues without a path judged (judge.py) on the same model
endpoint while the case's stack is up, then scored (scoring.py) and reported (report.py).

CORPUS is a directory of CASE/case.json (corpus.py) or the Martian benchmark's golden comments (martian.py), whose
pull requests are fetched from GitHub one at a time (github_fetch.py). The whole corpus is checked before the first
review (and the GitHub token, the judge model), so a mistake in the last case costs no model call.
`--agents a,b` sets the local stack's AGENTS setting (prfleet.config.environment.Settings.agents: the agents the
planner plans) for the run; on a deployed stack a repository picks its agents with `.prfleet.toml`.
`--param NAME=VALUE` sets template parameters of every case's stack (params.py checks them first), e.g. ReviewModel
or VerifyEffort; the effort each agent's runs were sent is read back from the case's own stack (`_stack_efforts`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prfleet import config
from prfleet.github.client import GitHub
from prfleet.github.transport import GitHubError
from prfleet_local.cli.errors import CliError
from prfleet_local.demo.model_choice import ModelChoice, choose_model
from prfleet_local.eval import report
from prfleet_local.eval.corpus import Case, load_corpus
from prfleet_local.eval.github_fetch import FetchError, fetch_pr, github_client
from prfleet_local.eval.judge import DEFAULT_JUDGE_MODEL, Judge, check_judge_model
from prfleet_local.eval.martian import MartianPr, load_martian, martian_dir
from prfleet_local.eval.options import DEFAULT_GITHUB_URL
from prfleet_local.eval.params import eval_owned, parse_params
from prfleet_local.eval.scoring import CaseResult, Score, case_result
from prfleet_local.model.providers import local_parameters

REAL_API_URL = "https://api.anthropic.com"


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


@dataclass
class Plan:
    """What one `prfleet eval` runs: corpus cases or Martian PRs (fetched in turn), the judge model (None: no
    judge), and the GitHub client the PRs come through."""

    items: list[Case | MartianPr]
    judge_model: str | None
    judge: report.JudgeInfo
    github: GitHub | None = None
    given: dict[str, str] = field(default_factory=dict)  # --param, as given (reported)
    parameters: dict[str, str] = field(default_factory=dict)  # every case's stack: --provider's and --param's

    @property
    def pathless(self) -> int:
        return sum(1 for item in self.items for g in item.golden if g.judged)


def plan(args: argparse.Namespace, model: ModelChoice) -> Plan:
    """Load and check everything before the first review: the --param values, the corpus or golden comments, the
    judge model, the GitHub URL and token (only when PRs are to be fetched)."""
    provider = getattr(args, "provider", "anthropic")
    fixed = local_parameters(provider)
    given = parse_params(getattr(args, "param", None), owned=eval_owned(fixed, provider), fixed=fixed)
    parameters = {**fixed, **given}
    root = Path(args.corpus).expanduser()
    folder = martian_dir(root) if root.is_dir() else None
    items: list[Case | MartianPr] = list(load_martian(folder) if folder else load_corpus(root))
    github = None
    if folder:
        url = getattr(args, "github_url", None) or DEFAULT_GITHUB_URL
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CliError(f"--github-url must be an http(s) URL such as {DEFAULT_GITHUB_URL}, got {url!r}")
        github = github_client(url.rstrip("/"))
    if getattr(args, "no_judge", False):
        return Plan(items, None, report.JudgeInfo(None, why_none="--no-judge"), github, given, parameters)
    try:
        judge_model = check_judge_model(getattr(args, "judge_model", None) or DEFAULT_JUDGE_MODEL)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    judge = report.JudgeInfo(judge_model, offline=model.kind == "offline")
    return Plan(items, judge_model, judge, github, given, parameters)


def evaluate(args: argparse.Namespace, *, workdir: Path | None) -> int:
    """Run the corpus; print the table (or --json). 0 when every case was reviewed, 1 otherwise."""
    as_json = bool(args.json)
    out = sys.stderr if as_json else sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    agents = parse_agents(args.agents)
    model = choose_model(real=args.real, model_url=args.model_url, pace=args.pace)
    work = plan(args, model)
    if model.kind == "real":
        say(
            "prfleet eval: --real: the agents call the Claude API; this spends money on your ANTHROPIC_API_KEY"
        )
    what = "pull request(s) from golden comments" if work.github else "case(s)"
    say(f"prfleet eval: {len(work.items)} {what} from {args.corpus}")
    if work.given:
        say("prfleet eval: template parameters " + " ".join(f"{k}={v}" for k, v in work.given.items()))
    if work.pathless:
        if work.judge_model is None:
            say(
                f"prfleet eval: {work.pathless} golden issue(s) have no path and --no-judge is set: they are not "
                "judged and each counts as missed"
            )
        else:
            say(
                f"prfleet eval: {work.pathless} golden issue(s) have no path: the judge ({work.judge_model}) is "
                "called once per issue on the run's model endpoint, billed apart"
            )
    results: list[CaseResult] = []
    described = model.describe()
    scratch = Path(tempfile.mkdtemp(prefix="prfleet-eval-prs-")) if work.github else None
    try:
        with agents_setting(agents):
            for item in work.items:
                results.append(_run_item(item, work, args, model, workdir, scratch, say))
    finally:
        for item in work.items:
            if isinstance(item, Case):
                item.cleanup()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    offline = model.kind == "offline"
    if as_json:
        print(
            json.dumps(
                report.to_json(
                    results, model=described, offline=offline, judge=work.judge, parameters=work.given
                ),
                indent=2,
            )
        )
    else:
        print()
        lines = report.table(
            results, model=described, offline=offline, judge=work.judge, parameters=work.given
        )
        for line in lines:
            print(line)
    return 0 if all(r.reviewed for r in results) else 1


def _run_item(
    item: Case | MartianPr,
    work: Plan,
    args: argparse.Namespace,
    model: ModelChoice,
    workdir: Path | None,
    scratch: Path | None,
    say: Callable[[str], None],
) -> CaseResult:
    """A corpus case as it is; a Martian PR fetched first (a PR that cannot be fetched is a case not reviewed,
    with the reason; an error about GitHub itself, a bad token or a rate limit, stops the run)."""
    if isinstance(item, Case):
        return _run_case(item, args, model, workdir, say, work.judge_model, work.parameters)
    assert work.github is not None and scratch is not None
    say(f"\nfetching {item.url} ({item.title}) from {work.github.api_url}")
    try:
        case = fetch_pr(item, work.github, scratch / _repo_safe(item.name))
    except FetchError as exc:
        say(f"case {item.name}: not fetched: {exc}")
        return CaseResult(item.name, False, Score(), error=f"not fetched: {exc}", url=item.url)
    except GitHubError as exc:
        raise CliError(f"GitHub at {work.github.api_url}: {exc}", code=1) from None
    try:
        return _run_case(case, args, model, workdir, say, work.judge_model, work.parameters)
    finally:
        shutil.rmtree(case.directory, ignore_errors=True)


def _judge_endpoint(model: ModelChoice, box_url: str | None) -> tuple[str | None, str]:
    """(base URL, API key) of the judge: the run's own endpoint (the case's offline model, --model-url, or the
    Claude API with --real)."""
    if model.kind == "offline":
        return box_url, "offline-judge"
    if model.kind == "real":
        return REAL_API_URL, str(model.api_key)
    return model.url, str(model.api_key)


def _run_case(
    case: Case,
    args: argparse.Namespace,
    model: ModelChoice,
    workdir: Path | None,
    say: Callable[[str], None],
    judge_model: str | None = None,
    parameters: dict[str, str] | None = None,
) -> CaseResult:
    from prfleet_local.cli.review import _clone, resolve_range, review_range
    from prfleet_local.demo.run import sandbox

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
        repo_name=f"eval/{_repo_safe(case.name)}",
        parameters=dict(parameters or {}),
    ) as box:
        say(f"model: {model.describe(box.model.url if box.model else None)}")
        done = review_range(
            box,
            base_sha=base_sha,
            head_sha=head_sha,
            what=what,
            subject=case.title or f"eval case {case.name}",
            timeout=args.timeout,
            say=say,
        )
        if done is None:
            return CaseResult(
                case.name, False, Score(), error=f"no review within {args.timeout:.0f} s", url=case.url
            )
        findings = done.findings()
        efforts = _stack_efforts()
        judgements, stats = None, None
        if judge_model is not None and any(g.judged for g in case.golden):
            base_url, key = _judge_endpoint(model, box.model.url if box.model else None)
            judgements, stats = Judge(judge_model, base_url=base_url, api_key=key).judge_case(
                case.golden, findings
            )
            say(
                f"judge: {stats.calls} call(s), ${stats.cost_micros / 1e6:.6f}, {stats.errors} unusable answer(s)"
            )
    result = case_result(
        case.name, case.golden, findings, done.runs, done.seconds, judgements, stats, efforts
    )
    result.url = case.url
    return result


def _stack_efforts() -> dict[str, str]:
    """The effort level per agent the case's stack ran with, read where its functions read it: the local stack
    hosts them in this process and sets their environment from the template's parameters (defaults and
    --param), and prfleet.config.environment.settings() reads that environment (ReviewEffort ... VerifyEffort),
    so this is the deployed code's own reading, not a copy of the defaults. Call it while the case's stack is up."""
    return dict(config.settings().efforts)


def _repo_safe(name: str) -> str:
    """A case name as a repository name on the local GitHub (a Martian case is `repo#123`)."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
