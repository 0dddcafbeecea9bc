"""Cold starts: the import time of each function's app module, each in a fresh interpreter.

Lambda's init phase imports the handler module once per container, so what a module imports at the top level is
paid on every cold start. Each measurement runs `python -c` in a new process (no warm sys.modules, no shared
caches), with the environment variables the template sets so module import works without AWS. The baseline is
`import boto3` alone in the same kind of process (the runtime's SDK, which every function needs anyway).

The webhook answers GitHub within its 10-second delivery timeout and must stay light: it must never import the
anthropic SDK (about 1.2 s of imports, DESIGN.md); `webhook_imports_anthropic` reports that fact.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
FUNCTIONS = ("webhook", "planner", "agent", "sweeper")
HEAVY = ("anthropic", "httpx2", "pydantic", "jwt", "cryptography", "boto3")

# What config.settings() and Powertools read; dummy values, nothing is called at import time.
ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "POWERTOOLS_SERVICE_NAME": "prfleet",
    "POWERTOOLS_METRICS_NAMESPACE": "prfleet",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    # Lambda sets it in every execution environment; with it Powertools Tracer is on and imports the X-Ray SDK.
    "LAMBDA_TASK_ROOT": "/var/task",
    "DELIVERIES_TABLE": "bench-DeliveriesTable",
    "STATE_TABLE": "bench-StateTable",
    "RESULTS_TABLE": "bench-ResultsTable",
    "LEDGER_TABLE": "bench-LedgerTable",
    "PR_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/bench-PrQueue",
    "JOBS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/bench-JobsQueue",
    "ALERT_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:bench-AlertTopic",
    "WEBHOOK_SECRET_ID": "bench/WebhookSecret",
    "GITHUB_SECRET_ID": "bench/GitHubSecret",
    "ANTHROPIC_SECRET_ID": "bench/AnthropicSecret",
}

_PROBE = """
import importlib.util, json, sys, time
path = sys.argv[1]
t0 = time.perf_counter()
if path == "boto3":
    import boto3  # noqa: F401
else:
    spec = importlib.util.spec_from_file_location("app", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.lambda_handler)
ms = (time.perf_counter() - t0) * 1000
heavy = {h: h in sys.modules for h in json.loads(sys.argv[2])}
print(json.dumps({"ms": ms, "modules": len(sys.modules), "heavy": heavy}))
"""


def probe(target: str, *, python: str | None = None) -> dict[str, Any]:
    """Import `target` (an app.py path, or "boto3") in a fresh interpreter; its time, module count, heavy deps."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANTHROPIC_", "POWERTOOLS_"))}
    env.update(ENV)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # measure what a fresh container pays, minus nothing we add
    out = subprocess.run(
        [python or sys.executable, "-c", _PROBE, target, json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"importing {target} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def app_path(function: str) -> str:
    return str(ROOT / "functions" / function / "app.py")


def measure_imports(repeats: int = 5, functions: tuple[str, ...] = FUNCTIONS) -> dict[str, Any]:
    """Median import time per function over `repeats` fresh interpreters, against `import boto3` alone."""
    probe("boto3")  # one warm-up so the OS page cache is the same for every measurement
    base = [probe("boto3")["ms"] for _ in range(repeats)]
    base_ms = statistics.median(base)
    result: dict[str, Any] = {
        "repeats": repeats,
        "baseline": {"what": "import boto3", "median_ms": round(base_ms, 1)},
        "functions": {},
    }
    for fn in functions:
        runs = [probe(app_path(fn)) for _ in range(repeats)]
        ms = statistics.median(r["ms"] for r in runs)
        result["functions"][fn] = {
            "median_ms": round(ms, 1),
            "min_ms": round(min(r["ms"] for r in runs), 1),
            "ratio_to_boto3": round(ms / base_ms, 2),
            "modules": runs[-1]["modules"],
            "imports": sorted(h for h, present in runs[-1]["heavy"].items() if present),
        }
    if "webhook" in result["functions"]:
        result["webhook_imports_anthropic"] = "anthropic" in result["functions"]["webhook"]["imports"]
    return result


if __name__ == "__main__":
    print(json.dumps(measure_imports(), indent=2))
