"""What GitHub sends the stack during the soak: several real git repositories behind one fake GitHub URL, PRs
opened (some pushed again mid-flight, some redelivered with the same or a new delivery id), `/prfleet review`
comments by a writer and a reader, and Re-runs; `Driven` records what was sent, for the checks to compare the
stores against."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prfleet.pipeline.webhook import signature_for
from prfleet_local.demo.run import post
from prfleet_local.github.server import GitHubServer, GitRepo
from prfleet_local.soak.router import GitHubRouter
from prfleet_local.soak.scale import Scale
from prfleet_local.stack.local_stack import LocalStack

WRITER, READER = "maintainer", "drive-by"


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


def start_repositories(s: Scale, workdir: Path, stack: ExitStack) -> tuple[dict[str, GitHubServer], str]:
    """One fake GitHub per repository, each with a writer and a reader and an initial commit, behind one router;
    the servers by repository name, and the router's URL. Everything stops when `stack` closes."""
    rng = random.Random(s.seed)
    servers: dict[str, GitHubServer] = {}
    for r in range(s.repos):
        name = f"soak/repo{r}"
        repo = GitRepo(workdir / f"repo{r}")
        srv = GitHubServer(repo, full_name=name, tokens=["local-token"])
        srv.start()
        stack.callback(srv.stop)
        srv.add_collaborator(WRITER, "write")
        srv.add_collaborator(READER, "read")
        base = {"README.md": f"# {name}\n", ".prfleet.toml": "[limits]\nmax_iterations = 12\n"}
        base.update({f"core/base_{i}.py": module_text(rng, f"base{i}", 0) for i in range(3)})
        repo.commit(base, "Initial commit", branch="main")
        servers[name] = srv
    router = GitHubRouter(servers)
    url = router.start()
    stack.callback(router.stop)
    return servers, url


class GitHubTraffic:
    """Deliveries to the stack's webhook as GitHub makes them (signed, 5xx redelivered), recorded in `driven`."""

    def __init__(
        self, scale: Scale, servers: dict[str, GitHubServer], stack: LocalStack, driven: Driven
    ) -> None:
        self.scale = scale
        self.servers = servers
        self.stack = stack
        self.driven = driven
        self.repo_locks = {name: threading.Lock() for name in servers}

    def deliver(self, event: str, payload: dict[str, Any], delivery: str | None = None) -> int:
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
