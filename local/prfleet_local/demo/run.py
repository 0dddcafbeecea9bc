"""`prfleet demo`: a real pull request on a real git repository, reviewed end to end by the local stack."""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prfleet_local.demo import sample
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

    def deliver(
        self, event: str, payload: dict[str, Any], *, delivery: str | None = None, sign: bool = True
    ) -> tuple[int, dict[str, Any]]:
        """POST a delivery to the webhook exactly as GitHub does (raw body signed with HMAC-SHA256)."""
        from prfleet.webhook import signature_for

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

    def wait_for_review(self, number: int, *, head_sha: str | None = None, timeout: float = 120.0) -> bool:
        """True once the PR head's check run completed and the queues are drained."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = [
                c
                for c in self.github.check_runs.values()
                if head_sha is None or c.get("head_sha") == head_sha
            ]
            if runs and all(c.get("status") == "completed" for c in runs):
                if self.stack.wait_idle(timeout=max(1.0, deadline - time.monotonic())):
                    return True
            time.sleep(0.2)
        return False


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
    **stack_options: Any,
) -> Iterator[Sandbox]:
    """Start GitHub, the model (offline unless ANTHROPIC_API_KEY is set without ANTHROPIC_BASE_URL) and the stack.

    `stack_options` go to LocalStack as they are (alarm_interval, function_timeouts, kill_at_timeout, ...)."""
    with ExitStack() as stack:
        temporary = workdir is None
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="prfleet-")))
        workdir.mkdir(parents=True, exist_ok=True)
        repo = GitRepo(workdir / "repo")
        github = GitHubServer(repo, full_name=REPO, tokens=["local-token"])
        github_url = github.start()
        stack.callback(github.stop)
        model = None
        real_key = os.environ.get("ANTHROPIC_API_KEY") if not os.environ.get("ANTHROPIC_BASE_URL") else None
        model_url = None
        if not real_key:
            from prfleet_local.model.server import ModelServer

            model = ModelServer(faults=faults)
            model_url = model.start()
            stack.callback(model.stop)
        secret = os.environ.get("PRFLEET_WEBHOOK_SECRET") or uuid.uuid4().hex
        local = LocalStack(
            workdir / "stack",
            github_url=github_url,
            model_url=model_url,
            webhook_secret=secret,
            anthropic_api_key=real_key,
            parameters=parameters or {},
            sweep_interval=sweep_interval,
            visibility_timeout=visibility_timeout,
            api_port=api_port,
            **stack_options,
        )
        local.start()
        stack.callback(local.stop)
        yield Sandbox(local, github, repo, model, secret, workdir, temporary)


def run_demo(workdir: Path | None = None, *, keep: bool = False) -> int:
    """The whole demo; returns the process exit code (0 only if the seeded bugs were found and costs recorded)."""
    target = workdir or (Path(tempfile.mkdtemp(prefix="prfleet-demo-")) if keep else None)
    with sandbox(target) as box:
        model_note = "offline model (no API key, no network)" if box.model else "the real Claude API"
        print(
            f"prfleet demo: local stack up (moto {box.stack.moto.endpoint}, GitHub {box.github.api_url}, {model_note})"
        )
        number = box.open_sample_pr()
        payload = box.github.webhook_payload("opened", number)
        status, reply = box.deliver("pull_request", payload)
        print(f"POST {box.stack.webhook_url} pull_request/opened -> {status} {json.dumps(reply)}")
        if status != 202:
            print("the webhook did not accept the delivery")
            return 1
        head = payload["pull_request"]["head"]["sha"]
        if not box.wait_for_review(number, head_sha=head, timeout=180):
            print("timed out waiting for the review")
            return 1
        ok = print_pr_report(box, number, head, seeded=sample.SEEDED_BUGS)
        return 0 if ok else 1


def pr_runs(box: Sandbox, number: int, head: str) -> list[dict[str, Any]]:
    from prfleet import state

    return sorted(state.runs_of_head(REPO, number, head), key=lambda r: (r["path"], r["agent"]))


def print_pr_report(box: Sandbox, number: int, head: str, *, seeded: list[tuple[str, str, str]]) -> bool:
    """Print the review of each file, the cost of each run and in total, where results live; check the bugs."""
    from prfleet import state

    runs = pr_runs(box, number, head)
    record = state.head_record(REPO, number, head)
    total = 0
    found: set[tuple[str, int]] = set()
    print(f"\nReview of {REPO}#{number} at {head[:12]}: {len(runs)} agent runs")
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
            print(f"        {f['path']}:{f['line']}  {f['severity']:<8} {f['title']}")
    for skip in record.skipped_files if record else []:
        print(f"  skipped {skip['path']}: {skip['reason']}")
    print(f"\nTotal cost: ${total / 1e6:.6f} over {len(runs)} runs")
    reviews = [r for r in box.github.reviews if r.get("number", number) == number]
    checks = box.github.check_runs_for(head)
    for review in reviews:
        print(
            f"GitHub review posted: {len(review.get('comments', []))} inline comments, event {review.get('event')}"
        )
    for check in checks:
        print(f"Check run '{check.get('name')}': {check.get('status')} / {check.get('conclusion')}")
    st = box.stack
    print("\nWhere the results are stored (local moto at " + st.moto.endpoint + "):")
    print(
        f"  runs and PR state: DynamoDB {st.table('StateTable')} (pk PR#{REPO}#{number}, sk RUN#{head[:12]}...)"
    )
    print(f"  result cache:      DynamoDB {st.table('ResultsTable')}")
    print(f"  cost ledger:       DynamoDB {st.table('LedgerTable')}")
    print(f"  function logs:     {st.workdir / 'functions.log.jsonl'}")
    if box.temporary:
        print("  (a temporary directory, removed when the demo exits: keep it with --workdir DIR or --keep)")
    missing = []
    for path, code, what in seeded:
        line = sample.bug_line(path, code)
        mark = "found" if (path, line) in found else "MISSED"
        if (path, line) not in found:
            missing.append((path, line, what))
        print(f"  seeded bug {what:<25} {path}:{line}  {mark}")
    print_alarms(st)
    ok = not missing and bool(reviews) and total > 0 and bool(checks)
    print("\ndemo " + ("passed" if ok else "FAILED"))
    return ok


def print_alarms(stack: LocalStack) -> None:
    states = stack.evaluate_alarms()
    print("\nAlarms:")
    for name, st in sorted(states.items()):
        print(f"  {name:<45} {st}")
