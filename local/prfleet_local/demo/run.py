"""`prfleet demo`: a real pull request on a real git repository, reviewed end to end by the local stack."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prfleet.pipeline import render
from prfleet_local.cli.errors import CliError
from prfleet_local.demo import sample
from prfleet_local.demo.model_choice import ModelChoice
from prfleet_local.github.server import GitHubServer, GitRepo
from prfleet_local.stack.local_stack import LocalStack

REPO = "acme/shop"


@dataclass
class Sandbox:
    """Everything the demo (and the end-to-end tests) run against."""

    stack: LocalStack
    github: GitHubServer
    repo: GitRepo
    model: Any | None
    secret: str
    workdir: Path
    temporary: bool = False
    model_choice: ModelChoice = field(default_factory=ModelChoice)

    def deliver(
        self, event: str, payload: dict[str, Any], *, delivery: str | None = None, sign: bool = True
    ) -> tuple[int, dict[str, Any]]:
        """POST a delivery to the webhook exactly as GitHub does (raw body signed with HMAC-SHA256)."""
        from prfleet.pipeline.webhook import signature_for

        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "User-Agent": "GitHub-Hookshot/local",
        }
        if sign:
            headers["X-Hub-Signature-256"] = signature_for(self.secret.encode(), body)
        return post(self.stack.webhook_url, body, headers)

    def open_sample_pr(self) -> int:
        self.repo.commit(sample.BASE_FILES, "Initial shop", branch="main")
        self.repo.commit(sample.head_files(), "Add order export and bulk pricing", branch="feature/export")
        return self.github.open_pr(REPO, "main", "feature/export", sample.PR_TITLE, sample.PR_BODY)

    def wait_for_review(
        self,
        number: int,
        *,
        head_sha: str | None = None,
        timeout: float = 120.0,
        progress: Callable[[str], None] | None = None,
    ) -> bool:
        """True once the PR head's check run completed and the queues are drained. `progress` is told, every few
        seconds and whenever it changes, how many jobs have finished out of those planned and how long it took."""
        started = time.monotonic()
        deadline = started + timeout
        last: tuple[str, float] = ("", 0.0)
        while time.monotonic() < deadline:
            runs = [
                c
                for c in self.github.check_runs.values()
                if head_sha is None or c.get("head_sha") == head_sha
            ]
            if runs and all(c.get("status") == "completed" for c in runs):
                if self.stack.wait_idle(timeout=max(1.0, deadline - time.monotonic())):
                    return True
            if progress is not None and head_sha is not None:
                text = self.progress_text(number, head_sha)
                now = time.monotonic()
                if text != last[0] or now - last[1] >= 10:
                    progress(f"  {text}, {now - started:.0f} s elapsed")
                    last = (text, now)
            time.sleep(0.2)
        return False

    def progress_text(self, number: int, head_sha: str) -> str:
        """`4/9 jobs finished` once the planner has planned, else what is still awaited."""
        from prfleet.store import heads

        try:
            record = heads.head_record(self.repo_name, number, head_sha)
        except Exception:  # noqa: BLE001 - progress is best effort; the wait itself decides
            record = None
        if record is None or not record.planned:
            return "waiting for the planner"
        done = len(record.done_ids | record.deferred_ids)
        return f"{done}/{record.planned} jobs finished"

    def timeout_report(self, number: int, head_sha: str) -> list[str]:
        """Why a wait may have timed out (the last error the functions logged) and where the logs are."""
        lines = [f"timed out: {self.progress_text(number, head_sha)}"]
        errors = [
            line for line in self.stack.log_lines if '"level":"ERROR"' in line or '"event":"error"' in line
        ]
        if errors:
            try:
                last = json.loads(errors[-1])
                what = last.get("error_message") or last.get("message") or ""
                cause = f"{last.get('event', '')} {last.get('error_type', '')}: {what}"
            except ValueError:
                cause = errors[-1]
            lines.append(f"last error logged ({len(errors)} in all): {' '.join(cause.split())[:300]}")
        elif self.model_choice.kind != "offline":
            lines.append(f"no error logged: is {self.model_choice.url or 'api.anthropic.com'} reachable?")
        lines.append(f"function logs: {self.stack.workdir / 'functions.log.jsonl'}")
        lines.append(f"moto log:      {self.stack.workdir / 'moto.log'}")
        if self.temporary:
            lines.append("(in a temporary directory removed on exit: keep it with --workdir DIR or --keep)")
        return lines

    @property
    def repo_name(self) -> str:
        return self.github.full_name

    def review_page(self, number: int) -> str:
        """The read-only page of a PR on the local GitHub (diff, inline comments, summary, check, costs)."""
        from prfleet_local.github.page import page_url

        return page_url(self.github.api_url, number)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@contextmanager
def sandbox(
    workdir: Path | None = None,
    *,
    parameters: dict[str, Any] | None = None,
    faults: Any = None,
    sweep_interval: float | None = 60.0,
    visibility_timeout: int = 3,
    api_port: int = 0,
    model: ModelChoice | None = None,
    repo: GitRepo | None = None,
    repo_name: str = REPO,
    **stack_options: Any,
) -> Iterator[Sandbox]:
    """Start GitHub, the model (offline unless `model` says otherwise, at `model.pace`: a test or bench that needs
    a real model's pace passes `model=ModelChoice(pace="realistic")`) and the stack; stop all of it on exit,
    also when starting fails half-way (the moto server is a child process and must never outlive us).

    `stack_options` go to LocalStack as they are (alarm_interval, function_timeouts, kill_at_timeout, ...)."""
    choice = model or ModelChoice()
    with ExitStack() as stack:
        temporary = workdir is None
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="prfleet-")))
        if workdir.exists() and not workdir.is_dir():
            raise CliError(f"--workdir {workdir} is a file, not a directory")
        workdir.mkdir(parents=True, exist_ok=True)
        repo = repo or GitRepo(workdir / "repo")
        github = GitHubServer(repo, full_name=repo_name, tokens=["local-token"])
        github_url = github.start()
        stack.callback(github.stop)
        server = None
        model_url = choice.url
        if choice.kind == "offline":
            from prfleet_local.model.server import ModelServer

            server = ModelServer(faults=faults, pace=choice.pace)
            model_url = server.start()
            stack.callback(server.stop)
        elif choice.kind == "real":
            os.environ.pop("ANTHROPIC_BASE_URL", None)  # the SDK would follow it away from the real API
        secret = os.environ.get("PRFLEET_WEBHOOK_SECRET") or uuid.uuid4().hex
        local = LocalStack(
            workdir / "stack",
            github_url=github_url,
            model_url=model_url,
            webhook_secret=secret,
            anthropic_api_key=choice.api_key,
            parameters=parameters or {},
            sweep_interval=sweep_interval,
            visibility_timeout=visibility_timeout,
            api_port=api_port,
            **stack_options,
        )
        try:
            local.start()
        except BaseException:
            local.moto.stop()
            raise
        stack.callback(local.stop)
        box = Sandbox(local, github, repo, server, secret, workdir, temporary)
        box.model_choice = choice
        github.page_runs = functools.partial(pr_runs, box)  # the review page's "cost of each run"
        github.page_timeline = functools.partial(pr_timeline, box)  # ... and its timeline, from X-Ray
        yield box


def run_demo(
    workdir: Path | None = None,
    *,
    keep: bool = False,
    model: ModelChoice | None = None,
    timeout: float = 180.0,
    provider: str = "anthropic",
    stay: bool = False,
) -> int:
    """The whole demo; returns the process exit code (0 only if the seeded bugs were found and costs recorded)."""
    from prfleet_local.model.providers import local_parameters

    target = workdir or (Path(tempfile.mkdtemp(prefix="prfleet-demo-")) if keep else None)
    choice = model or ModelChoice()
    if choice.kind == "real":
        print(
            "prfleet demo: --real: the agents call the Claude API; this spends money on your ANTHROPIC_API_KEY"
        )
    print("prfleet demo: starting the local stack (moto server, fake GitHub, model) ...", flush=True)
    with sandbox(target, model=choice, parameters=local_parameters(provider)) as box:
        offline = box.model.url if box.model else None
        print(f"prfleet demo: local stack up (moto {box.stack.moto.endpoint}, GitHub {box.github.api_url})")
        provider_note = f", provider {provider}" if provider != "anthropic" else ""
        print(f"prfleet demo: model: {choice.describe(offline)}{provider_note}", flush=True)
        number = box.open_sample_pr()
        payload = box.github.webhook_payload("opened", number)
        status, reply = box.deliver("pull_request", payload)
        print(f"POST {box.stack.webhook_url} pull_request/opened -> {status} {json.dumps(reply)}")
        if status != 202:
            print("the webhook did not accept the delivery", file=sys.stderr)
            return 1
        head = payload["pull_request"]["head"]["sha"]
        print(f"waiting for the review of {REPO}#{number} (at most {timeout:.0f} s):", flush=True)
        if not box.wait_for_review(number, head_sha=head, timeout=timeout, progress=_say):
            for line in box.timeout_report(number, head):
                print(line, file=sys.stderr)
            return 1
        ok = print_pr_report(box, number, head, seeded=sample.SEEDED_BUGS)
        if stay:
            print(f"\nreview page: {box.review_page(number)} (read-only; Ctrl-C to stop)", flush=True)
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                print("prfleet demo: stopped")
        else:
            print(f"\nreview page: {box.review_page(number)} (read-only; closes on exit, --stay keeps it up)")
        return 0 if ok else 1


def _say(text: str) -> None:
    print(text, flush=True)


def pr_timeline(box: Sandbox, number: int, head: str) -> str:
    """The PR head's path as an SVG timeline, from the segments the stack's X-Ray stand-in recorded."""
    from prfleet_local.stack import timeline

    return timeline.svg(timeline.timeline(box.stack.xray, box.repo_name, number, head))


def pr_runs(box: Sandbox, number: int, head: str) -> list[dict[str, Any]]:
    from prfleet.store import job_runs

    return sorted(job_runs.runs_of_head(box.repo_name, number, head), key=lambda r: (r["path"], r["agent"]))


@dataclass
class Printed:
    """What print_review showed: the total cost, the (path, line) of every finding, the reviews and checks."""

    total: int
    found: set[tuple[str, int]]
    reviews: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    titles: set[tuple[str, str]] = field(default_factory=set)  # (path, title) of every finding
    items: list[dict[str, Any]] = field(default_factory=list)  # every finding of the runs, as stored

    def posted(self, finding: dict[str, Any]) -> bool:
        """Whether the finding reached GitHub: its fingerprint marker in a review's body or inline comment."""
        marker = render.fp_marker(str(finding.get("fingerprint") or ""))
        texts = [r.get("body") or "" for r in self.reviews]
        texts += [c.get("body") or "" for r in self.reviews for c in r.get("comments") or []]
        return any(marker in t for t in texts)


def print_review(box: Sandbox, number: int, head: str) -> Printed:
    """Print the review of each file, the cost of each run and in total, the GitHub review and check, and where
    the results are stored."""
    from prfleet.store import heads

    name = box.repo_name
    runs = pr_runs(box, number, head)
    record = heads.head_record(name, number, head)
    total = 0
    found: set[tuple[str, int]] = set()
    titles: set[tuple[str, str]] = set()
    items: list[dict[str, Any]] = []
    print(f"\nReview of {name}#{number} at {head[:12]}: {len(runs)} agent runs")
    current = None
    for run in runs:
        if run["path"] != current:
            current = run["path"]
            print(f"\n  {current}")
        cost = int(run.get("cost_micros") or 0)
        total += cost
        findings = json.loads(run.get("findings") or "[]")
        tokens = (
            f"tokens: in {run.get('input_tokens', 0)}, cache write {run.get('cache_creation_input_tokens', 0)}, "
            f"cache read {run.get('cache_read_input_tokens', 0)}, out {run.get('output_tokens', 0)}"
        )
        print(
            f"    [{run['agent']:<6}] {run['status']:<9} ${cost / 1e6:.6f}  ({run.get('model', '?')}; {tokens})"
        )
        for f in findings:
            found.add((f["path"], int(f["line"])))
            titles.add((f["path"], f["title"]))
            items.append(f)
            tag = f"[{f.get('relation') or 'changed'}]"
            print(f"        {f['path']}:{f['line']}  {f['severity']:<8} {tag:<13} {f['title']}")
    for skip in record.skipped_files if record else []:
        print(f"  skipped {skip['path']}: {skip['reason']}")
    print(f"\nTotal cost: ${total / 1e6:.6f} over {len(runs)} runs")
    reviews = [r for r in box.github.reviews if r.get("number", number) == number]
    checks = box.github.check_runs_for(head)
    for review in reviews:
        body = str(review.get("body") or "")
        folded = re.search(r"<details><summary>(\d+) low and info findings</summary>", body)
        print(
            f"GitHub review posted: {len(review.get('comments', []))} inline comments, "
            f"{body.count('<!-- prfleet:fp=')} findings in its body "
            f"({folded.group(1) if folded else 0} low and info folded), event {review.get('event')}"
        )
    for check in checks:
        print(f"Check run '{check.get('name')}': {check.get('status')} / {check.get('conclusion')}")
    st = box.stack
    print("\nWhere the results are stored (local moto at " + st.moto.endpoint + "):")
    print(
        f"  runs and PR state: DynamoDB {st.table('StateTable')} (pk PR#{name}#{number}, sk RUN#{head[:12]}...)"
    )
    print(f"  result cache:      DynamoDB {st.table('ResultsTable')}")
    print(f"  cost ledger:       DynamoDB {st.table('LedgerTable')}")
    print(f"  function logs:     {st.workdir / 'functions.log.jsonl'}")
    if box.temporary:
        print("  (a temporary directory, removed on exit: keep it with --workdir DIR or --keep)")
    return Printed(total, found, reviews, checks, titles, items)


def print_pr_report(box: Sandbox, number: int, head: str, *, seeded: list[tuple[str, str, str]]) -> bool:
    """The demo's report: print_review, then whether each seeded bug was found at its line, and the alarms."""
    shown = print_review(box, number, head)
    missing = []
    for path, code, what in seeded:
        line = sample.bug_line(path, code)
        mark = "found" if (path, line) in shown.found else "MISSED"
        if (path, line) not in shown.found:
            missing.append((path, line, what))
        print(f"  seeded bug {what:<25} {path}:{line}  {mark}")
    missing += repository_checks(shown)
    print_alarms(box.stack)
    ok = not missing and bool(shown.reviews) and shown.total > 0 and bool(shown.checks)
    print("\ndemo " + ("passed" if ok else "FAILED"))
    return ok


def repository_checks(shown: Printed) -> list[tuple[str, int, str]]:
    """What only a reviewer that sees the repository gets right on the sample PR, printed: the caller the PR breaks
    in a file it does not touch (posted, as affected by the change), no "No test" for what unchanged tests
    exercise, one for what nothing tests, and nothing posted about code the PR does not touch. Returns the checks
    that failed."""
    failed = []
    for path, code, what in sample.BROKEN_CALLERS:
        line = sample.bug_line(path, code)
        hits = [f for f in shown.items if (f["path"], int(f["line"])) == (path, line)]
        ok = any(f.get("relation") == "affected" and shown.posted(f) for f in hits)
        print(f"  broken caller {what:<30} {path}:{line}  {'found, posted' if ok else 'MISSED'}")
        if not ok:
            failed.append((path, line, f"broken caller: {what}"))
    failed += untouched_checks(shown)
    for path, symbol in sample.TESTED_ELSEWHERE:
        ok = (path, f"No test for `{symbol}`") not in shown.titles
        print(
            f"  tested by unchanged tests  {symbol:<20} {path}  {'not reported' if ok else 'WRONGLY REPORTED'}"
        )
        if not ok:
            failed.append((path, 0, f"{symbol} reported untested"))
    for path, symbol in sample.UNTESTED:
        ok = (path, f"No test for `{symbol}`") in shown.titles
        print(f"  tested nowhere             {symbol:<20} {path}  {'reported' if ok else 'MISSED'}")
        if not ok:
            failed.append((path, 0, f"{symbol} not reported untested"))
    return failed


def untouched_checks(shown: Printed) -> list[tuple[str, int, str]]:
    """Code the PR does not touch: its old problem is found but held back as pre-existing (counted in the review),
    and no docs or tests finding concerns its names. Printed; returns the checks that failed."""
    failed = []
    for path, code, what in sample.PREEXISTING:
        line = sample.bug_line(path, code)
        hits = [f for f in shown.items if (f["path"], int(f["line"])) == (path, line)]
        held = bool(hits) and all(f.get("relation") == "preexisting" and not shown.posted(f) for f in hits)
        counted = any("pre-existing finding(s) not shown" in (r.get("body") or "") for r in shown.reviews)
        ok = held and counted
        print(
            f"  pre-existing {what:<31} {path}:{line}  {'held back, counted' if ok else 'POSTED OR MISSED'}"
        )
        if not ok:
            failed.append((path, line, f"pre-existing: {what}"))
    for path, symbol in sample.UNTOUCHED:
        named = [t for p, t in shown.titles if p == path and f"`{symbol}`" in t]
        print(
            f"  untouched by the PR        {symbol:<20} {path}  {'no docs/tests finding' if not named else named}"
        )
        if named:
            failed.append((path, 0, f"{symbol} untouched but reported: {named}"))
    return failed


def print_alarms(stack: LocalStack) -> None:
    states = stack.evaluate_alarms()
    print("\nAlarms:")
    for name, st in sorted(states.items()):
        print(f"  {name:<45} {st}")
