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
import os
import random
import re
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from prfleet import config
from prfleet_local.model.server import ModelServer
from prfleet_local.soak import invariants as inv
from prfleet_local.soak.expected_alarms import expected_alarms
from prfleet_local.soak.faults import aws_faults, github_faults, lambda_faults, model_faults
from prfleet_local.soak.figures import Pace, figures
from prfleet_local.soak.scale import Scale
from prfleet_local.soak.traffic import READER, WRITER, Driven, GitHubTraffic, start_repositories
from prfleet_local.stack.local_stack import LocalStack
from prfleet_local.stack.moto_proc import FaultPlan as AwsFaults


class Soak:
    """The scenario, phase by phase; `start()` brings up GitHub, the model and the stack, `run()` drives them and
    returns the invariants' results (`figures` then holds what the run measured)."""

    def __init__(self, scale: Scale, workdir: Path) -> None:
        self.scale = scale
        self.workdir = workdir
        self.driven = Driven()
        self.figures: dict[str, Any] = {}
        self.swept: Counter[str] = Counter()
        self.offset = 0.0  # prfleet's CLOCK_OFFSET_SECONDS, mirrored for the model server's clock
        self.reconciled: dict[str, Any] = {}
        self.pace = Pace()
        self.days = 1

    # ------------------------------------------------------------------------------------------- setup
    def start(self, stack: ExitStack) -> None:
        s = self.scale
        self.servers, url = start_repositories(s, self.workdir, stack)
        # The model's bill is stamped on prfleet's clock, so a moved budget day bills in the same hours the
        # ledger books (reconciliation pairs them by UTC hour).
        self.model = ModelServer(faults=model_faults(s), clock=lambda: time.time() + self.offset)
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
        self.traffic = GitHubTraffic(s, self.servers, self.stack, self.driven)
        self.inbox = self.stack.subscribe_alerts()  # what an on-call integration would get
        # The Admin API key the hourly ReconcileFunction reads (the offline server answers its Usage API).
        self.stack.client("secretsmanager").put_secret_value(
            SecretId=self.stack.ctx.refs["AdminKeySecret"],
            SecretString=json.dumps({"admin_api_key": "sk-ant-admin01-soak"}),
        )
        self.stack.moto.set_faults(aws_faults(s))
        lambda_faults(self.stack, s)

    # ------------------------------------------------------------------------------------------- phases
    def run(self) -> list[inv.Result]:
        s = self.scale
        deadline = time.monotonic() + s.timeout
        github_faults(self.servers, s)
        started = time.monotonic()
        self.day_one(deadline, started)
        self.commands(deadline)
        # The hourly ReconcileFunction reads the last 48 hours (prfleet.reconcile.WINDOW_HOURS); the soak's days
        # are a day apart on prfleet's clock, so it reconciles before each move to the next day, as AWS would
        # have many times by then (one pass at the end missed day one: 21.8 $ of estimates left unreconciled).
        self.reconcile()
        try:
            offset, idle_later = self.later_days(deadline)
            self.pace.idle["later_days"] = self.settle(deadline, offset, idle_later)
            self.stack.moto.set_faults(AwsFaults())  # the checks read the stores without faults
            self.reconcile()
            self.sample_alarms(settle=True)
            dlq = self.drain_dlqs()
            self.pace.wall_s = time.monotonic() - started
            observed = inv.observe(self.stack, self.servers, self.model, self.alarmed(), dlq)
            self.inbox.receive(wait=2.0)
            observed.notices = [m.body for m in self.inbox.received if not m.alarm]
            self.keep_reviews(observed)
        finally:
            os.environ.pop("CLOCK_OFFSET_SECONDS", None)
            self.offset = 0.0
            config.settings.cache_clear()
        self.figures = figures(
            s,
            self.daily_budget,
            self.driven,
            observed,
            self.pace,
            self.stack,
            dlq,
            days=self.days,
            swept=self.swept,
            reconciled=self.reconciled,
        )
        return self.check(observed, dlq)

    def day_one(self, deadline: float, started: float) -> None:
        """Every PR opened by the senders at once; then until the work settles, and what day one finished."""
        names = sorted(self.servers)
        plan = [(names[k % len(names)], k) for k in range(self.scale.prs)]
        with ThreadPoolExecutor(max_workers=self.scale.senders) as pool:
            list(pool.map(lambda nk: self.traffic.open_pr(*nk), plan))
        self.pace.idle["day_one"] = self.wait_idle(deadline)
        self.pace.day_one_s = time.monotonic() - started
        # what day one carried: jobs deferred to later days are not in it
        self.pace.jobs_day_one = self.jobs_finished()

    def commands(self, deadline: float) -> None:
        """Comment commands and Re-runs on finished heads."""
        s = self.scale
        rng = random.Random(s.seed + 1)
        for name, number in sorted(self.driven.accepted):
            head = self.servers[name].prs[number].head_sha
            if rng.random() < s.comments:
                if self.traffic.comment(name, number, WRITER) == 202:
                    self.driven.replans[(name, number, head)] += 1
                self.traffic.comment(name, number, READER)  # a reader's command is refused by the planner
            if rng.random() < s.reruns:
                reply = self.traffic.rerun(name, number)
                self.driven.rerun_replies.append((name, number, reply))
                if reply == 202:  # a Re-run re-reviews the head like `/prfleet review`: a new review cycle
                    self.driven.replans[(name, number, head)] += 1
        self.pace.idle["commands"] = self.wait_idle(deadline)

    def later_days(self, deadline: float) -> tuple[float, bool]:
        """The next budget day: the budget resets and the sweeper re-queues what was deferred. Work deferred again
        (that day's budget ran out too) moves on to the day after, as it would in AWS, up to `max_days`. Returns
        prfleet's clock offset reached, and whether the work settled between every sweep."""
        idle_later = True
        self.days = 1
        for day in range(1, self.scale.max_days + 1):
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
        return offset, idle_later

    def settle(self, deadline: float, offset: float, idle_later: bool) -> bool:
        """Then everything, in flight included, before the stores are read; a message that came back after its
        visibility timeout may find its run taken over, or leave one for the sweeper."""
        for _ in range(3):
            idle_later = self.wait_idle(deadline) and idle_later
            offset += 400
            counts = self.sweep_at(offset)
            if not counts.get("requeued") and not counts.get("stuck"):
                break
        return self.wait_idle(deadline) and idle_later

    def check(self, observed: inv.Observed, dlq: dict[str, list[str]]) -> list[inv.Result]:
        """Every invariant, on what the stores hold against what the driver sent."""
        daily = round(self.daily_budget * 1_000_000)
        expected = {
            self.stack.alarm_name(a)
            for a in expected_alarms(
                self.stack,
                observed,
                dlq,
                daily,
                swept=self.swept,
                statuses=self.driven.statuses,
                sampled_at=self.stack.evaluator.evaluated_at if self.stack.evaluator else [],
                drifts=self.reconciled.get("drifts", []),
            )
        }
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

    # ------------------------------------------------------------------------------------------- steps
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
        """Evaluate the alarms at `at` (prfleet's clock), and the minutes with data skipped since the last time."""
        self.stack.evaluate_alarms(now=at)

    def alarmed(self) -> set[str]:
        """Every alarm that went to ALARM at some evaluation: the stack's own every minute, the soak's, and the
        minutes they caught up (its state at the soak's instants alone misses a page that cleared in between)."""
        ev = self.stack.evaluator
        return {t.alarm for t in ev.transitions if t.new_state == "ALARM"} if ev else set()

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
        os.environ["CLOCK_OFFSET_SECONDS"] = str(offset)
        self.offset = float(offset)
        config.settings.cache_clear()


def soak(scale: Scale, workdir: Path | None = None) -> tuple[list[inv.Result], dict[str, Any]]:
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="prfleet-soak-")))
        workdir.mkdir(parents=True, exist_ok=True)
        runner = Soak(scale, workdir)
        runner.start(stack)
        results = runner.run()
        return results, runner.figures
