"""python -m prfleet_local.soak [--prs N --files N --repos N --fault-rate R ...]: run, print every invariant, exit 1
if one fails (2 if the soak could not run to the end)."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from prfleet_local.soak.run import soak
from prfleet_local.soak.scale import Scale


def main(argv: list[str] | None = None) -> int:
    d = Scale()
    p = argparse.ArgumentParser(prog="python -m prfleet_local.soak", description=__doc__)
    p.add_argument("--prs", type=int, default=d.prs)
    p.add_argument("--files", type=int, default=d.files)
    p.add_argument("--repos", type=int, default=d.repos)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--fault-rate", type=float, default=d.fault_rate, help="base rate of every fault kind")
    p.add_argument(
        "--budget-fraction",
        type=float,
        default=d.budget_fraction,
        help="day one's budget as a share of the run's estimated cost (< 1: it runs out)",
    )
    p.add_argument(
        "--daily-budget-usd",
        type=float,
        default=None,
        help="the DailyBudgetUsd parameter (default: computed)",
    )
    p.add_argument(
        "--agent-timeout",
        type=float,
        default=d.agent_timeout,
        help="the agent function's Timeout in seconds (template: 300); the queues' visibility keeps the template's ratio",
    )
    p.add_argument("--timeout", type=float, default=d.timeout, help="seconds for the whole soak")
    p.add_argument("--workdir", type=Path, default=None, help="keep logs and repositories here")
    p.add_argument("--json", type=Path, default=None, help="also write the results and figures here")
    a = p.parse_args(argv)
    if a.prs < 1 or a.files < 1 or a.repos < 1:
        p.error("--prs, --files and --repos must be at least 1")
    if a.agent_timeout < 25:
        p.error("--agent-timeout must be at least 25 seconds (the runner keeps a 20 s margin)")
    scale = Scale(
        prs=a.prs,
        files=a.files,
        repos=a.repos,
        seed=a.seed,
        fault_rate=a.fault_rate,
        budget_fraction=a.budget_fraction,
        timeout=a.timeout,
        agent_timeout=a.agent_timeout,
    )
    print(
        f"prfleet soak: {scale.prs} PRs x {scale.files} files x {scale.agents} agents on {scale.repos} "
        f"repositories, fault rate {scale.fault_rate}, agent Timeout {scale.agent_timeout:g} s, "
        f"visibility {scale.visibility_timeout()} s",
        flush=True,
    )
    try:
        results, figures = soak(scale, a.workdir)
    except KeyboardInterrupt:
        print("prfleet soak: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the soak could not run to the end: one line, the details where the logs are
        where = ""
        if a.workdir is not None:
            a.workdir.mkdir(parents=True, exist_ok=True)
            (a.workdir / "soak-error.txt").write_text(traceback.format_exc())
            where = f" (traceback in {a.workdir / 'soak-error.txt'})"
        print(f"prfleet soak: could not run to the end: {type(exc).__name__}: {exc}{where}", file=sys.stderr)
        return 2
    width = max(len(r.name) for r in results)
    for r in results:
        print(f"{'PASS' if r.ok else 'FAIL'}  {r.name:<{width}}  {r.figure}")
        for v in r.violations[:8]:
            print(f"        - {v}")
        if len(r.violations) > 8:
            print(f"        ... and {len(r.violations) - 8} more")
    print("figures: " + json.dumps(figures, sort_keys=True))
    if a.json:
        a.json.write_text(
            json.dumps({"results": [r.__dict__ for r in results], "figures": figures}, indent=2)
        )
    failed = [r.name for r in results if not r.ok]
    unfinished = [phase for phase, idle in figures.get("idle", {}).items() if not idle]
    if unfinished:
        # the work did not settle within --timeout: the invariants above read a system still running
        print(
            f"soak could not run to the end: not idle within --timeout {scale.timeout:g} s "
            f"({', '.join(unfinished)})",
            file=sys.stderr,
        )
        return 2
    print(f"soak {'FAILED: ' + '; '.join(failed) if failed else 'passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
