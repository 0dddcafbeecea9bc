"""Benchmark: what prompt caching saves on real-sized reviews, measured against the strict offline server.

1. One file: a 500-line Python file reviewed over exactly 5 iterations (three read_file windows around suspicious
   code, report_findings, end_turn) twice with the same loop code, with cache_control breakpoints and without
   (run_agent(cache=False)). Thinking is on (the review agent's effort, billed as output), the cache minimums are
   the models' (prices.json "cache_minimum_tokens"), tokens are counted by the server's tokenizer imitation.
2. A whole 10-file PR: ten review jobs of one PR in a row on one API key, with cross-job caching (the tools +
   system prefix and the PR context cached and read by the next jobs), with per-job caching only, and without
   caching.

Cost = the usage the server reported for each call, priced by prfleet.pricing with the model the response
names.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

ITERATIONS = 5
TARGET_RATIO = 0.30


def price_micros(model: str, usage: Any) -> int:
    """Cost of one call in micro-dollars (prfleet.pricing; an unknown model raises, never prices at zero)."""
    from prfleet.cost import pricing

    return int(pricing.cost_micros(model, usage))


def sample_file(lines: int = 500) -> str:
    """A deterministic, realistic Python module of exactly `lines` lines with a few real bugs in it."""
    out = ['"""Order processing helpers (benchmark fixture)."""', "import json", "import subprocess", ""]
    i = 0
    while len(out) < lines - 6:
        i += 1
        out += [
            "",
            f"def process_order_{i}(order, items=None, *, discount=0.0):",
            f'    """Validate order {i}, apply the discount and return the total in cents."""',
            "    items = items or []",
            "    total = 0",
            "    for item in items:",
            "        price = int(item.get('price', 0))",
            "        quantity = int(item.get('quantity', 1))",
            "        total += price * quantity",
            "    if discount:",
            "        total = int(total * (1 - discount))",
            f"    order['total_{i}'] = total",
            "    return json.dumps(order)",
        ]
        if i % 9 == 0:
            out += [
                "",
                f"def unsafe_{i}(cmd):",
                '    """Run a shell command."""',
                "    return subprocess.run(cmd, shell=True)",
            ]
    out += ["", "def load(text):", '    """Parse."""', "    try:", "        return eval(text)", "    except:"]
    out = out[: lines - 1] + ["        return None"]
    return "\n".join(out[:lines]) + "\n"


class _Source:
    def __init__(self, path: str, text: str, all_files: dict[str, str] | None = None) -> None:
        self.path, self.text = path, text
        self.files = all_files or {path: text}
        self.title = "Order processing"
        self.body = (
            "Adds the order helpers: validation, discounts and totals in cents for every order type, plus the "
            "export of processed orders. Each helper is independent; reviewers should check input handling."
        )

    def read_file(self, path: str) -> str | None:
        return self.files.get(path)

    def file_diff(self, path: str) -> str:
        lines = self.files.get(path, "").splitlines()
        return f"@@ -0,0 +1,{len(lines)} @@\n" + "\n".join("+" + x for x in lines[:40]) + "\n..."

    def changed_files(self) -> list[Any]:
        from prfleet.agents.tools import ChangedFile

        return [
            ChangedFile(p, "added", "blob-" + p, len(t.splitlines()), 0, "") for p, t in self.files.items()
        ]


class _PricingGuard:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def before_call(self, model: str, params: dict) -> object:
        return model

    def after_call(self, token: object, usage: Any, *, model: str) -> int:
        cost = price_micros(model, usage)
        self.calls.append(cost)
        return cost

    def on_error(self, token: object, exc: BaseException) -> int:
        return 0


def _spec(model: str, **changes: Any) -> Any:
    """The production review spec (effort, max_tokens, TTLs from agent_specs) for `model`."""
    from prfleet.agents import agent_specs

    spec = agent_specs(SimpleNamespace(agents=("review",), models={"review": model}))["review"]
    return replace(spec, **changes)


def _run(client: Any, spec: Any, source: Any, path: str, *, number: int = 1) -> tuple[Any, list[int]]:
    from prfleet.agents import run_agent
    from prfleet.jobs import FileJob

    job = FileJob("bench/repo", number, "a" * 40, "b" * 40, path, "blob-" + path, "review", None, "bench")
    guard = _PricingGuard()
    result = run_agent(
        job, spec, source, client, deadline=time.time() + 120, guard=guard, emit=lambda event, **fields: None
    )
    if result.status != "succeeded":
        raise RuntimeError(f"{path}: {result.status} after {result.iterations} iterations: {result.error}")
    return result, guard.calls


def bench_caching(lines: int = 500, model: str = "claude-sonnet-5-5") -> dict[str, Any]:
    """Cost with prompt caching / cost without, for one file over 5 iterations (target <= 0.30)."""
    import anthropic

    from prfleet_local.model.server import FaultPlan, ModelServer

    path = "orders/process.py"
    source = _Source(path, sample_file(lines))
    arms: dict[str, dict[str, Any]] = {}
    with ModelServer(faults=FaultPlan(read_windows=ITERATIONS - 2)) as server:
        for arm, cache in (("cached", True), ("uncached", False)):
            client = anthropic.Anthropic(base_url=server.url, api_key=f"offline-bench-{arm}", max_retries=0)
            result, calls = _run(
                client, _spec(model, max_iterations=ITERATIONS, prompt_caching=cache), source, path
            )
            if result.iterations != ITERATIONS:
                raise RuntimeError(f"{arm} arm: {result.iterations} iterations, not {ITERATIONS}")
            arms[arm] = {
                "cost_micros": result.cost_micros,
                "per_call_micros": calls,
                "usage": result.usage,
                "findings": len(result.findings),
                "iterations": result.iterations,
            }
    ratio = arms["cached"]["cost_micros"] / arms["uncached"]["cost_micros"]
    # Output tokens (thinking included) cost the same in both arms; the prompt-side ratio shows caching itself.
    out_micros = {a: price_micros(model, {"output_tokens": arms[a]["usage"]["output_tokens"]}) for a in arms}
    input_ratio = (arms["cached"]["cost_micros"] - out_micros["cached"]) / (
        arms["uncached"]["cost_micros"] - out_micros["uncached"]
    )
    return {
        "benchmark": "prompt caching, one 500-line file",
        "model": model,
        "file_lines": lines,
        "iterations": ITERATIONS,
        "cached": arms["cached"],
        "uncached": arms["uncached"],
        "output_share_uncached": round(out_micros["uncached"] / arms["uncached"]["cost_micros"], 4),
        "ratio": round(ratio, 4),
        "input_ratio": round(input_ratio, 4),
        "target": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "server": "offline model (thinking on, per-model cache minimums, tokenizer imitation)",
    }


def bench_pr(files: int = 10, lines: int = 200, model: str = "claude-sonnet-5-5") -> dict[str, Any]:
    """A whole PR of `files` files reviewed job after job: cross-job caching / per-job caching / none."""
    import anthropic

    from prfleet_local.model.server import ModelServer

    texts = {f"orders/module_{i}.py": sample_file(lines + 7 * i) for i in range(files)}
    arms: dict[str, dict[str, Any]] = {}
    with ModelServer() as server:
        for arm, changes in (
            ("cross_job", {}),
            ("per_job", {"cross_job_cache": False}),
            ("uncached", {"prompt_caching": False}),
        ):
            client = anthropic.Anthropic(base_url=server.url, api_key=f"offline-pr-{arm}", max_retries=0)
            spec = _spec(model, **changes)
            total, usage, per_job = 0, {}, []
            for path, text in texts.items():
                result, _ = _run(client, spec, _Source(path, text, all_files=texts), path)
                total += result.cost_micros
                per_job.append(result.cost_micros)
                for k, v in result.usage.items():
                    usage[k] = usage.get(k, 0) + v
            arms[arm] = {"cost_micros": total, "per_job_micros": per_job, "usage": usage}
    base = arms["uncached"]["cost_micros"]
    return {
        "benchmark": f"prompt caching, a {files}-file PR",
        "model": model,
        "files": files,
        **{arm: arms[arm] for arm in arms},
        "cross_job_vs_uncached": round(arms["cross_job"]["cost_micros"] / base, 4),
        "per_job_vs_uncached": round(arms["per_job"]["cost_micros"] / base, 4),
        "cross_job_vs_per_job": round(arms["cross_job"]["cost_micros"] / arms["per_job"]["cost_micros"], 4),
    }


def main() -> int:
    """Print both benchmarks as JSON; exit 1 when the one-file ratio misses the target."""
    result = {"one_file": bench_caching(), "pr": bench_pr()}
    print(json.dumps(result, indent=2))
    return 0 if result["one_file"]["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
