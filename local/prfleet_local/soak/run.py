"""The soak driver: real repositories, real HTTP deliveries, faults on, a budget that runs out, then the checks.

Phases (each bounded in time):
1. day one: every PR opened (some pushed again mid-flight, some redelivered with the same or a new delivery id),
   comment commands (`/prfleet review` by a writer and by a reader) and Re-runs (check_run rerequested), with
   faults in DynamoDB (throttling, lost responses after writes), SQS (lost deletes: duplicate deliveries at the
   queue's visibility timing), GitHub (5xx and secondary rate limits) and the model (429 with retry-after, 529,
   500, truncated bodies); the daily budget runs out part way through, so jobs are deferred;
2. the budget day changes (prfleet's clock moves a day) and the sweeper re-queues the deferred jobs;
3. the alarms are evaluated on what the run emitted, and every invariant is checked from the stores.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prfleet_local.github.server import GitHubServer, GitRepo
from prfleet_local.model.server import FaultPlan as ModelFaults
from prfleet_local.model.server import FaultRule as ModelRule
from prfleet_local.model.server import ModelServer
from prfleet_local.soak import invariants as inv
from prfleet_local.soak.router import GitHubRouter
from prfleet_local.stack import template as tpl
from prfleet_local.stack.local_stack import LocalStack
from prfleet_local.stack.moto_proc import FaultPlan as AwsFaults
from prfleet_local.stack.moto_proc import FaultRule as AwsRule

WRITER, READER = "maintainer", "drive-by"


@dataclass
class Scale:
    prs: int = 50
    files: int = 10
    agents: int = (
        3  # the template's three agents (review, tests, docs); the template has no parameter to vary it
    )
    repos: int = 3
    seed: int = 1
    fault_rate: float = 0.02  # base rate; each fault kind is a multiple of it
    budget_fraction: float = 0.6  # the day-one budget as a share of what the whole run costs
    second_push: float = 0.3
    redeliver: float = 0.3
    comments: float = 0.1
    reruns: float = 0.1
    senders: int = 4
    timeout: float = 5400.0  # seconds for the whole soak at most (the default scale takes about 30 minutes)
    # For the day-one budget, measured on the offline model (docs/reliability.md): what a job books before
    # reconciliation (calls that may have been billed are booked at their worst case, $0.38 for a review call,
    # until the Usage API reconciles them: 72 % of day one's bookings in the default-scale run of 14:24 UTC, whose
    # 829 jobs of day one booked $14.09 and whose deferred review jobs $0.07 each on day two), and the worst case
    # one call reserves (review agent: max_tokens at the output price), times the agent concurrency.
    cost_per_job_usd: float = 0.03
    max_days: int = 8  # budget days the soak moves through until nothing deferred is left
    worst_call_usd: float = 0.4  # review agent on the default model, max_tokens sized for thinking
    agent_concurrency: int = 5  # the template's AgentMaxConcurrency default
    daily_budget_usd: float | None = None  # overrides the computed day-one budget
    agent_timeout: float = 60.0  # seconds (the template: 300; the runner keeps a 20 s margin)

    def visibility_timeout(self) -> int:
        """The queues' visibility timeout at the template's own ratio to the agent's Timeout (JobsQueue 1,800 s for
        300 s: six times, as Lambda's SQS guide asks, https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html).
        A shorter one sends live jobs back as duplicate deliveries AWS would not make (1,713 at depth with 3 s)."""
        t = tpl.load()
        queue = tpl.resources(t, "AWS::SQS::Queue")["JobsQueue"]["Properties"]["VisibilityTimeout"]
        ratio = int(queue) / float(tpl.function_setting(t, "AgentFunction", "Timeout"))
        return math.ceil(ratio * self.agent_timeout)


@dataclass
class Driven:
    """What the driver did (the checks compare the stores against it)."""

    accepted: set[tuple[str, int]] = field(default_factory=set)
    replans: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    rerun_replies: list[tuple[str, int, int]] = field(default_factory=list)
    superseded_at: dict[tuple[str, int, str], float] = field(
        default_factory=dict
    )  # old head -> when it moved
    deliveries: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def module_text(rng: random.Random, name: str, revision: int) -> str:
    """A Python module with ordinary code and, sometimes, a real bug the offline analyser finds."""
    body = [
        f'"""{name}: generated for the soak (revision {revision})."""',
        "",
        "from __future__ import annotations",
        "",
    ]
    for i in range(rng.randint(2, 5)):
        body += [
            f"def {name}_step_{i}(values: list[int]) -> int:",
            f'    """Step {i}."""',
            "    total = 0",
            "    for v in values:",
            f"        total += v * {rng.randint(1, 9)}",
            "    return total",
            "",
        ]
    bug = rng.choice(["none", "bare", "mutable", "shell", "token", "none"])
    if bug == "bare":
        body += [
            f"def {name}_load(path):",
            "    try:",
            "        return open(path).read()",
            "    except:",
            "        return None",
            "",
        ]
    elif bug == "mutable":
        body += [f"def {name}_collect(item, seen=[]):", "    seen.append(item)", "    return seen", ""]
    elif bug == "shell":
        body += [
            "import subprocess",
            "",
            f"def {name}_run(arg):",
            '    subprocess.run(f"echo {arg}", shell=True, check=True)',
            "",
        ]
    elif bug == "token":
        body += [f'API_TOKEN_{revision} = "tok_live_{rng.getrandbits(48):012x}"', ""]
    return "\n".join(body) + "\n"


class Soak:
    def __init__(self, scale: Scale, workdir: Path) -> None:
        self.scale = scale
        self.workdir = workdir
        self.rng = random.Random(scale.seed)
        self.driven = Driven()
        self.alarmed: set[str] = set()
        self.sampled_at: list[float] = []  # prfleet-clock instants the alarms were evaluated at
        self.figures: dict[str, Any] = {}
        self.swept: Counter[str] = Counter()
        self.offset = 0.0  # prfleet's CLOCK_OFFSET_SECONDS, mirrored for the model server's clock
        self.reconciled: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------- setup
    def start(self, stack: ExitStack) -> None:
        s = self.scale
        self.servers: dict[str, GitHubServer] = {}
        for r in range(s.repos):
            name = f"soak/repo{r}"
            repo = GitRepo(self.workdir / f"repo{r}")
            srv = GitHubServer(repo, full_name=name, tokens=["local-token"])
            srv.start()
            stack.callback(srv.stop)
            srv.add_collaborator(WRITER, "write")
            srv.add_collaborator(READER, "read")
            base = {"README.md": f"# {name}\n", ".prfleet.toml": "[limits]\nmax_iterations = 12\n"}
            base.update({f"core/base_{i}.py": module_text(self.rng, f"base{i}", 0) for i in range(3)})
            repo.commit(base, "Initial commit", branch="main")
            self.servers[name] = srv
        self.repo_locks = {name: threading.Lock() for name in self.servers}
        self.router = GitHubRouter(self.servers)
        url = self.router.start()
        stack.callback(self.router.stop)
        # The model's bill is stamped on prfleet's clock, so a moved budget day bills in the same hours the
        # ledger books (reconciliation pairs them by UTC hour).
        self.model = ModelServer(faults=self.model_faults(), clock=lambda: time.time() + self.offset)
        model_url = self.model.start()
        stack.callback(self.model.stop)
        jobs_total = s.prs * s.files * s.agents
        # Enough for the calls in flight to reserve their worst case, plus a share of the run's spend: the rest is
        # deferred when the day's spend reaches it, and runs the next day.
        headroom = (s.agent_concurrency + 1) * s.worst_call_usd
        self.daily_budget = s.daily_budget_usd or round(
            jobs_total * s.cost_per_job_usd * s.budget_fraction + headroom, 4
        )
        self.stack = LocalStack(
            self.workdir / "stack",
            github_url=url,
            model_url=model_url,
            webhook_secret=uuid.uuid4().hex,
            parameters={"DailyBudgetUsd": self.daily_budget, "PrBudgetUsd": 1000, "MaxReceiveCount": 3},
            sweep_interval=None,
            visibility_timeout=s.visibility_timeout(),
            # A hung agent is abandoned at its Timeout; 300 s would idle a poller for five minutes per hang.
            function_timeouts={"AgentFunction": s.agent_timeout},
        )
        self.stack.start()
        stack.callback(self.stack.stop)
        self.inbox = self.stack.subscribe_alerts()  # what an on-call integration would get
        # The Admin API key the hourly ReconcileFunction reads (the offline server answers its Usage API).
        self.stack.client("secretsmanager").put_secret_value(
            SecretId=self.stack.ctx.refs["AdminKeySecret"],
            SecretString=json.dumps({"admin_api_key": "sk-ant-admin01-soak"}),
        )
        self.stack.moto.set_faults(self.aws_faults())
        self.lambda_faults()

    def model_faults(self) -> ModelFaults:
        s = self.scale
        r = s.fault_rate
        return ModelFaults(
            rules=[
                # The usage tier's monthly cap, once, about a third of the way through day one's calls: the circuit
                # opens, waiting jobs are deferred until the sweeper's probe gets through.
                ModelRule("spend_limit", requests=[max(2, s.prs * s.files * s.agents)]),
                ModelRule("429", probability=r, retry_after=1),
                ModelRule("529", probability=r, retry_after=1),
                ModelRule("500", probability=r),
                ModelRule("truncated", probability=r / 2),
                ModelRule("timeout_after_billing", probability=r / 2),
                ModelRule("reset_after_read", probability=r / 2),
                ModelRule("stream_error", probability=r / 2),
            ],
            seed=self.scale.seed,
        )

    def aws_faults(self) -> AwsFaults:
        r = self.scale.fault_rate
        return AwsFaults(
            rules=[
                AwsRule("throttle", rate=r),
                AwsRule("throttling", rate=r / 2),
                AwsRule("lost_response", rate=r / 2),
                AwsRule("sqs_delete_lost", queues=["JobsQueue", "PrQueue"], rate=r),
            ],
            seed=self.scale.seed,
        )

    def lambda_faults(self) -> None:
        """Invocations that die: a crash right after a model call or in the middle of one (the model API has the
        request and bills it, the reservation stays open until the sweeper expires it; nothing after it runs, EMF
        unflushed, the batch back after its visibility timeout) and a hang that the runtime abandons at the
        function's Timeout."""
        from prfleet_local.stack.invocations import InvocationFault

        n = max(1, int(self.scale.prs * self.scale.fault_rate * 2))
        self.stack.inject(InvocationFault("AgentFunction", "crash", after='"api_call"', times=n))
        self.stack.inject(InvocationFault("AgentFunction", "crash", during="model_call", times=n))
        self.stack.inject(InvocationFault("AgentFunction", "hang", after='"api_call"', times=max(1, n // 2)))
        self.stack.inject(InvocationFault("PlannerFunction", "crash", after='"planned"', times=1))

    def github_faults(self) -> None:
        """GitHub's failures, count-based as the fake offers them: 5xx before anything is done, 5xx after a write
        was applied (reviews, comments, check runs), secondary rate limits."""
        n = max(1, int(self.scale.prs * self.scale.fault_rate * 5))
        for srv in self.servers.values():
            srv.inject(r"/pulls/\d+/files", 502, n, method="GET")
            srv.fail_after_write(r"/pulls/\d+/reviews$", n, status=502, method="POST")
            srv.fail_after_write(r"/issues/\d+/comments$", n, status=0, method="POST")
            srv.fail_after_write(r"/check-runs/\d+$", n, status=502, method="PATCH")
            srv.rate_limit(r"/git/", n, retry_after=1)

    # ----------------------------------------------------------------------------------------- driving
    def deliver(self, event: str, payload: dict[str, Any], delivery: str | None = None) -> int:
        from prfleet.pipeline.webhook import signature_for
        from prfleet_local.demo.run import post

        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signature_for(self.stack.webhook_secret.encode(), body),
        }
        status = 0
        for _attempt in range(5):  # GitHub's own redelivery of a 5xx, bounded
            status, _reply = post(self.stack.webhook_url, body, headers)
            if status < 500:
                break
            time.sleep(0.5)
        with self.driven.lock:
            self.driven.deliveries[event] += 1
            self.driven.statuses[status] += 1
        return status

    def open_pr(self, name: str, k: int) -> None:
        srv, s = self.servers[name], self.scale
        rng = random.Random(f"{s.seed}/{name}/{k}")
        branch = f"feature/{k}"
        files = {f"pkg{k}/mod_{i}.py": module_text(rng, f"m{k}_{i}", 1) for i in range(s.files)}
        with self.repo_locks[name]:  # one work tree per repository: commits one at a time, branched off main
            srv.repo.checkout("main")
            srv.repo.commit(files, f"PR {k}", branch=branch)
        number = srv.open_pr(name, "main", branch, f"Soak PR {k}", "Generated by the soak.")
        payload = srv.webhook_payload("opened", number)
        delivery = str(uuid.uuid4())
        status = self.deliver("pull_request", payload, delivery)
        if status == 202:
            with self.driven.lock:
                self.driven.accepted.add((name, number))
        if rng.random() < s.redeliver:
            self.deliver("pull_request", payload, delivery if rng.random() < 0.5 else None)
        if rng.random() < s.second_push:
            time.sleep(rng.uniform(0.2, 3.0))  # mid-flight: some of the first head's jobs are running
            changed = {f"pkg{k}/mod_{i}.py": module_text(rng, f"m{k}_{i}", 2) for i in range(min(2, s.files))}
            with self.repo_locks[name]:
                srv.repo.commit(changed, f"PR {k}: second push", branch=branch)
            old = srv.prs[number].head_sha
            srv.update_head(number)
            with self.driven.lock:
                self.driven.superseded_at[(name, number, old)] = time.time()
            if self.deliver("pull_request", srv.webhook_payload("synchronize", number)) == 202:
                with self.driven.lock:
                    self.driven.accepted.add((name, number))

    def comment(self, name: str, number: int, user: str) -> int:
        srv = self.servers[name]
        pr = srv.webhook_payload("opened", number)
        payload = {
            "action": "created",
            "issue": {"number": number, "pull_request": {"url": pr["pull_request"]["html_url"]}},
            "comment": {"body": "/prfleet review", "user": {"login": user}},
            "repository": pr["repository"],
            "installation": pr["installation"],
            "sender": {"login": user},
        }
        return self.deliver("issue_comment", payload)

    def rerun(self, name: str, number: int) -> int:
        srv = self.servers[name]
        pr = srv.webhook_payload("opened", number)
        head = pr["pull_request"]["head"]["sha"]
        check = next((c for c in srv.check_runs_for(head)), {"id": 0})
        payload = {
            "action": "rerequested",
            "check_run": {
                "id": check["id"],
                "name": "prfleet",
                "head_sha": head,
                "status": "completed",
                "pull_requests": [
                    {"number": number, "head": pr["pull_request"]["head"], "base": pr["pull_request"]["base"]}
                ],
            },
            "repository": pr["repository"],
            "installation": pr["installation"],
            "sender": {"login": WRITER},
        }
        return self.deliver("check_run", payload)

    def jobs_finished(self) -> int:
        """Jobs counted done on every head so far (the heads' fan-in sets), read while the system is idle."""
        return sum(
            len(inv.job_ids(item))
            for item in inv.scan(self.stack, "StateTable")
            if str(item.get("pk", "")).startswith("PR#") and str(item.get("sk", "")).startswith("SHA#")
        )

    def wait_idle(self, deadline: float, *, in_flight: bool = True) -> bool:
        while time.monotonic() < deadline:
            if self.stack.wait_idle(
                timeout=min(30.0, max(1.0, deadline - time.monotonic())), in_flight=in_flight
            ):
                return True
            self.sample_alarms()
        return False

    def sweep_at(self, offset: float) -> dict[str, Any]:
        """One run of the sweeper with prfleet's clock moved `offset` seconds on, then the alarms sampled."""
        self.set_offset(offset)
        counts = self.stack.sweep() or {}
        self.swept.update({k: int(v) for k, v in counts.items() if isinstance(v, int)})
        self.sample_alarms()
        return counts

    def sample_alarms(self, *, settle: bool = False) -> None:
        """Alarm states now; with `settle`, also 1 and 3 minutes on (CloudWatch evaluates complete periods)."""
        now = self.stack.now()
        for at in (now, now + 60, now + 180) if settle else (now,):
            self.sample_alarms_at(at)

    def sample_alarms_at(self, at: float) -> None:
        """Evaluate the alarms at `at` (prfleet's clock) and remember the instant and which were in ALARM."""
        self.sampled_at.append(at)
        states = self.stack.evaluate_alarms(now=at)
        self.alarmed |= {a for a, st in states.items() if st == "ALARM"}

    def drain_dlqs(self) -> dict[str, list[str]]:
        sqs = self.stack.client("sqs")
        out: dict[str, list[str]] = {}
        for q in ("PrDLQ", "JobsDLQ"):
            url, seen, bodies = self.stack.queue_url(q), set(), []
            for _ in range(100):
                got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600).get(
                    "Messages", []
                )
                if not got:
                    break
                for m in got:
                    if m["MessageId"] not in seen:
                        seen.add(m["MessageId"])
                        bodies.append(m["Body"])
            out[q] = bodies
        return out

    def run(self) -> list[inv.Result]:
        from prfleet import config

        s = self.scale
        deadline = time.monotonic() + s.timeout
        names = sorted(self.servers)
        plan = [(names[k % len(names)], k) for k in range(s.prs)]
        self.github_faults()
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=s.senders) as pool:
            list(pool.map(lambda nk: self.open_pr(*nk), plan))
        idle_day_one = self.wait_idle(deadline)
        day_one = time.monotonic() - started
        jobs_day_one = self.jobs_finished()  # what day one carried: jobs deferred to later days are not in it
        # Comment commands and Re-runs on finished heads.
        rng = random.Random(s.seed + 1)
        for name, number in sorted(self.driven.accepted):
            head = self.servers[name].prs[number].head_sha
            if rng.random() < s.comments:
                if self.comment(name, number, WRITER) == 202:
                    self.driven.replans[(name, number, head)] += 1
                self.comment(name, number, READER)  # a reader's command is refused by the planner
            if rng.random() < s.reruns:
                reply = self.rerun(name, number)
                self.driven.rerun_replies.append((name, number, reply))
                if reply == 202:  # a Re-run re-reviews the head like `/prfleet review`: a new review cycle
                    self.driven.replans[(name, number, head)] += 1
        idle_commands = self.wait_idle(deadline)
        # The hourly ReconcileFunction reads the last 48 hours (prfleet.reconcile.WINDOW_HOURS); the soak's days
        # are a day apart on prfleet's clock, so it reconciles before each move to the next day, as AWS would
        # have many times by then (one pass at the end missed day one: 21.8 $ of estimates left unreconciled).
        self.reconcile()
        # The next budget day: the budget resets and the sweeper re-queues what was deferred. Work deferred again
        # (that day's budget ran out too) moves on to the day after, as it would in AWS, up to `max_days`.
        idle_later = True
        self.days = 1
        try:
            for day in range(1, s.max_days + 1):
                offset = day * 86400 + 3600
                requeued_today = 0
                for _ in range(20):
                    # Each sweep a few minutes after the last (prfleet's clock): a run that died that day is found
                    # stuck 5 minutes later, as the per-minute schedule would.
                    offset += 400
                    counts = self.sweep_at(offset)
                    requeued_today += int(counts.get("requeued") or 0)
                    # Between sweeps, nothing running and nothing waiting to be received is enough: a message
                    # in flight (killed invocation, lost delete) comes back on its own, as the per-minute sweeper
                    # in AWS does not wait for it either. Waiting for it here stalled each sweep by the visibility
                    # timeout (6 minutes at the template's ratio).
                    idle_later = self.wait_idle(deadline, in_flight=False) and idle_later
                    if not counts.get("requeued") and not counts.get("stuck"):
                        break
                if not requeued_today:
                    break
                self.days = day + 1
                self.reconcile()
            # Then everything, in flight included, before the stores are read; a message that came back after
            # its visibility timeout may find its run taken over, or leave one for the sweeper.
            for _ in range(3):
                idle_later = self.wait_idle(deadline) and idle_later
                offset += 400
                counts = self.sweep_at(offset)
                if not counts.get("requeued") and not counts.get("stuck"):
                    break
            idle_later = self.wait_idle(deadline) and idle_later
            self.stack.moto.set_faults(AwsFaults())  # the checks read the stores without faults
            self.reconcile()
            self.sample_alarms(settle=True)
            dlq = self.drain_dlqs()
            wall = time.monotonic() - started
            observed = inv.observe(self.stack, self.servers, self.model, self.alarmed, dlq)
            self.inbox.receive(wait=2.0)
            observed.notices = [m.body for m in self.inbox.received if not m.alarm]
            self.keep_reviews(observed)
        finally:
            os.environ.pop("CLOCK_OFFSET_SECONDS", None)
            self.offset = 0.0
            config.settings.cache_clear()
        jobs_done = sum(len(inv.job_ids(h)) for h in observed.heads.values())
        self.figures = {
            "prs": s.prs,
            "files": s.files,
            "agents": s.agents,
            "repos": s.repos,
            "fault_rate": s.fault_rate,
            "daily_budget_usd": self.daily_budget,
            "deliveries": dict(self.driven.deliveries),
            "webhook_statuses": dict(self.driven.statuses),
            "jobs_finished": jobs_done,
            "model_calls_served": observed.bill_calls,
            "day_one_s": round(day_one, 1),
            "wall_s": round(wall, 1),
            "jobs_finished_day_one": jobs_day_one,
            # jobs the budget deferred to a later day (the heads' deferred sets): the day ran out
            "jobs_deferred": sum(len(inv.job_ids(h, "deferred_ids")) for h in observed.heads.values()),
            "jobs_per_s_day_one": round(jobs_day_one / day_one, 2) if day_one else None,
            # What a day on the template's defaults carries: the default DailyBudgetUsd over what a job cost here
            # (the offline model's usage and prices, faults and retries included), and the local pace over 24 h.
            "cost_per_job_usd": round(observed.bill_micros / 1e6 / jobs_done, 5) if jobs_done else None,
            "jobs_per_day_default_budget": (
                int(
                    float(tpl.load()["Parameters"]["DailyBudgetUsd"]["Default"])
                    * 1e6
                    * jobs_done
                    / observed.bill_micros
                )
                if observed.bill_micros
                else None
            ),
            "jobs_per_day_local_pace": int(86400 * jobs_day_one / day_one) if day_one else None,
            "aws_faults_injected": {"/".join(k): v for k, v in self.stack.moto.injected().items()},
            "aws_requests": sum(self.stack.moto.counts().values()),
            "dlq": {q: len(b) for q, b in dlq.items()},
            "idle": {"day_one": idle_day_one, "commands": idle_commands, "later_days": idle_later},
            "budget_days": self.days,
        }
        daily = round(self.daily_budget * 1_000_000)
        self.figures["swept"] = dict(self.swept)
        self.figures["reconciled"] = self.reconciled
        expected = {self.stack.alarm_name(a) for a in self.expected_alarms(observed, dlq, daily)}
        return [
            inv.every_planned_job_in_one_end_state(observed),
            inv.nothing_lost(observed, self.driven.accepted),
            inv.dlq_messages_have_reasons(observed),
            inv.reviews_once_per_head(observed, self.driven.replans, self.driven.superseded_at),
            inv.no_duplicate_comment(observed),
            inv.within_limits(observed, daily, 1000 * 1_000_000),
            inv.ledger_runs_bill_agree(observed),
            inv.alarms_as_expected(observed, expected),
            inv.reruns_honoured(self.driven.rerun_replies),
            inv.spend_limit_paused_and_resumed(observed),
        ]

    def reconcile(self) -> None:
        """The hourly ReconcileFunction, invoked through the stack as EventBridge would, with the Admin API key in its
        secret: the ledger against the offline server's usage report, estimated calls moved onto the bill, and
        LedgerDriftPercent published for LedgerDriftAlarm. Run two hours on (prfleet's clock), so every hour of the
        soak so far is complete in the report; the alarms are sampled a minute after it (CloudWatch evaluates the
        whole minutes before now). Each pass adds what it applied to `reconciled`; `drifts` keeps every pass's."""
        back = self.offset
        self.set_offset(back + 7200)
        try:
            reply = self.stack.functions["ReconcileFunction"].invoke({"source": "aws.events"}, self.stack)
            if not isinstance(reply, dict) or reply.get("skipped") or "drift_percent" not in reply:
                raise RuntimeError(f"the ReconcileFunction did not reconcile: {reply!r}")
            self.sample_alarms_at(self.stack.now() + 60)
        finally:
            self.set_offset(back)
        self.reconciled = {
            "drift_percent": float(reply["drift_percent"]),
            "drifts": [*self.reconciled.get("drifts", []), float(reply["drift_percent"])],
            "applied_micros": self.reconciled.get("applied_micros", 0) + int(reply["applied_micros"]),
            "passes": self.reconciled.get("passes", 0) + 1,
        }

    def keep_reviews(self, o: inv.Observed) -> None:
        """reviews.json in the workdir: every review GitHub holds (head, time, marker, inline comments), so a failed
        review or comment invariant can be traced after the fake GitHub is gone."""
        out = {}
        for (repo, number), reviews in sorted(o.reviews.items()):
            out[f"{repo}#{number}"] = [
                {
                    "commit_id": r.get("commit_id"),
                    "submitted_at": r.get("submitted_at"),
                    "marker": (
                        re.findall(r"<!-- prfleet:review [^>]*-->", str(r.get("body") or "")) or [None]
                    )[0],
                    "comments": sorted(f"{c.get('path')}:{c.get('line')}" for c in r.get("comments") or []),
                }
                for r in reviews
            ]
        (self.workdir / "reviews.json").write_text(json.dumps(out, indent=1))

    def set_offset(self, offset: float) -> None:
        """Move prfleet's clock (CLOCK_OFFSET_SECONDS) for what runs next in this process."""
        from prfleet import config

        os.environ["CLOCK_OFFSET_SECONDS"] = str(offset)
        self.offset = float(offset)
        config.settings.cache_clear()

    def expected_alarms(self, o: inv.Observed, dlq: dict[str, list[str]], daily: int) -> set[str]:
        """The alarms the run's own data says must fire (their template thresholds), derived from the stores."""
        out = set()
        if dlq.get("JobsDLQ"):
            out.add("JobsDLQAlarm")
        if dlq.get("PrDLQ"):
            out.add("PrDLQAlarm")
        # DailySpendPercent >= 80: a day whose bookings are there now, or that crossed it while the day ran (the
        # ledger's once-a-day `a80` mark; reconciliation may have given the worst cases back since, and the
        # alarm read what was published then).
        if any(
            i.get("scope") == "daily" and (int(i.get("settled", 0)) * 100 >= 80 * daily or i.get("a80"))
            for i in o.ledger
        ):
            out.add("SpendAlarm")
        if self.swept.get("stuck"):
            out.add("StuckRunsAlarm")  # StuckRuns >= 1
        if any(code >= 500 for code in self.driven.statuses):
            out.add("WebhookErrorsAlarm")
        # ErrorRateAlarm's own arithmetic: (RunsFailed + the agent's Lambda Errors) / (RunsStarted + Errors) > 20 %
        # with at least 5 runs, over the SLIDING 15-minute range the local evaluator (and CloudWatch) uses at each
        # instant the soak sampled the alarms: it ends at the last whole minute (prfleet_local.stack.alarms.window).
        # Aligned 15-minute buckets (the former oracle) miss a breach that straddles two of them.
        agent = self.stack.functions["AgentFunction"].name
        points: list[tuple[float, str, float]] = []
        for d in self.stack.datapoints():
            fleet = d.namespace == "prfleet" and set(d.dimensions) == {"service"}
            lam = (
                d.namespace == "AWS/Lambda"
                and dict(d.dimensions) == {"FunctionName": agent}
                and d.name == "Errors"
            )
            if fleet or lam:
                points.append((d.timestamp, d.name, d.value))
        if error_rate_breached(points, self.sampled_at):
            out.add("ErrorRateAlarm")
        # The queue-age alarms: a message that waited over 5 minutes when it was received, as the stack measures it
        # from SentTimestamp (a killed invocation's or a lost delete's message is back only after the visibility
        # timeout, 6 x the agent's Timeout: in AWS the age counts from the send too, and the alarm pages).
        for logical in ("JobsQueue", "PrQueue"):
            queue = self.stack.queue_url(logical).rsplit("/", 1)[-1]
            threshold = float(
                self.stack.alarm_definitions[self.stack.alarm_name(f"{logical}AgeAlarm")]["Threshold"]
            )
            if any(
                d.namespace == "AWS/SQS"
                and d.name == "ApproximateAgeOfOldestMessage"
                and dict(d.dimensions).get("QueueName") == queue
                and d.value > threshold
                for d in self.stack.datapoints()
            ):
                out.add(f"{logical}AgeAlarm")
        # LedgerDriftAlarm: Maximum of LedgerDriftPercent over an hour above its threshold, from any pass.
        drift_name = self.stack.ctx.refs.get("LedgerDriftAlarm")  # created with the Claude API only
        drift = self.stack.alarm_definitions.get(str(drift_name)) if drift_name else None
        if drift is not None and any(
            d > float(drift["Threshold"]) for d in self.reconciled.get("drifts", [])
        ):
            out.add("LedgerDriftAlarm")
        # LatencyAlarm's own arithmetic over what the runs published (a killed invocation's RunDuration never
        # reaches CloudWatch): the p95 of the sliding 30-minute range, only with at least 20 runs in it.
        alarm = self.stack.alarm_definitions[self.stack.alarm_name("LatencyAlarm")]
        durations = [
            (d.timestamp, d.value)
            for d in self.stack.datapoints()
            if d.namespace == "prfleet" and set(d.dimensions) == {"service"} and d.name == "RunDuration"
        ]
        if latency_breached(durations, self.sampled_at, float(alarm["Threshold"])):
            out.add("LatencyAlarm")
        return out


def latency_breached(
    durations: list[tuple[float, float]],
    sampled_at: list[float],
    threshold_ms: float,
    *,
    period: int = 1800,
    min_runs: int = 20,
) -> bool:
    """LatencyAlarm's expression, IF(FILL(n, 0) >= 20, p95, 0) > threshold, over the sliding 30-minute range that
    ends at the last whole minute before each instant in `sampled_at`. p95 is the nearest rank (CloudWatch's
    percentile of raw values, Statistics-definitions.html). `durations`: (timestamp, RunDuration in ms)."""
    for at in sampled_at:
        end = math.floor(at / 60) * 60
        values = sorted(v for ts, v in durations if end - period <= ts < end)
        if len(values) >= min_runs and values[math.ceil(0.95 * len(values)) - 1] > threshold_ms:
            return True
    return False


def error_rate_breached(points: list[tuple[float, str, float]], sampled_at: list[float]) -> bool:
    """ErrorRateAlarm's expression, IF(runs >= 5, 100 * (failed + errors) / runs, 0) > 20 with runs = started +
    errors, over the sliding 15-minute range that ends at the last whole minute before each instant in
    `sampled_at` (prfleet_local.stack.alarms.window). `points`: (timestamp, metric name, value)."""
    for at in sampled_at:
        end = math.floor(at / 60) * 60
        w: Counter[str] = Counter()
        for ts, name, value in points:
            if end - 900 <= ts < end:
                w[name] += value
        n = w["RunsStarted"] + w["Errors"]
        if n >= 5 and 100 * (w["RunsFailed"] + w["Errors"]) / n > 20:
            return True
    return False


def soak(scale: Scale, workdir: Path | None = None) -> tuple[list[inv.Result], dict[str, Any]]:
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="prfleet-soak-")))
        workdir.mkdir(parents=True, exist_ok=True)
        runner = Soak(scale, workdir)
        runner.start(stack)
        results = runner.run()
        return results, runner.figures
